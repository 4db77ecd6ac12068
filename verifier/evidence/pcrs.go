package evidence

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// MaxPCR is the highest PCR index of a PC Client TPM (24 PCRs).
const MaxPCR = 23

// PCRValues holds PCR values by bank and index, the shape TPM2_PCR_Read
// results take. Its JSON form is Vigil's PCR file format:
//
//	{"sha256": {"0": "hex", "1": "hex", ...}, "sha1": {...}}
type PCRValues map[tpm2.TPMAlgID]map[int][]byte

// Set records one value, creating the bank as needed.
func (p PCRValues) Set(bank tpm2.TPMAlgID, index int, value []byte) {
	if p[bank] == nil {
		p[bank] = make(map[int][]byte)
	}
	p[bank][index] = value
}

// Get returns one value and whether it is present.
func (p PCRValues) Get(bank tpm2.TPMAlgID, index int) ([]byte, bool) {
	v, ok := p[bank][index]
	return v, ok
}

// BankName is the name of a PCR bank in Vigil's files and flags
// ("sha256"), as internal/tpmfacts names it for every part.
func BankName(alg tpm2.TPMAlgID) string { return tpmfacts.BankName(alg) }

// ParseBank maps a bank name to its algorithm (tpmfacts.ParseBank).
func ParseBank(name string) (tpm2.TPMAlgID, error) { return tpmfacts.ParseBank(name) }

// HashOf maps a TPM hash algorithm to Go's crypto.Hash (tpmfacts.HashOf).
func HashOf(alg tpm2.TPMAlgID) (crypto.Hash, bool) { return tpmfacts.HashOf(alg) }

// MarshalJSON writes Vigil's PCR file format, banks by name, indices as
// decimal strings, values as lowercase hex.
func (p PCRValues) MarshalJSON() ([]byte, error) {
	out := make(map[string]map[string]string, len(p))
	for alg, vals := range p {
		m := make(map[string]string, len(vals))
		for i, v := range vals {
			m[strconv.Itoa(i)] = hex.EncodeToString(v)
		}
		out[BankName(alg)] = m
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads Vigil's PCR file format, refusing unknown banks, PCR
// indices outside 0-23 and values whose length is not the bank's digest size.
func (p *PCRValues) UnmarshalJSON(b []byte) error {
	var raw map[string]map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("PCR values: %w", err)
	}
	out := make(PCRValues, len(raw))
	for name, vals := range raw {
		alg, err := ParseBank(name)
		if err != nil {
			return fmt.Errorf("PCR values: %w", err)
		}
		h, _ := HashOf(alg)
		for idx, hx := range vals {
			i, err := strconv.Atoi(idx)
			if err != nil || i < 0 || i > MaxPCR {
				return fmt.Errorf("PCR values: bank %s: PCR index %q is not 0-%d", name, idx, MaxPCR)
			}
			v, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(hx, "0x"), "0X"))
			if err != nil {
				return fmt.Errorf("PCR values: %s PCR %d: %w", name, i, err)
			}
			if len(v) != h.Size() {
				return fmt.Errorf("PCR values: %s PCR %d: %d bytes, want %d", name, i, len(v), h.Size())
			}
			out.Set(alg, i, v)
		}
	}
	*p = out
	return nil
}

// SelectedPCRs lists the PCR indices a selection sets for one bank entry, in
// ascending order: the order TPM2_Quote concatenates them in.
func SelectedPCRs(s tpm2.TPMSPCRSelection) []int {
	var out []int
	for i, b := range s.PCRSelect {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				out = append(out, i*8+bit)
			}
		}
	}
	return out
}

// Selection builds a TPML_PCR_SELECTION for the given PCRs in each bank.
func Selection(pcrs []int, bankAlgs ...tpm2.TPMAlgID) tpm2.TPMLPCRSelection {
	var sel tpm2.TPMLPCRSelection
	for _, alg := range bankAlgs {
		bitmap := make([]byte, 3)
		for _, i := range pcrs {
			if i >= 0 && i <= MaxPCR {
				bitmap[i/8] |= 1 << (i % 8)
			}
		}
		sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: alg, PCRSelect: bitmap})
	}
	return sel
}

// PCRDigest computes what a TPM puts in TPMS_QUOTE_INFO.pcrDigest: the hash,
// with the signing scheme's algorithm, of the selected PCR values
// concatenated bank by bank in selection order, ascending index within a
// bank. It also returns the values it used, which are then the quoted ones:
// values itself when it holds exactly the selected PCRs (what agents send),
// else a copy of the selected part.
func PCRDigest(h crypto.Hash, sel tpm2.TPMLPCRSelection, values PCRValues) ([]byte, PCRValues, error) {
	hh := h.New()
	for _, s := range sel.PCRSelections {
		bh, ok := HashOf(s.Hash)
		if !ok {
			return nil, nil, Fail(ReasonPCRMissing, "quote selects PCR bank %s, which Vigil does not support", BankName(s.Hash))
		}
		bank := values[s.Hash]
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) == 0 {
					continue
				}
				idx := i*8 + bit
				v, ok := bank[idx]
				if !ok {
					return nil, nil, Fail(ReasonPCRMissing, "quote selects %s PCR %d but no value was supplied", BankName(s.Hash), idx)
				}
				if len(v) != bh.Size() {
					return nil, nil, Fail(ReasonPCRMissing, "%s PCR %d value has %d bytes, want %d", BankName(s.Hash), idx, len(v), bh.Size())
				}
				hh.Write(v)
			}
		}
	}
	digest := hh.Sum(nil)
	if selectsExactly(sel, values) {
		return digest, values, nil
	}
	quoted := make(PCRValues, len(sel.PCRSelections))
	for _, s := range sel.PCRSelections {
		for _, idx := range SelectedPCRs(s) {
			quoted.Set(s.Hash, idx, values[s.Hash][idx])
		}
	}
	return digest, quoted, nil
}

// selectsExactly reports whether values holds the selected PCRs and no
// others, given that every selected PCR is present in values: then each
// selected bank must hold as many values as its selection has bits, and
// values no other bank. A bank selected twice is left to the copy.
func selectsExactly(sel tpm2.TPMLPCRSelection, values PCRValues) bool {
	if len(values) != len(sel.PCRSelections) {
		return false
	}
	for i, s := range sel.PCRSelections {
		for _, prev := range sel.PCRSelections[:i] {
			if prev.Hash == s.Hash {
				return false
			}
		}
		n := 0
		for _, b := range s.PCRSelect {
			n += bits.OnesCount8(b)
		}
		if n == 0 || len(values[s.Hash]) != n {
			return false
		}
	}
	return true
}

// Equal reports whether two PCR value sets hold the same banks, indices and
// values.
func (p PCRValues) Equal(o PCRValues) bool {
	if len(p) != len(o) {
		return false
	}
	for alg, vals := range p {
		ov, ok := o[alg]
		if !ok || len(ov) != len(vals) {
			return false
		}
		for i, v := range vals {
			if w, ok := ov[i]; !ok || !bytes.Equal(v, w) {
				return false
			}
		}
	}
	return true
}

// Indices returns the PCR indices present in a bank, ascending.
func (p PCRValues) Indices(bank tpm2.TPMAlgID) []int {
	out := make([]int, 0, len(p[bank]))
	for i := range p[bank] {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}
