package wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/fxamacker/cbor/v2"
)

// general decodes with the reflective decoder alone, as Unmarshal did
// before the fast path.
func general(data []byte) (Evidence, error) {
	var ev Evidence
	rest, err := decMode.UnmarshalFirst(data, &ev)
	if err != nil {
		return Evidence{}, describe(err, &ev)
	}
	if len(rest) != 0 {
		return Evidence{}, fmt.Errorf("%d bytes of trailing data after the CBOR message", len(rest))
	}
	return ev, nil
}

func sampleEvidence() []Evidence {
	digest := bytes.Repeat([]byte{0xab}, 32)
	return []Evidence{
		{},
		{AgentID: "host-1", Nonce: []byte("0123456789abcdef0123456789abcdef"), Quote: []byte{0xff, 'T', 'C', 'G', 0x80, 0x18},
			Signature: bytes.Repeat([]byte{1}, 262), PCRs: map[uint16]map[int][]byte{0x0b: {10: digest}},
			IMA: bytes.Repeat([]byte{0x0a, 0, 0, 0}, 700), IMAOffset: 1 << 40},
		{AgentID: "ünïcode", Nonce: []byte{}, Quote: []byte{}, Signature: []byte{}, BootLog: []byte{1, 2, 3},
			PCRs: map[uint16]map[int][]byte{0x04: {0: digest[:20], 7: digest[:20]}, 0x0b: {0: digest, 9: digest, 10: digest, 23: digest}, 0x0c: {}}},
		{PCRs: map[uint16]map[int][]byte{}, IMAOffset: 23},
		{IMAOffset: 24},
		{IMAOffset: 255},
		{IMAOffset: 256},
		{IMAOffset: 1<<16 - 1},
		{IMAOffset: 1 << 16},
		{IMAOffset: 1<<32 - 1},
		{IMAOffset: 1 << 32},
		{IMAOffset: 1<<64 - 1},
		{Nonce: bytes.Repeat([]byte{7}, 24)},
		{Nonce: bytes.Repeat([]byte{7}, 300)},
		{IMA: bytes.Repeat([]byte{9}, 70000)},
	}
}

// The fast path knows Evidence's fields by name: a new field must be
// taught to it (evidenceField, decodeEvidenceFast, isZero), or evidence
// carrying it silently takes the slow path.
func TestEvidenceFastPathKnowsEveryField(t *testing.T) {
	typ := reflect.TypeFor[Evidence]()
	if typ.NumField() != fastMaxFields {
		t.Fatalf("Evidence has %d fields, the fast path knows %d", typ.NumField(), fastMaxFields)
	}
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("cbor"), ",")
		if evidenceField([]byte(name)) != i {
			t.Errorf("field %s (%q) is not field %d of the fast path", typ.Field(i).Name, name, i)
		}
	}
}

