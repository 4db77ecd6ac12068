package verifier

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A verifier with Leases set is one replica of several sharing a store.
// Every lease round (TendLeases, a third of LeaseTTL apart) it:
//
//  1. beats its heart, learning which replicas are alive;
//  2. renews the leases it holds, and drops from memory every agent whose
//     lease it no longer holds (it paused past the expiry, or an operator
//     deleted the agent): writes under a lost lease are fenced anyway;
//  3. hands over, after a last synchronous write of each, the agents that
//     rendezvous hashing now gives to another live replica (one joined);
//  4. takes the leases of the agents it should own that nobody holds, or
//     whose holder's lease expired (a replica died), loading each record
//     from the store and counting its silence from now;
//  5. notes which replica owns every other agent, so that a request for
//     one is redirected there (307), and forgets compiled policies that
//     another replica stored a new version of or deleted.
//
// A replica that dies loses its agents after at most LeaseTTL; the others
// take them at their next round, and the agents, failing over between
// their --verifier URLs or redirected, reach the new owner. Nonces are
// MACed under a key in the shared store, so a challenge one replica issued
// is answered at another.

// TendLeases runs one lease round.
func (s *Service) TendLeases(ctx context.Context) error {
	now := s.now()
	until := now.Add(s.LeaseTTL)
	live, err := s.Leases.Heartbeat(ctx, s.ReplicaID, s.ReplicaURL, now, s.LeaseTTL)
	if err != nil {
		return err
	}
	liveIDs := make([]string, 0, len(live))
	urls := make(map[string]string, len(live))
	for _, r := range live {
		liveIDs = append(liveIDs, r.ID)
		urls[r.ID] = r.URL
	}
	held, err := s.Leases.RenewLeases(ctx, s.ReplicaID, now, until)
	if err != nil {
		return err
	}
	heldEpoch := make(map[string]int64, len(held))
	for _, l := range held {
		heldEpoch[l.AgentID] = l.Epoch
	}
	lost := 0
	s.slots.Range(func(k, v any) bool {
		if _, ok := heldEpoch[k.(string)]; !ok {
			s.dropSlot(k.(string), v.(*slot))
			lost++
		}
		return true
	})

	all, err := s.Leases.Leases(ctx)
	if err != nil {
		return err
	}
	others := make(map[string]heldBy, len(all))
	var want, handOver []string
	for _, l := range all {
		desired := Owner(l.AgentID, liveIDs)
		_, mine := heldEpoch[l.AgentID]
		switch {
		case mine && desired != s.ReplicaID && desired != "":
			handOver = append(handOver, l.AgentID)
			others[l.AgentID] = heldBy{url: urls[desired]}
		case mine:
		case desired == s.ReplicaID && (l.Owner == "" || !l.Expires.After(now)):
			want = append(want, l.AgentID)
		case l.Owner != "" && l.Expires.After(now) && urls[l.Owner] != "":
			others[l.AgentID] = heldBy{url: urls[l.Owner], until: l.Expires}
		case urls[desired] != "" && desired != s.ReplicaID:
			others[l.AgentID] = heldBy{url: urls[desired]}
		}
	}
	if len(handOver) > 0 {
		lost += s.handOver(ctx, handOver)
	}
	gained := 0
	if len(want) > 0 {
		taken, err := s.Leases.AcquireLeases(ctx, s.ReplicaID, want, now, until)
		if err != nil {
			return err
		}
		for _, l := range taken {
			if err := s.takeOver(ctx, l, now); err != nil {
				s.log().Warn("cannot load an agent whose lease was taken; it is released", "agent_id", l.AgentID, "err", err)
				s.Leases.ReleaseLeases(ctx, s.ReplicaID, []string{l.AgentID})
				continue
			}
			gained++
		}
	}
	s.others.Store(&others)
	if gained+lost > 0 {
		s.log().Info("leases moved", "gained", gained, "lost", lost, "replicas", len(live))
		if s.OnLeaseMoves != nil {
			s.OnLeaseMoves(gained, lost)
		}
	}
	return s.refreshPolicies(ctx)
}

// heldBy is who holds an agent this replica does not: the holder's URL,
// and until when its lease runs (zero: no lease, or one that ran out).
type heldBy struct {
	url   string
	until time.Time
}

