package soft

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// maxQualifyingData is the largest nonce a quote takes: a TPM2B_DATA holds
// at most a digest of the largest hash, which for TPMs with SHA-512 is 64.
const maxQualifyingData = 64

// Quote signs the selected PCRs with the AK, nonce as qualifyingData, and
// returns the TPMS_ATTEST as marshalled (and signed) and the signature.
func (t *TPM) Quote(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, error) {
	if len(nonce) > maxQualifyingData {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, fmt.Errorf("soft TPM: quote: nonce of %d bytes, at most %d: %w", len(nonce), maxQualifyingData, tpm2.TPMRCSize)
	}
	var attestBytes []byte
	var key *loadedAK
	err := t.do(ctx, func(st *state) (bool, error) {
		var created bool
		var err error
		key, created, err = t.loadAK(st, ak)
		if err != nil {
			return created, err
		}
		refs, err := st.selectedPCRs(sel)
		if err != nil {
			return created, fmt.Errorf("soft TPM: quote: %w", err)
		}
		attest := tpm2.TPMSAttest{
			Magic:           tpm2.TPMGeneratedValue,
			Type:            tpm2.TPMSTAttestQuote,
			QualifiedSigner: tpm2.TPM2BName{Buffer: bytes.Clone(key.qn)},
			ExtraData:       tpm2.TPM2BData{Buffer: bytes.Clone(nonce)},
			ClockInfo:       t.clockInfo(),
			FirmwareVersion: st.firmware,
			Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
				PCRSelect: cloneSelection(sel),
				PCRDigest: tpm2.TPM2BDigest{Buffer: st.pcrDigest(key.hash, refs)},
			}),
		}
		attestBytes = tpm2.Marshal(attest)
		return created, nil
	})
	if err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, err
	}
	// Signing needs nothing but the loaded key, so it runs outside the
	// TPM's lock: a fleet's quotes on one TPM do not queue behind RSA.
	sig, err := sign(key, attestBytes)
	if err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, fmt.Errorf("soft TPM: quote: %w", err)
	}
	return tpm2.BytesAs2B[tpm2.TPMSAttest](attestBytes), sig, nil
}

// sign signs H(message) with the AK's scheme and returns the TPMT_SIGNATURE
// a TPM returns: RSASSA-PKCS1-v1_5, or ECDSA with r and s as long as the
// curve's order.
func sign(ak *loadedAK, message []byte) (tpm2.TPMTSignature, error) {
	h := ak.hash.New()
	h.Write(message)
	digest := h.Sum(nil)
	hashAlg, err := algOfHash(ak.hash)
	if err != nil {
		return tpm2.TPMTSignature{}, err
	}
	switch k := ak.key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(nil, k, ak.hash, digest)
		if err != nil {
			return tpm2.TPMTSignature{}, err
		}
		return tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: hashAlg,
				Sig:  tpm2.TPM2BPublicKeyRSA{Buffer: s},
			}),
		}, nil
	case *ecdsa.PrivateKey:
		der, err := ecdsa.SignASN1(rand.Reader, k, digest)
		if err != nil {
			return tpm2.TPMTSignature{}, err
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			return tpm2.TPMTSignature{}, err
		}
		n := (k.Curve.Params().N.BitLen() + 7) / 8
		return tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       hashAlg,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: rs.R.FillBytes(make([]byte, n))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: rs.S.FillBytes(make([]byte, n))},
			}),
		}, nil
	}
	return tpm2.TPMTSignature{}, fmt.Errorf("AK key %T cannot sign", ak.key)
}

func algOfHash(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA1:
		return tpm2.TPMAlgSHA1, nil
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("hash %v has no TPM algorithm ID", h)
}
