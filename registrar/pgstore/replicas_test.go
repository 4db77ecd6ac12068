package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-attest/vigil/internal/pgdb"
	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/registrar/pgstore"
)

func t0() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) }

func ekHash(n int) string { return fmt.Sprintf("%064x", n) }

// registration is what Register adds: a counted pending registration of a
// new AK, live for an hour.
func registration(ak string) registrar.Pending {
	return registrar.Pending{AKPublic: []byte("pub-" + ak), AKName: []byte(ak), AKAlg: "rsa-2048", EKTrust: "chain",
		Secret: []byte("secret-" + ak), Deadline: t0().Add(time.Hour), RegisteredAt: t0()}
}

var errBound = errors.New("bound reached")

// register plays the Service's Register against s: agent id of EK ek gets a
// registration of AK ak unless ek already has perEK live ones or the store
// holds total.
func register(ctx context.Context, s registrar.Store, id string, ek int, ak string, perEK, total int) error {
	return s.Modify(ctx, id, func(cur *registrar.Record, c registrar.PendingCounts) (*registrar.Record, error) {
		next := registrar.Record{AgentID: id, EKPublic: []byte("ek"), EKSHA256: ekHash(ek), EKTrust: "chain", RegisteredAt: t0()}
		if cur != nil {
			next = *cur
		}
		n, err := c.ForEK(ekHash(ek), t0())
		if err != nil {
			return nil, err
		}
		all, err := c.Total()
		if err != nil {
			return nil, err
		}
		if n >= perEK || all >= total {
			return nil, errBound
		}
		next.Pending = append(next.Pending, registration(ak))
		return &next, nil
	})
}

