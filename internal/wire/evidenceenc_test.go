package wire

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"unicode/utf8"
)

// evidenceGen makes random Evidence the way the encoders must get right:
// nil and empty byte strings, nil and empty PCR maps and banks, banks and
// indices whose encodings take 1, 2, 3, 5 and 9 bytes, negative indices
// (whose keys sort after every positive one), more banks and PCRs than
// AppendEvidence keeps on its stack, and offsets at every head boundary.
type evidenceGen struct{ r *rand.Rand }

func (g evidenceGen) bytes(max int, nilOK bool) []byte {
	if nilOK && g.r.IntN(5) == 0 {
		return nil
	}
	n := g.r.IntN(max + 1)
	if g.r.IntN(4) == 0 {
		n = 0
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

var headEdges = []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}

func (g evidenceGen) index() int {
	switch g.r.IntN(6) {
	case 0:
		return -1 - g.r.IntN(300)
	case 1:
		e := headEdges[g.r.IntN(len(headEdges)-1)]
		if g.r.IntN(2) == 0 {
			return -1 - int(e)
		}
		return int(e)
	case 2:
		return []int{math.MaxInt, math.MinInt, math.MaxInt32, math.MinInt32}[g.r.IntN(4)]
	}
	return g.r.IntN(24)
}

func (g evidenceGen) bank() uint16 {
	switch g.r.IntN(4) {
	case 0:
		return uint16(g.r.Uint32())
	case 1:
		return []uint16{0, 23, 24, 255, 256, math.MaxUint16}[g.r.IntN(6)]
	}
	return []uint16{0x04, 0x0b, 0x0c, 0x0d, 0x12}[g.r.IntN(5)]
}

func (g evidenceGen) evidence() Evidence {
	ev := Evidence{
		AgentID:   fmt.Sprintf("agent-%x", g.bytes(20, false)),
		Nonce:     g.bytes(40, true),
		Quote:     g.bytes(300, true),
		Signature: g.bytes(300, true),
		BootLog:   g.bytes(50, true),
		IMA:       g.bytes(500, true),
		IMAOffset: headEdges[g.r.IntN(len(headEdges))],
	}
	switch g.r.IntN(10) {
	case 0:
		ev.AgentID = ""
	case 1:
		ev.AgentID = "\xff not UTF-8 ü"
	case 2:
		ev.AgentID = strings.Repeat("a", 300)
	}
	if g.r.IntN(8) == 0 {
		return ev // nil PCR map
	}
	ev.PCRs = map[uint16]map[int][]byte{}
	banks := g.r.IntN(4)
	if g.r.IntN(10) == 0 {
		banks = 20 // more than AppendEvidence's stack holds
	}
	for range banks {
		bank := g.bank()
		if g.r.IntN(10) == 0 {
			ev.PCRs[bank] = nil
			continue
		}
		values := map[int][]byte{}
		n := g.r.IntN(8)
		if g.r.IntN(10) == 0 {
			n = 40
		}
		for range n {
			values[g.index()] = g.bytes(64, true)
		}
		ev.PCRs[bank] = values
	}
	return ev
}

// TestAppendEvidenceIsReflective holds AppendEvidence, and Marshal which
// uses it, to the reflective encoder, byte for byte.
func TestAppendEvidenceIsReflective(t *testing.T) {
	g := evidenceGen{rand.New(rand.NewPCG(1, 2))}
	qr := newQuickRand(3)
	check := func(n int, ev Evidence) {
		t.Helper()
		want, err := encMode.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendEvidence([]byte("prefix"), &ev)
		if !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], want) {
			t.Fatalf("case %d, %+v:\nAppendEvidence % x\nreflective     % x", n, ev, got[6:], want)
		}
		for _, v := range []any{ev, &ev} {
			m, err := Marshal(v)
			if err != nil || !bytes.Equal(m, want) {
				t.Fatalf("case %d: Marshal(%T) % x, %v; reflective % x", n, v, m, err, want)
			}
		}
	}
	for _, ev := range sampleEvidence() {
		check(-1, ev)
	}
	for n := range 3000 {
		check(n, g.evidence())
		// testing/quick fills fields added to Evidence later too, so a
		// field the encoder forgets fails here.
		v, ok := quick.Value(reflect.TypeFor[Evidence](), qr)
		if !ok {
			t.Fatal("quick.Value failed")
		}
		check(n, v.Interface().(Evidence))
	}
	if got, err := Marshal((*Evidence)(nil)); err != nil || !bytes.Equal(got, []byte{cborNull}) {
		t.Fatalf("Marshal((*Evidence)(nil)) = % x, %v", got, err)
	}
}

// partsOf is ev as EvidenceParts, its PCRs listed in a random order, some
// named twice, the selection's banks given apart and repeated, and the IMA
// entries sometimes given by AppendIMA.
func (g evidenceGen) partsOf(ev *Evidence) EvidenceParts {
	p := EvidenceParts{AgentID: ev.AgentID, Nonce: ev.Nonce, Quote: ev.Quote, Signature: ev.Signature,
		BootLog: ev.BootLog, IMA: ev.IMA, IMAOffset: ev.IMAOffset, NilPCRs: ev.PCRs == nil}
	for bank, values := range ev.PCRs {
		if len(values) == 0 || g.r.IntN(3) == 0 {
			p.Banks = append(p.Banks, bank)
		}
		for i, v := range values {
			p.PCRs = append(p.PCRs, PCRValue{Bank: bank, Index: i, Value: v})
			if g.r.IntN(5) == 0 {
				p.PCRs = append(p.PCRs, PCRValue{Bank: bank, Index: i, Value: v})
				p.Banks = append(p.Banks, bank)
			}
		}
	}
	g.r.Shuffle(len(p.PCRs), func(i, j int) { p.PCRs[i], p.PCRs[j] = p.PCRs[j], p.PCRs[i] })
	if p.NilPCRs && g.r.IntN(2) == 0 {
		// Ignored when NilPCRs is set.
		p.PCRs, p.Banks = []PCRValue{{Bank: 1, Index: 2}}, []uint16{3}
	}
	if g.r.IntN(2) == 0 {
		ima := ev.IMA
		p.IMA = []byte("ignored")
		p.IMALen = len(ima)
		p.AppendIMA = func(dst []byte) []byte { return append(dst, ima...) }
	}
	return p
}

