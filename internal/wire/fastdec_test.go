package wire

import (
	"bytes"
	"fmt"
	"math"
	mrand "math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"github.com/fxamacker/cbor/v2"
)

func newQuickRand(seed int64) *mrand.Rand { return mrand.New(mrand.NewSource(seed)) }

// generalOf decodes with the reflective decoder alone, as Unmarshal did
// before the fast paths.
func generalOf[T any](data []byte) (T, error) {
	var v T
	rest, err := decMode.UnmarshalFirst(data, &v)
	if err != nil {
		var zero T
		return zero, describe(err, &v)
	}
	if len(rest) != 0 {
		var zero T
		return zero, fmt.Errorf("%d bytes of trailing data after the CBOR message", len(rest))
	}
	return v, nil
}

// agree holds the fast path for T to the general decoder on data: whatever
// the fast path accepts the general decoder accepts with the same result;
// Unmarshal and Read answer as the general decoder does, errors included.
// It reports whether the fast path took data.
func agree[T any](t *testing.T, data []byte, fast func([]byte, *T, bool) bool) bool {
	t.Helper()
	slow, slowErr := generalOf[T](data)
	var got T
	took := fast(data, &got, false)
	if took {
		if slowErr != nil {
			t.Fatalf("% x: fast path accepted what the general decoder refuses (%v): %+v", data, slowErr, got)
		}
		if !reflect.DeepEqual(got, slow) {
			t.Fatalf("% x: fast %+v, general %+v", data, show(got), show(slow))
		}
		var owned T
		if !fast(bytes.Clone(data), &owned, true) || !reflect.DeepEqual(owned, slow) {
			t.Fatalf("% x: fast path given the buffer: %+v, general %+v", data, show(owned), show(slow))
		}
	}
	var un T
	err := Unmarshal(data, &un)
	if (err == nil) != (slowErr == nil) || (err != nil && err.Error() != slowErr.Error()) {
		t.Fatalf("% x: Unmarshal error %v, general decoder %v", data, err, slowErr)
	}
	if err == nil && !reflect.DeepEqual(un, slow) {
		t.Fatalf("% x: Unmarshal %+v, general %+v", data, show(un), show(slow))
	}
	if len(data) > 0 {
		var read T
		rerr := Read(bytes.NewReader(data), MaxMessage, &read)
		if (rerr == nil) != (err == nil) || (err == nil && !reflect.DeepEqual(read, un)) {
			t.Fatalf("% x: Read %+v (%v), Unmarshal %+v (%v)", data, show(read), rerr, show(un), err)
		}
	}
	return took
}

// show prints a verdict's next challenge rather than its address.
func show(v any) any {
	if vd, ok := v.(Verdict); ok && vd.Next != nil {
		return fmt.Sprintf("%+v (next %+v)", vd, *vd.Next)
	}
	return v
}

// challengeGen makes random challenges and verdicts: testing/quick values
// (which fill fields added later too) and the edges the encoders and
// decoders must get right.
type challengeGen struct{ r *mrand.Rand }

func (g challengeGen) challenge(i int) Challenge {
	edge := []Challenge{
		{},
		{Nonce: []byte{}, PCRSelection: []byte{}, IntervalMS: -1, ExpiresInMS: math.MinInt64, IMAOffset: math.MaxUint64},
		{AgentID: "ünïcode", IntervalMS: 23, ExpiresInMS: 24, IMAOffset: 1 << 32, WantIMA: true},
		{IntervalMS: -24, ExpiresInMS: -25, IMAOffset: 255, WantBootLog: true},
		{IntervalMS: 65535, ExpiresInMS: 65536, IMAOffset: math.MaxUint32, Nonce: make([]byte, 32)},
		{IntervalMS: math.MaxInt64, ExpiresInMS: -256, PCRSelection: []byte{0, 0, 0, 1, 0, 0xb, 3, 0xff, 0x07, 0x40}},
		{AgentID: string(bytes.Repeat([]byte{'a'}, 300)), Nonce: make([]byte, 70000)},
	}
	if i < len(edge) {
		return edge[i]
	}
	v, ok := quick.Value(reflect.TypeFor[Challenge](), g.r)
	if !ok {
		panic("quick.Value failed")
	}
	c := v.Interface().(Challenge)
	switch g.r.Intn(4) {
	case 0:
		c.Nonce = nil
	case 1:
		c.PCRSelection = []byte{}
	}
	return c
}

