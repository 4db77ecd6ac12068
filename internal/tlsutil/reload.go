package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// KeyPair is a certificate and key read from two files, which Reload reads
// again while the process runs (SIGHUP). A tls.Config takes it through
// GetCertificate (a server) or GetClientCertificate (a client), so each
// new handshake presents the certificate in force, while connections made
// before a reload keep theirs and stay up.
type KeyPair struct {
	CertFile, KeyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadKeyPair reads certFile and keyFile.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{CertFile: certFile, KeyFile: keyFile}
	if _, _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the files again. On success the new certificate is in
// force for new handshakes and Reload returns the leaves before and after
// (before is nil on the first load); on failure (a missing, unparsable or
// mismatched file) the old certificate stays and the error names the file.
func (k *KeyPair) Reload() (before, after *x509.Certificate, err error) {
	c, err := tls.LoadX509KeyPair(k.CertFile, k.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s, key %s: %w", k.CertFile, k.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, nil, fmt.Errorf("certificate %s: %w", k.CertFile, err)
		}
	}
	if old := k.cur.Swap(&c); old != nil {
		before = old.Leaf
	}
	return before, c.Leaf, nil
}

// Leaf is the certificate in force.
func (k *KeyPair) Leaf() *x509.Certificate { return k.cur.Load().Leaf }

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// ReloadableServerConfig is ServerConfig with the server certificate and
// key behind the returned KeyPair, and the admin CRL behind the returned
// AdminCRL: their Reload replaces them for new connections. The CA
// (client certificates) is read once.
func ReloadableServerConfig(dir string) (*tls.Config, *KeyPair, *AdminCRL, error) {
	cfg, crl, err := serverConfig(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	kp, err := LoadKeyPair(filepath.Join(dir, ServerCert), filepath.Join(dir, ServerKey))
	if err != nil {
		return nil, nil, nil, err
	}
	cfg.Certificates, cfg.GetCertificate = nil, kp.GetCertificate
	return cfg, kp, crl, nil
}

// ReloadableAdminClientConfig is AdminClientConfig with the admin
// certificate and key behind the returned KeyPair: its Reload replaces
// them for new connections. The CA (server certificates) is read once.
func ReloadableAdminClientConfig(dir string) (*tls.Config, *KeyPair, error) {
	cfg, err := AdminClientConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	kp, err := LoadKeyPair(filepath.Join(dir, AdminCert), filepath.Join(dir, AdminKey))
	if err != nil {
		return nil, nil, err
	}
	cfg.Certificates, cfg.GetClientCertificate = nil, kp.GetClientCertificate
	return cfg, kp, nil
}

// RenewServerCert issues a new server certificate and key from the CA in
// dir, with the SANs and validity of opts as InitDir would, and puts them
// in place of server.crt and server.key (each written aside and renamed,
// so a reader sees the old file or the new one). A running service picks
// them up on SIGHUP.
func RenewServerCert(dir string, opts InitOptions) error {
	return renewLeaf(dir, ServerCert, ServerKey, serverTemplate(opts), opts.Validity)
}

// RenewAdminCert is RenewServerCert for the admin client certificate
// (admin.crt and admin.key).
func RenewAdminCert(dir string, opts InitOptions) error {
	return renewLeaf(dir, AdminCert, AdminKey, adminTemplate(AdminCommonName), opts.Validity)
}

func renewLeaf(dir, certName, keyName string, tmpl *x509.Certificate, validity time.Duration) error {
	if validity == 0 {
		validity = 2 * 365 * 24 * time.Hour
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	now := time.Now().Add(-5 * time.Minute) // tolerate small clock skew
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial(), now, now.Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a reload between the two renames fails on a key that
	// does not match the certificate and keeps the old pair.
	if err := replaceFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return replaceFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// replaceFile writes data beside path and renames it over path.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".new"
	os.Remove(tmp)
	if err := WriteExclusive(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// SerialHex is a certificate serial as logs show it.
func SerialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return new(big.Int).Set(c.SerialNumber).Text(16)
}
