package soft

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// ekKey is an endorsement key with what a TPM keeps alongside it.
type ekKey struct {
	alg      tpm2.TPMAlgID
	key      crypto.Signer    // *rsa.PrivateKey or *ecdsa.PrivateKey
	ecdh     *ecdh.PrivateKey // the ECC key, for ECDH
	pubBytes []byte           // the marshalled TPMT_PUBLIC
	name     []byte           // its TPM name
	cert     []byte           // DER, or nil
}

// ekTemplate is the TCG default (low range) EK template for the algorithm.
// It shares its parameters with the package-level templates in go-tpm, so
// it must not be modified or handed out; publicArea hands out copies.
func ekTemplate(alg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	switch alg {
	case tpm2.TPMAlgRSA:
		return tpm2.RSAEKTemplate, nil
	case tpm2.TPMAlgECC:
		return tpm2.ECCEKTemplate, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("unsupported EK algorithm %v (want RSA or ECC)", alg)
}

func unmarshalPublic(b []byte) (tpm2.TPMTPublic, error) {
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	return *p, nil
}

// generateEK makes a new EK of type alg, from keys when it is set and the
// key is RSA.
func generateEK(alg tpm2.TPMAlgID, keys *KeyCache, host int) (*ekKey, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case tpm2.TPMAlgRSA:
		if keys != nil {
			key, err = keys.RSAKey(host, "ek")
		} else {
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		}
	case tpm2.TPMAlgECC:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("unsupported EK algorithm %v (want RSA or ECC)", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %v EK: %w", alg, err)
	}
	return newEKKey(alg, key)
}

func newEKKey(alg tpm2.TPMAlgID, key crypto.Signer) (*ekKey, error) {
	tmpl, err := ekTemplate(alg)
	if err != nil {
		return nil, err
	}
	pub, err := withUnique(tmpl, key.Public())
	if err != nil {
		return nil, fmt.Errorf("%v EK: %w", alg, err)
	}
	pubBytes := tpm2.Marshal(pub)
	name, err := nameOf(pub.NameAlg, pubBytes)
	if err != nil {
		return nil, fmt.Errorf("%v EK name: %w", alg, err)
	}
	ek := &ekKey{alg: alg, key: key, pubBytes: pubBytes, name: name}
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		if ek.ecdh, err = k.ECDH(); err != nil {
			return nil, fmt.Errorf("%v EK: %w", alg, err)
		}
	}
	return ek, nil
}

// nameOf is an object's name from its marshalled public area, as
// tpm2.ObjectName computes it without marshalling again: nameAlg ||
// H_nameAlg(TPMT_PUBLIC).
func nameOf(nameAlg tpm2.TPMAlgID, pubBytes []byte) ([]byte, error) {
	h, err := nameAlg.Hash()
	if err != nil {
		return nil, err
	}
	d := h.New()
	d.Write(pubBytes)
	return d.Sum(binary.BigEndian.AppendUint16(nil, uint16(nameAlg))), nil
}

// publicArea returns a fresh copy of the EK's TPMT_PUBLIC.
func (ek *ekKey) publicArea() (tpm2.TPMTPublic, error) {
	return unmarshalPublic(ek.pubBytes)
}

// withUnique fills the unique field of a template with the public key, after
// checking that the key is what the template asks for: an RSA key of the
// template's size with the default exponent, or a point on its curve.
func withUnique(tmpl tpm2.TPMTPublic, pub crypto.PublicKey) (tpm2.TPMTPublic, error) {
	switch tmpl.Type {
	case tpm2.TPMAlgRSA:
		parms, err := tmpl.Parameters.RSADetail()
		if err != nil {
			return tmpl, err
		}
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return tmpl, fmt.Errorf("key is %T, want RSA", pub)
		}
		bits := int(parms.KeyBits)
		if k.N.BitLen() != bits {
			return tmpl, fmt.Errorf("RSA key of %d bits, want %d", k.N.BitLen(), bits)
		}
		if parms.Exponent != 0 && int(parms.Exponent) != k.E || parms.Exponent == 0 && k.E != 65537 {
			return tmpl, fmt.Errorf("RSA exponent %d does not match the template", k.E)
		}
		tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, bits/8))})
		return tmpl, nil
	case tpm2.TPMAlgECC:
		parms, err := tmpl.Parameters.ECCDetail()
		if err != nil {
			return tmpl, err
		}
		if parms.CurveID != tpm2.TPMECCNistP256 {
			return tmpl, fmt.Errorf("ECC curve %v is not supported (want NIST P-256)", parms.CurveID)
		}
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return tmpl, fmt.Errorf("key is %T, want ECC P-256", pub)
		}
		pt, err := k.Bytes()
		if err != nil {
			return tmpl, err
		}
		// Uncompressed point: 0x04 || X || Y, each as long as the curve's
		// field, which is how the TPM sizes them too.
		n := (len(pt) - 1) / 2
		tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1 : 1+n]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[1+n:]},
		})
		return tmpl, nil
	}
	return tmpl, fmt.Errorf("unsupported key type %v", tmpl.Type)
}