func (g challengeGen) verdict(i int) Verdict {
	v, ok := quick.Value(reflect.TypeFor[Verdict](), g.r)
	if !ok {
		panic("quick.Value failed")
	}
	vd := v.Interface().(Verdict)
	switch i % 4 {
	case 0:
		vd.Next = nil
	case 1:
		c := g.challenge(i / 4)
		vd.Next = &c
	}
	if i%5 == 0 {
		vd.Reason, vd.Detail = "", ""
	}
	if i%7 == 0 {
		vd.State = []string{"attesting", "failed", ""}[i%3]
	}
	return vd
}

// What Marshal writes, the fast paths take, and decode as the general
// decoder does; so do the views, which share the message.
func TestVerdictFastPathAgreesWithGeneralDecoder(t *testing.T) {
	g := challengeGen{newQuickRand(7)}
	for i := range 3000 {
		c := g.challenge(i)
		b := mustMarshal(t, c)
		if !agree(t, b, decodeChallengeFast) {
			t.Fatalf("case %d: the fast path declined the challenge Marshal wrote: % x", i, b)
		}
		var cv ChallengeView
		if !ReadChallengeView(b, &cv) || !sameChallenge(&cv, &c) {
			t.Fatalf("case %d: view %+v, challenge %+v", i, cv, c)
		}
		v := g.verdict(i)
		b = mustMarshal(t, v)
		if !agree(t, b, decodeVerdictFast) {
			t.Fatalf("case %d: the fast path declined the verdict Marshal wrote: % x", i, b)
		}
		var vv VerdictView
		if !ReadVerdictView(b, &vv) || string(vv.AgentID) != v.AgentID || string(vv.State) != v.State ||
			string(vv.Reason) != v.Reason || string(vv.Detail) != v.Detail || vv.HasNext != (v.Next != nil) ||
			(v.Next != nil && !sameChallenge(&vv.Next, v.Next)) {
			t.Fatalf("case %d: view %+v, verdict %+v", i, vv, show(v))
		}
		// Other encoders' forms (struct order, not deterministic) still
		// decode, through the general decoder.
		for _, m := range []any{c, v} {
			u, err := cbor.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(Challenge); ok {
				agree(t, u, decodeChallengeFast)
			} else {
				agree(t, u, decodeVerdictFast)
			}
		}
	}
}

// sameChallenge compares a view with the challenge Marshal wrote: nil and
// empty byte strings apart, as Unmarshal keeps them apart.
func sameChallenge(v *ChallengeView, c *Challenge) bool {
	return string(v.AgentID) == c.AgentID && (v.Nonce == nil) == (c.Nonce == nil) && bytes.Equal(v.Nonce, c.Nonce) &&
		(v.PCRSelection == nil) == (c.PCRSelection == nil) && bytes.Equal(v.PCRSelection, c.PCRSelection) &&
		v.IMAOffset == c.IMAOffset && v.WantIMA == c.WantIMA && v.WantBootLog == c.WantBootLog &&
		v.IntervalMS == c.IntervalMS && v.ExpiresInMS == c.ExpiresInMS
}