// Two replicas on one database: every Modify of one agent sees the last
// one's result, whichever replica made it.
func TestReplicasModifyOneAgent(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	const each = 25
	var wg sync.WaitGroup
	for i := range 2 * each {
		s := []*pgstore.Store{a, b}[i%2]
		wg.Go(func() {
			// Every one may be the first: the record does not exist yet.
			err := s.Modify(ctx, "web-1", func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
				if cur == nil {
					cur = &registrar.Record{AgentID: "web-1", EKSHA256: ekHash(1)}
				}
				cur.Enrollments++
				cur.Pending = append(cur.Pending, registration(fmt.Sprint("ak-", cur.Enrollments)))
				return cur, nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	r, err := b.Get(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Enrollments != 2*each || len(r.Pending) != 2*each {
		t.Fatalf("%d concurrent changes on two replicas left %d enrollments and %d registrations", 2*each, r.Enrollments, len(r.Pending))
	}
	checkIndexes(t, url)
}

// Replicas registering hosts of one EK, and hosts of many EKs, at once:
// the bounds hold exactly, and the counts match the records.
func TestReplicasKeepTheBoundsExact(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	const perEK, total, tries = 5, 12, 40
	var admitted atomic.Int64
	run := func(idOf func(i int) string, ekOf func(i int) int) {
		var wg sync.WaitGroup
		for i := range tries {
			s := []*pgstore.Store{a, b}[i%2]
			wg.Go(func() {
				switch err := register(ctx, s, idOf(i), ekOf(i), fmt.Sprint("ak-", i), perEK, total); {
				case err == nil:
					admitted.Add(1)
				case !errors.Is(err, errBound):
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	// One EK under many agent IDs: the per-EK bound.
	run(func(i int) string { return fmt.Sprint("one-ek-", i) }, func(int) int { return 1 })
	if n := admitted.Load(); n != perEK {
		t.Fatalf("%d registrations of one EK admitted, the bound is %d", n, perEK)
	}
	checkIndexes(t, url)
	// Many EKs: the total bound.
	admitted.Store(0)
	run(func(i int) string { return fmt.Sprint("many-", i) }, func(i int) int { return 100 + i })
	if n := admitted.Load(); n != total-perEK {
		t.Fatalf("%d registrations of new EKs admitted with %d of %d taken", n, perEK, total)
	}
	checkIndexes(t, url)
	if n, all := counts(t, a, ekHash(1)); n != perEK || all != total {
		t.Fatalf("counts %d for the EK, %d in total; want %d, %d", n, all, perEK, total)
	}
	// Dropping registrations on both replicas at once: the counts follow.
	rs, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, r := range rs {
		s := []*pgstore.Store{a, b}[i%2]
		wg.Go(func() {
			if err := s.Modify(ctx, r.AgentID, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return nil, nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, all := counts(t, b, ekHash(1)); n != 0 || all != 0 {
		t.Fatalf("counts after deleting everything: %d, %d", n, all)
	}
	checkIndexes(t, url)
}

// Every replica reports the same generation, activations on both count
// once each, and a new replica (a restart) reports it unchanged.
func TestReplicasShareTheGeneration(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	g0 := gen(t, a)
	epoch, _, _ := strings.Cut(g0, ".")
	const n = 30
	var wg sync.WaitGroup
	for i := range n {
		s := []*pgstore.Store{a, b}[i%2]
		wg.Go(func() {
			id := fmt.Sprint("web-", i)
			r := registrar.Record{AgentID: id, EKSHA256: ekHash(i), Active: true, AKName: []byte("ak"), AKPublic: []byte("pub")}
			if err := s.Modify(ctx, id, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return &r, nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ga, gb := gen(t, a), gen(t, b); ga != gb || ga != fmt.Sprintf("%s.%d", epoch, n) {
		t.Fatalf("generations %s and %s after %d activations from %s", ga, gb, n, g0)
	}
	g, aks, err := b.ActiveAKs(ctx)
	if err != nil || len(aks) != n || g != gen(t, a) {
		t.Fatalf("ActiveAKs: %s, %d AKs, %v", g, len(aks), err)
	}
	if c := open(t, url); gen(t, c) != g {
		t.Fatalf("a new replica reports %s, the others %s", gen(t, c), g)
	}
	// Another database has another epoch: a verifier moved to a rebuilt
	// database is not told "unchanged".
	if other := gen(t, open(t, srv.NewDatabase(t))); strings.HasPrefix(other, epoch+".") {
		t.Fatalf("two databases share the epoch %s", epoch)
	}
}

// The database restarting between two calls: the call after it works on
// fresh connections; while it is down, calls fail with an error that says
// so, and the next call once it is back works, with nothing lost.
func TestDatabaseRestart(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	s := open(t, url)
	ctx := t.Context()
	if err := register(ctx, s, "web-1", 1, "ak-1", 5, 100); err != nil {
		t.Fatal(err)
	}
	r := registrar.Record{AgentID: "web-2", EKSHA256: ekHash(2), Active: true, AKName: []byte("ak"), AKPublic: []byte("pub")}
	put := func(r registrar.Record) error {
		return s.Modify(ctx, r.AgentID, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return &r, nil })
	}
	if err := put(r); err != nil {
		t.Fatal(err)
	}
	g := gen(t, s)
	// Several idle connections, all of which the restart breaks: the
	// retry must not meet them one by one.
	warm(t, s)

	srv.Restart(t)
	if err := register(ctx, s, "web-1", 1, "ak-2", 5, 100); err != nil {
		t.Fatalf("the first Modify after a restart: %v", err)
	}
	if gen(t, s) != g {
		t.Fatalf("generation %s after a restart, was %s", gen(t, s), g)
	}

	srv.Stop()
	err := register(ctx, s, "web-1", 1, "ak-3", 5, 100)
	if err == nil || !pgdb.Unreachable(err) {
		t.Fatalf("Modify with the database down: %v, want an unreachable error", err)
	}
	if _, err := s.Get(ctx, "web-1"); err == nil || errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("Get with the database down: %v", err)
	}
	if _, err := s.Generation(ctx); err == nil {
		t.Fatal("Generation with the database down succeeded")
	}

	srv.Restart(t)
	r.AKName = []byte("ak-new")
	if err := put(r); err != nil {
		t.Fatalf("the first Modify once the database is back: %v", err)
	}
	got, err := s.Get(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pending) != 2 {
		t.Fatalf("web-1 has %d registrations, want the 2 made before the outage", len(got.Pending))
	}
	if gen(t, s) == g {
		t.Fatal("an activation after the restarts left the generation")
	}
	checkIndexes(t, url)
}

// warm leaves several connections idle in s's pool.
func warm(t *testing.T, s registrar.Store) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			err := s.Modify(t.Context(), fmt.Sprint("warm-", i), func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) {
				time.Sleep(50 * time.Millisecond) // hold the connection so that the others need their own
				return nil, nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func gen(t *testing.T, s registrar.Store) string {
	t.Helper()
	g, err := s.Generation(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// counts reads the pending counts through a Modify that stores nothing.
func counts(t *testing.T, s registrar.Store, ek string) (forEK, total int) {
	t.Helper()
	stop := errors.New("stop")
	err := s.Modify(t.Context(), "counter", func(_ *registrar.Record, c registrar.PendingCounts) (*registrar.Record, error) {
		var err error
		if forEK, err = c.ForEK(ek, t0()); err != nil {
			return nil, err
		}
		total, err = c.Total()
		if err == nil {
			err = stop
		}
		return nil, err
	})
	if !errors.Is(err, stop) {
		t.Fatal(err)
	}
	return forEK, total
}

// checkIndexes recomputes every derived table from the records and
// compares: a lost or doubled update anywhere shows here.
func checkIndexes(t *testing.T, url string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT agent_id, record, active_ak FROM registrar_records`)
	type ekCount struct{ pending, counted int }
	wantEK, wantTotal, wantPending := map[string]ekCount{}, 0, map[string]int{}
	var id string
	var b, ak []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &b, &ak}, func() error {
		r, err := registrar.DecodeRecord(id, b)
		if err != nil {
			return err
		}
		if r.Active != (ak != nil) || (r.Active && string(ak) != string(r.AKName)) {
			t.Errorf("agent %s: active_ak %q, record active %v with %q", id, ak, r.Active, r.AKName)
		}
		for _, p := range r.Pending {
			c := wantEK[r.EKSHA256]
			c.pending++
			if !p.Uncounted {
				c.counted++
				wantTotal++
			}
			wantEK[r.EKSHA256] = c
		}
		wantPending[id] = len(r.Pending)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	gotEK := map[string]ekCount{}
	rows, _ = conn.Query(ctx, `SELECT ek_sha256, pending, counted FROM registrar_pending_by_ek`)
	var ek string
	var c ekCount
	if _, err := pgx.ForEachRow(rows, []any{&ek, &c.pending, &c.counted}, func() error { gotEK[ek] = c; return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gotEK) != fmt.Sprint(wantEK) {
		t.Errorf("registrar_pending_by_ek %v, the records say %v", gotEK, wantEK)
	}
	var total int
	if err := conn.QueryRow(ctx, `SELECT pending_total FROM registrar_state`).Scan(&total); err != nil || total != wantTotal {
		t.Errorf("pending_total %d (%v), the records say %d", total, err, wantTotal)
	}
	gotPending := map[string]int{}
	rows, _ = conn.Query(ctx, `SELECT agent_id, count(*) FROM registrar_pending GROUP BY agent_id`)
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { gotPending[id] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	for id, n := range wantPending {
		if n == 0 {
			delete(wantPending, id)
		}
	}
	if fmt.Sprint(gotPending) != fmt.Sprint(wantPending) {
		t.Errorf("registrar_pending rows per agent %v, the records say %v", gotPending, wantPending)
	}
}
