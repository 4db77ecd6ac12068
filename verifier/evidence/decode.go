package evidence

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Quotes are decoded by hand rather than with go-tpm's reflection-driven
// tpm2.Unmarshal: that took as long as the RSA signature check itself, and
// the quote check is the verifier's hot path. The result is the same go-tpm
// structures (the fuzz target FuzzDecodeMatchesGoTPM holds the two decoders
// to agreement), and every length is checked against the input before use:
// sub-slices of the input are returned, nothing is allocated from a length.

// Size limits from TPM 2.0 Part 2: a name is at most a hash algorithm and a
// SHA-512 digest; a PCR selection names each hash algorithm at most once.
const (
	maxNameSize     = 2 + 64
	maxDataSize     = 2 + 64
	maxDigestSize   = 64
	maxPCRBanks     = 16
	maxPCRSelectLen = 32
	maxRSASigSize   = 512
	maxECCParamSize = 66
)

type reader struct {
	b     []byte
	off   int
	what  string
	field string
	// index, when set, is the list element field belongs to; kept apart
	// from field so the success path formats nothing.
	index    int
	hasIndex bool
}

func (r *reader) fail(format string, args ...any) error {
	field := r.field
	if r.hasIndex {
		field = fmt.Sprintf("%s[%d]", field, r.index)
	}
	return fmt.Errorf("%s: %s at byte offset %d: %s", r.what, field, r.off, fmt.Sprintf(format, args...))
}

func (r *reader) take(n int) ([]byte, error) {
	if n > len(r.b)-r.off {
		return nil, r.fail("needs %d bytes, %d left", n, len(r.b)-r.off)
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

func (r *reader) u8() (uint8, error) {
	b, err := r.take(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) u16() (uint16, error) {
	b, err := r.take(2)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(b), nil
}

func (r *reader) u32() (uint32, error) {
	b, err := r.take(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (r *reader) u64() (uint64, error) {
	b, err := r.take(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// sized reads a TPM2B: a 16-bit size, at most max, then that many bytes.
func (r *reader) sized(field string, max int) ([]byte, error) {
	r.field = field
	n, err := r.u16()
	if err != nil {
		return nil, err
	}
	if int(n) > max {
		r.off -= 2
		return nil, r.fail("size %d exceeds the maximum %d", n, max)
	}
	return r.take(int(n))
}

func (r *reader) end() error {
	if r.off != len(r.b) {
		r.field = "end"
		return r.fail("%d trailing bytes", len(r.b)-r.off)
	}
	return nil
}

// decodeAttest decodes a TPMS_ATTEST. The attested union is decoded only
// for quotes; other types are left for VerifyQuote to refuse by type.
func decodeAttest(b []byte) (tpm2.TPMSAttest, error) {
	r := &reader{b: b, what: "TPMS_ATTEST"}
	var a tpm2.TPMSAttest
	var err error
	r.field = "magic"
	m, err := r.u32()
	if err != nil {
		return a, err
	}
	a.Magic = tpm2.TPMGenerated(m)
	r.field = "type"
	t, err := r.u16()
	if err != nil {
		return a, err
	}
	a.Type = tpm2.TPMST(t)
	if a.QualifiedSigner.Buffer, err = r.sized("qualifiedSigner", maxNameSize); err != nil {
		return a, err
	}
	if a.ExtraData.Buffer, err = r.sized("extraData", maxDataSize); err != nil {
		return a, err
	}
	r.field = "clockInfo"
	if a.ClockInfo.Clock, err = r.u64(); err != nil {
		return a, err
	}
	if a.ClockInfo.ResetCount, err = r.u32(); err != nil {
		return a, err
	}
	if a.ClockInfo.RestartCount, err = r.u32(); err != nil {
		return a, err
	}
	safe, err := r.u8()
	if err != nil {
		return a, err
	}
	if safe > 1 {
		r.off--
		return a, r.fail("safe is %d, not YES or NO", safe)
	}
	a.ClockInfo.Safe = safe == 1
	r.field = "firmwareVersion"
	if a.FirmwareVersion, err = r.u64(); err != nil {
		return a, err
	}
	if a.Type != tpm2.TPMSTAttestQuote {
		return a, nil
	}
	var info tpm2.TPMSQuoteInfo
	r.field = "attested.quote.pcrSelect.count"
	count, err := r.u32()
	if err != nil {
		return a, err
	}
	if count > maxPCRBanks {
		r.off -= 4
		return a, r.fail("%d PCR banks selected, at most %d", count, maxPCRBanks)
	}
	info.PCRSelect.PCRSelections = make([]tpm2.TPMSPCRSelection, count)
	for i := range info.PCRSelect.PCRSelections {
		s := &info.PCRSelect.PCRSelections[i]
		r.field, r.index, r.hasIndex = "attested.quote.pcrSelect", i, true
		h, err := r.u16()
		if err != nil {
			return a, err
		}
		s.Hash = tpm2.TPMIAlgHash(h)
		n, err := r.u8()
		if err != nil {
			return a, err
		}
		if n > maxPCRSelectLen {
			r.off--
			return a, r.fail("sizeofSelect %d exceeds %d", n, maxPCRSelectLen)
		}
		if s.PCRSelect, err = r.take(int(n)); err != nil {
			return a, err
		}
	}
	r.hasIndex = false
	if info.PCRDigest.Buffer, err = r.sized("attested.quote.pcrDigest", maxDigestSize); err != nil {
		return a, err
	}
	if err := r.end(); err != nil {
		return a, err
	}
	a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &info)
	return a, nil
}

// decodeSignature decodes a TPMT_SIGNATURE of the schemes a quote check
// accepts (RSASSA, RSAPSS, ECDSA). Any other algorithm is returned with only
// SigAlg set, for VerifyQuote to refuse as unsupported.
func decodeSignature(b []byte) (tpm2.TPMTSignature, error) {
	r := &reader{b: b, what: "TPMT_SIGNATURE", field: "sigAlg"}
	var s tpm2.TPMTSignature
	alg, err := r.u16()
	if err != nil {
		return s, err
	}
	s.SigAlg = tpm2.TPMAlgID(alg)
	switch s.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		r.field = "signature.hash"
		h, err := r.u16()
		if err != nil {
			return s, err
		}
		sig, err := r.sized("signature.sig", maxRSASigSize)
		if err != nil {
			return s, err
		}
		s.Signature = tpm2.NewTPMUSignature(s.SigAlg, &tpm2.TPMSSignatureRSA{Hash: tpm2.TPMIAlgHash(h), Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})
	case tpm2.TPMAlgECDSA:
		r.field = "signature.hash"
		h, err := r.u16()
		if err != nil {
			return s, err
		}
		sr, err := r.sized("signature.signatureR", maxECCParamSize)
		if err != nil {
			return s, err
		}
		ss, err := r.sized("signature.signatureS", maxECCParamSize)
		if err != nil {
			return s, err
		}
		s.Signature = tpm2.NewTPMUSignature(s.SigAlg, &tpm2.TPMSSignatureECC{
			Hash: tpm2.TPMIAlgHash(h), SignatureR: tpm2.TPM2BECCParameter{Buffer: sr}, SignatureS: tpm2.TPM2BECCParameter{Buffer: ss},
		})
	default:
		return s, nil
	}
	return s, r.end()
}
