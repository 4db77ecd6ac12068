package soft

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// CreateAK creates an attestation key of type akAlg under the EK of type
// ekAlg and returns it as TPM2_Create would.
func (t *TPM) CreateAK(ctx context.Context, ekAlg, akAlg tpm2.TPMAlgID) (AKBlob, error) {
	tmpl, err := tpmfacts.AKTemplate(akAlg)
	if err != nil {
		return AKBlob{}, fmt.Errorf("soft TPM: create AK: %w", err)
	}
	var blob AKBlob
	err = t.do(ctx, func(st *state) (bool, error) {
		ek, created, err := t.ekLocked(st, ekAlg)
		if err != nil {
			return false, err
		}
		// Key generation happens under the TPM's lock, as on a TPM; only
		// this instance waits for it.
		key, err := t.newAKKey(st, akAlg)
		if err != nil {
			return created, fmt.Errorf("soft TPM: create AK: %w", err)
		}
		pub, err := withUnique(tmpl, key.Public())
		if err != nil {
			return created, fmt.Errorf("soft TPM: create AK: %w", err)
		}
		pubBytes := tpm2.Marshal(pub)
		name, err := nameOf(pub.NameAlg, pubBytes)
		if err != nil {
			return created, fmt.Errorf("soft TPM: create AK: %w", err)
		}
		priv, err := wrapAK(st.secret[:], ek.name, name, key)
		if err != nil {
			return created, fmt.Errorf("soft TPM: create AK: %w", err)
		}
		// As bytes, the way outPublic comes off the wire: Bytes() is then
		// free, and Contents() parses on demand.
		blob = AKBlob{EKAlg: ekAlg, Public: tpm2.BytesAs2B[tpm2.TPMTPublic](pubBytes), Private: tpm2.TPM2BPrivate{Buffer: priv}}
		return true, nil
	})
	return blob, err
}

func (t *TPM) newAKKey(st *state, akAlg tpm2.TPMAlgID) (crypto.Signer, error) {
	switch akAlg {
	case tpm2.TPMAlgRSA:
		if t.keys != nil {
			n := st.akCount
			st.akCount++
			return t.keys.RSAKey(t.host, fmt.Sprintf("ak%d", n))
		}
		return rsa.GenerateKey(rand.Reader, 2048)
	case tpm2.TPMAlgECC:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("unsupported AK algorithm %v", akAlg)
}

// The private blob: version || nonce || AES-256-GCM(PKCS#8 key), with the
// AK's name as additional data so that the blob loads only with the public
// area it was created with, under a key derived from this TPM's secret and
// the parent EK's name so that it loads only in this TPM under that EK.
const (
	akBlobVersion = 1
	akWrapLabel   = "VIGIL SOFT TPM AK"
	maxAKBlob     = 4096
)

func akWrapKey(secret, ekName []byte) (cipher.AEAD, error) {
	key := tpm2.KDFa(crypto.SHA256, secret, akWrapLabel, ekName, nil, 256)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func wrapAK(secret, ekName, akName []byte, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	aead, err := akWrapKey(secret, ekName)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(der)+aead.Overhead())
	out[0] = akBlobVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], der, akName), nil
}

// loadedAK is an AK as TPM2_Load leaves it: its key, public area and name.
type loadedAK struct {
	key  crypto.Signer
	pub  tpm2.TPMTPublic
	name []byte
	hash crypto.Hash // the signing scheme's hash
	alg  tpm2.TPMAlgID
	// qn is its qualified name under the EK it was loaded under.
	qn []byte
	// presigned are ECDSA nonces made ahead (PrepareSignatures), guarded
	// by the TPM's lock.
	presigned []presigned
}

// loadAK checks and unwraps an AK blob under the EK of blob.EKAlg, as
// TPM2_Load does, refusing a blob this TPM did not make.
func (t *TPM) loadAK(st *state, blob AKBlob) (*loadedAK, bool, error) {
	ek, created, err := t.ekLocked(st, blob.EKAlg)
	if err != nil {
		return nil, false, err
	}
	pubBytes := blob.Public.Bytes()
	priv := blob.Private.Buffer
	cacheKey := sha256.New()
	var lenBuf [4]byte
	binary.BigEndian.PutUint32(lenBuf[:], uint32(len(pubBytes)))
	cacheKey.Write(lenBuf[:])
	cacheKey.Write(pubBytes)
	cacheKey.Write(ek.name)
	cacheKey.Write(priv)
	var id [32]byte
	cacheKey.Sum(id[:0])
	if ak := t.aks.get(id); ak != nil {
		return ak, created, nil
	}
	ak, err := unwrapAK(st.secret[:], ek.name, pubBytes, priv)
	if err != nil {
		return nil, created, fmt.Errorf("soft TPM: load AK: %w", err)
	}
	// Its qualified name under this EK, which every quote carries, is
	// fixed for the loaded object: computed once, as the cache key names
	// the EK too.
	ekQN, err := ekQualifiedName(ek.name)
	if err != nil {
		return nil, created, err
	}
	if ak.qn, err = qualifiedName(ekQN, ak.name); err != nil {
		return nil, created, err
	}
	t.aks.put(id, ak)
	return ak, created, nil
}