// enc is CBOR for hand-made test messages: map of text keys, in the
// order given, with values as written.
func enc(kv ...any) []byte {
	b := appendHead(nil, 5, uint64(len(kv)/2))
	for i := 0; i < len(kv); i += 2 {
		b = appendText(b, kv[i].(string))
		switch v := kv[i+1].(type) {
		case []byte:
			b = append(b, v...) // raw CBOR
		default:
			raw, err := cbor.Marshal(v)
			if err != nil {
				panic(err)
			}
			b = append(b, raw...)
		}
	}
	return b
}

var null = []byte{cborNull}

// Messages in forms Marshal does not write: the fast paths take the ones
// whose meaning is plain (null for a field, fields in another order) and
// decline the rest, and Unmarshal's answer is the general decoder's.
func TestVerdictFastPathOnOtherInput(t *testing.T) {
	goodCh := mustMarshal(t, Challenge{AgentID: "a", Nonce: []byte{1, 2}, PCRSelection: []byte{3}, WantIMA: true, IntervalMS: 5})
	goodV := mustMarshal(t, Verdict{AgentID: "a", State: "attesting", Next: &Challenge{Nonce: []byte{1}}})
	for _, tc := range []struct {
		name string
		body []byte
		took bool
	}{
		{"empty map", []byte{0xa0}, true},
		{"nulls", enc("agent_id", null, "nonce", null, "pcr_selection", null, "ima_offset", null, "want_ima", null,
			"want_boot_log", null, "interval_ms", null, "expires_in_ms", null), true},
		{"struct order", enc("agent_id", "a", "nonce", []byte{0x41, 1}, "interval_ms", -3), true},
		{"negative offset", enc("ima_offset", -1), false},
		{"interval overflows", enc("interval_ms", []byte{0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0}), false},
		{"interval as uint64", enc("interval_ms", uint64(math.MaxUint64)), false},
		{"interval as float", enc("interval_ms", 1.5), false},
		{"long head", enc("interval_ms", []byte{0x18, 0x05}), false},
		{"bool as int", enc("want_ima", 1), false},
		{"undefined", enc("want_ima", []byte{0xf7}), false},
		{"nonce as text", enc("nonce", "abc"), false},
		{"agent ID as bytes", enc("agent_id", []byte{0x41, 'a'}), false},
		{"agent ID not UTF-8", enc("agent_id", []byte{0x62, 0xc3, 0x28}), false},
		{"agent ID in capitals", enc("AGENT_ID", "a"), false},
		{"unknown field", enc("extra", 1), false},
		{"repeated field", enc("nonce", []byte{0x41, 1}, "nonce", []byte{0x41, 2}), false},
		{"too many fields", append([]byte{0xa9}, goodCh[1:]...), false},
		{"trailing", append(bytes.Clone(goodCh), 0), false},
		{"truncated", goodCh[:len(goodCh)-1], false},
		{"indefinite map", []byte{0xbf, 0xff}, false},
		{"indefinite bytes", enc("nonce", []byte{0x5f, 0x41, 1, 0xff}), false},
		{"tag", append([]byte{0xc0}, goodCh...), false},
		{"array", []byte{0x80}, false},
		{"nothing", nil, false},
		{"null message", null, false},
	} {
		t.Run("challenge/"+tc.name, func(t *testing.T) {
			if took := agree(t, tc.body, decodeChallengeFast); took != tc.took {
				t.Errorf("fast path took it: %v, want %v", took, tc.took)
			}
		})
	}
	for _, tc := range []struct {
		name string
		body []byte
		took bool
	}{
		{"empty map", []byte{0xa0}, true},
		{"nulls", enc("agent_id", null, "state", null, "reason", null, "detail", null, "next", null), true},
		{"empty next", enc("state", "failed", "next", []byte{0xa0}), true},
		{"next with nulls", enc("next", enc("nonce", null, "want_ima", null)), true},
		{"struct order", enc("agent_id", "a", "state", "attesting", "reason", "r", "detail", "d"), true},
		{"state as bytes", enc("state", []byte{0x41, 'a'}), false},
		{"state not UTF-8", enc("state", []byte{0x61, 0xff}), false},
		{"next as text", enc("next", "x"), false},
		{"next unknown field", enc("next", enc("extra", 1)), false},
		{"next repeated field", enc("next", enc("want_ima", true, "want_ima", false)), false},
		{"next truncated", goodV[:len(goodV)-1], false},
		{"repeated next", enc("next", []byte{0xa0}, "next", []byte{0xa0}), false},
		{"repeated state", enc("state", "a", "state", "b"), false},
		{"unknown field", enc("extra", 1), false},
		{"too many fields", append([]byte{0xa6}, goodV[1:]...), false},
		{"trailing", append(bytes.Clone(goodV), 0xa0), false},
		{"tag", append([]byte{0xd8, 0x18}, goodV...), false},
		{"nothing", nil, false},
	} {
		t.Run("verdict/"+tc.name, func(t *testing.T) {
			if took := agree(t, tc.body, decodeVerdictFast); took != tc.took {
				t.Errorf("fast path took it: %v, want %v", took, tc.took)
			}
		})
	}
}

