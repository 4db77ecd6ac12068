// Package storetest states the contract of registrar.Store as tests, so
// that every backend (bbolt, PostgreSQL) is held to the same one: a
// backend's test calls Run with a constructor of empty stores.
//
// Each subtest states one promise of the interface's doc comments. The
// registrar's rules (which registrations count against the bounds, what
// expires, when an AK becomes active) are the Service's: the records given
// to Modify here already carry its decisions, and a store only keeps and
// indexes them.
//
// It imports testing, so only tests may import it: the vigil binary must
// not link it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/registrar"
)

// Run runs the contract against stores made by newStore, a fresh empty one
// per subtest. newStore closes what it opens with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) registrar.Store) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, registrar.Store)
	}{
		{"GetUnknownIsNotFound", getUnknown},
		{"ModifyCreatesAndGetKeepsEveryField", modifyCreates},
		{"ListReturnsEveryRecord", list},
		{"ModifyErrorStoresNothing", modifyRollback},
		{"ModifyNilDeletes", modifyNilDeletes},
		{"ModifyRefusesAnotherAgentID", modifyWrongID},
		{"ModifyIsAtomic", modifyAtomic},
		{"PendingCountsForEK", countsForEK},
		{"PendingCountsTotal", countsTotal},
		{"ExpiredListsEachAgentOnce", expired},
		{"GenerationChangesOnlyWithTheActiveAKs", generation},
		{"ActiveAKs", activeAKs},
		{"Delete", deleteRecord},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

func t0() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.UTC) }

func ctx(t *testing.T) context.Context { return t.Context() }

// ek is the hash of EK n.
func ek(n int) string { return fmt.Sprintf("%064x", n) }

// pending is a registration of AK name ak, live until deadline.
func pending(ak string, deadline time.Time, uncounted bool) registrar.Pending {
	return registrar.Pending{AKPublic: []byte("pub-" + ak), AKName: []byte(ak), AKAlg: "rsa-2048", EKTrust: "chain",
		Secret: []byte("secret-" + ak), Deadline: deadline, RegisteredAt: deadline.Add(-5 * time.Minute), Uncounted: uncounted}
}

// record is agent id with EK n and the given pending registrations.
func record(id string, n int, ps ...registrar.Pending) registrar.Record {
	return registrar.Record{AgentID: id, EKPublic: []byte(fmt.Sprint("ek-", n)), EKSHA256: ek(n), EKCert: []byte("cert"),
		EKTrust: "chain", RegisteredAt: t0(), Pending: ps}
}

// active makes r's active AK ak.
func active(r registrar.Record, ak string) registrar.Record {
	r.AKPublic, r.AKName, r.AKAlg, r.Active = []byte("pub-"+ak), []byte(ak), "rsa-2048", true
	r.ActivatedAt, r.ActiveProof, r.Enrollments = t0().Add(time.Minute), []byte("proof-"+ak), r.Enrollments+1
	return r
}

// put stores r whatever was there.
func put(t *testing.T, s registrar.Store, r registrar.Record) {
	t.Helper()
	if err := s.Modify(ctx(t), r.AgentID, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) {
		return &r, nil
	}); err != nil {
		t.Fatalf("Modify(%s): %v", r.AgentID, err)
	}
}

