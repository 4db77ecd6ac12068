package verifier

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// leasedBolt is the embedded store with leases kept in memory, so that
// two services in one test act as replicas sharing one store.
type leasedBolt struct {
	BoltStore
	mu       sync.Mutex
	replicas map[string]Replica
	leases   map[string]Lease
}

func (s *leasedBolt) Heartbeat(_ context.Context, id, url string, now time.Time, ttl time.Duration) ([]Replica, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas[id] = Replica{ID: id, URL: url, Seen: now}
	var live []Replica
	for _, r := range s.replicas {
		if now.Sub(r.Seen) <= ttl {
			live = append(live, r)
		}
	}
	return live, nil
}

func (s *leasedBolt) AcquireLeases(_ context.Context, owner string, ids []string, now, until time.Time) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for _, id := range ids {
		l := s.leases[id]
		if l.Owner == "" || l.Owner == owner || !l.Expires.After(now) {
			if l.Owner != owner {
				l.Epoch++
			}
			l.AgentID, l.Owner, l.Expires = id, owner, until
			s.leases[id] = l
			out = append(out, l)
		}
	}
	return out, nil
}

func (s *leasedBolt) RenewLeases(_ context.Context, owner string, now, until time.Time) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for id, l := range s.leases {
		if l.Owner == owner && l.Expires.After(now) {
			l.Expires = until
			s.leases[id] = l
			out = append(out, l)
		}
	}
	return out, nil
}

func (s *leasedBolt) ReleaseLeases(_ context.Context, owner string, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if l := s.leases[id]; l.Owner == owner {
			l.Owner = ""
			s.leases[id] = l
		}
	}
	return nil
}

// Leases answers a lease, held or not, for every stored agent.
func (s *leasedBolt) Leases(ctx context.Context) ([]Lease, error) {
	agents, err := s.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for _, a := range agents {
		l := s.leases[a.ID]
		l.AgentID = a.ID
		out = append(out, l)
	}
	return out, nil
}

// With replicas, an update made through a replica that does not hold the
// agent is redirected to the one that does; one whose holder's lease has
// lapsed is taken over and made at once.
func TestUpdateThroughAnotherReplica(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 1)
	shared := &leasedBolt{BoltStore: f.st, replicas: map[string]Replica{}, leases: map[string]Lease{}}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	replica := func(id string) *Service {
		return newTestVerifier(t, shared, f.aks, time.Hour, func(c *Config) {
			c.ReplicaID, c.ReplicaURL, c.LeaseTTL, c.Now = id, "https://"+id, time.Minute, clock
		}).Service()
	}
	svcs := map[string]*Service{"r1": replica("r1"), "r2": replica("r2")}
	h := f.hosts[0]
	if _, err := svcs["r1"].Admit(ctx, AdmitRequest{AgentID: h.id, RuntimePolicy: "rt"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "r2"} {
		shared.Heartbeat(ctx, id, "https://"+id, now, time.Minute)
	}
	for range 2 {
		for _, svc := range svcs {
			if err := svc.TendLeases(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	holder := Owner(h.id, []string{"r1", "r2"})
	other := "r1"
	if holder == "r1" {
		other = "r2"
	}
	_, err := svcs[other].Update(ctx, h.id, UpdateRequest{Interval: ptr(3 * time.Second)})
	var r *Refusal
	if !errors.As(err, &r) || r.Kind != RefusedMoved || r.Location != "https://"+holder {
		t.Fatalf("update through the replica not holding the agent: %v, want a redirect to %s", err, holder)
	}
	if a, err := svcs[holder].Update(ctx, h.id, UpdateRequest{Interval: ptr(3 * time.Second)}); err != nil || a.Interval != 3*time.Second {
		t.Fatalf("update through its holder: %+v, %v", a, err)
	}
	// The holder dies: its lease lapses, and the next operator's action
	// through the other replica takes the agent over rather than answering
	// nothing.
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	a, err := svcs[other].Update(ctx, h.id, UpdateRequest{Interval: ptr(4 * time.Second)})
	if err != nil || a.Interval != 4*time.Second || a.ID != h.id {
		t.Fatalf("update after the holder died: %+v, %v", a, err)
	}
	if stored := f.stored(t, h.id); stored.Interval != 4*time.Second {
		t.Fatalf("stored interval %s", stored.Interval)
	}
}
