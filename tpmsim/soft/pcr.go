package soft

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// NumPCRs is the number of PCRs in each bank, as on a PC-client TPM.
const NumPCRs = 24

// maxSelectBytes is PCR_SELECT_MAX for 24 PCRs: a selection bitmap longer
// than that is refused, as a TPM refuses it.
const maxSelectBytes = NumPCRs / 8

// Banks are the PCR banks a soft TPM has allocated, in TPM order.
var banks = []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256}

// bank is one PCR bank.
type bank struct {
	hash crypto.Hash
	pcr  [NumPCRs][]byte
}

func newBank(alg tpm2.TPMAlgID) *bank {
	h, _ := alg.Hash() // only called with the algorithms in banks
	b := &bank{hash: h}
	b.reset()
	return b
}

// reset sets the PCRs to their values after TPM2_Startup(CLEAR) at locality
// 0 on a PC-client TPM: zero, except the D-RTM PCRs 17-22, which start at
// all ones until a dynamic launch resets them.
func (b *bank) reset() {
	for i := range b.pcr {
		v := make([]byte, b.hash.Size())
		if i >= 17 && i <= 22 {
			for j := range v {
				v[j] = 0xff
			}
		}
		b.pcr[i] = v
	}
}

func (b *bank) extend(i int, digest []byte) {
	// The two banks a soft TPM has are hashed from a buffer on the stack
	// into the PCR's own bytes: an IMA measurement is an extend, and a
	// simulated fleet makes tens of thousands a second. PCR values are
	// never shared (reads copy them), so they may change in place.
	var buf [2 * sha256.Size]byte
	if len(b.pcr[i])+len(digest) <= len(buf) {
		in := append(append(buf[:0], b.pcr[i]...), digest...)
		switch b.hash {
		case crypto.SHA256:
			sum := sha256.Sum256(in)
			copy(b.pcr[i], sum[:])
			return
		case crypto.SHA1:
			sum := sha1.Sum(in)
			copy(b.pcr[i], sum[:])
			return
		}
	}
	h := b.hash.New()
	h.Write(b.pcr[i])
	h.Write(digest)
	b.pcr[i] = h.Sum(nil)
}

// pcrRef names one PCR in one bank.
type pcrRef struct {
	alg   tpm2.TPMAlgID
	index int
}

// selectedPCRs lists the PCRs a selection names, in the order a TPM
// concatenates them for a quote: selection by selection, then by index.
func (st *state) selectedPCRs(sel tpm2.TPMLPCRSelection) ([]pcrRef, error) {
	return st.appendSelectedPCRs(nil, sel)
}

// appendSelectedPCRs is selectedPCRs appending to refs.
func (st *state) appendSelectedPCRs(refs []pcrRef, sel tpm2.TPMLPCRSelection) ([]pcrRef, error) {
	if len(sel.PCRSelections) > 2*len(banks) {
		return nil, fmt.Errorf("PCR selection of %d banks: %w", len(sel.PCRSelections), tpm2.TPMRCSize)
	}
	for n, s := range sel.PCRSelections {
		if st.pcrs[s.Hash] == nil {
			return nil, fmt.Errorf("PCR selection %d: bank %v is not allocated (this TPM has sha1 and sha256): %w", n, s.Hash, tpm2.TPMRCPCR)
		}
		if len(s.PCRSelect) > maxSelectBytes {
			return nil, fmt.Errorf("PCR selection %d (%v): bitmap of %d bytes, at most %d: %w", n, s.Hash, len(s.PCRSelect), maxSelectBytes, tpm2.TPMRCValue)
		}
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					refs = append(refs, pcrRef{alg: s.Hash, index: i*8 + bit})
				}
			}
		}
	}
	return refs, nil
}

