package verifier

import (
	"context"
	"fmt"
	"time"
)

// Load reads every stored agent into memory, once: liveness is watched
// from memory, and an agent that never calls must still be failed. Run
// loads if this was not called; calling it first makes a store that cannot
// be read stop the verifier before it serves.
func (s *Service) Load(ctx context.Context) error {
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	if s.warmed {
		return nil
	}
	if s.Leases != nil {
		// A replica holds only the agents it takes leases on (TendLeases).
		s.warmed = true
		s.loaded.Store(true)
		return nil
	}
	agents, err := s.Store.ListAgents(ctx)
	if err != nil {
		return err
	}
	for _, a := range agents {
		sl := s.slot(a.ID)
		sl.mu.Lock()
		if sl.agent == nil && !sl.removed {
			s.set(sl, a)
		}
		sl.mu.Unlock()
	}
	s.warmed = true
	s.loaded.Store(true)
	return nil
}

// Run does the service's background work until ctx ends: it loads every
// agent, fails silent ones every LivenessEvery (and stores failures the
// store could not take when they were decided), follows the registrar's
// feed every FeedEvery, and writes checkpoints every CheckpointEvery. When ctx ends it writes a last checkpoint and
// returns; stop serving requests first, and close the store after.
//
// What a checkpoint defers is only the progress of an agent that keeps
// attesting: its counters, last quote clock, and how far its IMA list is
// verified. A crash loses at most CheckpointEvery of that progress, and
// nothing of it is trust: the restarted verifier asks each agent for its
// IMA list from the last stored offset, replays it again, and counts
// liveness from its own start. Failures, state changes, and operators'
// actions are stored before they are answered.
func (s *Service) Run(ctx context.Context) error {
	s.started()
	if err := s.Load(ctx); err != nil {
		return fmt.Errorf("load agents: %w", err)
	}
	s.background.Store(&ctx)
	var ids []string
	s.slots.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	prefetched := make(chan struct{})
	go func() { s.prefetchAKs(ctx, ids); close(prefetched) }()
	defer func() { <-prefetched }()
	live := time.NewTicker(s.LivenessEvery)
	defer live.Stop()
	var feed <-chan time.Time
	feedVersion := ""
	if s.Feed != nil {
		t := time.NewTicker(s.feedEvery())
		defer t.Stop()
		feed = t.C
	}
	var tend <-chan time.Time
	if s.Leases != nil {
		if err := s.TendLeases(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("lease round", "err", err)
		}
		t := time.NewTicker(s.LeaseTTL / 3)
		defer t.Stop()
		tend = t.C
	}
	var flush <-chan time.Time
	if s.CheckpointEvery > 0 {
		t := time.NewTicker(s.CheckpointEvery)
		defer t.Stop()
		flush = t.C
	}
	prune := time.NewTicker(historyPruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-prune.C:
			if n, err := s.PruneHistory(ctx); err != nil && ctx.Err() == nil {
				s.log().Warn("pruning the history", "err", err)
			} else if n > 0 {
				s.log().Info("pruned the history", "entries", n)
			}
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, err := s.Checkpoint(final); err != nil {
				return fmt.Errorf("last checkpoint: %w", err)
			}
			if s.Leases != nil {
				// Stopping gracefully: the others take these agents at
				// their next round instead of after the leases expire.
				s.releaseAll(final)
			}
			return nil
		case <-live.C:
			if _, err := s.CheckLiveness(ctx); err != nil && ctx.Err() == nil {
				s.log().Error("liveness check", "err", err)
			}
			if n, err := s.StoreParked(ctx); err != nil && ctx.Err() == nil {
				s.log().Error("failures still cannot be stored", "waiting", n, "err", err)
			}
		case <-feed:
			v, err := s.FollowRegistrar(ctx, feedVersion)
			if err != nil && ctx.Err() == nil {
				s.log().Warn("cannot poll the registrar for changes; retrying", "err", err)
			}
			feedVersion = v
		case <-tend:
			if err := s.TendLeases(ctx); err != nil && ctx.Err() == nil {
				s.log().Warn("lease round", "err", err)
			}
		case <-flush:
			if _, err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.log().Error("checkpoint", "err", err)
			}
		}
	}
}
