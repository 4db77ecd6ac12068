// Package dsse reads, verifies and makes DSSE envelopes (Dead Simple
// Signing Envelope, github.com/secure-systems-lab/dsse) the way Keylime
// signs runtime policies (`keylime-policy sign runtime`,
// keylime/dsse/{dsse,ecdsa,x509}.py), so that a policy Keylime signed
// verifies here and one signed here verifies in Keylime.
//
// The envelope is JSON:
//
//	{"payload": "<base64>", "payloadType": "application/vnd.keylime+json",
//	 "signatures": [{"keyid": "<id>", "sig": "<base64>"}]}
//
// Each signature is over the pre-authentication encoding (PAE) of the
// payload type and the decoded payload. Keylime's signatures are ECDSA with
// SHA-256 (whatever the curve), ASN.1 DER encoded; its key IDs are the hex
// SHA-256 of the public key's PEM (SubjectPublicKeyInfo) text, or for its
// x509 backend the base64 of the certificate's PEM text. Keylime makes no RSA
// signatures; Vigil signs RSA keys with RSASSA-PSS over SHA-256 (salt as long
// as the hash, as securesystemslib's rsassa-pss-sha256) and verifies PSS
// (any salt length) or PKCS #1 v1.5, both over SHA-256.
//
// Like Keylime, a signature's key ID is a hint: every configured key is
// tried on every signature, and one signature that verifies is enough.
package dsse
