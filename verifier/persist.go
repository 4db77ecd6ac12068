package verifier

import (
	"context"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// saveSync stores agent a's record and events before returning; the
// caller holds sl.mu.
func (s *Service) saveSync(ctx context.Context, sl *slot, a Agent, events []revocation.Event) error {
	s.persistMu.RLock()
	defer s.persistMu.RUnlock()
	if err := s.Store.SaveAgent(ctx, a, events...); err != nil {
		return err
	}
	sl.gen.Add(1)
	sl.dirty = false
	return nil
}

// markDirty queues agent a's record for the next checkpoint; the caller
// holds sl.mu.
func (s *Service) markDirty(sl *slot) {
	if sl.dirty {
		return
	}
	sl.dirty = true
	s.dirtyMu.Lock()
	if s.dirty == nil {
		s.dirty = make(map[*slot]struct{})
	}
	s.dirty[sl] = struct{}{}
	s.dirtyMu.Unlock()
}

// Checkpoint writes the records changed since the last checkpoint in one
// transaction and returns how many it wrote.
func (s *Service) Checkpoint(ctx context.Context) (int, error) {
	start := s.now()
	s.dirtyMu.Lock()
	set := s.dirty
	s.dirty = nil
	s.dirtyMu.Unlock()
	if len(set) == 0 {
		return 0, nil
	}
	type copied struct {
		sl  *slot
		gen uint64
	}
	records := make([]Agent, 0, len(set))
	from := make([]copied, 0, len(set))
	for sl := range set {
		sl.mu.Lock()
		if sl.dirty && sl.agent != nil && !sl.removed {
			records = append(records, *sl.agent)
			from = append(from, copied{sl, sl.gen.Load()})
		}
		sl.dirty = false
		sl.mu.Unlock()
	}
	s.persistMu.Lock()
	kept := records[:0]
	keptFrom := from[:0]
	for i, c := range from {
		if c.sl.gen.Load() == c.gen {
			kept = append(kept, records[i])
			keptFrom = append(keptFrom, c)
		}
	}
	err := s.Store.Checkpoint(ctx, kept)
	s.persistMu.Unlock()
	if err != nil {
		// Nothing was written: the records are dirty again, unless a
		// synchronous write has superseded them meanwhile.
		for _, c := range keptFrom {
			c.sl.mu.Lock()
			if c.sl.gen.Load() == c.gen && !c.sl.removed {
				s.markDirty(c.sl)
			}
			c.sl.mu.Unlock()
		}
	}
	if s.OnCheckpoint != nil {
		s.OnCheckpoint(len(kept), s.now().Sub(start), err)
	}
	return len(kept), err
}

// createAgent stores a new agent, ordered with checkpoints.
func (s *Service) createAgent(ctx context.Context, a Agent) error {
	s.persistMu.RLock()
	defer s.persistMu.RUnlock()
	return s.Store.CreateAgent(ctx, a)
}

// updateAgent changes an agent's stored record synchronously; the caller
// holds sl.mu. The change applies to the newest record — the slot's, which
// may be ahead of the store — and supersedes any pending checkpoint of it.
func (s *Service) updateAgent(ctx context.Context, sl *slot, id string, fn func(*Agent) ([]revocation.Event, error)) error {
	if sl.agent == nil {
		a, err := s.Store.GetAgent(ctx, id)
		if err != nil {
			return err
		}
		s.set(sl, a)
	}
	a := *sl.agent
	events, err := fn(&a)
	if err != nil {
		return err
	}
	return s.saveSync(ctx, sl, a, events)
}