// What wire.Marshal writes takes the fast path and decodes as the general
// decoder decodes it.
func TestEvidenceFastPathAgreesWithGeneralDecoder(t *testing.T) {
	for i, in := range sampleEvidence() {
		b, err := Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var fast Evidence
		if !decodeEvidenceFast(b, &fast, false) {
			t.Errorf("sample %d: the fast path declined what Marshal wrote", i)
			continue
		}
		slow, err := general(b)
		if err != nil {
			t.Fatalf("sample %d: general decoder: %v", i, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("sample %d: fast %+v, general %+v", i, fast, slow)
		}
		var viaUnmarshal Evidence
		if err := Unmarshal(b, &viaUnmarshal); err != nil || !reflect.DeepEqual(viaUnmarshal, slow) {
			t.Errorf("sample %d: Unmarshal %+v, %v", i, viaUnmarshal, err)
		}
	}
}

// An agent that encodes Evidence another way (another key order, longer
// heads than needed) is still understood: the general decoder takes over.
func TestEvidenceOtherEncodingsStillDecode(t *testing.T) {
	in := sampleEvidence()[1]
	unsorted, err := cbor.Marshal(in) // struct field order, not deterministic order
	if err != nil {
		t.Fatal(err)
	}
	// ima_offset 7 written with a one-byte argument (0x18 0x07) instead of
	// in the initial byte.
	long, err := Marshal(Evidence{AgentID: "a", IMAOffset: 7})
	if err != nil {
		t.Fatal(err)
	}
	long = append(bytes.TrimSuffix(long, []byte{0x07}), 0x18, 0x07)
	for name, b := range map[string][]byte{"struct order": unsorted, "long head": long} {
		var got Evidence
		if err := Unmarshal(b, &got); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want, err := general(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, general decoder %+v, %v", name, got, want, err)
		}
	}
}

// Bad evidence is refused with the general decoder's errors, naming the
// field at fault.
func TestEvidenceBadInputNamesTheProblem(t *testing.T) {
	good := mustMarshal(t, Evidence{AgentID: "a", Nonce: []byte{1}})
	// withField is good with one more field (or a second copy of one).
	withField := func(key string, value []byte) []byte {
		if good[0] != 0xa6 {
			t.Fatalf("Evidence no longer has 6 fields that are always written: % x", good[:1])
		}
		b := append([]byte{0xa7}, good[1:]...)
		return append(append(b, mustMarshal(t, key)...), value...)
	}
	text := mustMarshal(t, "not bytes")
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"nonce as text", mustMarshal(t, map[string]any{"nonce": "abc"}), `field "nonce"`},
		{"ima_offset negative", mustMarshal(t, map[string]any{"agent_id": "a", "ima_offset": -1}), `field "ima_offset"`},
		{"quote as text", mustMarshal(t, map[string]any{"quote": "text"}), `field "quote"`},
		{"boot log as text", withField("boot_log", text), `field "boot_log"`},
		{"unknown field", withField("extra", text), "unknown field"},
		{"repeated field", withField("nonce", []byte{0x41, 0x02}), "duplicate"},
		{"negative bank", mustMarshal(t, map[string]any{"pcrs": map[int]any{-1: map[int][]byte{}}}), `field "pcrs"`},
		{"repeated PCR", []byte{0xa1, 0x64, 'p', 'c', 'r', 's', 0xa1, 0x0b, 0xa2, 0x0a, 0x40, 0x0a, 0x40}, "duplicate"},
		{"trailing data", append(append([]byte{}, good...), 0x00), "trailing"},
		{"truncated", good[:len(good)-1], "truncated"},
		{"indefinite length", []byte{0xbf, 0xff}, "malformed"},
		{"tag", append([]byte{0xc0}, good...), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Evidence
			err := Unmarshal(tc.body, &ev)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			var fast Evidence
			if decodeEvidenceFast(tc.body, &fast, false) {
				t.Fatalf("the fast path accepted bad input: %+v", fast)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The general decoder merges into a target that already holds values; the
// fast path leaves such targets to it.
func TestEvidenceDecodeIntoFilledTarget(t *testing.T) {
	b := mustMarshal(t, Evidence{AgentID: "a"})
	ev := Evidence{BootLog: []byte{1}}
	if err := Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.AgentID != "a" || !bytes.Equal(ev.BootLog, []byte{1}) {
		t.Fatalf("got %+v", ev)
	}
}

// Decoded byte fields never share the caller's buffer (Read reuses its
// buffers), and each is capped so an append cannot run into the next.
func TestEvidenceFastPathOwnsItsBytes(t *testing.T) {
	in := sampleEvidence()[1]
	b := mustMarshal(t, in)
	var ev Evidence
	if err := Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !reflect.DeepEqual(ev, in) {
		t.Fatal("decoded evidence changed with the input buffer")
	}
	_ = append(ev.Nonce, 0xee)
	if !reflect.DeepEqual(ev, in) {
		t.Fatal("appending to one field overwrote another")
	}
}

// Many concurrent Reads through the pooled buffers each get their own
// message intact (run with -race).
func TestReadPooledBuffersDoNotLeak(t *testing.T) {
	const n = 64
	bodies := make([][]byte, n)
	want := make([]Evidence, n)
	for i := range want {
		want[i] = Evidence{AgentID: fmt.Sprint("agent-", i), Nonce: bytes.Repeat([]byte{byte(i)}, 32),
			PCRs: map[uint16]map[int][]byte{0x0b: {10: bytes.Repeat([]byte{byte(i + 1)}, 32)}},
			IMA:  bytes.Repeat([]byte{byte(i + 2)}, 100*i+1)}
		bodies[i] = mustMarshal(t, want[i])
	}
	got := make([]Evidence, n)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if err := Read(bytes.NewReader(bodies[i]), MaxEvidence, &got[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// Later reads reuse the buffers; what was decoded stays.
	for i := range n {
		var scratch Evidence
		if err := Read(bytes.NewReader(bodies[n-1-i]), MaxEvidence, &scratch); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("message %d came back as %+v", i, got[i])
		}
	}
}

func TestReadLimits(t *testing.T) {
	body := mustMarshal(t, Evidence{AgentID: "a", IMA: bytes.Repeat([]byte{1}, 10000)})
	for _, tc := range []struct {
		name  string
		r     func() *bytes.Reader
		limit int64
		err   error
		want  string
	}{
		{"exactly the limit", func() *bytes.Reader { return bytes.NewReader(body) }, int64(len(body)), nil, ""},
		{"one byte over", func() *bytes.Reader { return bytes.NewReader(body) }, int64(len(body)) - 1, ErrTooLarge, ""},
		{"far over", func() *bytes.Reader { return bytes.NewReader(body) }, 100, ErrTooLarge, ""},
		{"empty", func() *bytes.Reader { return bytes.NewReader(nil) }, 100, nil, "empty body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, wrap := range []struct {
				name string
				fn   func(*bytes.Reader) interface{ Read([]byte) (int, error) }
			}{
				{"whole", func(r *bytes.Reader) interface{ Read([]byte) (int, error) } { return r }},
				{"one byte at a time", func(r *bytes.Reader) interface{ Read([]byte) (int, error) } { return iotest.OneByteReader(r) }},
				{"data with EOF", func(r *bytes.Reader) interface{ Read([]byte) (int, error) } { return iotest.DataErrReader(r) }},
			} {
				var ev Evidence
				err := Read(wrap.fn(tc.r()), tc.limit, &ev)
				switch {
				case tc.err != nil:
					if !errors.Is(err, tc.err) {
						t.Errorf("%s: got %v, want %v", wrap.name, err, tc.err)
					}
				case tc.want != "":
					if err == nil || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("%s: got %v, want %q", wrap.name, err, tc.want)
					}
				case err != nil || len(ev.IMA) != 10000:
					t.Errorf("%s: got %d IMA bytes, %v", wrap.name, len(ev.IMA), err)
				}
			}
		})
	}
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("connection reset")
		var ev Evidence
		if err := Read(iotest.ErrReader(boom), 100, &ev); !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
	})
}

