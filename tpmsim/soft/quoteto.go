package soft

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// QuoteOut receives a quote made by QuoteTo. Its buffers are reused from
// one call to the next, so a caller quoting in a loop (a simulated fleet)
// allocates nothing for them once they have grown.
type QuoteOut struct {
	// Attest is the TPMS_ATTEST as marshalled and signed: the contents of
	// the TPM2B_ATTEST Quote returns.
	Attest []byte
	// Signature is the TPMT_SIGNATURE as marshalled.
	Signature []byte
	// PCRs are the selected PCRs' values as they were quoted, in the
	// quote's order (selection by selection, then by index).
	PCRs []PCRValue

	values []byte
	refs   []pcrRef
}

// PCRValue is one quoted PCR's value.
type PCRValue struct {
	Bank  tpm2.TPMAlgID
	Index int
	// Value shares QuoteOut's buffer: it is valid until the next QuoteTo.
	Value []byte
}

// QuoteTo is Quote for callers that quote in a loop and send the result on
// as bytes, as the agent does: the same TPMS_ATTEST (to the byte, given
// the same clock) and signature, returned marshalled, and with them the
// values of the selected PCRs read under the same lock as the quote, so
// that they always hash to its pcrDigest (the agent reads them, then
// quotes, and reads again if a PCR moved in between). Nothing is
// marshalled or parsed through reflection.
func (t *TPM) QuoteTo(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection, out *QuoteOut) error {
	if len(nonce) > maxQualifyingData {
		return fmt.Errorf("soft TPM: quote: nonce of %d bytes, at most %d: %w", len(nonce), maxQualifyingData, tpm2.TPMRCSize)
	}
	var key *loadedAK
	var pre *presigned
	var preBuf presigned
	err := t.do(ctx, func(st *state) (bool, error) {
		var created bool
		var err error
		key, created, err = t.loadAK(st, ak)
		if err != nil {
			return created, err
		}
		if n := len(key.presigned); n > 0 {
			// Each nonce signs once: taken out under the lock.
			preBuf, pre = key.presigned[n-1], &preBuf
			key.presigned[n-1] = presigned{}
			key.presigned = key.presigned[:n-1]
		}
		out.refs, err = st.appendSelectedPCRs(out.refs[:0], sel)
		if err != nil {
			return created, fmt.Errorf("soft TPM: quote: %w", err)
		}
		// The pcrDigest hashes the selected values concatenated in
		// quote order: exactly what the caller gets.
		out.values = out.values[:0]
		for _, r := range out.refs {
			out.values = append(out.values, st.pcrs[r.alg].pcr[r.index]...)
		}
		out.PCRs = out.PCRs[:0]
		off := 0
		for _, r := range out.refs {
			n := st.pcrs[r.alg].hash.Size()
			out.PCRs = append(out.PCRs, PCRValue{Bank: r.alg, Index: r.index, Value: out.values[off : off+n : off+n]})
			off += n
		}
		var digest []byte
		var sum [sha256.Size]byte
		if key.hash == crypto.SHA256 {
			sum = sha256.Sum256(out.values)
			digest = sum[:]
		} else {
			h := key.hash.New()
			h.Write(out.values)
			digest = h.Sum(nil)
		}
		out.Attest = appendQuoteAttest(out.Attest[:0], key.qn, nonce, t.clockInfo(), st.firmware, sel, digest)
		return created, nil
	})
	if err != nil {
		return err
	}
	// Signing needs nothing but the loaded key, so it runs outside the
	// TPM's lock, as Quote's does.
	out.Signature, err = appendSignature(out.Signature[:0], key, out.Attest, pre)
	if err != nil {
		return fmt.Errorf("soft TPM: quote: %w", err)
	}
	return nil
}

// appendQuoteAttest appends the TPMS_ATTEST of a quote as tpm2.Marshal
// writes it (TPM 2.0 Part 2, §10.12.12): magic, type, qualifiedSigner,
// extraData, clockInfo, firmwareVersion, then the TPMS_QUOTE_INFO.
func appendQuoteAttest(dst, signerQN, nonce []byte, ci tpm2.TPMSClockInfo, firmware uint64, sel tpm2.TPMLPCRSelection, pcrDigest []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(tpm2.TPMGeneratedValue))
	dst = binary.BigEndian.AppendUint16(dst, uint16(tpm2.TPMSTAttestQuote))
	dst = append2B(dst, signerQN)
	dst = append2B(dst, nonce)
	dst = binary.BigEndian.AppendUint64(dst, ci.Clock)
	dst = binary.BigEndian.AppendUint32(dst, ci.ResetCount)
	dst = binary.BigEndian.AppendUint32(dst, ci.RestartCount)
	if ci.Safe {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.BigEndian.AppendUint64(dst, firmware)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(sel.PCRSelections)))
	for _, s := range sel.PCRSelections {
		dst = binary.BigEndian.AppendUint16(dst, uint16(s.Hash))
		dst = append(dst, byte(len(s.PCRSelect)))
		dst = append(dst, s.PCRSelect...)
	}
	return append2B(dst, pcrDigest)
}