// PCRRead returns the current value of every selected PCR, keyed by bank and
// PCR index.
func (t *TPM) PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	out := make(map[tpm2.TPMAlgID]map[int][]byte)
	err := t.do(ctx, func(st *state) (bool, error) {
		refs, err := st.selectedPCRs(sel)
		if err != nil {
			return false, fmt.Errorf("soft TPM: PCR read: %w", err)
		}
		for _, s := range sel.PCRSelections {
			if out[s.Hash] == nil {
				out[s.Hash] = make(map[int][]byte)
			}
		}
		for _, r := range refs {
			out[r.alg][r.index] = slices.Clone(st.pcrs[r.alg].pcr[r.index])
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PCRExtend extends PCR pcr in each bank given: PCR = H(PCR || digest).
// Every digest is checked before any bank changes.
func (t *TPM) PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error {
	return t.do(ctx, func(st *state) (bool, error) {
		if pcr < 0 || pcr >= NumPCRs {
			return false, fmt.Errorf("soft TPM: extend PCR %d: no such PCR (0-%d): %w", pcr, NumPCRs-1, tpm2.TPMRCValue)
		}
		for alg, d := range digests {
			b := st.pcrs[alg]
			if b == nil {
				return false, fmt.Errorf("soft TPM: extend PCR %d: bank %v is not allocated (this TPM has sha1 and sha256): %w", pcr, alg, tpm2.TPMRCHash)
			}
			if len(d) != b.hash.Size() {
				return false, fmt.Errorf("soft TPM: extend PCR %d: %v digest of %d bytes, want %d: %w", pcr, alg, len(d), b.hash.Size(), tpm2.TPMRCSize)
			}
		}
		for alg, d := range digests {
			st.pcrs[alg].extend(pcr, d)
		}
		return len(digests) > 0, nil
	})
}

// pcrDigest is the quote's pcrDigest: the hash, with the signing scheme's
// hash, of the selected PCRs concatenated in selection order.
func (st *state) pcrDigest(h crypto.Hash, refs []pcrRef) []byte {
	d := h.New()
	for _, r := range refs {
		d.Write(st.pcrs[r.alg].pcr[r.index])
	}
	return d.Sum(nil)
}

// PCRDigest computes the pcrDigest a quote over sel would carry for the
// given PCR values (as PCRRead returns them) with hash h: what a verifier
// recomputes from reported PCR values.
func PCRDigest(h crypto.Hash, sel tpm2.TPMLPCRSelection, values map[tpm2.TPMAlgID]map[int][]byte) ([]byte, error) {
	d := h.New()
	for n, s := range sel.PCRSelections {
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) == 0 {
					continue
				}
				v, ok := values[s.Hash][i*8+bit]
				if !ok {
					return nil, fmt.Errorf("selection %d: no value for PCR %d in bank %v", n, i*8+bit, s.Hash)
				}
				d.Write(v)
			}
		}
	}
	return d.Sum(nil), nil
}

func cloneSelection(sel tpm2.TPMLPCRSelection) tpm2.TPMLPCRSelection {
	out := tpm2.TPMLPCRSelection{PCRSelections: make([]tpm2.TPMSPCRSelection, len(sel.PCRSelections))}
	for i, s := range sel.PCRSelections {
		out.PCRSelections[i] = tpm2.TPMSPCRSelection{Hash: s.Hash, PCRSelect: bytes.Clone(s.PCRSelect)}
	}
	return out
}

// maxEventBanks bounds the banks PCRExtendEvents extends per event.
const maxEventBanks = 8

// PCRExtendEvents extends PCR pcr with a sequence of events, in order,
// under one lock: event i's digest for banks[b] is digests[i*len(banks)+b].
// It is PCRExtend called event by event, each event's banks in the order
// given, except that every digest is checked before any PCR changes: an
// IMA list's new entries (simhost.MemIMALog) reach PCR 10 in one call,
// without a map per entry.
func (t *TPM) PCRExtendEvents(ctx context.Context, pcr int, banks []tpm2.TPMAlgID, digests [][]byte) error {
	if len(banks) == 0 || len(banks) > maxEventBanks || len(digests)%len(banks) != 0 {
		return fmt.Errorf("soft TPM: extend PCR %d: %d digests for %d banks: %w", pcr, len(digests), len(banks), tpm2.TPMRCSize)
	}
	return t.do(ctx, func(st *state) (bool, error) {
		if pcr < 0 || pcr >= NumPCRs {
			return false, fmt.Errorf("soft TPM: extend PCR %d: no such PCR (0-%d): %w", pcr, NumPCRs-1, tpm2.TPMRCValue)
		}
		var bk [maxEventBanks]*bank
		for i, alg := range banks {
			if bk[i] = st.pcrs[alg]; bk[i] == nil {
				return false, fmt.Errorf("soft TPM: extend PCR %d: bank %v is not allocated (this TPM has sha1 and sha256): %w", pcr, alg, tpm2.TPMRCHash)
			}
		}
		for i, d := range digests {
			if b := bk[i%len(banks)]; len(d) != b.hash.Size() {
				return false, fmt.Errorf("soft TPM: extend PCR %d: event %d: %v digest of %d bytes, want %d: %w", pcr, i/len(banks), banks[i%len(banks)], len(d), b.hash.Size(), tpm2.TPMRCSize)
			}
		}
		for i, d := range digests {
			bk[i%len(banks)].extend(pcr, d)
		}
		return len(digests) > 0, nil
	})
}