// FuzzEvidenceFastPath holds the fast path to the general decoder: whatever
// it accepts, the general decoder accepts with the same result, and
// Unmarshal's answer is always the general decoder's.
func FuzzEvidenceFastPath(f *testing.F) {
	for _, ev := range sampleEvidence() {
		b, _ := Marshal(ev)
		f.Add(b)
		f.Add(b[:len(b)/2])
		if u, err := cbor.Marshal(ev); err == nil {
			f.Add(u)
		}
	}
	f.Add([]byte{0xa1, 0x64, 'p', 'c', 'r', 's', 0xa1, 0x0b, 0xa2, 0x0a, 0x40, 0x0a, 0x40})
	f.Add([]byte{0xa1, 0x68, 'a', 'g', 'e', 'n', 't', '_', 'i', 'd', 0x62, 0xc3, 0x28})
	f.Add([]byte{0xa1, 0x68, 'A', 'G', 'E', 'N', 'T', '_', 'I', 'D', 0x61, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		slow, slowErr := general(data)
		var fast Evidence
		if decodeEvidenceFast(data, &fast, false) {
			if slowErr != nil {
				t.Fatalf("fast path accepted what the general decoder refuses (%v): %+v", slowErr, fast)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v, general %+v", fast, slow)
			}
		}
		var got Evidence
		err := Unmarshal(data, &got)
		if (err == nil) != (slowErr == nil) {
			t.Fatalf("Unmarshal error %v, general decoder %v", err, slowErr)
		}
		if err != nil && err.Error() != slowErr.Error() {
			t.Fatalf("Unmarshal error %q, general decoder %q", err, slowErr)
		}
		if err == nil && !reflect.DeepEqual(got, slow) {
			t.Fatalf("Unmarshal %+v, general %+v", got, slow)
		}
		// Read hands its buffer to the decoder: same answer.
		var read Evidence
		rerr := Read(bytes.NewReader(data), MaxEvidence, &read)
		if len(data) > 0 && ((rerr == nil) != (err == nil) || (err == nil && !reflect.DeepEqual(read, got))) {
			t.Fatalf("Read %+v (%v), Unmarshal %+v (%v)", read, rerr, got, err)
		}
	})
}

// BenchmarkUnmarshalEvidence compares the fast path with the general
// decoder on steady-state evidence (quote, RSA signature, PCR 10, 20 binary
// IMA entries).
//
//	go test ./internal/wire -run '^$' -bench UnmarshalEvidence -benchmem
func BenchmarkUnmarshalEvidence(b *testing.B) {
	body, err := Marshal(Evidence{AgentID: "host-0001", Nonce: bytes.Repeat([]byte{1}, 32),
		Quote: bytes.Repeat([]byte{2}, 145), Signature: bytes.Repeat([]byte{3}, 262),
		PCRs: map[uint16]map[int][]byte{0x0b: {10: bytes.Repeat([]byte{4}, 32)}},
		IMA:  bytes.Repeat([]byte{5}, 20*118), IMAOffset: 4321})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev Evidence
			if err := Unmarshal(body, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := general(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(body)
		for b.Loop() {
			r.Reset(body)
			var ev Evidence
			if err := Read(r, MaxEvidence, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMarshalVerdict compares the hand-written encoder with the
// reflective one on a passing verdict with its next challenge.
func BenchmarkMarshalVerdict(b *testing.B) {
	v := Verdict{AgentID: "host-0001", State: "attesting", Next: &Challenge{AgentID: "host-0001",
		Nonce: bytes.Repeat([]byte{1}, 32), PCRSelection: []byte{0, 0, 0, 1, 0, 0xb, 3, 0, 4, 0},
		IMAOffset: 4321, WantIMA: true, IntervalMS: 2000, ExpiresInMS: 10000}}
	b.Run("hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflective", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encMode.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
