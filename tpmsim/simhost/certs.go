package simhost

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"time"
)

// derive is the simulated host's only source of "randomness": a hash of
// the seed, a label and a counter. Everything the host writes follows from
// its seed, so two runs with one seed produce byte-identical logs and one
// boot policy fits a whole simulated fleet.
func derive(seed, label string, n uint32) []byte {
	h := sha256.New()
	io.WriteString(h, "vigil-simhost\x00")
	io.WriteString(h, seed)
	h.Write([]byte{0})
	io.WriteString(h, label)
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], n)
	h.Write(c[:])
	return h.Sum(nil)
}

// simKey derives a P-256 key from the seed. The key is as public as the
// seed: these certificates only have to look like Secure Boot keys in a
// log, never to protect anything. (Real db keys are RSA-2048; Go derives
// no RSA key from a seed, and nothing reading the log depends on the key
// type.)
func simKey(seed, label string) (*ecdsa.PrivateKey, error) {
	for n := uint32(0); n < 16; n++ {
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), derive(seed, "key:"+label, n))
		if err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("simhost: no P-256 key from seed for %s", label)
}

// rfc6979Signer signs deterministically: crypto/ecdsa uses RFC 6979 when
// given no random source, so a certificate is the same bytes every time.
type rfc6979Signer struct{ k *ecdsa.PrivateKey }

func (s rfc6979Signer) Public() crypto.PublicKey { return &s.k.PublicKey }

func (s rfc6979Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(nil, digest, opts)
}

// simCert makes a self-signed CA certificate named cn, derived from the
// seed: same seed, same DER.
func simCert(seed, cn string) ([]byte, error) {
	key, err := simKey(seed, cn)
	if err != nil {
		return nil, err
	}
	serial := new(big.Int).SetBytes(derive(seed, "serial:"+cn, 0)[:16])
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   cn,
			Organization: []string{"Vigil Simulated Platform"},
		},
		NotBefore:             time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	// The reader is only consulted for values the template leaves out;
	// the signer ignores it.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, rfc6979Signer{key})
	if err != nil {
		return nil, fmt.Errorf("simhost: certificate %q: %w", cn, err)
	}
	return der, nil
}
