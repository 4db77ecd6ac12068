package tlsutil

import (
	"bytes"
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
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// AdminCRLFile is the deployment's list of revoked admin client
// certificates, a PEM "X509 CRL" signed by the CA, in the TLS directory.
// Services refuse a client certificate on it at the handshake.
const AdminCRLFile = "admin.crl"

// MaxOperatorNameLen bounds an operator's name.
const MaxOperatorNameLen = 64

// CheckOperatorName accepts an operator's name: 1 to 64 ASCII letters,
// digits, '.', '_', '-' and '@'. The name is the subject CN of the
// operator's admin certificate and the base name of its files.
func CheckOperatorName(name string) error {
	if name == "" || len(name) > MaxOperatorNameLen {
		return fmt.Errorf("operator name %q: want 1 to %d characters", name, MaxOperatorNameLen)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-', r == '@':
		default:
			return fmt.Errorf("operator name %q: %q is not allowed (ASCII letters, digits, '.', '_', '-' and '@' are)", name, r)
		}
	}
	return nil
}

// IssuedAdmin is an admin client certificate IssueAdminCert wrote.
type IssuedAdmin struct {
	Name, CertFile, KeyFile string
	Cert                    *x509.Certificate
}

// IssueAdminCert issues an admin client certificate for the operator name
// (its subject CN, which the services record as the operator behind an
// action) from the CA in dir, and writes it and its key as name.crt and
// name.key (mode 0600) in outDir (dir if empty), refusing to overwrite
// either. validity 0 is InitDir's default; the certificate never outlives
// the CA.
func IssueAdminCert(dir, outDir, name string, validity time.Duration) (*IssuedAdmin, error) {
	if err := CheckOperatorName(name); err != nil {
		return nil, err
	}
	if validity < 0 {
		return nil, fmt.Errorf("validity %s: must not be negative", validity)
	}
	if validity == 0 {
		validity = 2 * 365 * 24 * time.Hour
	}
	if outDir == "" {
		outDir = dir
	}
	certFile, keyFile := filepath.Join(outDir, name+".crt"), filepath.Join(outDir, name+".key")
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return nil, fmt.Errorf("%s already exists; refusing to overwrite", f)
		}
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-5 * time.Minute) // tolerate small clock skew
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	if !notAfter.After(time.Now()) {
		return nil, fmt.Errorf("the CA in %s expired on %s", dir, ca.NotAfter.Format(time.RFC3339))
	}
	tmpl := adminTemplate(name)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial(), now, notAfter
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, err
	}
	if err := writeKey(keyFile, key); err != nil {
		return nil, err
	}
	if err := writeCert(certFile, der); err != nil {
		os.Remove(keyFile) // ours: WriteExclusive made it
		return nil, err
	}
	return &IssuedAdmin{Name: name, CertFile: certFile, KeyFile: keyFile, Cert: cert}, nil
}

// adminTemplate is the subject and usages of an admin client certificate:
// the services admit a client certificate of the CA with the client
// authentication usage (AdminIdentity).
func adminTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"Vigil"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// loadCA reads the CA certificate and key of dir.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CACert), filepath.Join(dir, CAKey))
	if err != nil {
		return nil, nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate %s: %w", filepath.Join(dir, CACert), err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("CA key %s: not a signing key", filepath.Join(dir, CAKey))
	}
	return ca, signer, nil
}

// loadCACerts reads the certificates of a CA file, skipping blocks that
// are not certificates as LoadCAPool does.
func loadCACerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cas []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			cas = append(cas, c)
		}
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return cas, nil
}

// ReadAdminCert reads an admin client certificate file and checks that
// the CA in dir issued it for client authentication: what revoking it by
// name needs (its serial).
func ReadAdminCert(dir, certFile string) (*x509.Certificate, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate found", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	cas, err := loadCACerts(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	if signer(cas, cert.CheckSignatureFrom) == nil {
		return nil, fmt.Errorf("%s: not issued by the CA in %s", certFile, dir)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("%s: not a client (admin) certificate", certFile)
	}
	return cert, nil
}

// signer is the first of cas that check accepts as the signer.
func signer(cas []*x509.Certificate, check func(*x509.Certificate) error) *x509.Certificate {
	for _, ca := range cas {
		if check(ca) == nil {
			return ca
		}
	}
	return nil
}

// Revocation is what RevokeAdminCert did.
type Revocation struct {
	File   string
	Serial *big.Int
	// Number is the CRL number of the list in File now; Entries, how many
	// certificates it revokes.
	Number  *big.Int
	Entries int
	// Already: the serial was on the list, which was left as it was.
	Already bool
}

