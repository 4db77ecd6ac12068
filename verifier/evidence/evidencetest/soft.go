package evidencetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"math/big"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// SoftQuote builds and signs a TPMS_ATTEST in Go, the way a TPM would, for
// fuzz seeds and for tests that must run without cgo or swtpm. key is an
// *rsa.PrivateKey (RSASSA) or *ecdsa.PrivateKey (ECDSA); hash is the
// signature and PCR digest algorithm.
func SoftQuote(key crypto.Signer, hash tpm2.TPMAlgID, nonce []byte, clock evidence.ClockInfo, sel tpm2.TPMLPCRSelection, pcrs evidence.PCRValues) (attest, sig []byte, err error) {
	h, _ := evidence.HashOf(hash)
	digest, _, err := evidence.PCRDigest(h, sel, pcrs)
	if err != nil {
		return nil, nil, err
	}
	a := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: []byte{0x00, 0x0b, 1, 2, 3}},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo: tpm2.TPMSClockInfo{
			Clock: clock.Clock, ResetCount: clock.ResetCount, RestartCount: clock.RestartCount,
			Safe: tpm2.TPMIYesNo(clock.Safe),
		},
		FirmwareVersion: 0x2000_0001,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: sel,
			PCRDigest: tpm2.TPM2BDigest{Buffer: digest},
		}),
	}
	attest = tpm2.Marshal(a)
	md := Digest(h, attest)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(rand.Reader, k, h, md)
		if err != nil {
			return nil, nil, err
		}
		sig = tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: hash, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s},
			}),
		})
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, md)
		if err != nil {
			return nil, nil, err
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       hash,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, size))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, size))},
			}),
		})
	}
	return attest, sig, nil
}

// SoftPublic is the TPMT_PUBLIC of a Go key with the AK attributes.
func SoftPublic(key crypto.Signer, hash tpm2.TPMAlgID) tpm2.TPMTPublic {
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		spec := RSAKey(tpm2.TPMAlgRSASSA, hash)
		spec.Template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return spec.Template
	case *ecdsa.PublicKey:
		curve := tpm2.TPMECCNistP256
		if k.Curve.Params().BitSize == 384 {
			curve = tpm2.TPMECCNistP384
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		spec := ECCKey(curve, hash)
		spec.Template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: fill(k.X, size)},
			Y: tpm2.TPM2BECCParameter{Buffer: fill(k.Y, size)},
		})
		return spec.Template
	}
	return tpm2.TPMTPublic{}
}

func fill(v *big.Int, size int) []byte { return v.FillBytes(make([]byte, size)) }
