package soft

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rsa"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// credentialLabel is the label MakeCredential uses to seal the seed to the
// EK; RSA-OAEP takes it with its terminating NUL.
const credentialLabel = "IDENTITY"

// ActivateCredential recovers the credential the registrar sealed to the
// EK of ak.EKAlg and the name of ak with TPM2_MakeCredential (or
// tpm2.CreateCredential), as TPM2_ActivateCredential does.
func (t *TPM) ActivateCredential(ctx context.Context, ak AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error) {
	var out []byte
	err := t.do(ctx, func(st *state) (bool, error) {
		key, created, err := t.loadAK(st, ak)
		if err != nil {
			return created, err
		}
		ek := st.eks[ak.EKAlg]
		out, err = activate(ek, key.name, credentialBlob.Buffer, secret.Buffer)
		if err != nil {
			return created, fmt.Errorf("soft TPM: activate credential: %w", err)
		}
		return created, nil
	})
	return out, err
}

// activate is TPM 2.0 Part 1 §24 from the TPM's side: recover the seed with
// the EK, check the outer HMAC over encIdentity || name, then decrypt the
// credential (a TPM2B_DIGEST) with AES-CFB.
func activate(ek *ekKey, objectName, idObject, encSecret []byte) ([]byte, error) {
	pub, err := ek.publicArea()
	if err != nil {
		return nil, err
	}
	nameHash, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, err
	}
	seed, err := ek.recoverSeed(&pub, nameHash, encSecret)
	if err != nil {
		return nil, err
	}

	// TPMS_ID_OBJECT: integrityHMAC (TPM2B_DIGEST) || encIdentity.
	if len(idObject) < 2 {
		return nil, fmt.Errorf("credential blob of %d bytes has no integrity HMAC: %w", len(idObject), tpm2.TPMRCSize)
	}
	hmacSize := int(binary.BigEndian.Uint16(idObject))
	if hmacSize != nameHash.Size() || len(idObject) < 2+hmacSize {
		return nil, fmt.Errorf("credential blob: integrity HMAC of %d bytes in %d, want %d: %w", hmacSize, len(idObject)-2, nameHash.Size(), tpm2.TPMRCSize)
	}
	integrity, encIdentity := idObject[2:2+hmacSize], idObject[2+hmacSize:]
	if len(encIdentity) < 2 {
		return nil, fmt.Errorf("credential blob: encrypted credential of %d bytes: %w", len(encIdentity), tpm2.TPMRCSize)
	}

	mac := hmac.New(nameHash.New, tpm2.KDFa(nameHash, seed, "INTEGRITY", nil, nil, nameHash.Size()*8))
	mac.Write(encIdentity)
	mac.Write(objectName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, fmt.Errorf("outer HMAC mismatch (credential made for another EK or AK, or altered): %w", tpm2.TPMRCIntegrity)
	}

	sym, err := symmetricOf(&pub)
	if err != nil {
		return nil, err
	}
	bits, err := sym.KeyBits.AES()
	if err != nil || sym.Algorithm != tpm2.TPMAlgAES {
		return nil, fmt.Errorf("EK symmetric algorithm %v is not AES: %w", sym.Algorithm, tpm2.TPMRCSymmetric)
	}
	block, err := aes.NewCipher(tpm2.KDFa(nameHash, seed, "STORAGE", objectName, nil, int(*bits)))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(plain, encIdentity) // CFB with a zero IV is what TPM 2.0 specifies.
	size := int(binary.BigEndian.Uint16(plain))
	if size > nameHash.Size() || 2+size != len(plain) {
		return nil, fmt.Errorf("decrypted credential claims %d bytes in %d: %w", size, len(plain)-2, tpm2.TPMRCSize)
	}
	return plain[2:], nil
}

// symmetricOf is the symmetric algorithm of a storage key: the one that
// protects credentials sealed to it.
func symmetricOf(pub *tpm2.TPMTPublic) (*tpm2.TPMTSymDefObject, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		return &p.Symmetric, nil
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		return &p.Symmetric, nil
	}
	return nil, fmt.Errorf("key type %v has no symmetric algorithm", pub.Type)
}

// recoverSeed undoes the EK's labeled key encapsulation: RSA-OAEP with the
// name algorithm and label "IDENTITY\0", or one-pass ECDH with KDFe.
func (ek *ekKey) recoverSeed(pub *tpm2.TPMTPublic, nameHash crypto.Hash, encSecret []byte) ([]byte, error) {
	switch k := ek.key.(type) {
	case *rsa.PrivateKey:
		seed, err := rsa.DecryptOAEP(nameHash.New(), nil, k, encSecret, []byte(credentialLabel+"\x00"))
		if err != nil {
			return nil, fmt.Errorf("decrypt the seed with the RSA EK: %w", tpm2.TPMRCValue)
		}
		return seed, nil
	}
	if ek.ecdh == nil {
		return nil, fmt.Errorf("EK type %v cannot decrypt", ek.alg)
	}
	x, y, err := parseECCPoint(encSecret)
	if err != nil {
		return nil, fmt.Errorf("encrypted seed: %w", err)
	}
	n := (len(ek.ecdh.PublicKey().Bytes()) - 1) / 2
	if len(x) > n || len(y) > n {
		return nil, fmt.Errorf("encrypted seed: point coordinates of %d and %d bytes on a %d-byte curve: %w", len(x), len(y), n, tpm2.TPMRCECCPoint)
	}
	pt := make([]byte, 1+2*n)
	pt[0] = 4
	copy(pt[1+n-len(x):1+n], x)
	copy(pt[1+2*n-len(y):], y)
	eph, err := ek.ecdh.Curve().NewPublicKey(pt)
	if err != nil {
		return nil, fmt.Errorf("encrypted seed: point not on the curve: %w", tpm2.TPMRCECCPoint)
	}
	z, err := ek.ecdh.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("ECDH with the EK: %w", tpm2.TPMRCNoResult)
	}
	ekPoint, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	return tpm2.KDFe(nameHash, z, credentialLabel, pt[1:1+n], ekPoint.X.Buffer, nameHash.Size()*8), nil
}

// parseECCPoint reads a TPMS_ECC_POINT that must fill b exactly.
func parseECCPoint(b []byte) (x, y []byte, err error) {
	off := 0
	next := func(what string) ([]byte, error) {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%s size at byte %d: truncated: %w", what, off, tpm2.TPMRCSize)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if len(b)-off < n {
			return nil, fmt.Errorf("%s at byte %d: %d bytes announced, %d left: %w", what, off, n, len(b)-off, tpm2.TPMRCSize)
		}
		v := b[off : off+n]
		off += n
		return v, nil
	}
	if x, err = next("x"); err != nil {
		return nil, nil, err
	}
	if y, err = next("y"); err != nil {
		return nil, nil, err
	}
	if off != len(b) {
		return nil, nil, fmt.Errorf("%d trailing bytes after the point: %w", len(b)-off, tpm2.TPMRCSize)
	}
	return x, y, nil
}