// Manufacturer is a simulated TPM maker: the CA that signs EK certificates
// at the factory and the identity it writes into them.
type Manufacturer struct {
	// Cert and Key are the issuing CA. Give a registrar Cert (or its root)
	// as an EK root.
	Cert *x509.Certificate
	Key  crypto.Signer
	// VendorID is the TPM_PT_MANUFACTURER value, four ASCII characters;
	// 0 means "VGIL".
	VendorID uint32
	// Model is the TPM model string; "" means "vigil-soft-tpm".
	Model string
}

// DefaultVendorID is "VGIL", the vendor ID soft TPMs report by default.
const DefaultVendorID uint32 = 'V'<<24 | 'G'<<16 | 'I'<<8 | 'L'

// NewManufacturer makes a manufacturer with a fresh self-signed ECDSA P-256
// CA named commonName.
func NewManufacturer(commonName string) (*Manufacturer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Vigil simulation"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("manufacturer CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Manufacturer{Cert: cert, Key: key}, nil
}

// ParseManufacturer reads a manufacturer CA from its PEM certificate and PEM
// (PKCS#8, PKCS#1 or SEC 1) private key.
func ParseManufacturer(certPEM, keyPEM []byte) (*Manufacturer, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("manufacturer certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("manufacturer certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("manufacturer key: no PEM block")
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("manufacturer key: unexpected PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("manufacturer key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("manufacturer key: %T cannot sign", key)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, errors.New("manufacturer key does not belong to the manufacturer certificate")
	}
	return &Manufacturer{Cert: cert, Key: signer}, nil
}

// CertPEM is the CA certificate in PEM form, for a registrar's EK roots.
func (m *Manufacturer) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Cert.Raw})
}

// KeyPEM is the CA key in PKCS#8 PEM form.
func (m *Manufacturer) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(m.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TCG OIDs (TCG EK Credential Profile 2.x, §3.2).
var (
	oidTPMManufacturer     = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel            = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion          = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTPMSpecification    = asn1.ObjectIdentifier{2, 23, 133, 2, 16}
	oidEKCertificateEKU    = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidSubjectAltName      = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirectoryAtt = asn1.ObjectIdentifier{2, 5, 29, 9}
)

// tcgAttribute is one AttributeTypeAndValue of the TPM's directoryName; the
// profile wants UTF8String values.
type tcgAttribute struct {
	Type  asn1.ObjectIdentifier
	Value string `asn1:"utf8"`
}

// tcgRDNSET is a relative distinguished name (encoding/asn1 encodes slice
// types whose name ends in SET as SET OF).
type tcgRDNSET []tcgAttribute

// tpmSpecification is the TPMSpecification attribute: the TPM library
// specification the TPM implements.
type tpmSpecification struct {
	Family   string `asn1:"utf8"`
	Level    int
	Revision int
}

type directoryAttribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

// IssueEKCertificate signs a TCG EK certificate for pub. firmware is the
// TPM's firmware version; its high 32 bits become the tpmVersion.
func (m *Manufacturer) IssueEKCertificate(pub crypto.PublicKey, firmware uint64) ([]byte, error) {
	vendor := m.VendorID
	if vendor == 0 {
		vendor = DefaultVendorID
	}
	model := m.Model
	if model == "" {
		model = "vigil-soft-tpm"
	}
	// One multi-valued RDN, as the profile's example and swtpm write it.
	dirName, err := asn1.Marshal([]tcgRDNSET{{
		{Type: oidTPMManufacturer, Value: fmt.Sprintf("id:%08X", vendor)},
		{Type: oidTPMModel, Value: model},
		{Type: oidTPMVersion, Value: fmt.Sprintf("id:%08X", uint32(firmware>>32))},
	}})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		return nil, err
	}
	spec, err := asn1.Marshal(tpmSpecification{Family: "2.0", Level: 0, Revision: 164})
	if err != nil {
		return nil, err
	}
	sda, err := asn1.Marshal([]directoryAttribute{{Type: oidTPMSpecification, Values: []asn1.RawValue{{FullBytes: spec}}}})
	if err != nil {
		return nil, err
	}
	var usage x509.KeyUsage
	switch pub.(type) {
	case *rsa.PublicKey:
		usage = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey:
		usage = x509.KeyUsageKeyAgreement
	default:
		return nil, fmt.Errorf("EK key %T is neither RSA nor ECC", pub)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The profile leaves the subject empty; the TPM is named by the
		// critical subjectAltName instead.
		NotBefore:             time.Now().UTC().Truncate(time.Hour).Add(-time.Hour),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  false,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificateEKU},
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: true, Value: san},
			{Id: oidSubjectDirectoryAtt, Value: sda},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.Cert, pub, m.Key)
	if err != nil {
		return nil, fmt.Errorf("issue EK certificate: %w", err)
	}
	return der, nil
}

func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, always 16 bytes
	return new(big.Int).SetBytes(b), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
