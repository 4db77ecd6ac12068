package wire

import (
	"testing"
	"time"
)

func TestTimesKeepSubsecondPrecision(t *testing.T) {
	type rec struct {
		At time.Time `cbor:"at"`
	}
	in := rec{At: time.Date(2026, 11, 23, 9, 33, 11, 931_000_123, time.UTC)}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out rec
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.At.Equal(in.At) {
		t.Fatalf("time %s came back as %s", in.At, out.At)
	}
}
