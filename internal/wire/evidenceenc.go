package wire

import (
	"cmp"
	"fmt"
	"slices"
)

// Evidence is encoded once per attestation by every agent (and by the
// bench's simulated hosts, thousands of times a second), and the reflective
// encoder spends more on the walk than on the bytes. AppendEvidence writes
// it by hand, as fastenc.go writes Verdict and Challenge: what
// Marshal(Evidence) writes, byte for byte — map keys in the core
// deterministic order, bytewise by their encodings (ima, pcrs, nonce,
// quote, agent_id, boot_log, signature, ima_offset; PCR banks ascending;
// PCR indices 0, 1, … then -1, -2, …), shortest heads, nil byte strings and maps as null, an empty
// boot_log or ima left out (omitempty). Marshal itself uses it, and a
// randomized test holds it to the reflective encoder.
//
// EvidenceEncoder is the same encoder for callers that quote in a loop and
// hold the PCR values as a list, as a TPM quote returns them: they need
// not build Evidence's map of maps per attestation.

// AppendEvidence appends ev to dst as Marshal(ev) encodes it. It allocates
// nothing beyond growing dst while ev.PCRs has at most 16 banks of at most
// 32 PCRs each.
func AppendEvidence(dst []byte, ev *Evidence) []byte {
	p := EvidenceParts{AgentID: ev.AgentID, Nonce: ev.Nonce, Quote: ev.Quote, Signature: ev.Signature,
		BootLog: ev.BootLog, IMA: ev.IMA, IMAOffset: ev.IMAOffset}
	dst = p.appendStart(dst)
	dst = appendPCRMap(dst, ev.PCRs)
	return p.appendEnd(dst)
}

// evidenceSize is an upper bound of ev's encoded length, so that Marshal
// allocates its buffer once even for megabytes of IMA entries.
func evidenceSize(ev *Evidence) int {
	n := 96 + len(ev.AgentID) + len(ev.Nonce) + len(ev.Quote) + len(ev.Signature) + len(ev.BootLog) + len(ev.IMA)
	for _, values := range ev.PCRs {
		n += 9 + 9
		for _, v := range values {
			n += 9 + 9 + len(v)
		}
	}
	return n
}

// PCRValue is one PCR's value: Evidence.PCRs[Bank][Index] = Value.
type PCRValue struct {
	Bank  uint16
	Index int
	Value []byte
}

// EvidenceParts is an Evidence with its PCR map given as a list, and
// optionally its IMA entries as a function that appends them in place.
type EvidenceParts struct {
	AgentID   string
	Nonce     []byte
	Quote     []byte
	Signature []byte
	// PCRs are the entries of Evidence.PCRs, in any order. A bank and
	// index given twice is written once, with its first value.
	PCRs []PCRValue
	// Banks are banks the PCR map holds even when no entry of PCRs is in
	// them (the banks of the quote's selection, as the agent's PCRRead
	// returns them), in any order, repeats allowed.
	Banks []uint16
	// NilPCRs writes the PCR map as null, as Marshal writes a nil map;
	// PCRs and Banks are then ignored.
	NilPCRs bool
	BootLog []byte
	// IMA is Evidence.IMA. When AppendIMA is set it is used instead: it
	// appends exactly IMALen bytes, the IMA entries, to dst. (An IMALen of
	// 0 leaves the field out, as omitempty does, without calling it.)
	IMA       []byte
	IMALen    int
	AppendIMA func(dst []byte) []byte
	IMAOffset uint64
}

// EvidenceEncoder encodes EvidenceParts. Its zero value is ready; it keeps
// scratch space from one Append to the next, so that a caller that reuses
// it allocates nothing once it has seen its largest evidence. It is not
// safe for concurrent use.
type EvidenceEncoder struct {
	order []PCRValue
	banks []uint16
}

// Append appends p to dst as Marshal writes the Evidence it stands for.
func (e *EvidenceEncoder) Append(dst []byte, p *EvidenceParts) []byte {
	dst = p.appendStart(dst)
	if p.NilPCRs {
		dst = append(dst, cborNull)
	} else {
		dst = e.appendPCRList(dst, p)
	}
	return p.appendEnd(dst)
}

func (p *EvidenceParts) imaLen() int {
	if p.AppendIMA != nil {
		return p.IMALen
	}
	return len(p.IMA)
}

