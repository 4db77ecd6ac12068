package verifier

import (
	"context"
	"errors"
	"fmt"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// saveSync stores agent a's record, events and history before returning,
// with the history entries the slot holds for the next checkpoint; the
// caller holds sl.mu. On failure the slot keeps its entries and the
// caller decides what becomes of hist.
func (s *Service) saveSync(ctx context.Context, sl *slot, a Agent, events []revocation.Event, hist []HistoryEntry) error {
	s.persistMu.RLock()
	defer s.persistMu.RUnlock()
	all := hist
	if len(sl.history) > 0 {
		all = append(append(make([]HistoryEntry, 0, len(sl.history)+len(hist)), sl.history...), hist...)
	}
	if err := s.Store.SaveAgent(ctx, a, events, all...); err != nil {
		if errors.Is(err, ErrFenced) {
			// Another replica holds the agent now: its state is theirs.
			s.dropLocked(a.ID, sl)
			return err
		}
		s.storeFailed(err)
		return err
	}
	s.storeDown.Store(false)
	sl.gen.Add(1)
	sl.dirty = false
	sl.history = nil
	return nil
}

// storeFailed notes that a write failed: until one succeeds, no verdict is
// answered good and the verifier is not ready. A cancelled request is not
// the store's fault.
func (s *Service) storeFailed(err error) {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		s.storeDown.Store(true)
	}
}

// park queues a slot whose failure could not be stored; the caller holds
// sl.mu.
func (s *Service) park(sl *slot) {
	if sl.parked {
		return
	}
	sl.parked = true
	s.dirtyMu.Lock()
	if s.parked == nil {
		s.parked = make(map[*slot]struct{})
	}
	s.parked[sl] = struct{}{}
	s.dirtyMu.Unlock()
}

// StoreParked stores the failures that could not be stored when they were
// decided, each with its revocation events, and returns how many are still
// waiting.
func (s *Service) StoreParked(ctx context.Context) (int, error) {
	s.dirtyMu.Lock()
	set := s.parked
	s.parked = nil
	s.dirtyMu.Unlock()
	var firstErr error
	for sl := range set {
		sl.mu.Lock()
		if !sl.parked || sl.removed || sl.agent == nil {
			sl.parked, sl.unsaved = false, nil
			sl.mu.Unlock()
			continue
		}
		sl.parked = false
		err := s.saveSync(ctx, sl, *sl.agent, sl.unsaved, nil)
		if err != nil {
			s.park(sl)
			if firstErr == nil {
				firstErr = err
			}
		} else {
			s.log().Info("stored a failure kept while the store could not be written", "agent_id", sl.agent.ID, "reason", sl.agent.Reason)
			sl.unsaved = nil
			s.eventsRaised()
		}
		sl.mu.Unlock()
	}
	s.dirtyMu.Lock()
	waiting := len(s.parked)
	s.dirtyMu.Unlock()
	return waiting, firstErr
}

// Ready tells whether the verifier can decide: its store can be written
// and no failure is waiting to be stored.
func (s *Service) Ready(ctx context.Context) error {
	s.dirtyMu.Lock()
	waiting := len(s.parked)
	s.dirtyMu.Unlock()
	if !s.storeDown.Load() && waiting == 0 {
		return nil
	}
	if err := s.Store.Ping(ctx); err != nil {
		s.storeFailed(err)
		return fmt.Errorf("the store cannot be written: %w", err)
	}
	s.storeDown.Store(false)
	if waiting > 0 {
		if n, err := s.StoreParked(ctx); err != nil || n > 0 {
			return fmt.Errorf("%d failures are waiting to be stored: %v", n, err)
		}
	}
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
	taken := make(map[*slot][]HistoryEntry)
	for sl := range set {
		sl.mu.Lock()
		// A parked failure goes to the store only with its events.
		if sl.dirty && sl.agent != nil && !sl.removed && !sl.parked {
			records = append(records, *sl.agent)
			from = append(from, copied{sl, sl.gen.Load()})
			if len(sl.history) > 0 {
				taken[sl] = sl.history
				sl.history = nil
			}
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
	// The entries taken go even when a synchronous write superseded
	// their record meanwhile: they happened, and that write did not carry
	// them. (It may then precede them in the history, a rare race.)
	var hist []HistoryEntry
	for _, c := range from {
		hist = append(hist, taken[c.sl]...)
	}
	err := s.Store.Checkpoint(ctx, kept, hist...)
	s.persistMu.Unlock()
	if err != nil {
		s.storeFailed(err)
		// The entries wait for the next write of their agent.
		for _, c := range from {
			if h := taken[c.sl]; len(h) > 0 {
				c.sl.mu.Lock()
				if !c.sl.removed {
					c.sl.history = append(h, c.sl.history...)
				}
				c.sl.mu.Unlock()
			}
		}
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
func (s *Service) createAgent(ctx context.Context, a Agent, hist ...HistoryEntry) error {
	s.persistMu.RLock()
	defer s.persistMu.RUnlock()
	return s.Store.CreateAgent(ctx, a, hist...)
}

// updateAgent changes an agent's stored record synchronously; the caller
// holds sl.mu. The change applies to the newest record — the slot's, which
// may be ahead of the store — and supersedes any pending checkpoint of it.
func (s *Service) updateAgent(ctx context.Context, sl *slot, id string, fn func(*Agent) ([]revocation.Event, []HistoryEntry, error)) error {
	if sl.agent == nil {
		a, err := s.Store.GetAgent(ctx, id)
		if err != nil {
			return err
		}
		s.set(sl, a)
	}
	a := *sl.agent
	events, hist, err := fn(&a)
	if err != nil {
		return err
	}
	return s.saveSync(ctx, sl, a, events, hist)
}
