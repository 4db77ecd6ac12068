package verifier

import (
	"context"
	"sync"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// fetchAK asks the registrar for an agent's AK, with at most AKFetches
// fetches in flight.
func (s *Service) fetchAK(ctx context.Context, id string) (*evidence.AK, error) {
	sem := s.akSemaphore()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sem }()
	return s.AKs.AK(ctx, id)
}

// running tells whether Run has started its background work.
func (s *Service) running() bool { return s.background.Load() != nil }

func (s *Service) akSemaphore() chan struct{} {
	s.akOnce.Do(func() {
		s.akSem = make(chan struct{}, s.AKFetches)
	})
	return s.akSem
}

// prefetchAKs caches the AKs of agents that will attest, ahead of their
// evidence: the first attestations of a fleet (after admission, or after a
// verifier restart) then do not each wait for the registrar. A failed fetch
// is only logged; the agent's evidence fetches again.
func (s *Service) prefetchAKs(ctx context.Context, ids []string) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range cap(s.akSemaphore()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				s.prefetchAK(ctx, id)
			}
		}()
	}
	defer wg.Wait()
	defer close(work)
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Service) prefetchAK(ctx context.Context, id string) {
	v, ok := s.slots.Load(id)
	if !ok {
		return
	}
	sl := v.(*slot)
	sl.mu.Lock()
	need := sl.ak == nil && !sl.removed && sl.agent != nil && sl.agent.State != StateFailed
	epoch := sl.akEpoch
	sl.mu.Unlock()
	if !need {
		return
	}
	ak, err := s.fetchAK(ctx, id)
	if err != nil {
		s.log().Debug("AK prefetch", "agent_id", id, "err", err)
		return
	}
	sl.mu.Lock()
	if sl.ak == nil && !sl.removed && sl.akEpoch == epoch {
		sl.ak = ak
	}
	sl.mu.Unlock()
}