// Errors still name the field at fault (the general decoder's).
func TestVerdictBadInputNamesTheProblem(t *testing.T) {
	var v Verdict
	err := Unmarshal(enc("next", enc("interval_ms", "soon")), &v)
	if err == nil || !strings.Contains(err.Error(), `field "next"`) {
		t.Fatalf("got %v", err)
	}
	var c Challenge
	err = Unmarshal(enc("nonce", "text"), &c)
	if err == nil || !strings.Contains(err.Error(), `field "nonce"`) {
		t.Fatalf("got %v", err)
	}
}

// A target that already holds values is merged into by the general
// decoder; the fast path leaves it alone.
func TestVerdictDecodeIntoFilledTarget(t *testing.T) {
	v := Verdict{Reason: "kept"}
	if err := Unmarshal(mustMarshal(t, Verdict{State: "attesting"}), &v); err != nil {
		t.Fatal(err)
	}
	if v.State != "attesting" || v.Reason != "kept" {
		t.Fatalf("got %+v", v)
	}
	c := Challenge{WantBootLog: true}
	if err := Unmarshal(mustMarshal(t, Challenge{WantIMA: true}), &c); err != nil {
		t.Fatal(err)
	}
	if !c.WantIMA || c.WantBootLog { // want_boot_log: false is in the message
		t.Fatalf("got %+v", c)
	}
	if err := Unmarshal(mustMarshal(t, Challenge{}), (*Challenge)(nil)); err == nil {
		t.Fatal("decoding into a nil *Challenge succeeded")
	}
	if err := Unmarshal(mustMarshal(t, Verdict{}), (*Verdict)(nil)); err == nil {
		t.Fatal("decoding into a nil *Verdict succeeded")
	}
	if err := Unmarshal(mustMarshal(t, Evidence{}), (*Evidence)(nil)); err == nil {
		t.Fatal("decoding into a nil *Evidence succeeded")
	}
}

// Unmarshal's decoded byte fields never share the caller's buffer, and
// each is capped so an append cannot run into the next.
func TestVerdictFastPathOwnsItsBytes(t *testing.T) {
	in := Verdict{AgentID: "a", State: "attesting", Next: &Challenge{Nonce: []byte{1, 2, 3}, PCRSelection: []byte{4, 5}}}
	b := mustMarshal(t, in)
	var v Verdict
	if err := Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !reflect.DeepEqual(v, in) {
		t.Fatalf("decoded verdict changed with the input buffer: %+v", show(v))
	}
	_ = append(v.Next.Nonce, 0xee)
	if !reflect.DeepEqual(v, in) {
		t.Fatal("appending to one field overwrote another")
	}
}