var errAKIntegrity = fmt.Errorf("the private blob was not made by this TPM under this EK for this public area: %w", tpm2.TPMRCIntegrity)

func unwrapAK(secret, ekName, pubBytes, priv []byte) (*loadedAK, error) {
	pubp, err := tpm2.Unmarshal[tpm2.TPMTPublic](pubBytes)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	pub := *pubp
	// The name is the hash of these very bytes, so they must be the one
	// encoding of the structure (no trailing bytes).
	if !bytes.Equal(tpm2.Marshal(pub), pubBytes) {
		return nil, errors.New("public area: not in canonical form (trailing bytes?)")
	}
	name, err := nameOf(pub.NameAlg, pubBytes)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	aead, err := akWrapKey(secret, ekName)
	if err != nil {
		return nil, err
	}
	if len(priv) > maxAKBlob || len(priv) < 1+aead.NonceSize()+aead.Overhead() || priv[0] != akBlobVersion {
		return nil, errAKIntegrity
	}
	nonce := priv[1 : 1+aead.NonceSize()]
	der, err := aead.Open(nil, nonce, priv[1+aead.NonceSize():], name)
	if err != nil {
		return nil, errAKIntegrity
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private area: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private area holds %T", k)
	}
	want, err := tpm2.Pub(pub)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	if !publicKeysEqual(key.Public(), want) {
		return nil, errors.New("public and private areas do not match")
	}
	ak := &loadedAK{key: key, pub: pub, name: name}
	if err := ak.scheme(); err != nil {
		return nil, err
	}
	return ak, nil
}

// scheme reads the AK's signing scheme, refusing keys that are not
// restricted signing keys: only those may quote.
func (ak *loadedAK) scheme() error {
	a := ak.pub.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return fmt.Errorf("key is not a restricted signing key: %w", tpm2.TPMRCKey)
	}
	var hashAlg tpm2.TPMIAlgHash
	switch ak.pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := ak.pub.Parameters.RSADetail()
		if err != nil {
			return err
		}
		d, err := parms.Scheme.Details.RSASSA()
		if err != nil {
			return fmt.Errorf("AK scheme %v: only RSASSA is supported: %w", parms.Scheme.Scheme, tpm2.TPMRCScheme)
		}
		hashAlg, ak.alg = d.HashAlg, tpm2.TPMAlgRSASSA
	case tpm2.TPMAlgECC:
		parms, err := ak.pub.Parameters.ECCDetail()
		if err != nil {
			return err
		}
		d, err := parms.Scheme.Details.ECDSA()
		if err != nil {
			return fmt.Errorf("AK scheme %v: only ECDSA is supported: %w", parms.Scheme.Scheme, tpm2.TPMRCScheme)
		}
		hashAlg, ak.alg = d.HashAlg, tpm2.TPMAlgECDSA
	default:
		return fmt.Errorf("AK type %v: %w", ak.pub.Type, tpm2.TPMRCType)
	}
	h, err := hashAlg.Hash()
	if err != nil {
		return fmt.Errorf("AK scheme hash %v: %w", hashAlg, tpm2.TPMRCHash)
	}
	ak.hash = h
	return nil
}

// akCache keeps a few loaded AKs, like a TPM's transient object slots, so
// that quoting again with the same blob skips unwrapping and parsing it.
type akCache struct {
	ids  [akSlots][32]byte
	aks  [akSlots]*loadedAK
	next int
}

const akSlots = 3

func (c *akCache) get(id [32]byte) *loadedAK {
	for i, ak := range c.aks {
		if ak != nil && c.ids[i] == id {
			return ak
		}
	}
	return nil
}

func (c *akCache) put(id [32]byte, ak *loadedAK) {
	c.ids[c.next], c.aks[c.next] = id, ak
	c.next = (c.next + 1) % akSlots
}

// qualifiedName computes a child's qualified name from its parent's:
// nameAlg || H(parentQN || name) (TPM 2.0 Part 1, §16).
func qualifiedName(parentQN, name []byte) ([]byte, error) {
	if len(name) < 2 {
		return nil, errors.New("name too short")
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	h, err := alg.Hash()
	if err != nil {
		return nil, err
	}
	d := h.New()
	d.Write(parentQN)
	d.Write(name)
	return d.Sum(name[:2:2]), nil
}

// ekQualifiedName is the qualified name of a primary key in the
// endorsement hierarchy, whose own qualified name is its handle.
func ekQualifiedName(ekName []byte) ([]byte, error) {
	return qualifiedName(tpm2.HandleName(tpm2.TPMRHEndorsement).Buffer, ekName)
}
