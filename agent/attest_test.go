package agent

import (
	"errors"
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

// A failed agent is told when to ask again (its interval), and believes it
// rather than its own backoff, so that it is back soon after an operator
// readmits it.
func TestBackoffBelievesRetryAfter(t *testing.T) {
	failed := &RefusedError{Status: 403, Msg: "agent failed", RetryAfter: 2 * time.Second}
	for _, tc := range []struct {
		cur  time.Duration
		err  error
		want time.Duration
	}{
		{0, errors.New("connection refused"), 500 * time.Millisecond},
		{40 * time.Second, errors.New("connection refused"), time.Minute},
		{time.Minute, failed, 2 * time.Second},
		{time.Minute, &RefusedError{Status: 503, RetryAfter: time.Hour}, time.Minute},
	} {
		if got := nextBackoff(tc.cur, time.Minute, tc.err); got != tc.want {
			t.Errorf("after %s and %v: %s, want %s", tc.cur, tc.err, got, tc.want)
		}
	}
}

// An agent moves to the next verifier when one cannot be reached or cannot
// serve, and stays when the verifier refused the request itself.
func TestFailoverBetweenVerifiers(t *testing.T) {
	a := &Attester{VerifierURLs: []string{"https://a", "https://b"}}
	for _, tc := range []struct {
		err    error
		want   string
		tryNow bool
	}{
		{&RefusedError{Status: 403, Msg: "agent failed"}, "https://a", false},
		{&RefusedError{Status: 409, Msg: "ask again"}, "https://a", false},
		// The other verifier is tried at once...
		{errors.New("dial tcp: connection refused"), "https://b", true},
		// ...but once both failed in a row, the backoff applies.
		{&RefusedError{Status: 503, Msg: "store unavailable"}, "https://a", false},
		{nil, "https://a", false},
	} {
		if tryNow := a.failover(tc.err); tryNow != tc.tryNow || a.verifier() != tc.want {
			t.Fatalf("after %v: %s (try now %v), want %s (%v)", tc.err, a.verifier(), tryNow, tc.want, tc.tryNow)
		}
	}
	one := &Attester{VerifierURLs: []string{"https://only"}}
	one.failover(errors.New("down"))
	if one.verifier() != "https://only" {
		t.Fatal("a single verifier was left")
	}
}
