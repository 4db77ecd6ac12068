package dsse

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// MinRSABits is the smallest RSA modulus accepted for policy signing.
const MinRSABits = 2048

// PublicKey is a key that may verify envelopes.
type PublicKey struct {
	// Key is an *ecdsa.PublicKey (P-256, P-384, P-521) or an
	// *rsa.PublicKey (at least MinRSABits).
	Key crypto.PublicKey
	// KeyID is Keylime's key ID for it (its ecdsa backend): the hex
	// SHA-256 of the key's PEM SubjectPublicKeyInfo text.
	KeyID string
	// CertKeyID is, for a key read from a certificate, Keylime's x509
	// backend key ID: the base64 of the certificate's PEM text.
	CertKeyID string
	// Source says where the key came from: "FILE" or "FILE block N".
	Source string
}

// String names the key for messages: its source and key ID.
func (k PublicKey) String() string {
	return fmt.Sprintf("%s (keyid %s)", k.Source, shortID(k.KeyID))
}

// KeyID is Keylime's key ID of a public key: the hex SHA-256 of its PEM
// SubjectPublicKeyInfo encoding (64-column base64 lines, as Python's
// cryptography writes it, and as encoding/pem does).
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return hex.EncodeToString(sum[:]), nil
}

// NewPublicKey checks that pub is a usable signing key and computes its
// key ID.
func NewPublicKey(pub crypto.PublicKey, source string) (PublicKey, error) {
	if err := checkKey(pub); err != nil {
		return PublicKey{}, fmt.Errorf("%s: %w", source, err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%s: %w", source, err)
	}
	return PublicKey{Key: pub, KeyID: id, Source: source}, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not P-256, P-384 or P-521", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits, at least %d required", k.N.BitLen(), MinRSABits)
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T: want ECDSA or RSA", pub)
}

// ParsePublicKeys reads every public key in PEM data: PUBLIC KEY
// (SubjectPublicKeyInfo), RSA PUBLIC KEY (PKCS #1) and CERTIFICATE blocks
// (the certificate's key; the certificate itself is not validated). Other
// blocks, a private key in particular, are refused; source names the file in
// errors.
func ParsePublicKeys(data []byte, source string) ([]PublicKey, error) {
	var blocks []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "EC PARAMETERS" {
			blocks = append(blocks, b)
		}
	}
	var out []PublicKey
	for i, b := range blocks {
		where := source
		if len(blocks) > 1 {
			where = fmt.Sprintf("%s block %d", source, i+1)
		}
		var (
			pub      crypto.PublicKey
			certID   string
			parseErr error
		)
		switch b.Type {
		case "PUBLIC KEY":
			pub, parseErr = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, parseErr = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, parseErr = x509.ParseCertificate(b.Bytes); parseErr == nil {
				pub = c.PublicKey
				certID = base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
			}
		default:
			return nil, fmt.Errorf("%s: a PEM %q block: want PUBLIC KEY or CERTIFICATE", where, b.Type)
		}
		if parseErr != nil {
			return nil, fmt.Errorf("%s: %s: %w", where, b.Type, parseErr)
		}
		k, err := NewPublicKey(pub, where)
		if err != nil {
			return nil, err
		}
		k.CertKeyID = certID
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM public key or certificate", source)
	}
	return out, nil
}

// LoadPublicKeys reads the public keys of each file (see ParsePublicKeys).
func LoadPublicKeys(files ...string) ([]PublicKey, error) {
	var out []PublicKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ks, err := ParsePublicKeys(data, f)
		if err != nil {
			return nil, err
		}
		out = append(out, ks...)
	}
	return out, nil
}

// Signer signs envelopes with a private key.
type Signer struct {
	key crypto.Signer
	// KeyID is Keylime's key ID of the public half (see KeyID).
	KeyID string
	// Source names where the key came from.
	Source string
}

// Public is the signer's public key.
func (s *Signer) Public() (PublicKey, error) {
	return NewPublicKey(s.key.Public(), s.Source)
}

// NewSigner makes a signer of an ECDSA or RSA private key.
func NewSigner(key crypto.Signer, source string) (*Signer, error) {
	switch key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
	default:
		return nil, fmt.Errorf("%s: unsupported private key type %T: want ECDSA or RSA", source, key)
	}
	pub, err := NewPublicKey(key.Public(), source)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, KeyID: pub.KeyID, Source: source}, nil
}

// ParsePrivateKey reads one private key from PEM data: PRIVATE KEY
// (PKCS #8), EC PRIVATE KEY (SEC 1) or RSA PRIVATE KEY (PKCS #1). An
// EC PARAMETERS block before it (as `openssl ecparam -genkey` writes) is
// skipped; an encrypted key is refused.
func ParsePrivateKey(data []byte, source string) (*Signer, error) {
	var found *Signer
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "EC PARAMETERS" {
			continue
		}
		if _, encrypted := b.Headers["DEK-Info"]; encrypted || b.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, fmt.Errorf("%s: the private key is encrypted; give an unencrypted one", source)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			return nil, fmt.Errorf("%s: a PEM %q block: want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", source, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", source, b.Type, err)
		}
		if found != nil {
			return nil, fmt.Errorf("%s: more than one private key", source)
		}
		cs, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: unsupported private key type %T", source, key)
		}
		if found, err = NewSigner(cs, source); err != nil {
			return nil, err
		}
	}
	if found == nil {
		return nil, errors.New(source + ": no PEM private key")
	}
	return found, nil
}

// LoadSigner reads a private key file (see ParsePrivateKey).
func LoadSigner(file string) (*Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParsePrivateKey(data, file)
}
