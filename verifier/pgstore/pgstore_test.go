package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vigil-attest/vigil/internal/pgdb"
	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/pgstore"
	"github.com/vigil-attest/vigil/verifier/revocation"
	"github.com/vigil-attest/vigil/verifier/storetest"
)

func open(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestStore holds every test that needs PostgreSQL, so that the package
// starts one server, whatever -run selects.
func TestStore(t *testing.T) {
	srv := pgtest.Start(t)
	t.Run("Contract", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) verifier.Store { return open(t, srv.NewDatabase(t)) })
	})
	t.Run("OpenAgainMigratesNothing", func(t *testing.T) { openAgain(t, srv) })
	t.Run("NewerRecordFormatIsRefused", func(t *testing.T) { newerFormat(t, srv) })
	t.Run("StatementsPerCall", func(t *testing.T) { statementsPerCall(t, srv) })
	t.Run("CheckpointOfManyIsOneTransaction", func(t *testing.T) { checkpointOfMany(t, srv) })
	t.Run("LeasesFenceReplicas", func(t *testing.T) { leasesFence(t, srv) })
	t.Run("LeasesOneOwnerUnderRace", func(t *testing.T) { leasesRace(t, srv) })
	t.Run("TwoDispatchersDeliverEachEventOnce", func(t *testing.T) { twoDispatchers(t, srv) })
	t.Run("DeadReplicasEventsAreTakenOver", func(t *testing.T) { deadReplica(t, srv) })
	// These stop the server, so they come last.
	t.Run("SurvivesRestart", func(t *testing.T) { survives(t, srv, func() { srv.Restart(t) }) })
	t.Run("SurvivesCrash", func(t *testing.T) { survives(t, srv, func() { srv.Kill(); srv.Restart(t) }) })
	t.Run("UnreachableIsAnErrorUntilBack", func(t *testing.T) { unreachable(t, srv) })
}

func agent(id string) verifier.Agent {
	at := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.UTC)
	return verifier.Agent{ID: id, BootPolicy: "boot-1", State: verifier.StateAttesting, Interval: 2 * time.Second,
		AdmittedAt: at, LastAttestedAt: at, Attestations: 1, IMAState: []byte{1, 2, 3}}
}

func revoked(a verifier.Agent) revocation.Event {
	return revocation.NewEvent(revocation.TypeRevoked, a.LastAttestedAt, revocation.Data{AgentID: a.ID, State: string(verifier.StateFailed)})
}

