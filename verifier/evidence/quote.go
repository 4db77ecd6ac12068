package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Quote is a parsed TPM2_Quote result: the TPMS_ATTEST exactly as signed and
// its TPMT_SIGNATURE. Parsing checks only structure; VerifyQuote decides.
type Quote struct {
	// Raw is the marshalled TPMS_ATTEST, the bytes the signature covers.
	Raw       []byte
	Attest    tpm2.TPMSAttest
	Signature tpm2.TPMTSignature
}

// ParseQuote decodes a quote. attest may be a TPMS_ATTEST or a TPM2B_ATTEST
// (the size-prefixed form tpm2-tools and go-tpm also produce); sig is a
// TPMT_SIGNATURE. Structural errors are *Failure values with reason
// malformed_quote or malformed_signature; a wrong magic number or
// attestation type is left for VerifyQuote to report with its own reason.
func ParseQuote(attest, sig []byte) (*Quote, error) {
	raw := attest
	if len(attest) >= 6 && !hasMagic(attest) && hasMagic(attest[2:]) &&
		int(binary.BigEndian.Uint16(attest)) == len(attest)-2 {
		raw = attest[2:]
	}
	q := &Quote{Raw: raw}
	a, err := decodeAttest(raw)
	if err != nil {
		return nil, Fail(ReasonMalformedQuote, "%v", err)
	}
	q.Attest = a
	s, err := decodeSignature(sig)
	if err != nil {
		return nil, Fail(ReasonMalformedSignature, "%v", err)
	}
	q.Signature = s
	return q, nil
}

func hasMagic(b []byte) bool {
	return len(b) >= 4 && binary.BigEndian.Uint32(b) == uint32(tpm2.TPMGeneratedValue)
}

// Expect is what the verifier knows independently of the quote.
type Expect struct {
	// Nonce is the qualifying data the verifier issued; the quote's extraData
	// must equal it.
	Nonce []byte
	// SkipNonce disables the nonce check. Only offline tools that inspect a
	// quote without having issued it set it; a verifier never does.
	SkipNonce bool
	// PCRs are the PCR values sent alongside the quote. Every PCR the quote
	// selects must be among them, and they must hash to its pcrDigest.
	PCRs PCRValues
	// SkipPCRs disables the PCR digest check (offline tools given no values).
	SkipPCRs bool
}

// ClockInfo is the quote's TPMS_CLOCK_INFO.
type ClockInfo struct {
	Clock        uint64 `json:"clock"`
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Safe         bool   `json:"safe"`
}

// Result is what a verified quote establishes.
type Result struct {
	Clock           ClockInfo `json:"clock"`
	FirmwareVersion uint64    `json:"firmware_version"`
	// SignatureHash is the hash algorithm of the signature, which is also
	// the one pcrDigest was computed with.
	SignatureHash tpm2.TPMAlgID `json:"-"`
	// Selection is the quoted PCR selection.
	Selection tpm2.TPMLPCRSelection `json:"-"`
	// PCRs holds the supplied values of exactly the quoted PCRs: the only
	// PCR values that may be trusted. Empty when the PCR check was skipped.
	// It is Expect.PCRs itself when that held no other PCRs.
	PCRs PCRValues `json:"pcrs"`
}

