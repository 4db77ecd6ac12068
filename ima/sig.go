package ima

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// VerificationKey is a public key IMA file signatures may be checked with,
// indexed as the kernel does by its 32-bit key id (the low four bytes of the
// key's SHA-1 identifier).
type VerificationKey struct {
	KeyID   uint32
	Public  crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
	Keyring string           // where it came from: "policy" or a kernel keyring name
	DER     []byte           // SubjectPublicKeyInfo
}

// keylimeKeyring is the JSON Keylime stores in "verification-keys".
type keylimeKeyring struct {
	Meta    *struct{ Version int } `json:"meta,omitempty"`
	KeyIDs  []uint32               `json:"keyids"`
	PubKeys []string               `json:"pubkeys"`
}

// ParseVerificationKeys reads the "verification-keys" string of a runtime
// policy: JSON holding base64 DER public keys and, optionally, their key ids.
func ParseVerificationKeys(s string) ([]VerificationKey, error) {
	var kr keylimeKeyring
	if err := json.Unmarshal([]byte(s), &kr); err != nil {
		// Keylime sometimes stores the JSON encoded twice.
		var inner string
		if json.Unmarshal([]byte(s), &inner) != nil || json.Unmarshal([]byte(inner), &kr) != nil {
			return nil, &PolicyError{Key: "verification-keys", Msg: "not Keylime keyring JSON: " + err.Error()}
		}
	}
	out := make([]VerificationKey, 0, len(kr.PubKeys))
	for i, b64 := range kr.PubKeys {
		der, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, &PolicyError{Key: fmt.Sprintf("verification-keys.pubkeys[%d]", i), Msg: "not base64"}
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, &PolicyError{Key: fmt.Sprintf("verification-keys.pubkeys[%d]", i), Msg: "not a DER public key: " + err.Error()}
		}
		k, err := newKey(pub, der, "policy")
		if err != nil {
			return nil, &PolicyError{Key: fmt.Sprintf("verification-keys.pubkeys[%d]", i), Msg: err.Error()}
		}
		if i < len(kr.KeyIDs) && kr.KeyIDs[i] != 0 {
			k.KeyID = kr.KeyIDs[i]
		}
		out = append(out, k)
	}
	return out, nil
}

// VerificationKeysJSON renders keys as Keylime's "verification-keys" string.
func VerificationKeysJSON(keys []VerificationKey) (string, error) {
	kr := keylimeKeyring{KeyIDs: []uint32{}, PubKeys: []string{}}
	for _, k := range keys {
		kr.KeyIDs = append(kr.KeyIDs, k.KeyID)
		kr.PubKeys = append(kr.PubKeys, base64.StdEncoding.EncodeToString(k.DER))
	}
	b, err := json.Marshal(kr)
	return string(b), err
}

func newKey(pub crypto.PublicKey, der []byte, keyring string) (VerificationKey, error) {
	id, err := keyIDv2(pub)
	if err != nil {
		return VerificationKey{}, err
	}
	if der == nil {
		if der, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return VerificationKey{}, err
		}
	}
	return VerificationKey{KeyID: id, Public: pub, Keyring: keyring, DER: der}, nil
}

// keyIDv2 is the kernel's key id for keys without a certificate: the last
// four bytes of SHA-1 over the PKCS#1 RSA key or the uncompressed EC point.
func keyIDv2(pub crypto.PublicKey) (uint32, error) {
	var b []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		b = x509.MarshalPKCS1PublicKey(k)
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil {
			return 0, fmt.Errorf("unsupported EC key: %v", err)
		}
		b = e.Bytes()
	default:
		return 0, fmt.Errorf("unsupported key type %T (RSA and ECDSA only)", pub)
	}
	s := sha1.Sum(b)
	return binary.BigEndian.Uint32(s[16:]), nil
}

// KeyFromBytes reads a key the way Keylime reads a measured key buffer: an
// X.509 certificate (DER or PEM, key id from its subject key identifier) or
// a public key (DER or PEM). It reports false when data holds no key.
func KeyFromBytes(data []byte, keyring string) (VerificationKey, bool, error) {
	// The key outlives the parser's buffers that data may point into.
	der := bytes.Clone(data)
	if blk, _ := pem.Decode(data); blk != nil {
		der = blk.Bytes
	}
	if cert, err := x509.ParseCertificate(der); err == nil {
		k, err := newKey(cert.PublicKey, cert.RawSubjectPublicKeyInfo, keyring)
		if err != nil {
			return VerificationKey{}, true, err
		}
		if skid := cert.SubjectKeyId; len(skid) >= 4 {
			k.KeyID = binary.BigEndian.Uint32(skid[len(skid)-4:])
		}
		return k, true, nil
	}
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		k, err := newKey(pub, der, keyring)
		return k, true, err
	}
	return VerificationKey{}, false, nil
}

