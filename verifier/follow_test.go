package verifier

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// fleetFeed is fleetAKs's registrar seen through its feed of active AKs.
type fleetFeed struct {
	*fleetAKs
	mu      sync.Mutex
	version int
}

func (f *fleetFeed) ActiveAKs(_ context.Context, version string) (map[string][]byte, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := fmt.Sprint(f.version)
	if version == cur {
		return nil, version, ErrFeedNotModified
	}
	f.fleetAKs.mu.Lock()
	defer f.fleetAKs.mu.Unlock()
	out := make(map[string][]byte, len(f.keys))
	for id, k := range f.keys {
		out[id] = k.Name
	}
	return out, cur, nil
}

// change applies fn to the registrar's AKs as one new version of the feed.
func (f *fleetFeed) change(fn func(keys map[string]*evidence.AK)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fleetAKs.mu.Lock()
	fn(f.keys)
	f.fleetAKs.mu.Unlock()
	f.version++
}

func TestFollowRegistrar(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 3, 10)
	feed := &fleetFeed{fleetAKs: f.aks}
	svc := f.service(0)
	svc.Feed = feed
	f.admitAll(t, svc)
	deleted, replaced, pending := f.hosts[0], f.hosts[1], f.hosts[2]
	mustAttest(t, svc, deleted, true)
	mustAttest(t, svc, replaced, true)
	v, err := svc.FollowRegistrar(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := svc.FollowRegistrar(ctx, v); err != nil || again != v {
		t.Fatalf("unchanged feed: %q, %v", again, err)
	}

	// One host deleted at the registrar, one re-enrolled with a new AK
	// (as its TPM proved by credential activation), one never attested.
	other := newFleet(t, 1, 0)
	feed.change(func(keys map[string]*evidence.AK) {
		delete(keys, deleted.id)
		delete(keys, pending.id)
		keys[replaced.id] = other.aks.keys[other.hosts[0].id]
	})
	if _, err := svc.FollowRegistrar(ctx, v); err != nil {
		t.Fatal(err)
	}
	if a := f.stored(t, deleted.id); a.State != StateFailed || a.Reason != ReasonNotEnrolled {
		t.Errorf("host deleted at the registrar: %s %s, want failed not_enrolled", a.State, a.Reason)
	}
	if a := f.stored(t, pending.id); a.State != StatePending {
		t.Errorf("host never attested, not enrolled: %s; want still pending (liveness decides)", a.State)
	}
	// The replaced host's old AK is no longer trusted: its evidence is
	// refused, not failed, and the new AK is what is checked.
	if _, err := replaced.attest(t, svc, false); !isRefusal(err, RefusedForbidden) {
		t.Errorf("evidence by the replaced AK: %v, want refused", err)
	}
	if a, _ := svc.Status(ctx, replaced.id); a.State != StateAttesting {
		t.Errorf("host with a replaced AK: %s, want still attesting", a.State)
	}
	evs, _ := f.st.PendingEvents(ctx)
	if len(evs) != 1 || evs[0].Event.Data.AgentID != deleted.id {
		t.Errorf("events: %+v, want one revocation of %s", evs, deleted.id)
	}
}

// BenchmarkFollowRegistrar10k is one poll of the registrar's feed by a
// verifier with 10,000 agents: unchanged (the steady state: a 304), and
// changed (every agent compared against the new list).
func BenchmarkFollowRegistrar10k(b *testing.B) {
	ctx := context.Background()
	f := newFleet(b, 1, 0)
	feed := &fleetFeed{fleetAKs: f.aks}
	svc := f.service(time.Hour)
	svc.Feed = feed
	key := f.aks.keys[f.hosts[0].id]
	for i := range 10000 {
		id := fmt.Sprintf("bench-%05d", i)
		f.aks.keys[id] = key
		sl := svc.slot(id)
		sl.agent = &Agent{ID: id, State: StateAttesting}
		sl.ak = key
	}
	v, err := svc.FollowRegistrar(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.FollowRegistrar(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("changed", func(b *testing.B) {
		for b.Loop() {
			feed.change(func(map[string]*evidence.AK) {})
			if _, err := svc.FollowRegistrar(ctx, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
