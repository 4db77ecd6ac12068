package verifier

import (
	"context"
	"errors"
	"time"
)

// ErrFeedNotModified is returned by an AKFeed when nothing changed since
// the version the caller has.
var ErrFeedNotModified = errors.New("not modified")

// AKFeed tells which agents the registrar vouches for now: agent ID → the
// TPM name of its active AK, and a version to ask "what changed since"
// with. An unchanged feed answers ErrFeedNotModified, so that polling a
// large fleet's registrar every interval costs next to nothing.
type AKFeed interface {
	ActiveAKs(ctx context.Context, version string) (aks map[string][]byte, next string, err error)
}

// FollowRegistrar applies one poll of the registrar's feed: an agent that
// was attesting and that the registrar no longer vouches for (an operator
// deleted it there) fails not_enrolled; an agent whose active AK changed
// (a proper re-enrollment, proven by credential activation) has its cached
// AK dropped and fetched again. It returns the feed version to ask with
// next time.
func (s *Service) FollowRegistrar(ctx context.Context, version string) (string, error) {
	aks, next, err := s.Feed.ActiveAKs(ctx, version)
	if errors.Is(err, ErrFeedNotModified) {
		return version, nil
	}
	if err != nil {
		return version, err
	}
	var changed []string
	s.slots.Range(func(k, v any) bool {
		id, sl := k.(string), v.(*slot)
		name, enrolled := aks[id]
		sl.mu.Lock()
		defer sl.mu.Unlock()
		if sl.removed || sl.agent == nil {
			return true
		}
		switch {
		case !enrolled:
			sl.ak = nil
			sl.akEpoch++
			if sl.agent.State == StateAttesting {
				s.failNotEnrolled(ctx, sl, s.now())
			}
		case sl.ak != nil && string(sl.ak.Name) != string(name):
			sl.ak = nil
			sl.akEpoch++
			changed = append(changed, id)
		}
		return true
	})
	if len(changed) > 0 {
		s.log().Info("registrar replaced agents' AKs; fetching them again", "agents", len(changed))
		go s.prefetchAKs(ctx, changed)
	}
	return next, nil
}

// failNotEnrolled fails an agent the registrar no longer vouches for; the
// caller holds sl.mu.
func (s *Service) failNotEnrolled(ctx context.Context, sl *slot, now time.Time) {
	a := *sl.agent
	f := Fail(ReasonNotEnrolled, "ak_not_active", "the registrar no longer has an active AK for agent %q (deleted or never activated)", a.ID)
	a, events := a.failed(f, now)
	s.commitFailure(ctx, sl, a, f, events)
	s.log().Warn("attestation failed", "agent_id", a.ID, "reason", f.Reason, "detail", f.Detail)
	if s.OnVerdict != nil {
		s.OnVerdict(a, f, 0)
	}
}

// feedEvery is how often Run polls the registrar's feed.
func (s *Service) feedEvery() time.Duration {
	if s.FeedEvery > 0 {
		return s.FeedEvery
	}
	return s.DefaultInterval
}