// VerifyQuote checks a quote against the AK and what the verifier expects:
// magic, type, signature, nonce, PCR digest, in that order, returning the
// first failure as a *Failure.
//
// qualifiedSigner is not compared: it is the AK's qualified name, a hash over
// its whole parent chain (the EK), which the signature already binds; the
// registrar ties the AK to the EK by credential activation.
func (ak *AK) VerifyQuote(q *Quote, want Expect) (*Result, error) {
	a := &q.Attest
	if a.Magic != tpm2.TPMGeneratedValue {
		return nil, Fail(ReasonBadMagic, "TPMS_ATTEST.magic is %#08x, want TPM_GENERATED_VALUE %#08x", uint32(a.Magic), uint32(tpm2.TPMGeneratedValue))
	}
	if a.Type != tpm2.TPMSTAttestQuote {
		return nil, Fail(ReasonBadType, "TPMS_ATTEST.type is %#04x, want TPM_ST_ATTEST_QUOTE %#04x", uint16(a.Type), uint16(tpm2.TPMSTAttestQuote))
	}
	info, err := a.Attested.Quote()
	if err != nil {
		return nil, Fail(ReasonBadType, "TPMS_ATTEST.attested: %v", err)
	}
	sigHash, err := ak.verifySignature(q.Raw, &q.Signature)
	if err != nil {
		return nil, err
	}
	if !want.SkipNonce && subtle.ConstantTimeCompare(a.ExtraData.Buffer, want.Nonce) != 1 {
		return nil, Fail(ReasonNonceMismatch, "TPMS_ATTEST.extraData %x is not the expected nonce %x", a.ExtraData.Buffer, want.Nonce)
	}
	res := &Result{
		Clock: ClockInfo{
			Clock:        a.ClockInfo.Clock,
			ResetCount:   a.ClockInfo.ResetCount,
			RestartCount: a.ClockInfo.RestartCount,
			Safe:         bool(a.ClockInfo.Safe),
		},
		FirmwareVersion: a.FirmwareVersion,
		SignatureHash:   sigHash,
		Selection:       info.PCRSelect,
	}
	if want.SkipPCRs {
		return res, nil
	}
	h, _ := HashOf(sigHash)
	digest, quoted, err := PCRDigest(h, info.PCRSelect, want.PCRs)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(digest, info.PCRDigest.Buffer) {
		return nil, Fail(ReasonPCRDigestMismatch, "supplied PCR values hash to %x, the quote's pcrDigest is %x", digest, info.PCRDigest.Buffer)
	}
	res.PCRs = quoted
	return res, nil
}

// verifySignature checks sig over msg with the AK and returns the hash
// algorithm it used.
func (ak *AK) verifySignature(msg []byte, sig *tpm2.TPMTSignature) (tpm2.TPMAlgID, error) {
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		pub, ok := ak.key.(*rsa.PublicKey)
		if !ok {
			return 0, Fail(ReasonBadSignature, "%s signature but the AK is not an RSA key", algName(sig.SigAlg))
		}
		var s *tpm2.TPMSSignatureRSA
		var err error
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return 0, Fail(ReasonMalformedSignature, "TPMT_SIGNATURE: %v", err)
		}
		h, digest, err := digestFor(s.Hash, msg)
		if err != nil {
			return 0, err
		}
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pub, h, digest, s.Sig.Buffer)
		} else {
			// The TPM picks the salt length (hash size, or less for small
			// keys); accept whatever it chose.
			err = rsa.VerifyPSS(pub, h, digest, s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return 0, Fail(ReasonBadSignature, "%s signature does not verify with the AK", algName(sig.SigAlg))
		}
		return s.Hash, nil
	case tpm2.TPMAlgECDSA:
		pub, ok := ak.key.(*ecdsa.PublicKey)
		if !ok {
			return 0, Fail(ReasonBadSignature, "ECDSA signature but the AK is not an ECC key")
		}
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return 0, Fail(ReasonMalformedSignature, "TPMT_SIGNATURE: %v", err)
		}
		_, digest, err := digestFor(s.Hash, msg)
		if err != nil {
			return 0, err
		}
		r := new(big.Int).SetBytes(s.SignatureR.Buffer)
		ss := new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(pub, digest, r, ss) {
			return 0, Fail(ReasonBadSignature, "ECDSA signature does not verify with the AK")
		}
		return s.Hash, nil
	}
	return 0, Fail(ReasonUnsupportedSignature, "signature algorithm %#04x is not RSASSA, RSAPSS or ECDSA", uint16(sig.SigAlg))
}

func digestFor(alg tpm2.TPMAlgID, msg []byte) (crypto.Hash, []byte, error) {
	h, ok := HashOf(alg)
	if !ok || !h.Available() {
		return 0, nil, Fail(ReasonUnsupportedSignature, "signature hash algorithm %#04x is not SHA-1, SHA-256, SHA-384 or SHA-512", uint16(alg))
	}
	hh := h.New()
	hh.Write(msg)
	return h, hh.Sum(nil), nil
}

func algName(a tpm2.TPMAlgID) string {
	switch a {
	case tpm2.TPMAlgRSASSA:
		return "RSASSA"
	case tpm2.TPMAlgRSAPSS:
		return "RSAPSS"
	case tpm2.TPMAlgECDSA:
		return "ECDSA"
	}
	return "unknown"
}
