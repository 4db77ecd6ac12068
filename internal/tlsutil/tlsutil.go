package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// File names inside a TLS directory.
const (
	CACert     = "ca.crt"
	CAKey      = "ca.key"
	ServerCert = "server.crt"
	ServerKey  = "server.key"
	AdminCert  = "admin.crt"
	AdminKey   = "admin.key"
)

// AdminCommonName is the subject CN of the admin client certificate.
const AdminCommonName = "vigil-admin"

// InitOptions configure InitDir.
type InitOptions struct {
	// SANs are extra DNS names or IP addresses for the server certificate,
	// besides localhost and 127.0.0.1 (and ::1).
	SANs []string
	// Validity of the issued certificates; the CA lives twice as long.
	Validity time.Duration
}

// InitDir creates a CA, a server certificate and an admin client
// certificate in dir. It refuses to overwrite any existing file, so a
// deployment's CA is never replaced by accident.
func InitDir(dir string, opts InitOptions) error {
	if opts.Validity == 0 {
		opts.Validity = 2 * 365 * 24 * time.Hour
	}
	for _, name := range []string{CACert, CAKey, ServerCert, ServerKey, AdminCert, AdminKey} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite", filepath.Join(dir, name))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now().Add(-5 * time.Minute) // tolerate small clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Vigil CA", Organization: []string{"Vigil"}},
		NotBefore:             now,
		NotAfter:              now.Add(2 * opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}

	server := serverTemplate(opts)
	server.SerialNumber, server.NotBefore, server.NotAfter = serial(), now, now.Add(opts.Validity)
	server.KeyUsage = x509.KeyUsageDigitalSignature
	admin := adminTemplate(AdminCommonName)
	admin.SerialNumber, admin.NotBefore, admin.NotAfter = serial(), now, now.Add(opts.Validity)
	if err := writeKey(filepath.Join(dir, CAKey), caKey); err != nil {
		return err
	}
	if err := writeCert(filepath.Join(dir, CACert), caDER); err != nil {
		return err
	}
	for _, leaf := range []struct {
		tmpl      *x509.Certificate
		cert, key string
	}{{server, ServerCert, ServerKey}, {admin, AdminCert, AdminKey}} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.CreateCertificate(rand.Reader, leaf.tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writeKey(filepath.Join(dir, leaf.key), key); err != nil {
			return err
		}
		if err := writeCert(filepath.Join(dir, leaf.cert), der); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return WriteExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return WriteExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// WriteExclusive creates path with data and mode, failing if it exists:
// keys and CA certificates are never silently replaced.
func WriteExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadCAPool reads a PEM file of one or more CA certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// ServerConfig is the TLS configuration of a Vigil server using the files
// in dir: TLS 1.3, the server certificate, and client certificates verified
// against the CA when offered and refused when the admin CRL of dir
// (admin.crl, if there is one) revokes them. The CRL is read once here
// (ReloadableServerConfig reads it again on demand); one that cannot be
// read or is not signed by the CA is an error naming it. Handlers that
// need an admin call AdminIdentity (httpapi.Admin).
func ServerConfig(dir string) (*tls.Config, error) {
	cfg, _, err := serverConfig(dir)
	return cfg, err
}

func serverConfig(dir string) (*tls.Config, *AdminCRL, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCert), filepath.Join(dir, ServerKey))
	if err != nil {
		return nil, nil, fmt.Errorf("server certificate in %s: %w", dir, err)
	}
	pool, err := LoadCAPool(filepath.Join(dir, CACert))
	if err != nil {
		return nil, nil, err
	}
	crl, err := LoadAdminCRL(dir)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientCAs:        pool,
		ClientAuth:       tls.VerifyClientCertIfGiven,
		VerifyConnection: crl.VerifyConnection,
	}, crl, nil
}

// ClientConfig is the TLS configuration of a client that trusts caFile and,
// when certFile is not empty, presents that client certificate.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// AdminClientConfig is ClientConfig with the admin certificate of dir.
func AdminClientConfig(dir string) (*tls.Config, error) {
	return ClientConfig(filepath.Join(dir, CACert), filepath.Join(dir, AdminCert), filepath.Join(dir, AdminKey))
}

// ErrNoClientCert is returned by AdminIdentity for requests without a
// verified client certificate.
var ErrNoClientCert = errors.New("a client certificate issued by the deployment's CA is required")

// AdminIdentity returns the subject CN of the verified client certificate
// of r. ServerConfig has the TLS stack verify the chain; an unverified or
// absent certificate is refused.
func AdminIdentity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", ErrNoClientCert
	}
	leaf := r.TLS.VerifiedChains[0][0]
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return leaf.Subject.CommonName, nil
		}
	}
	return "", ErrNoClientCert
}

// serverTemplate is the server certificate's subject, usage and names:
// localhost and loopback, and the SANs of opts.
func serverTemplate(opts InitOptions) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "vigil-server", Organization: []string{"Vigil"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, san := range opts.SANs {
		if ip := net.ParseIP(san); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if san != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, san)
		}
	}
	return tmpl
}
