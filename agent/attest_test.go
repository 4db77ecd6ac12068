package agent

import (
	"testing"
	"time"
)

func TestJitteredStaysWithinATenthBelow(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 500 * time.Millisecond, 2 * time.Second, time.Minute} {
		seen := map[time.Duration]bool{}
		for range 1000 {
			got := jittered(d)
			if got > d || got < d-d/10 {
				t.Fatalf("jittered(%s) = %s, outside [%s, %s]", d, got, d-d/10, d)
			}
			seen[got] = true
		}
		if len(seen) < 10 {
			t.Errorf("jittered(%s): only %d distinct waits in 1000: not spreading agents", d, len(seen))
		}
	}
	if got := jittered(0); got != 0 {
		t.Errorf("jittered(0) = %s", got)
	}
}
