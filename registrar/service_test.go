package registrar

import (
	"testing"
	"time"
)

// Refusals are what a stranger can cause at will: each reason reaches the
// log at most once per refusalLogEvery, and the next line says how many
// were left out.
func TestRefusalLogIsRateLimited(t *testing.T) {
	var l refusalLog
	t0 := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	if _, ok := l.allow(ReasonBadProof, t0); !ok {
		t.Fatal("first refusal not logged")
	}
	for i := range 99 {
		if _, ok := l.allow(ReasonBadProof, t0.Add(time.Duration(i)*time.Millisecond)); ok {
			t.Fatalf("refusal %d within the window logged", i+2)
		}
	}
	if _, ok := l.allow(ReasonExpired, t0); !ok {
		t.Error("another reason was suppressed")
	}
	n, ok := l.allow(ReasonBadProof, t0.Add(refusalLogEvery))
	if !ok || n != 99 {
		t.Errorf("after the window: logged %v with %d suppressed, want 99", ok, n)
	}
}