// Reading a verdict into a view, as a load generator does per request,
// allocates nothing; into a Verdict, only its strings and the copy.
func TestReadVerdictViewDoesNotAllocate(t *testing.T) {
	body := mustMarshal(t, benchVerdict())
	var v VerdictView
	if n := testing.AllocsPerRun(100, func() {
		if !ReadVerdictView(body, &v) {
			t.Fatal("declined")
		}
	}); n != 0 {
		t.Errorf("ReadVerdictView: %v allocations", n)
	}
	ch := mustMarshal(t, benchVerdict().Next)
	var c ChallengeView
	if n := testing.AllocsPerRun(100, func() {
		if !ReadChallengeView(ch, &c) {
			t.Fatal("declined")
		}
	}); n != 0 {
		t.Errorf("ReadChallengeView: %v allocations", n)
	}
}

func seedVerdicts(f *testing.F) {
	g := challengeGen{newQuickRand(11)}
	for i := range 12 {
		v := g.verdict(i)
		b, _ := Marshal(v)
		f.Add(b)
		f.Add(b[:len(b)/2])
		if u, err := cbor.Marshal(v); err == nil {
			f.Add(u)
		}
	}
	f.Add(enc("next", enc("nonce", null, "want_ima", null)))
	f.Add(enc("state", []byte{0x61, 0xff}))
	f.Add(enc("next", enc("interval_ms", []byte{0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0})))
}

// FuzzVerdictFastPath holds the Verdict fast path to the general decoder:
// whatever it accepts, the general decoder accepts with the same result,
// and Unmarshal's answer is always the general decoder's. The view reads
// exactly what the fast path reads.
func FuzzVerdictFastPath(f *testing.F) {
	seedVerdicts(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		took := agree(t, data, decodeVerdictFast)
		var view VerdictView
		if ReadVerdictView(data, &view) != took {
			t.Fatalf("ReadVerdictView and the fast path disagree on % x", data)
		}
		if !took && !reflect.DeepEqual(view, VerdictView{}) {
			t.Fatalf("a declined view is not zeroed: %+v", view)
		}
	})
}

// FuzzChallengeFastPath is FuzzVerdictFastPath for Challenge.
func FuzzChallengeFastPath(f *testing.F) {
	g := challengeGen{newQuickRand(13)}
	for i := range 12 {
		c := g.challenge(i)
		b, _ := Marshal(c)
		f.Add(b)
		f.Add(b[:len(b)/2])
		if u, err := cbor.Marshal(c); err == nil {
			f.Add(u)
		}
	}
	f.Add(enc("ima_offset", -1))
	f.Add(enc("want_ima", []byte{0xf7}))
	f.Add(enc("AGENT_ID", "a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		took := agree(t, data, decodeChallengeFast)
		var view ChallengeView
		if ReadChallengeView(data, &view) != took {
			t.Fatalf("ReadChallengeView and the fast path disagree on % x", data)
		}
		if !took && !reflect.DeepEqual(view, ChallengeView{}) {
			t.Fatalf("a declined view is not zeroed: %+v", view)
		}
	})
}

func benchVerdict() Verdict {
	return Verdict{AgentID: "host-0001", State: "attesting", Next: &Challenge{AgentID: "host-0001",
		Nonce: bytes.Repeat([]byte{1}, 32), PCRSelection: []byte{0, 0, 0, 1, 0, 0xb, 3, 0, 4, 0},
		IMAOffset: 4321, WantIMA: true, IntervalMS: 2000, ExpiresInMS: 10000}}
}

// BenchmarkUnmarshalVerdict compares the fast path, the view and the
// general decoder on a passing verdict with its next challenge.
//
//	go test ./internal/wire -run '^$' -bench UnmarshalVerdict -benchmem
func BenchmarkUnmarshalVerdict(b *testing.B) {
	body, err := Marshal(benchVerdict())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v Verdict
			if err := Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("view", func(b *testing.B) {
		b.ReportAllocs()
		var v VerdictView
		for b.Loop() {
			if !ReadVerdictView(body, &v) {
				b.Fatal("declined")
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := generalOf[Verdict](body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