// Signature header types and version (security/integrity/integrity.h).
const (
	xattrDigsig         = 3 // EVM_IMA_XATTR_DIGSIG
	xattrPortableDigsig = 5 // EVM_XATTR_PORTABLE_DIGSIG
	sigV2HeaderLen      = 9 // type, version, hash_algo, keyid[4], sig_size[2]
)

var errNoKey = errors.New("no key with the signature's key id")

// verifySignature checks an IMA v2 signature (struct signature_v2_hdr) over
// the file digest with the first key whose id matches.
func verifySignature(keys []VerificationKey, sig []byte, alg Algorithm, digest []byte) error {
	if len(sig) < sigV2HeaderLen {
		return fmt.Errorf("signature is %d bytes, shorter than its header", len(sig))
	}
	if sig[0] != xattrDigsig && sig[0] != xattrPortableDigsig {
		return fmt.Errorf("signature type %d is not a digital signature", sig[0])
	}
	if sig[1] != 2 {
		return fmt.Errorf("signature version %d unsupported (v2 only)", sig[1])
	}
	salg := linuxHashAlgo(sig[2])
	if salg != alg {
		return fmt.Errorf("signature over %s, file digest is %s", salg, alg)
	}
	h := alg.CryptoHash()
	if h == 0 || alg == MD5 {
		return fmt.Errorf("signature hash %s: %w", alg, ErrUnsupportedHash)
	}
	keyID := binary.BigEndian.Uint32(sig[3:7])
	size := int(binary.BigEndian.Uint16(sig[7:9]))
	body := sig[sigV2HeaderLen:]
	if size != len(body) {
		return fmt.Errorf("signature header says %d bytes, %d follow", size, len(body))
	}
	found := false
	for _, k := range keys {
		if k.KeyID != keyID {
			continue
		}
		found = true
		var err error
		switch pub := k.Public.(type) {
		case *rsa.PublicKey:
			err = rsa.VerifyPKCS1v15(pub, h, digest, body)
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest, body) {
				err = errors.New("ECDSA verification failed")
			}
		default:
			err = fmt.Errorf("unsupported key type %T", pub)
		}
		if err == nil {
			return nil
		}
	}
	if !found {
		return fmt.Errorf("key id %08x: %w", keyID, errNoKey)
	}
	return fmt.Errorf("signature by key %08x does not verify", keyID)
}

// ReadVerificationKey reads an IMA signature verification key from a file's
// contents, as Keylime's --add-ima-signature-verification-key does: an
// X.509 certificate (PEM or DER; its key id is the subject key identifier's
// last four bytes, as the kernel's) or a public key (PEM "PUBLIC KEY" or
// "RSA PUBLIC KEY", or DER SubjectPublicKeyInfo; its key id computed as the
// kernel does). Unlike Keylime it refuses a private key: only the public
// half belongs in a policy, and the file given should be that half. RSA and
// ECDSA keys only, as IMA signs with.
func ReadVerificationKey(data []byte) (VerificationKey, error) {
	if blk, _ := pem.Decode(data); blk != nil {
		switch {
		case bytes.Contains([]byte(blk.Type), []byte("PRIVATE KEY")):
			return VerificationKey{}, fmt.Errorf("a private key (PEM %q): give its public key or certificate", blk.Type)
		case blk.Type == "RSA PUBLIC KEY":
			pub, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return VerificationKey{}, fmt.Errorf("PEM %q: %v", blk.Type, err)
			}
			return newKey(pub, nil, "policy")
		case blk.Type != "CERTIFICATE" && blk.Type != "PUBLIC KEY":
			return VerificationKey{}, fmt.Errorf("PEM %q: neither a CERTIFICATE nor a PUBLIC KEY", blk.Type)
		}
	} else if _, err := x509.ParsePKCS8PrivateKey(data); err == nil {
		return VerificationKey{}, errors.New("a private key (DER PKCS #8): give its public key or certificate")
	}
	k, isKey, err := KeyFromBytes(data, "policy")
	if !isKey {
		return VerificationKey{}, errors.New("neither an X.509 certificate nor a public key (PEM or DER)")
	}
	if err != nil {
		return VerificationKey{}, err
	}
	return k, nil
}
