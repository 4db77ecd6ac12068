package verifier

import (
	"context"
	"errors"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
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
		ok, err := s.failSilent(ctx, id, now)
		if err != nil {
			return failed, err
		}
		if ok {
			failed++
		}
	}
	return failed, nil
}

func (s *Service) failSilent(ctx context.Context, id string, now time.Time) (bool, error) {
	v, ok := s.slots.Load(id)
	if !ok {
		return false, nil
	}
	sl := v.(*slot)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.removed {
		return false, nil
	}
	var failedAgent Agent
	var f *Failure
	err := s.updateAgent(ctx, sl, id, func(a *Agent) ([]revocation.Event, error) {
		// Re-check under the agent's lock: evidence may have arrived.
		last := s.lastHeard(*a)
		deadline := last.Add(s.livenessWindow(*a))
		if (a.State != StatePending && a.State != StateAttesting) || now.Before(deadline) {
			return nil, errNothingToDo
		}
		f = Fail(ReasonLivenessTimeout, "no_evidence", "no good evidence since %s (deadline %s)", last.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))
		a.State, a.Reason, a.Detail, a.FailedAt = StateFailed, f.Reason, f.Error(), now
		failedAgent = *a
		return []revocation.Event{revocation.NewEvent(revocation.TypeRevoked, now, eventData(*a, f))}, nil
	})
	if errors.Is(err, errNothingToDo) {
		return false, nil
	}
	if errors.Is(err, ErrNotFound) {
		s.forget(id, sl)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sl.asked = nil
	s.set(sl, failedAgent)
	s.log().Warn("attestation failed", "agent_id", id, "reason", f.Reason, "detail", f.Detail)
	s.eventsRaised()
	if s.OnVerdict != nil {
		s.OnVerdict(failedAgent, f, 0)
	}
	return true, nil
}

var errNothingToDo = errors.New("nothing to do")

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
