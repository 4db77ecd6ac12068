package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/verifier"
)

func leaseOf(t *testing.T, ls []verifier.Lease, id string) verifier.Lease {
	t.Helper()
	for _, l := range ls {
		if l.AgentID == id {
			return l
		}
	}
	return verifier.Lease{}
}

// Two replicas on one database: a lease is held by one at a time, moves
// only when it expires or is released, gets a new epoch when it moves, and
// a replica writing under a lease it lost writes nothing.
func leasesFence(t *testing.T, srv *pgtest.Server) {
	ctx := context.Background()
	url := srv.NewDatabase(t)
	r1, r2 := open(t, url), open(t, url)
	for _, id := range []string{"a", "b"} {
		if err := r1.CreateAgent(ctx, agent(id)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ttl := 3 * time.Second
	got, err := r1.AcquireLeases(ctx, "r1", []string{"a", "b", "no-such-agent"}, now, now.Add(ttl))
	if err != nil || len(got) != 2 {
		t.Fatalf("r1 acquires: %+v, %v; want a and b", got, err)
	}
	a1 := leaseOf(t, got, "a")
	if taken, err := r2.AcquireLeases(ctx, "r2", []string{"a", "b"}, now.Add(time.Second), now.Add(time.Second+ttl)); err != nil || len(taken) != 0 {
		t.Fatalf("r2 takes held leases: %+v, %v", taken, err)
	}
	// Renewing keeps the epoch.
	renewed, err := r1.RenewLeases(ctx, "r1", now.Add(time.Second), now.Add(time.Second+ttl))
	if err != nil || len(renewed) != 2 || leaseOf(t, renewed, "a").Epoch != a1.Epoch {
		t.Fatalf("renewal: %+v, %v", renewed, err)
	}
	// r1 pauses past its lease; r2 takes it with a new epoch.
	late := now.Add(time.Second + ttl)
	taken, err := r2.AcquireLeases(ctx, "r2", []string{"a"}, late, late.Add(ttl))
	if err != nil || len(taken) != 1 || taken[0].Epoch <= a1.Epoch || taken[0].Owner != "r2" {
		t.Fatalf("r2 after expiry: %+v, %v (r1's epoch %d)", taken, err, a1.Epoch)
	}
	a2 := taken[0]
	// r1 wakes and writes under its old lease: refused, nothing stored.
	stale := agent("a")
	stale.Attestations, stale.Fence = 99, verifier.Fence{Owner: "r1", Epoch: a1.Epoch}
	// Its history goes with the write: none of it is stored either.
	staleHistory := verifier.HistoryEntry{AgentID: "a", Kind: verifier.HistoryFailure, At: now}
	if err := r1.SaveAgent(ctx, stale, nil, staleHistory); !errors.Is(err, verifier.ErrFenced) {
		t.Fatalf("a write under a lost lease: %v, want ErrFenced", err)
	}
	if err := r1.Checkpoint(ctx, []verifier.Agent{stale}, staleHistory); err != nil {
		t.Fatalf("a checkpoint under a lost lease: %v", err)
	}
	if got, _ := r2.GetAgent(ctx, "a"); got.Attestations == 99 {
		t.Fatal("a replica that lost the lease overwrote the record")
	}
	if h, err := r2.History(ctx, "a", time.Time{}, 0); err != nil || len(h) != 0 {
		t.Fatalf("history of fenced writes: %+v, %v", h, err)
	}
	fresh := agent("a")
	fresh.Attestations, fresh.Fence = 7, verifier.Fence{Owner: "r2", Epoch: a2.Epoch}
	if err := r2.SaveAgent(ctx, fresh, nil, verifier.HistoryEntry{AgentID: "a", Kind: verifier.HistoryState, At: now}); err != nil {
		t.Fatal(err)
	}
	if err := r2.Checkpoint(ctx, []verifier.Agent{fresh}, verifier.HistoryEntry{AgentID: "a", Kind: verifier.HistoryVerdicts, At: now}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r1.GetAgent(ctx, "a"); got.Attestations != 7 {
		t.Fatalf("the owner's write: %d attestations", got.Attestations)
	}
	if h, err := r1.History(ctx, "a", time.Time{}, 0); err != nil || len(h) != 2 || h[0].Kind != verifier.HistoryState || h[1].Kind != verifier.HistoryVerdicts {
		t.Fatalf("history of the owner's writes: %+v, %v", h, err)
	}
	// r1 learns it lost a when it renews.
	if renewed, _ := r1.RenewLeases(ctx, "r1", late, late.Add(ttl)); len(renewed) != 0 {
		t.Fatalf("r1 renews expired leases: %+v", renewed)
	}
	// A release hands a lease over at once, with a new epoch.
	if err := r2.ReleaseLeases(ctx, "r2", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	back, err := r1.AcquireLeases(ctx, "r1", []string{"a"}, late, late.Add(ttl))
	if err != nil || len(back) != 1 || back[0].Epoch <= a2.Epoch {
		t.Fatalf("after a release: %+v, %v", back, err)
	}
	all, err := r2.Leases(ctx)
	if err != nil || len(all) != 2 || leaseOf(t, all, "a").Owner != "r1" {
		t.Fatalf("leases: %+v, %v", all, err)
	}
	// Deleting an agent ends its lease.
	if err := r2.DeleteAgent(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if all, _ := r2.Leases(ctx); len(all) != 1 {
		t.Fatalf("leases after a deletion: %+v", all)
	}

	// Heartbeats list the live replicas only.
	if _, err := r1.Heartbeat(ctx, "r1", "https://r1", now, ttl); err != nil {
		t.Fatal(err)
	}
	live, err := r2.Heartbeat(ctx, "r2", "https://r2", now.Add(time.Second), ttl)
	if err != nil || len(live) != 2 {
		t.Fatalf("two live replicas: %+v, %v", live, err)
	}
	live, err = r2.Heartbeat(ctx, "r2", "https://r2", now.Add(ttl+time.Second), ttl)
	if err != nil || len(live) != 1 || live[0].ID != "r2" || live[0].URL != "https://r2" {
		t.Fatalf("after r1 went silent: %+v, %v", live, err)
	}
}

// Replicas racing for the same leases: each agent ends with exactly one
// owner.
func leasesRace(t *testing.T, srv *pgtest.Server) {
	ctx := context.Background()
	url := srv.NewDatabase(t)
	base := open(t, url)
	var ids []string
	for i := range 50 {
		id := fmt.Sprintf("h%d", i)
		ids = append(ids, id)
		if err := base.CreateAgent(ctx, agent(id)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	owners := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for r := range 4 {
		st := open(t, url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("r%d", r)
			got, err := st.AcquireLeases(ctx, me, ids, now, now.Add(time.Minute))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, l := range got {
				if prev, dup := owners[l.AgentID]; dup {
					t.Errorf("%s owned by %s and %s", l.AgentID, prev, me)
				}
				owners[l.AgentID] = me
			}
		}()
	}
	wg.Wait()
	if len(owners) != len(ids) {
		t.Fatalf("%d of %d agents got an owner", len(owners), len(ids))
	}
}