// RevokeAdminCert puts serial on the admin CRL of dir (AdminCRLFile),
// signed by the CA in dir, creating the list if there is none. Each new
// list has the next CRL number and is valid until the CA expires; it is
// written beside the old one and renamed into place. A serial already on
// the list is not added again. Running services pick the list up on
// SIGHUP. Revocations are not serialized: run one at a time.
func RevokeAdminCert(dir string, serialNumber *big.Int) (*Revocation, error) {
	if serialNumber == nil || serialNumber.Sign() <= 0 {
		return nil, errors.New("a certificate serial is a positive number")
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, AdminCRLFile)
	old, err := readCRL(file, []*x509.Certificate{ca})
	if err != nil {
		return nil, err
	}
	res := &Revocation{File: file, Serial: serialNumber, Number: big.NewInt(0)}
	var entries []x509.RevocationListEntry
	if old != nil {
		res.Number = old.Number
		for _, e := range old.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serialNumber) == 0 {
				res.Already = true
			}
			entries = append(entries, x509.RevocationListEntry{SerialNumber: e.SerialNumber, RevocationTime: e.RevocationTime, ReasonCode: e.ReasonCode})
		}
	}
	if res.Already {
		res.Entries = len(entries)
		return res, nil
	}
	now := time.Now()
	entries = append(entries, x509.RevocationListEntry{SerialNumber: serialNumber, RevocationTime: now})
	if old != nil && old.Number != nil {
		res.Number = new(big.Int).Add(old.Number, big.NewInt(1))
	} else {
		res.Number = big.NewInt(1)
	}
	if !ca.NotAfter.After(now) {
		return nil, fmt.Errorf("the CA in %s expired on %s", dir, ca.NotAfter.Format(time.RFC3339))
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    res.Number,
		ThisUpdate:                now,
		NextUpdate:                ca.NotAfter,
		RevokedCertificateEntries: entries,
	}, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", file, err)
	}
	if err := replaceFile(file, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	res.Entries = len(entries)
	return res, nil
}

// readCRL reads and checks a CRL file: PEM "X509 CRL", signed by one of
// cas. A file that does not exist is no list (nil, nil).
func readCRL(file string, cas []*x509.Certificate) (*x509.RevocationList, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin CRL %s: %w", file, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "X509 CRL" {
		return nil, fmt.Errorf("admin CRL %s: no PEM \"X509 CRL\" block", file)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin CRL %s: %w", file, err)
	}
	if signer(cas, crl.CheckSignatureFrom) == nil {
		var last error
		for _, ca := range cas {
			last = crl.CheckSignatureFrom(ca)
		}
		return nil, fmt.Errorf("admin CRL %s: not signed by the deployment's CA: %w", file, last)
	}
	return crl, nil
}

// AdminCRL is the admin CRL of a TLS directory as a server enforces it:
// its VerifyConnection refuses, at the handshake, a client certificate
// whose serial the list revokes. Reload reads the file again (SIGHUP).
// The CA that must have signed the list is read once.
type AdminCRL struct {
	File string
	cas  []*x509.Certificate
	cur  atomic.Pointer[crlState]
}

// crlState is one list in force: nil list when there is no file.
type crlState struct {
	list    *x509.RevocationList
	revoked map[string]bool // serials, in hex
}

// LoadAdminCRL reads the admin CRL of dir, if there is one, checking its
// signature against the CA of dir (ca.crt). A list that cannot be read or
// is not signed by the CA is an error naming the file; no file revokes
// nothing.
func LoadAdminCRL(dir string) (*AdminCRL, error) {
	cas, err := loadCACerts(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	c := &AdminCRL{File: filepath.Join(dir, AdminCRLFile), cas: cas}
	if _, _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the file again. On success the new list is in force for
// new handshakes and Reload returns the lists before and after (nil: no
// file). On failure the list in force stays and the error names the file:
// a file that does not parse or is not signed by the CA; one whose CRL
// number is lower than the list in force (an older list put back); and a
// file removed while a list was in force (restart the service to drop
// every revocation).
func (c *AdminCRL) Reload() (before, after *x509.RevocationList, err error) {
	list, err := readCRL(c.File, c.cas)
	if err != nil {
		return nil, nil, err
	}
	old := c.cur.Load()
	if old != nil && old.list != nil {
		before = old.list
		if list == nil {
			return nil, nil, fmt.Errorf("admin CRL %s: the file is gone while a list is in force (restart to drop every revocation)", c.File)
		}
		if before.Number != nil && (list.Number == nil || list.Number.Cmp(before.Number) < 0) {
			return nil, nil, fmt.Errorf("admin CRL %s: CRL number %v is lower than %v in force (an older list?)", c.File, list.Number, before.Number)
		}
	}
	st := &crlState{list: list, revoked: map[string]bool{}}
	if list != nil {
		for _, e := range list.RevokedCertificateEntries {
			st.revoked[e.SerialNumber.Text(16)] = true
		}
	}
	c.cur.Store(st)
	return before, list, nil
}

// List is the list in force (nil: none).
func (c *AdminCRL) List() *x509.RevocationList { return c.cur.Load().list }

// Revoked reports whether the list in force revokes cert: its serial is on
// the list and its issuer is the list's.
func (c *AdminCRL) Revoked(cert *x509.Certificate) bool {
	st := c.cur.Load()
	if st.list == nil || cert == nil || cert.SerialNumber == nil {
		return false
	}
	return st.revoked[cert.SerialNumber.Text(16)] && bytes.Equal(cert.RawIssuer, st.list.RawIssuer)
}

// VerifyConnection is for tls.Config.VerifyConnection: it refuses a client
// certificate the list revokes (in full handshakes and resumptions alike).
func (c *AdminCRL) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if leaf := cs.PeerCertificates[0]; c.Revoked(leaf) {
		return fmt.Errorf("client certificate %q (serial %s) is revoked by %s", leaf.Subject.CommonName, SerialHex(leaf), c.File)
	}
	return nil
}

// RevokedSerials are the serials (hex) on a list, in its order.
func RevokedSerials(list *x509.RevocationList) []string {
	if list == nil {
		return nil
	}
	s := make([]string, 0, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		s = append(s, e.SerialNumber.Text(16))
	}
	return s
}