// takeOver loads agent l.AgentID into a slot of its own under lease l. An
// agent taken over twice at once (a round and a request) keeps one slot.
func (s *Service) takeOver(ctx context.Context, l Lease, now time.Time) error {
	a, err := s.Store.GetAgent(ctx, l.AgentID)
	if err != nil {
		return err
	}
	sl := &slot{fence: Fence{Owner: s.ReplicaID, Epoch: l.Epoch}, heardFloor: now}
	sl.mu.Lock()
	s.set(sl, a)
	_, loaded := s.slots.LoadOrStore(a.ID, sl)
	sl.mu.Unlock()
	if loaded {
		return nil
	}
	if bg := s.background.Load(); bg != nil {
		go s.prefetchAK(*bg, a.ID)
	}
	return nil
}

// handOver writes each agent's newest record under its lease, releases the
// leases, and drops the agents, so that their new owner starts from where
// this replica left them. It returns how many it let go.
func (s *Service) handOver(ctx context.Context, ids []string) int {
	var released []string
	for _, id := range ids {
		v, ok := s.slots.Load(id)
		if !ok {
			continue
		}
		sl := v.(*slot)
		sl.mu.Lock()
		if sl.agent != nil && !sl.removed && !sl.parked {
			if err := s.saveSync(ctx, sl, *sl.agent, nil, nil); err != nil && !errors.Is(err, ErrFenced) {
				// Keep it rather than lose its progress; try next round.
				sl.mu.Unlock()
				continue
			}
		}
		s.dropLocked(id, sl)
		sl.mu.Unlock()
		released = append(released, id)
	}
	if len(released) > 0 {
		if err := s.Leases.ReleaseLeases(ctx, s.ReplicaID, released); err != nil {
			// They expire instead.
			s.log().Warn("cannot release leases; they will expire", "n", len(released), "err", err)
		}
	}
	return len(released)
}

// dropSlot forgets an agent whose lease this replica no longer holds.
func (s *Service) dropSlot(id string, sl *slot) {
	sl.mu.Lock()
	s.dropLocked(id, sl)
	sl.mu.Unlock()
}

// dropLocked is dropSlot with sl.mu held. A failure parked for the store is
// kept by whoever holds the agent next only if it reached the store; one
// that did not is re-decided by the new owner from the agent's evidence.
func (s *Service) dropLocked(id string, sl *slot) {
	sl.removed, sl.dirty, sl.agent, sl.unsaved, sl.parked = true, false, nil, nil, false
	sl.deadline.Store(0)
	s.slots.CompareAndDelete(id, sl)
}

// notHeld answers a request for an agent this replica does not hold: the
// replica that does is named (307), an agent not yet held by anyone is
// asked to come back, and an agent nobody admitted is refused.
//
// An agent whose holder's lease lapsed since the last round (its holder
// died) is taken over at once, by whichever replica it reaches first,
// rather than at the next round: the agent is asking now, and its
// liveness window is running. The next rounds move it on to the replica
// rendezvous hashing names, if that is another. It returns nil when it
// took the agent over.
func (s *Service) notHeld(ctx context.Context, id string) error {
	if m := s.others.Load(); m != nil {
		if h, known := (*m)[id]; known {
			now := s.now()
			if h.until.IsZero() || !h.until.After(now) {
				if taken, err := s.Leases.AcquireLeases(ctx, s.ReplicaID, []string{id}, now, now.Add(s.LeaseTTL)); err == nil && len(taken) == 1 {
					if err := s.takeOver(ctx, taken[0], now); err == nil {
						if s.OnLeaseMoves != nil {
							s.OnLeaseMoves(1, 0)
						}
						return nil
					}
				}
			}
			if h.url != "" && h.url != s.ReplicaURL {
				r := refuseAs(RefusedMoved, refusedMoved, "agent %q is served by the verifier at %s", id, h.url)
				r.Location = h.url
				return r
			}
		}
	}
	if _, err := s.Store.GetAgent(ctx, id); err != nil {
		return s.loadError(id, err)
	}
	r := refuseAs(RefusedUnavailable, refusedUnassigned, "agent %q is not yet held by a verifier replica; retry", id)
	r.RetryAfter = time.Second
	return r
}

// refreshPolicies forgets the compiled policies whose stored version is
// not the one compiled: another replica stored a new version, or deleted
// the policy.
func (s *Service) refreshPolicies(ctx context.Context) error {
	ps, err := s.Store.ListPolicies(ctx)
	if err != nil {
		return fmt.Errorf("policies: %w", err)
	}
	s.policies.refresh(ps)
	return nil
}

// releaseAll hands every agent this replica holds over, at shutdown.
func (s *Service) releaseAll(ctx context.Context) {
	var ids []string
	s.slots.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	if n := s.handOver(ctx, ids); n > 0 {
		s.log().Info("leases released at shutdown", "agents", n)
	}
}
