package bench

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// TestEvidenceEncoderIsMarshal holds the lean generator's evidence encoder
// (its adapter over wire.EvidenceEncoder, which internal/wire's tests hold
// to the reflective encoder) to wire.Marshal, byte for byte, for random
// evidence as the generator has it: nil and empty fields, PCR selections
// over several banks in any order, a PCR named twice, large offsets.
func TestEvidenceEncoderIsMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	randBytes := func(max int, nilOK bool) []byte {
		if nilOK && r.IntN(6) == 0 {
			return nil
		}
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	banks := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512, 0x1234}
	var enc evidenceEncoder
	for n := range 2000 {
		ev := evidence{
			agentID:   fmt.Sprintf("agent-%x", randBytes(20, false)),
			nonce:     randBytes(40, true),
			quote:     randBytes(300, true),
			signature: randBytes(300, true),
			bootLog:   randBytes(50, true),
			imaOffset: []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}[r.IntN(11)],
			pcrsNil:   r.IntN(10) == 0,
		}
		if n%3 == 0 {
			ev.agentID = "bench-00042"
		}
		// wire.Evidence.PCRs as the agent's PCRRead gives it: every bank of
		// the selection present.
		var pcrs map[uint16]map[int][]byte
		if !ev.pcrsNil {
			pcrs = map[uint16]map[int][]byte{}
		}
		for range r.IntN(4) {
			s := tpm2.TPMSPCRSelection{Hash: banks[r.IntN(len(banks))], PCRSelect: make([]byte, 3)}
			if !ev.pcrsNil {
				if pcrs[uint16(s.Hash)] == nil {
					pcrs[uint16(s.Hash)] = map[int][]byte{}
				}
			}
			for range r.IntN(6) {
				i := r.IntN(24)
				s.PCRSelect[i/8] |= 1 << (i % 8)
			}
			ev.sel.PCRSelections = append(ev.sel.PCRSelections, s)
			for i := range 24 {
				if s.PCRSelect[i/8]&(1<<(i%8)) == 0 {
					continue
				}
				v := randBytes(64, false)
				if old, ok := pcrs[uint16(s.Hash)][i]; ok {
					v = old // a PCR named twice has one value
				}
				ev.pcrs = append(ev.pcrs, soft.PCRValue{Bank: s.Hash, Index: i, Value: v})
				if !ev.pcrsNil {
					pcrs[uint16(s.Hash)][i] = v
				}
			}
		}
		ima := randBytes(500, true)
		if len(ima) > 0 {
			ev.imaSize = len(ima)
			ev.appendIMA = func(dst []byte) []byte { return append(dst, ima...) }
		}
		want, err := wire.Marshal(wire.Evidence{AgentID: ev.agentID, Nonce: ev.nonce, Quote: ev.quote, Signature: ev.signature,
			PCRs: pcrs, BootLog: ev.bootLog, IMA: ima, IMAOffset: ev.imaOffset})
		if err != nil {
			t.Fatal(err)
		}
		got := enc.append([]byte("prefix"), &ev)
		if !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], want) {
			t.Fatalf("case %d: encoder\n%x\nwire.Marshal\n%x", n, got[6:], want)
		}
		// And the verifier reads it back to the same evidence.
		var back wire.Evidence
		if err := wire.Unmarshal(got[6:], &back); err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
	}
}

// TestReadVerdictIsUnmarshal: the verdict reader reads what wire.Marshal
// writes as wire.Unmarshal does, and gives up on anything else (internal/
// wire's tests and fuzz targets hold wire.ReadVerdictView to the general
// decoder; this holds the adapter to it).
func TestReadVerdictIsUnmarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	str := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = 'a' + byte(r.IntN(26))
		}
		return string(b)
	}
	bts := func() []byte {
		if r.IntN(5) == 0 {
			return nil
		}
		b := make([]byte, r.IntN(70))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	ints := []int64{0, 1, -1, 23, 24, -25, 1000, -70000, math.MaxInt64, math.MinInt64}
	for n := range 2000 {
		v := wire.Verdict{AgentID: str(), State: str(), Reason: str(), Detail: str()}
		if r.IntN(4) != 0 {
			v.Next = &wire.Challenge{AgentID: str(), Nonce: bts(), PCRSelection: bts(), IMAOffset: r.Uint64() >> r.IntN(64),
				WantIMA: r.IntN(2) == 0, WantBootLog: r.IntN(2) == 0, IntervalMS: ints[r.IntN(len(ints))], ExpiresInMS: ints[r.IntN(len(ints))]}
		}
		body, err := wire.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var got verdictView
		if !readVerdict(body, &got) {
			t.Fatalf("case %d: gave up on %x", n, body)
		}
		if string(got.state) != v.State || string(got.reason) != v.Reason || string(got.detail) != v.Detail || got.hasNext != (v.Next != nil) {
			t.Fatalf("case %d: %+v, want %+v", n, got, v)
		}
		if v.Next != nil {
			want := viewOf(v.Next)
			if !reflect.DeepEqual(normal(got.next), normal(want)) {
				t.Fatalf("case %d: next %+v, want %+v", n, got.next, want)
			}
			cb, _ := wire.Marshal(v.Next)
			var c challengeView
			if !readChallenge(cb, &c) || !reflect.DeepEqual(normal(c), normal(want)) {
				t.Fatalf("case %d: challenge %+v, want %+v", n, c, want)
			}
		}
	}
	for _, bad := range [][]byte{
		nil,
		{0xa1, 0x63, 'f', 'o', 'o', 0x01}, // unknown field
		{0xa1, 0x65, 's', 't', 'a', 't', 'e', 0x01}, // state not text
		{0xa1, 0x65, 's', 't', 'a', 't', 'e', 0x61}, // truncated
		{0xa0, 0x00}, // trailing bytes
		{0xbf, 0xff}, // indefinite length
		{0xa1, 0x64, 'n', 'e', 'x', 't', 0xa1, 0x61, 'x', 0x00}, // unknown challenge field
	} {
		var v verdictView
		if readVerdict(bad, &v) {
			t.Errorf("% x: read", bad)
		}
	}
}