// append2B appends a TPM2B: a 16-bit size, then the bytes.
func append2B(dst, b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(dst, uint16(len(b))), b...)
}

// appendSignature signs H(message) with the AK as sign does and appends
// the TPMT_SIGNATURE as tpm2.Marshal writes it: the signature algorithm,
// the hash, then an RSA signature or ECDSA's r and s (each as long as the
// curve's order), every one a TPM2B. An ECDSA AK signs with pre, a
// precomputed nonce, when it is not nil.
func appendSignature(dst []byte, ak *loadedAK, message []byte, pre *presigned) ([]byte, error) {
	var digest []byte
	var sum [sha256.Size]byte
	if ak.hash == crypto.SHA256 {
		sum = sha256.Sum256(message)
		digest = sum[:]
	} else {
		h := ak.hash.New()
		h.Write(message)
		digest = h.Sum(nil)
	}
	hashAlg, err := algOfHash(ak.hash)
	if err != nil {
		return nil, err
	}
	switch k := ak.key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(nil, k, ak.hash, digest)
		if err != nil {
			return nil, err
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(tpm2.TPMAlgRSASSA))
		dst = binary.BigEndian.AppendUint16(dst, uint16(hashAlg))
		return append2B(dst, s), nil
	case *ecdsa.PrivateKey:
		var r, s []byte
		err := errNoPresigned
		if pre != nil {
			r, s, err = signPresigned(k, *pre, digest)
		}
		if err != nil {
			der, err := ecdsa.SignASN1(rand.Reader, k, digest)
			if err != nil {
				return nil, err
			}
			if r, s, err = parseECDSASignature(der); err != nil {
				return nil, err
			}
		}
		n := (k.Curve.Params().N.BitLen() + 7) / 8
		if len(r) > n || len(s) > n {
			return nil, errors.New("ECDSA signature longer than the curve's order")
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(tpm2.TPMAlgECDSA))
		dst = binary.BigEndian.AppendUint16(dst, uint16(hashAlg))
		dst = appendPadded2B(dst, r, n)
		return appendPadded2B(dst, s, n), nil
	}
	return nil, fmt.Errorf("AK key %T cannot sign", ak.key)
}

var errNoPresigned = errors.New("no precomputed nonce")

// appendPadded2B appends b as a TPM2B of n bytes, zeros first.
func appendPadded2B(dst, b []byte, n int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	for range n - len(b) {
		dst = append(dst, 0)
	}
	return append(dst, b...)
}

// parseECDSASignature reads r and s, without leading zeros, from the DER
// SEQUENCE { INTEGER r, INTEGER s } that ecdsa.SignASN1 writes.
func parseECDSASignature(der []byte) (r, s []byte, err error) {
	seq, rest, ok := derElement(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, nil, errors.New("ECDSA signature: not a DER sequence")
	}
	r, seq, ok = derElement(seq, 0x02)
	if !ok {
		return nil, nil, errors.New("ECDSA signature: bad r")
	}
	s, seq, ok = derElement(seq, 0x02)
	if !ok || len(seq) != 0 {
		return nil, nil, errors.New("ECDSA signature: bad s")
	}
	for len(r) > 0 && r[0] == 0 {
		r = r[1:]
	}
	for len(s) > 0 && s[0] == 0 {
		s = s[1:]
	}
	return r, s, nil
}

// derElement reads one DER element of the given tag: its contents and what
// follows it.
func derElement(b []byte, tag byte) (contents, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, off := int(b[1]), 2
	if n&0x80 != 0 {
		k := n & 0x7f
		if k == 0 || k > 2 || len(b) < 2+k {
			return nil, nil, false
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		off += k
	}
	if len(b)-off < n {
		return nil, nil, false
	}
	return b[off : off+n], b[off+n:], true
}