// TestEvidenceEncoderIsReflective holds EvidenceEncoder to the reflective
// encoder of the Evidence its parts stand for, with one encoder reused
// throughout as its callers reuse it.
func TestEvidenceEncoderIsReflective(t *testing.T) {
	g := evidenceGen{rand.New(rand.NewPCG(5, 6))}
	var enc EvidenceEncoder
	var buf []byte
	for n := range 3000 {
		ev := g.evidence()
		// A list cannot say "this bank is null": the agent's banks are
		// maps, never nil.
		for bank, values := range ev.PCRs {
			if values == nil {
				ev.PCRs[bank] = map[int][]byte{}
			}
		}
		p := g.partsOf(&ev)
		want, err := encMode.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		buf = enc.Append(append(buf[:0], "prefix"...), &p)
		if !bytes.Equal(buf[:6], []byte("prefix")) || !bytes.Equal(buf[6:], want) {
			t.Fatalf("case %d, %+v:\nEvidenceEncoder % x\nreflective      % x", n, p, buf[6:], want)
		}
		// The verifier reads it back (text that is not UTF-8 aside: the
		// decoder refuses it).
		var back Evidence
		if err := Unmarshal(buf[6:], &back); err != nil && utf8.ValidString(ev.AgentID) {
			t.Fatalf("case %d: %v", n, err)
		}
	}
}

// TestEvidenceEncoderAppendIMALength: an AppendIMA that appends other than
// IMALen bytes would corrupt the message; the encoder refuses to write it.
func TestEvidenceEncoderAppendIMALength(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "IMALen") {
			t.Fatalf("recovered %v, want a panic naming IMALen", r)
		}
	}()
	var enc EvidenceEncoder
	enc.Append(nil, &EvidenceParts{IMALen: 3, AppendIMA: func(dst []byte) []byte { return append(dst, 1, 2) }})
}

// steadyEvidence is a steady-state attestation: quote, RSA signature, PCR
// 10 and PCRs 0-9 in sha256, 20 binary IMA entries.
func steadyEvidence() Evidence {
	pcrs := map[int][]byte{}
	for i := range 11 {
		pcrs[i] = bytes.Repeat([]byte{byte(i)}, 32)
	}
	return Evidence{AgentID: "host-0001", Nonce: bytes.Repeat([]byte{1}, 32),
		Quote: bytes.Repeat([]byte{2}, 145), Signature: bytes.Repeat([]byte{3}, 262),
		PCRs: map[uint16]map[int][]byte{0x0b: pcrs, 0x04: {}},
		IMA:  bytes.Repeat([]byte{5}, 20*118), IMAOffset: 4321}
}

func steadyParts(ev *Evidence) EvidenceParts {
	p := EvidenceParts{AgentID: ev.AgentID, Nonce: ev.Nonce, Quote: ev.Quote, Signature: ev.Signature,
		IMAOffset: ev.IMAOffset, Banks: []uint16{0x0b, 0x04}}
	for _, i := range slices.Sorted(func(yield func(int) bool) {
		for i := range ev.PCRs[0x0b] {
			if !yield(i) {
				return
			}
		}
	}) {
		p.PCRs = append(p.PCRs, PCRValue{Bank: 0x0b, Index: i, Value: ev.PCRs[0x0b][i]})
	}
	p.IMALen = len(ev.IMA)
	p.AppendIMA = func(dst []byte) []byte { return append(dst, ev.IMA...) }
	return p
}

// Encoding evidence into a reused buffer allocates nothing, from the map
// (within AppendEvidence's stack scratch) or from parts.
func TestEvidenceEncodersDoNotAllocate(t *testing.T) {
	ev := steadyEvidence()
	p := steadyParts(&ev)
	buf := make([]byte, 0, 8192)
	var enc EvidenceEncoder
	buf = enc.Append(buf[:0], &p) // warm the scratch
	if n := testing.AllocsPerRun(100, func() { buf = AppendEvidence(buf[:0], &ev) }); n != 0 {
		t.Errorf("AppendEvidence: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = enc.Append(buf[:0], &p) }); n != 0 {
		t.Errorf("EvidenceEncoder.Append: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Marshal(&ev) }); n != 1 {
		t.Errorf("Marshal(*Evidence): %v allocations, want the buffer alone", n)
	}
}

// BenchmarkMarshalEvidence compares the hand-written encoders with the
// reflective one on steady-state evidence.
//
//	go test ./internal/wire -run '^$' -bench MarshalEvidence -benchmem
func BenchmarkMarshalEvidence(b *testing.B) {
	ev := steadyEvidence()
	p := steadyParts(&ev)
	b.Run("AppendEvidence", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = AppendEvidence(buf[:0], &ev)
		}
	})
	b.Run("EvidenceEncoder", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		var enc EvidenceEncoder
		for b.Loop() {
			buf = enc.Append(buf[:0], &p)
		}
	})
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Marshal(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflective", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encMode.Marshal(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