// appendStart appends the map's head and the fields before the PCR map's
// value.
func (p *EvidenceParts) appendStart(dst []byte) []byte {
	n := 6
	ima := p.imaLen()
	if ima > 0 {
		n++
	}
	if len(p.BootLog) > 0 {
		n++
	}
	dst = appendHead(dst, 5, uint64(n))
	if ima > 0 {
		dst = appendHead(appendText(dst, "ima"), 2, uint64(ima))
		if p.AppendIMA != nil {
			start := len(dst)
			dst = p.AppendIMA(dst)
			if got := len(dst) - start; got != ima {
				panic(fmt.Sprintf("wire: EvidenceParts.AppendIMA appended %d bytes, IMALen is %d", got, ima))
			}
		} else {
			dst = append(dst, p.IMA...)
		}
	}
	return appendText(dst, "pcrs")
}

// appendEnd appends the fields after the PCR map.
func (p *EvidenceParts) appendEnd(dst []byte) []byte {
	dst = appendBytes(appendText(dst, "nonce"), p.Nonce)
	dst = appendBytes(appendText(dst, "quote"), p.Quote)
	dst = appendText(appendText(dst, "agent_id"), p.AgentID)
	if len(p.BootLog) > 0 {
		dst = appendBytes(appendText(dst, "boot_log"), p.BootLog)
	}
	dst = appendBytes(appendText(dst, "signature"), p.Signature)
	return appendHead(appendText(dst, "ima_offset"), 0, p.IMAOffset)
}

// cmpIndex orders PCR indices as core deterministic encoding orders map
// keys: bytewise by their encodings. A head's first byte holds the major
// type (0 for 0 and up, 1 for negatives) and grows with the argument's
// size, which follows, big-endian: so the order is 0, 1, …, then -1, -2, ….
func cmpIndex(a, b int) int {
	switch {
	case a >= 0 && b < 0:
		return -1
	case a < 0 && b >= 0:
		return 1
	case a < 0: // -1 (argument 0) first
		return cmp.Compare(b, a)
	}
	return cmp.Compare(a, b)
}

func cmpPCR(a, b PCRValue) int {
	if a.Bank != b.Bank {
		return int(a.Bank) - int(b.Bank)
	}
	return cmpIndex(a.Index, b.Index)
}

// appendPCRMap appends bank → PCR index → value from Evidence's map.
func appendPCRMap(dst []byte, m map[uint16]map[int][]byte) []byte {
	if m == nil {
		return append(dst, cborNull)
	}
	var bankBuf [16]uint16
	banks := bankBuf[:0]
	for bank := range m {
		banks = append(banks, bank)
	}
	slices.Sort(banks)
	dst = appendHead(dst, 5, uint64(len(banks)))
	var indexBuf [32]int
	for _, bank := range banks {
		dst = appendHead(dst, 0, uint64(bank))
		values := m[bank]
		if values == nil {
			dst = append(dst, cborNull)
			continue
		}
		indices := indexBuf[:0]
		for i := range values {
			indices = append(indices, i)
		}
		slices.SortFunc(indices, cmpIndex)
		dst = appendHead(dst, 5, uint64(len(indices)))
		for _, i := range indices {
			dst = appendBytes(appendInt(dst, int64(i)), values[i])
		}
	}
	return dst
}

// appendPCRList appends bank → PCR index → value from p's list: the banks
// of p.Banks and of p.PCRs ascending, once each, a PCR given twice once.
func (e *EvidenceEncoder) appendPCRList(dst []byte, p *EvidenceParts) []byte {
	e.order = append(e.order[:0], p.PCRs...)
	slices.SortStableFunc(e.order, cmpPCR)
	e.order = slices.CompactFunc(e.order, func(a, b PCRValue) bool { return a.Bank == b.Bank && a.Index == b.Index })
	e.banks = append(e.banks[:0], p.Banks...)
	for _, v := range e.order {
		if n := len(e.banks); n == 0 || e.banks[n-1] != v.Bank {
			e.banks = append(e.banks, v.Bank)
		}
	}
	slices.Sort(e.banks)
	e.banks = slices.Compact(e.banks)
	dst = appendHead(dst, 5, uint64(len(e.banks)))
	i := 0
	for _, bank := range e.banks {
		j := i
		for j < len(e.order) && e.order[j].Bank == bank {
			j++
		}
		dst = appendHead(appendHead(dst, 0, uint64(bank)), 5, uint64(j-i))
		for _, v := range e.order[i:j] {
			dst = appendBytes(appendInt(dst, int64(v.Index)), v.Value)
		}
		i = j
	}
	// The values belong to the caller: drop the references.
	clear(e.order)
	return dst
}