func mustGet(t *testing.T, s registrar.Store, id string) registrar.Record {
	t.Helper()
	r, err := s.Get(ctx(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

// same compares records ignoring V, the backend's format version.
func same(t *testing.T, got, want registrar.Record) {
	t.Helper()
	got.V, want.V = 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stored record\n got %+v\nwant %+v", got, want)
	}
}

// counts reads the pending counts inside a Modify that stores nothing.
func counts(t *testing.T, s registrar.Store, ekHash string, now time.Time) (forEK, total int) {
	t.Helper()
	stop := errors.New("stop")
	err := s.Modify(ctx(t), "counter", func(_ *registrar.Record, c registrar.PendingCounts) (*registrar.Record, error) {
		var err error
		if forEK, err = c.ForEK(ekHash, now); err != nil {
			return nil, err
		}
		if total, err = c.Total(); err != nil {
			return nil, err
		}
		return nil, stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Modify: %v, want fn's error", err)
	}
	return forEK, total
}

func gen(t *testing.T, s registrar.Store) string {
	t.Helper()
	g, err := s.Generation(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func getUnknown(t *testing.T, s registrar.Store) {
	if _, err := s.Get(ctx(t), "nobody"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("Get of an unknown ID: %v, want ErrNotFound", err)
	}
	if rs, err := s.List(ctx(t)); err != nil || len(rs) != 0 {
		t.Fatalf("List of an empty store: %d records, %v", len(rs), err)
	}
}

func modifyCreates(t *testing.T, s registrar.Store) {
	want := active(record("web-1", 1, pending("ak-2", t0().Add(time.Hour), false), pending("ak-1", t0().Add(2*time.Hour), true)), "ak-1")
	var seen *registrar.Record
	err := s.Modify(ctx(t), "web-1", func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
		seen = cur
		r := want
		return &r, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != nil {
		t.Fatalf("fn was given %+v for an absent record, want nil", seen)
	}
	same(t, mustGet(t, s, "web-1"), want)
	// The next Modify is given what is stored.
	err = s.Modify(ctx(t), "web-1", func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
		if cur == nil {
			return nil, errors.New("fn given nil for a stored record")
		}
		same(t, *cur, want)
		cur.Pending = nil
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want.Pending = nil
	same(t, mustGet(t, s, "web-1"), want)
}

func list(t *testing.T, s registrar.Store) {
	want := map[string]registrar.Record{}
	for i := range 5 {
		r := record(fmt.Sprintf("web-%d", i), i, pending("ak", t0().Add(time.Hour), false))
		if i%2 == 0 {
			r = active(r, "ak-active")
		}
		put(t, s, r)
		want[r.AgentID] = r
	}
	rs, err := s.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(want) {
		t.Fatalf("List: %d records, want %d", len(rs), len(want))
	}
	for _, r := range rs {
		same(t, r, want[r.AgentID])
	}
}

func modifyRollback(t *testing.T, s registrar.Store) {
	r := record("web-1", 1, pending("ak-1", t0().Add(time.Hour), false))
	put(t, s, r)
	g := gen(t, s)
	boom := errors.New("boom")
	err := s.Modify(ctx(t), "web-1", func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
		// Changes to cur are not stored when fn fails, even in place.
		cur.Pending[0].Deadline = t0().Add(-time.Hour)
		cur.Pending = append(cur.Pending, pending("ak-2", t0().Add(time.Hour), false))
		next := active(*cur, "ak-2")
		return &next, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Modify returned %v, want fn's error", err)
	}
	same(t, mustGet(t, s, "web-1"), r)
	if g2 := gen(t, s); g2 != g {
		t.Fatalf("a failed Modify changed the generation %s → %s", g, g2)
	}
	if n, total := counts(t, s, ek(1), t0()); n != 1 || total != 1 {
		t.Fatalf("counts after a failed Modify: %d for the EK, %d in total; want 1, 1", n, total)
	}
	if ids, err := s.Expired(ctx(t), t0()); err != nil || len(ids) != 0 {
		t.Fatalf("Expired after a failed Modify: %v, %v", ids, err)
	}
	// A failed create creates nothing.
	err = s.Modify(ctx(t), "web-2", func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) {
		r := record("web-2", 2)
		return &r, boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), "web-2"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("a failed Modify created a record: %v", err)
	}
}

func modifyNilDeletes(t *testing.T, s registrar.Store) {
	put(t, s, active(record("web-1", 1, pending("ak-2", t0().Add(time.Hour), false)), "ak-1"))
	g := gen(t, s)
	err := s.Modify(ctx(t), "web-1", func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), "web-1"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("Get after Modify returned nil: %v, want ErrNotFound", err)
	}
	if n, total := counts(t, s, ek(1), t0()); n != 0 || total != 0 {
		t.Fatalf("counts after deleting by Modify: %d, %d", n, total)
	}
	if gen(t, s) == g {
		t.Fatal("deleting an active record by Modify left the generation")
	}
	// nil for an absent record is no error and stores nothing.
	err = s.Modify(ctx(t), "web-2", func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return nil, nil })
	if err != nil {
		t.Fatalf("Modify returning nil for an absent record: %v", err)
	}
	if rs, _ := s.List(ctx(t)); len(rs) != 0 {
		t.Fatalf("%d records", len(rs))
	}
}

func modifyWrongID(t *testing.T, s registrar.Store) {
	err := s.Modify(ctx(t), "web-1", func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) {
		r := record("web-2", 1)
		return &r, nil
	})
	if err == nil {
		t.Fatal("Modify stored a record of web-2 under web-1")
	}
	for _, id := range []string{"web-1", "web-2"} {
		if _, err := s.Get(ctx(t), id); !errors.Is(err, registrar.ErrNotFound) {
			t.Fatalf("Get(%s) after a refused Modify: %v", id, err)
		}
	}
}

func modifyAtomic(t *testing.T, s registrar.Store) {
	put(t, s, record("web-1", 1))
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			err := s.Modify(ctx(t), "web-1", func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
				cur.Enrollments++
				return cur, nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := mustGet(t, s, "web-1").Enrollments; got != n {
		t.Fatalf("%d concurrent increments left %d: a Modify lost another's change", n, got)
	}
}

func countsForEK(t *testing.T, s registrar.Store) {
	now := t0()
	live, dead := now.Add(time.Minute), now
	// EK 1 under two agent IDs: two live counted, one expired, one
	// uncounted; EK 2 elsewhere.
	put(t, s, record("web-1", 1, pending("a", live, false), pending("b", dead, false)))
	put(t, s, active(record("web-1b", 1, pending("c", live, false), pending("own", live, true)), "own"))
	put(t, s, record("web-2", 2, pending("d", live, false)))
	if n, _ := counts(t, s, ek(1), now); n != 2 {
		t.Fatalf("ForEK = %d, want 2 (live and counted, under every agent ID)", n)
	}
	if n, _ := counts(t, s, ek(1), now.Add(-time.Second)); n != 3 {
		t.Fatalf("ForEK a second earlier = %d, want 3", n)
	}
	if n, _ := counts(t, s, ek(3), now); n != 0 {
		t.Fatalf("ForEK of an unknown EK = %d", n)
	}
	// Inside a Modify, counts are the stored state before fn's result.
	err := s.Modify(ctx(t), "web-1", func(cur *registrar.Record, c registrar.PendingCounts) (*registrar.Record, error) {
		if n, err := c.ForEK(ek(1), now); err != nil || n != 2 {
			return nil, fmt.Errorf("ForEK inside Modify = %d, %v; want 2", n, err)
		}
		cur.Pending = nil
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := counts(t, s, ek(1), now); n != 1 {
		t.Fatalf("ForEK after dropping web-1's registrations = %d, want 1", n)
	}
}

func countsTotal(t *testing.T, s registrar.Store) {
	now := t0()
	put(t, s, record("web-1", 1, pending("a", now.Add(time.Minute), false), pending("b", now.Add(-time.Hour), false)))
	put(t, s, active(record("web-2", 2, pending("own", now.Add(time.Minute), true)), "own"))
	if _, total := counts(t, s, ek(1), now); total != 2 {
		t.Fatalf("Total = %d, want 2 (expired ones too, uncounted ones not)", total)
	}
	// The flag is the record's to say: the same registration marked
	// counted counts.
	put(t, s, active(record("web-2", 2, pending("own", now.Add(time.Minute), false)), "own"))
	if _, total := counts(t, s, ek(1), now); total != 3 {
		t.Fatalf("Total after marking a registration counted = %d, want 3", total)
	}
	if err := s.Delete(ctx(t), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, total := counts(t, s, ek(1), now); total != 1 {
		t.Fatalf("Total after Delete = %d, want 1", total)
	}
}

func expired(t *testing.T, s registrar.Store) {
	now := t0()
	put(t, s, record("web-1", 1, pending("a", now.Add(-time.Hour), false), pending("b", now, false)))
	put(t, s, active(record("web-2", 1, pending("own", now, true)), "own"))
	put(t, s, record("web-3", 2, pending("c", now.Add(time.Nanosecond), false)))
	put(t, s, active(record("web-4", 3), "x"))
	ids, err := s.Expired(ctx(t), now)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if want := []string{"web-1", "web-2"}; !slices.Equal(ids, want) {
		t.Fatalf("Expired(now) = %v, want %v (deadline not after now, uncounted too, each once)", ids, want)
	}
	if ids, _ := s.Expired(ctx(t), now.Add(-2*time.Hour)); len(ids) != 0 {
		t.Fatalf("Expired before every deadline = %v", ids)
	}
}

func generation(t *testing.T, s registrar.Store) {
	g0 := gen(t, s)
	step := func(what string, r *registrar.Record, id string, wantChange bool) {
		t.Helper()
		before := gen(t, s)
		if err := s.Modify(ctx(t), id, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return r, nil }); err != nil {
			t.Fatal(err)
		}
		if changed := gen(t, s) != before; changed != wantChange {
			t.Fatalf("%s: generation changed %v, want %v", what, changed, wantChange)
		}
	}
	r := record("web-1", 1, pending("ak-1", t0().Add(time.Hour), false))
	step("a pending registration", &r, "web-1", false)
	a := active(record("web-1", 1), "ak-1")
	step("activation", &a, "web-1", true)
	a2 := a
	a2.Enrollments, a2.Pending = 7, []registrar.Pending{pending("ak-1", t0().Add(time.Hour), true)}
	step("the same AK registering again", &a2, "web-1", false)
	b := active(record("web-1", 1), "ak-2")
	step("another AK activated", &b, "web-1", true)
	off := record("web-1", 1, pending("ak-3", t0(), false))
	step("deactivation", &off, "web-1", true)
	step("deleting a record without an active AK", nil, "web-1", false)
	c := active(record("web-2", 2), "ak-9")
	step("another agent activated", &c, "web-2", true)
	if err := s.Delete(ctx(t), "web-2"); err != nil {
		t.Fatal(err)
	}
	// No generation repeats: a poller that saw one must see a change.
	if g := gen(t, s); g == g0 {
		t.Fatalf("generation %s after changes is the first one again", g)
	}
}

func activeAKs(t *testing.T, s registrar.Store) {
	g, aks, err := s.ActiveAKs(ctx(t))
	if err != nil || len(aks) != 0 {
		t.Fatalf("ActiveAKs of an empty store: %v, %v", aks, err)
	}
	if g != gen(t, s) {
		t.Fatalf("ActiveAKs generation %s, Generation %s", g, gen(t, s))
	}
	put(t, s, active(record("web-1", 1, pending("ak-x", t0().Add(time.Hour), false)), "ak-1"))
	put(t, s, active(record("web-2", 2), "ak-2"))
	put(t, s, record("web-3", 3, pending("ak-3", t0().Add(time.Hour), false)))
	g, aks, err = s.ActiveAKs(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(aks, func(a, b registrar.ActiveAK) int {
		if a.AgentID < b.AgentID {
			return -1
		}
		return 1
	})
	want := []registrar.ActiveAK{{AgentID: "web-1", AKName: []byte("ak-1")}, {AgentID: "web-2", AKName: []byte("ak-2")}}
	if !reflect.DeepEqual(aks, want) {
		t.Fatalf("ActiveAKs = %+v, want %+v (active records only, with their AK names)", aks, want)
	}
	if g != gen(t, s) {
		t.Fatalf("ActiveAKs generation %s, Generation %s", g, gen(t, s))
	}
}

func deleteRecord(t *testing.T, s registrar.Store) {
	put(t, s, active(record("web-1", 1, pending("ak-2", t0(), false)), "ak-1"))
	put(t, s, record("web-2", 2))
	g := gen(t, s)
	if err := s.Delete(ctx(t), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), "web-1"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "web-1"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
	if gen(t, s) == g {
		t.Fatal("deleting an active record left the generation")
	}
	if _, aks, _ := s.ActiveAKs(ctx(t)); len(aks) != 0 {
		t.Fatalf("ActiveAKs after Delete: %+v", aks)
	}
	if n, total := counts(t, s, ek(1), t0().Add(-time.Hour)); n != 0 || total != 0 {
		t.Fatalf("counts after Delete: %d, %d", n, total)
	}
	if ids, _ := s.Expired(ctx(t), t0()); len(ids) != 0 {
		t.Fatalf("Expired after Delete: %v", ids)
	}
	mustGet(t, s, "web-2")
}
