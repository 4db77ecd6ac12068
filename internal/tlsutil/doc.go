// Package tlsutil holds Vigil's private PKI: one CA per deployment that signs
// the servers' certificates and the operators' (admin) client certificates.
//
// Every Vigil listener speaks TLS 1.3 only. Agents authenticate the server
// with the CA certificate and authenticate themselves with TPM signatures,
// not certificates; the admin API requires a client certificate issued by
// the same CA. `vigil ca init DIR` writes the files this package reads:
// ca.crt, ca.key, server.crt, server.key, admin.crt, admin.key.
package tlsutil
