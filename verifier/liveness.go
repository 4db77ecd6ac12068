package verifier

import (
	"context"
	"math"
	"time"
)

// CheckLiveness fails every pending or attesting agent that has sent no
// good evidence within its liveness window. It returns how many it
// failed. Deadlines are kept in memory, so a sweep reads no store.
func (s *Service) CheckLiveness(ctx context.Context) (int, error) {
	if err := s.Load(ctx); err != nil {
		return 0, err
	}
	now := s.now()
	var due []string
	s.slots.Range(func(k, v any) bool {
		if d := v.(*slot).deadline.Load(); d != 0 && now.UnixNano() >= d {
			due = append(due, k.(string))
		}
		return true
	})
	failed := 0
	for _, id := range due {
		if s.failSilent(ctx, id, now) {
			failed++
		}
	}
	return failed, nil
}

func (s *Service) failSilent(ctx context.Context, id string, now time.Time) bool {
	v, ok := s.slots.Load(id)
	if !ok {
		return false
	}
	sl := v.(*slot)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.removed || sl.agent == nil {
		return false
	}
	a := *sl.agent
	// Re-check under the agent's lock: evidence may have arrived.
	last := s.heardIn(sl, a)
	deadline := addSaturating(last, s.livenessWindow(a))
	if (a.State != StatePending && a.State != StateAttesting) || now.Before(deadline) {
		return false
	}
	f := Fail(ReasonLivenessTimeout, "no_evidence", "no good evidence since %s (deadline %s)", last.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))
	a, events := a.failed(f, now)
	s.commitFailure(ctx, sl, a, f, events)
	s.log().Warn("attestation failed", "agent_id", id, "reason", f.Reason, "detail", f.Detail)
	if s.OnVerdict != nil {
		s.OnVerdict(a, f, 0)
	}
	return true
}

// addSaturating is t+d, or the latest representable time when that
// overflows: a deadline far in the future must not wrap into the past.
func addSaturating(t time.Time, d time.Duration) time.Time {
	if u := t.Add(d); !u.Before(t) {
		return u
	}
	return time.Unix(0, math.MaxInt64)
}

// heardIn is lastHeard for the agent in slot sl: no earlier than when this
// replica took the agent over.
func (s *Service) heardIn(sl *slot, a Agent) time.Time {
	last := s.lastHeard(a)
	if last.Before(sl.heardFloor) {
		last = sl.heardFloor
	}
	return last
}

// lastHeard is when the liveness window of agent a started: its last good
// evidence, its admission, or this verifier's start, whichever is latest.
func (s *Service) lastHeard(a Agent) time.Time {
	last := a.LastAttestedAt
	if last.Before(a.AdmittedAt) {
		last = a.AdmittedAt
	}
	if st := s.started(); last.Before(st) {
		last = st
	}
	return last
}
