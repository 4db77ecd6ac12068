package registrar

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// EK policy modes, as given to --ek-policy.
const (
	EKPolicyChain            = "chain"
	EKPolicyAllowlist        = "allowlist"
	EKPolicyChainOrAllowlist = "chain-or-allowlist"
	EKPolicyAny              = "any"
)

// EKPolicy decides whether an endorsement key belongs to a genuine TPM the
// operator trusts.
type EKPolicy struct {
	Mode string
	// Roots and Intermediates verify EK certificate chains.
	Roots, Intermediates *x509.CertPool
	// Allow holds hex SHA-256 hashes of EK PKIX public keys.
	Allow map[string]bool
}

// Validate reports a policy that cannot admit anything, or an unknown mode.
func (p EKPolicy) Validate() error {
	switch p.Mode {
	case EKPolicyChain:
		if p.Roots == nil {
			return errors.New("--ek-policy chain needs --ek-roots DIR with at least one root certificate")
		}
	case EKPolicyAllowlist:
		if p.Allow == nil {
			return errors.New("--ek-policy allowlist needs --ek-allow FILE")
		}
	case EKPolicyChainOrAllowlist:
		if p.Roots == nil && p.Allow == nil {
			return errors.New("--ek-policy chain-or-allowlist needs --ek-roots DIR or --ek-allow FILE")
		}
	case EKPolicyAny:
	default:
		return fmt.Errorf("unknown --ek-policy %q (want chain, allowlist, chain-or-allowlist or any)", p.Mode)
	}
	return nil
}

// EKRejected is returned when the EK policy refuses an EK.
type EKRejected struct{ Reason string }

func (e *EKRejected) Error() string { return "EK refused: " + e.Reason }

// Check returns which rule admits the EK ("chain:<root CN>", "allowlist",
// "any") or an *EKRejected saying why none does.
func (p EKPolicy) Check(ek *tpm2.TPMTPublic, certDER []byte) (string, error) {
	hash, err := EKHash(ek)
	if err != nil {
		return "", &EKRejected{Reason: err.Error()}
	}
	var reasons []string
	if p.Mode == EKPolicyChain || p.Mode == EKPolicyChainOrAllowlist {
		trust, err := p.checkChain(ek, certDER)
		if err == nil {
			return trust, nil
		}
		reasons = append(reasons, err.Error())
	}
	if p.Mode == EKPolicyAllowlist || p.Mode == EKPolicyChainOrAllowlist {
		if p.Allow[hash] {
			return "allowlist", nil
		}
		reasons = append(reasons, "EK sha256 "+hash+" is not on the allowlist")
	}
	if p.Mode == EKPolicyAny {
		return "any", nil
	}
	return "", &EKRejected{Reason: strings.Join(reasons, "; ")}
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

func (p EKPolicy) checkChain(ek *tpm2.TPMTPublic, certDER []byte) (string, error) {
	if p.Roots == nil {
		return "", errors.New("no EK roots configured")
	}
	if len(certDER) == 0 {
		return "", errors.New("no EK certificate presented")
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return "", fmt.Errorf("EK certificate: %w", err)
	}
	certKey, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return "", fmt.Errorf("EK certificate key: %w", err)
	}
	ekKey, err := ekPKIX(ek)
	if err != nil {
		return "", err
	}
	if !bytes.Equal(certKey, ekKey) {
		return "", errors.New("EK certificate is for another key than the EK presented")
	}
	// The TCG EK profile puts the TPM's manufacturer, model and version in a
	// critical subjectAltName holding only a directoryName, which crypto/x509
	// does not interpret and would otherwise treat as unhandled.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(oid asn1.ObjectIdentifier) bool {
		return oid.Equal(oidSubjectAltName)
	})
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         p.Roots,
		Intermediates: p.Intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return "", fmt.Errorf("EK certificate (issuer %q) does not chain to a configured root: %w", cert.Issuer.CommonName, err)
	}
	root := chains[0][len(chains[0])-1]
	return "chain:" + root.Subject.CommonName, nil
}

// ekPKIX is the DER SubjectPublicKeyInfo of a TPM public key.
func ekPKIX(pub *tpm2.TPMTPublic) ([]byte, error) {
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("EK public area: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("EK public key: %w", err)
	}
	return der, nil
}

// EKHash is the hex SHA-256 of the EK's DER SubjectPublicKeyInfo: the value
// EK allowlists hold and the default agent ID. It is the same whether taken
// from the TPM or from the EK certificate.
func EKHash(pub *tpm2.TPMTPublic) (string, error) {
	der, err := ekPKIX(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// LoadEKRoots reads every certificate (PEM, possibly several per file, or
// DER) in dir. Self-signed ones become roots, the others intermediates.
// See LoadEKCerts for which files are read and which are refused.
func LoadEKRoots(dir string) (roots, intermediates *x509.CertPool, err error) {
	rs, is, err := LoadEKCerts(dir)
	if err != nil {
		return nil, nil, err
	}
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	for _, c := range rs {
		roots.AddCert(c)
	}
	for _, c := range is {
		intermediates.AddCert(c)
	}
	return roots, intermediates, nil
}

// certExts are the file name extensions that say a file holds
// certificates: such a file that holds none is refused, not skipped.
var certExts = map[string]bool{".crt": true, ".cer": true, ".der": true, ".pem": true}

// LoadEKCerts reads the certificates of an --ek-roots directory and splits
// them into self-signed roots and intermediates. Files that hold no
// certificate (keys, serial counters, notes) are ignored, except that a
// file is refused, with its path in the error, when it holds a PEM
// CERTIFICATE block that does not parse, or when its name ends in .crt,
// .cer, .der or .pem and it holds neither a DER certificate nor any PEM
// block: a corrupt root must not silently narrow the policy. At least one
// root is required.
func LoadEKCerts(dir string) (roots, intermediates []*x509.Certificate, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--ek-roots: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--ek-roots: %w", err)
		}
		certs, err := parseCerts(b, certExts[strings.ToLower(filepath.Ext(path))])
		if err != nil {
			return nil, nil, fmt.Errorf("--ek-roots %s: %w", path, err)
		}
		for _, c := range certs {
			if isSelfSigned(c) {
				roots = append(roots, c)
			} else {
				intermediates = append(intermediates, c)
			}
		}
	}
	if len(roots) == 0 {
		return nil, nil, fmt.Errorf("--ek-roots %s: no self-signed root certificate found", dir)
	}
	return roots, intermediates, nil
}

// parseCerts reads a DER certificate or the CERTIFICATE blocks of PEM
// data. A CERTIFICATE block that does not parse is an error; so is data
// that is neither DER nor PEM when certFile says the file's name promises
// certificates.
func parseCerts(b []byte, certFile bool) ([]*x509.Certificate, error) {
	if c, err := x509.ParseCertificate(b); err == nil {
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	blocks := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		blocks++
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if blocks == 0 && certFile {
		return nil, errors.New("neither a DER certificate nor PEM")
	}
	return out, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// LoadEKAllowlist reads hex SHA-256 EK hashes, one per line; blank lines and
// '#' comments are ignored.
func LoadEKAllowlist(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--ek-allow: %w", err)
	}
	defer f.Close()
	allow := make(map[string]bool)
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("--ek-allow %s:%d: want 64 hex digits (SHA-256 of the EK public key), got %q", path, line, s)
		}
		allow[s] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--ek-allow %s: %w", path, err)
	}
	return allow, nil
}