func openAgain(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s := open(t, url)
	if err := s.CreateAgent(t.Context(), agent("web-1")); err != nil {
		t.Fatal(err)
	}
	// A second replica on the same database: the schema is there, the data
	// is kept, and it sees what the first wrote.
	again := open(t, url)
	if _, err := again.GetAgent(t.Context(), "web-1"); err != nil {
		t.Fatal(err)
	}
	pool := rawPool(t, url)
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM vigil_schema_migrations WHERE component = 'verifier'`).Scan(&n); err != nil || n != len(files) {
		t.Fatalf("verifier migrations recorded: %d, %v; want one per file, %d", n, err, len(files))
	}
}

func rawPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgdb.Open(t.Context(), url, pgdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// newerFormat: a row written by a newer build is refused by name, not
// misread.
func newerFormat(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s := open(t, url)
	if err := s.CreateAgent(t.Context(), agent("web-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := rawPool(t, url).Exec(t.Context(), `UPDATE verifier_agents SET format = 2`); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetAgent(t.Context(), "web-1")
	if err == nil || !strings.Contains(err.Error(), "format 2") || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("GetAgent of a newer record format: %v", err)
	}
	if _, err := s.ListAgents(t.Context()); err == nil {
		t.Fatal("ListAgents read a newer record format")
	}
	// A history entry of another version is refused by name too.
	if err := s.DeleteAgent(t.Context(), "web-1", verifier.HistoryEntry{AgentID: "web-1", Kind: verifier.HistoryDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := rawPool(t, url).Exec(t.Context(), `UPDATE verifier_history SET entry = $1`, newerHistory(t)); err != nil {
		t.Fatal(err)
	}
	_, err = s.History(t.Context(), "web-1", time.Time{}, 0)
	if err == nil || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("History of a newer entry version: %v", err)
	}
}

// newerHistory is a history entry as a newer build would write it.
func newerHistory(t *testing.T) []byte {
	b, err := wire.Marshal(verifier.HistoryEntry{Version: verifier.HistoryVersion + 1, AgentID: "web-1", Kind: verifier.HistoryDeleted})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// survives: what was stored before PostgreSQL went down (cleanly or not)
// is there after, and the store works again without being reopened.
func survives(t *testing.T, srv *pgtest.Server, bounce func()) {
	ctx := t.Context()
	s := open(t, srv.NewDatabase(t))
	a := agent("web-1")
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	a.State, a.Reason, a.Attestations = verifier.StateFailed, verifier.ReasonPolicyViolation, 2
	e1 := revoked(a)
	if err := s.SaveAgent(ctx, a, []revocation.Event{e1}); err != nil {
		t.Fatal(err)
	}
	// Several idle connections in the pool, all of which the bounce kills.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := s.GetAgent(ctx, a.ID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	bounce()
	a.Attestations = 3
	e2 := revoked(a)
	if err := s.SaveAgent(ctx, a, []revocation.Event{e2}); err != nil {
		t.Fatalf("SaveAgent after PostgreSQL came back: %v", err)
	}
	got, err := s.GetAgent(ctx, a.ID)
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("agent after the restart: %+v, %v; want %+v", got, err, a)
	}
	ps, err := s.PendingEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, p := range ps {
		ids[p.Event.ID] = true
	}
	if len(ps) != 2 || !ids[e1.ID] || !ids[e2.ID] {
		t.Fatalf("pending events after the restart: %+v; want the one from before and the one from after", ps)
	}
}

// unreachable: with PostgreSQL down every call returns an error that says
// so (the API answers 503 on pgdb.Unreachable) and stores nothing; once it
// is back, the same store works.
func unreachable(t *testing.T, srv *pgtest.Server) {
	s := open(t, srv.NewDatabase(t))
	a := agent("web-1")
	if err := s.CreateAgent(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a.Attestations = 99
	calls := map[string]error{
		"SaveAgent":     s.SaveAgent(ctx, a, []revocation.Event{revoked(a)}),
		"Checkpoint":    s.Checkpoint(ctx, []verifier.Agent{a}),
		"Ping":          s.Ping(ctx),
		"PendingEvents": func() error { _, err := s.PendingEvents(ctx); return err }(),
		"GetAgent":      func() error { _, err := s.GetAgent(ctx, a.ID); return err }(),
		"UpdateAgent": s.UpdateAgent(ctx, a.ID, func(*verifier.Agent) ([]revocation.Event, error) {
			t.Error("UpdateAgent called fn with the database down")
			return nil, nil
		}),
	}
	for name, err := range calls {
		if err == nil {
			t.Errorf("%s with PostgreSQL down succeeded", name)
		} else if !pgdb.Unreachable(err) || errors.Is(err, verifier.ErrNotFound) {
			t.Errorf("%s with PostgreSQL down: %v, not an unreachable database", name, err)
		}
	}
	srv.Restart(t)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping once PostgreSQL is back: %v", err)
	}
	got, err := s.GetAgent(t.Context(), a.ID)
	if err != nil || got.Attestations != 1 {
		t.Fatalf("agent after the outage: %+v, %v; the failed save stored something", got, err)
	}
	if ps, err := s.PendingEvents(t.Context()); err != nil || len(ps) != 0 {
		t.Fatalf("pending events after the outage: %+v, %v", ps, err)
	}
}

// statementsPerCall holds what a verdict costs in statements, each one
// round trip: a regression here is a regression of every verdict.
func statementsPerCall(t *testing.T, srv *pgtest.Server) {
	ctx := t.Context()
	s, n, err := pgstore.OpenCounting(ctx, srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var fleet []verifier.Agent
	for i := range 1000 {
		a := agent(fmt.Sprintf("web-%d", i))
		if err := s.CreateAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, a)
	}
	a := fleet[0]
	for _, c := range []struct {
		name string
		want int64
		call func() error
	}{
		{"SaveAgent", 1, func() error { return s.SaveAgent(ctx, a, nil) }},
		{"SaveAgent with two events", 1, func() error { return s.SaveAgent(ctx, a, []revocation.Event{revoked(a), revoked(a)}) }},
		{"SaveAgent of a deleted agent", 1, func() error {
			if err := s.SaveAgent(ctx, agent("ghost"), []revocation.Event{revoked(a)}); !errors.Is(err, verifier.ErrNotFound) {
				return fmt.Errorf("got %v, want ErrNotFound", err)
			}
			return nil
		}},
		{"SaveAgent with an event and history", 1, func() error {
			return s.SaveAgent(ctx, a, []revocation.Event{revoked(a)},
				verifier.HistoryEntry{AgentID: a.ID, Kind: verifier.HistoryFailure, At: a.LastAttestedAt},
				verifier.HistoryEntry{AgentID: a.ID, Kind: verifier.HistoryState, At: a.LastAttestedAt})
		}},
		{"Checkpoint of 1000", 1, func() error { return s.Checkpoint(ctx, fleet) }},
		{"Checkpoint of 1000 with history", 1, func() error {
			var h []verifier.HistoryEntry
			for _, f := range fleet {
				h = append(h, verifier.HistoryEntry{AgentID: f.ID, Kind: verifier.HistoryVerdicts, At: f.LastAttestedAt})
			}
			return s.Checkpoint(ctx, fleet, h...)
		}},
		{"UpdateAgent", 4, func() error {
			return s.UpdateAgent(ctx, a.ID, func(*verifier.Agent) ([]revocation.Event, error) { return []revocation.Event{revoked(a)}, nil })
		}},
	} {
		n.Store(0)
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := n.Load(); got != c.want {
			t.Errorf("%s sent %d statements, want %d", c.name, got, c.want)
		}
	}
}

// checkpointOfMany: a fleet larger than one statement carries is still one
// transaction, and still drops the agents deleted meanwhile.
func checkpointOfMany(t *testing.T, srv *pgtest.Server) {
	ctx := t.Context()
	s, n, err := pgstore.OpenCounting(ctx, srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	fleet := make([]verifier.Agent, 5003)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(fleet); i += 8 {
				fleet[i] = agent(fmt.Sprintf("web-%d", i))
				if err := s.CreateAgent(ctx, fleet[i]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	gone := fleet[5001].ID
	if err := s.DeleteAgent(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for i := range fleet {
		fleet[i].Attestations = uint64(i) + 7
	}
	// History of agents in either statement, and of the one deleted.
	var history []verifier.HistoryEntry
	for _, i := range []int{5002, 0, 5001, 5002} {
		history = append(history, verifier.HistoryEntry{AgentID: fleet[i].ID, Kind: verifier.HistoryVerdicts, At: fleet[i].LastAttestedAt, ResetCount: uint32(len(history))})
	}
	n.Store(0)
	if err := s.Checkpoint(ctx, fleet, history...); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("Checkpoint of %d agents sent %d statements, want BEGIN, two UPDATEs, COMMIT", len(fleet), got)
	}
	for _, i := range []int{0, 4999, 5000, 5002} {
		if got, err := s.GetAgent(ctx, fleet[i].ID); err != nil || got.Attestations != uint64(i)+7 {
			t.Fatalf("%s after the checkpoint: %d attestations, %v", fleet[i].ID, got.Attestations, err)
		}
	}
	if _, err := s.GetAgent(ctx, gone); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("Checkpoint recreated %s: %v", gone, err)
	}
	for id, want := range map[string][]uint32{fleet[0].ID: {1}, fleet[5002].ID: {0, 3}, gone: nil} {
		h, err := s.History(ctx, id, time.Time{}, 0)
		var got []uint32
		for _, e := range h {
			got = append(got, e.ResetCount)
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("history of %s after the checkpoint: %v, %v; want %v", id, got, err, want)
		}
	}
}

func TestOpenUnreachableSaysWhere(t *testing.T) {
	_, err := pgstore.Open(t.Context(), "postgres://vigil@127.0.0.1:1/fleet?sslmode=disable&connect_timeout=2")
	if err == nil || !strings.Contains(err.Error(), "cannot be reached") || !strings.Contains(err.Error(), "fleet") {
		t.Fatalf("Open of an unreachable database: %v", err)
	}
}
