package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// AK is an attestation key ready to check quotes: its public area when
// known, its TPM name, and the Go public key converted once.
type AK struct {
	// Public is the AK's TPMT_PUBLIC. It is the zero value when the key was
	// given only as a PEM public key.
	Public tpm2.TPMTPublic
	// Name is the AK's TPM name (nameAlg || H(TPMT_PUBLIC)), the identity the
	// registrar enrolls. Empty when unknown (PEM keys).
	Name []byte

	key crypto.PublicKey
}

// NewAK prepares a TPMT_PUBLIC for quote checks. Only RSA and ECC signing
// keys are accepted.
func NewAK(pub tpm2.TPMTPublic) (*AK, error) {
	if pub.Type != tpm2.TPMAlgRSA && pub.Type != tpm2.TPMAlgECC {
		return nil, fmt.Errorf("AK: key type %#04x is neither RSA nor ECC", uint16(pub.Type))
	}
	if !pub.ObjectAttributes.SignEncrypt {
		return nil, errors.New("AK: key is not a signing key (sign attribute clear)")
	}
	key, err := tpm2.Pub(pub)
	if err != nil {
		return nil, fmt.Errorf("AK: %w", err)
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("AK: name: %w", err)
	}
	return &AK{Public: pub, Name: name.Buffer, key: key}, nil
}

// NewAKFromKey prepares a bare public key (RSA or ECDSA) for quote checks.
// Without the TPMT_PUBLIC the quote's qualifiedSigner cannot be checked.
func NewAKFromKey(key crypto.PublicKey) (*AK, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return &AK{key: key}, nil
}

func checkKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < 1024 {
			return errors.New("AK: RSA modulus missing or shorter than 1024 bits")
		}
		if k.E < 3 || k.E%2 == 0 {
			return fmt.Errorf("AK: RSA exponent %d is invalid", k.E)
		}
	case *ecdsa.PublicKey:
		if k.X == nil || k.Y == nil || !k.Curve.IsOnCurve(k.X, k.Y) {
			return errors.New("AK: ECC point is not on the curve")
		}
	default:
		return fmt.Errorf("AK: unsupported public key type %T", key)
	}
	return nil
}

// PublicKey returns the AK as a Go public key.
func (ak *AK) PublicKey() crypto.PublicKey { return ak.key }

// ParseAK reads an AK given as a TPM2B_PUBLIC, a TPMT_PUBLIC or a PEM public
// key (PKIX "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY"); the format is detected.
func ParseAK(b []byte) (*AK, error) {
	if trimmed := bytes.TrimSpace(b); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, _ := pem.Decode(trimmed)
		if block == nil {
			return nil, errors.New("AK: PEM block does not decode")
		}
		var key crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			return nil, fmt.Errorf("AK: PEM block type %q is not a public key", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("AK: PEM %s: %w", block.Type, err)
		}
		return NewAKFromKey(key)
	}
	// A TPM2B_PUBLIC is a size prefix that covers the rest exactly; a
	// TPMT_PUBLIC starts with its key type (0x0001 RSA, 0x0023 ECC), which
	// never equals the remaining length of a well-formed key.
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		if pub, err := unmarshalExact[tpm2.TPMTPublic](b[2:]); err == nil {
			return NewAK(*pub)
		}
	}
	pub, err := unmarshalExact[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("AK: neither TPM2B_PUBLIC, TPMT_PUBLIC nor PEM: %w", err)
	}
	return NewAK(*pub)
}

// unmarshalExact decodes a TPM structure and insists that it used every
// byte: go-tpm's Unmarshal ignores what follows.
func unmarshalExact[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (*T, error) {
	v, err := tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if n := len(tpm2.Marshal(*v)); n != len(b) {
		return nil, fmt.Errorf("%d trailing bytes after the structure (at byte offset %d)", len(b)-n, n)
	}
	return v, nil
}