// normal makes nil and empty byte strings compare equal: Marshal writes
// nil as null, which both readers give back as nil.
func normal(c challengeView) challengeView {
	if len(c.nonce) == 0 {
		c.nonce = nil
	}
	if len(c.pcrSelection) == 0 {
		c.pcrSelection = nil
	}
	return c
}

// The lean generator's request path encodes evidence and reads verdicts
// and challenges without allocating, once its buffers have grown.
func TestLeanCodecDoesNotAllocate(t *testing.T) {
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0x00}},
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0, 0, 0}},
	}}
	ev := evidence{agentID: "bench-00042", nonce: bytes.Repeat([]byte{1}, 32), quote: bytes.Repeat([]byte{2}, 145),
		signature: bytes.Repeat([]byte{3}, 72), sel: sel, imaOffset: 4321}
	for i := range 11 {
		ev.pcrs = append(ev.pcrs, soft.PCRValue{Bank: tpm2.TPMAlgSHA256, Index: i, Value: bytes.Repeat([]byte{byte(i)}, 32)})
	}
	ima := bytes.Repeat([]byte{5}, 20*118)
	ev.imaSize = len(ima)
	ev.appendIMA = func(dst []byte) []byte { return append(dst, ima...) }
	want, err := wire.Marshal(wire.Evidence{AgentID: ev.agentID, Nonce: ev.nonce, Quote: ev.quote, Signature: ev.signature,
		PCRs: map[uint16]map[int][]byte{uint16(tpm2.TPMAlgSHA1): {}, uint16(tpm2.TPMAlgSHA256): func() map[int][]byte {
			m := map[int][]byte{}
			for _, v := range ev.pcrs {
				m[v.Index] = v.Value
			}
			return m
		}()}, IMA: ima, IMAOffset: ev.imaOffset})
	if err != nil {
		t.Fatal(err)
	}
	var enc evidenceEncoder
	body := enc.append(nil, &ev)
	if !bytes.Equal(body, want) {
		t.Fatalf("encoder\n%x\nwire.Marshal\n%x", body, want)
	}
	if n := testing.AllocsPerRun(100, func() { body = enc.append(body[:0], &ev) }); n != 0 {
		t.Errorf("encoding evidence: %v allocations", n)
	}
	next := &wire.Challenge{AgentID: ev.agentID, Nonce: ev.nonce, PCRSelection: tpm2.Marshal(sel), IMAOffset: 4341,
		WantIMA: true, IntervalMS: 2000, ExpiresInMS: 10000}
	verdict, err := wire.Marshal(wire.Verdict{AgentID: ev.agentID, State: "attesting", Next: next})
	if err != nil {
		t.Fatal(err)
	}
	challenge, err := wire.Marshal(next)
	if err != nil {
		t.Fatal(err)
	}
	var v verdictView
	var c challengeView
	if n := testing.AllocsPerRun(100, func() {
		if !readVerdict(verdict, &v) || !readChallenge(challenge, &c) {
			t.Fatal("a reader gave up on what wire.Marshal wrote")
		}
	}); n != 0 {
		t.Errorf("reading a verdict and a challenge: %v allocations", n)
	}
	if !v.hasNext || !reflect.DeepEqual(v.next, viewOf(next)) || !reflect.DeepEqual(c, viewOf(next)) {
		t.Fatalf("read %+v and %+v, want %+v", v, c, viewOf(next))
	}
}
