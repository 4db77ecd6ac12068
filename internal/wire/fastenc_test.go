package wire

import (
	"bytes"
	"math"
	"math/rand"
	"reflect"
	"testing"
	"testing/quick"
)

// The hand-written encoders write what the reflective encoder writes, for
// random values of every field (testing/quick fills fields added later
// too, so a field the hand-written encoder forgets fails here).
func TestVerdictEncodingMatchesReflective(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	edge := []Challenge{
		{},
		{Nonce: []byte{}, PCRSelection: []byte{}, IntervalMS: -1, ExpiresInMS: math.MinInt64, IMAOffset: math.MaxUint64},
		{AgentID: "\xff\xfe not UTF-8", IntervalMS: 23, ExpiresInMS: 24, IMAOffset: 1 << 32},
		{IntervalMS: -24, ExpiresInMS: -25, IMAOffset: 255},
		{IntervalMS: 65535, ExpiresInMS: 65536, IMAOffset: math.MaxUint32},
		{AgentID: string(bytes.Repeat([]byte{'a'}, 300)), Nonce: make([]byte, 70000)},
	}
	check := func(v any) {
		t.Helper()
		got, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		want, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v:\nhand-written % x\nreflective   % x", v, got, want)
		}
	}
	for i := range 2000 {
		var c Challenge
		if i < len(edge) {
			c = edge[i]
		} else {
			cv, ok := quick.Value(reflect.TypeFor[Challenge](), rng)
			if !ok {
				t.Fatal("quick.Value failed")
			}
			c = cv.Interface().(Challenge)
		}
		check(c)
		check(&c)
		vv, _ := quick.Value(reflect.TypeFor[Verdict](), rng)
		v := vv.Interface().(Verdict)
		if i%3 == 0 {
			v.Next = &c
		}
		if i%5 == 0 {
			v.Reason, v.Detail = "", ""
		}
		if i%7 == 0 {
			v.Detail = string(bytes.Repeat([]byte{'d'}, 100*i))
		}
		check(v)
		check(&v)
		// What the agent decodes is what was sent.
		b, _ := Marshal(v)
		var back Verdict
		if err := Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
	}
	check((*Verdict)(nil))
	check((*Challenge)(nil))
}
