package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

func hist(id string, kind verifier.HistoryKind, at time.Time) verifier.HistoryEntry {
	return verifier.HistoryEntry{AgentID: id, Kind: kind, At: at}
}

func mustHistory(t *testing.T, s verifier.Store, id string, since time.Time, limit int) []verifier.HistoryEntry {
	t.Helper()
	h, err := s.History(ctx(t), id, since, limit)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func kinds(h []verifier.HistoryEntry) []verifier.HistoryKind {
	out := make([]verifier.HistoryKind, len(h))
	for i, e := range h {
		out[i] = e.Kind
	}
	return out
}

func sameKinds(t *testing.T, got []verifier.HistoryEntry, want ...verifier.HistoryKind) {
	t.Helper()
	g := kinds(got)
	if len(g) != len(want) {
		t.Fatalf("history kinds %v, want %v", g, want)
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("history kinds %v, want %v", g, want)
		}
	}
}

// Every write that takes history entries stores them with the record, and
// one agent's history reads back in the order written, whatever the
// times say, with a growing Seq and every field kept; a deleted agent's
// history stays.
func historyInOrder(t *testing.T, s verifier.Store) {
	at := t0()
	a := agent("web-1")
	admitted := hist("web-1", verifier.HistoryAdmitted, at)
	admitted.Operator, admitted.RuntimePolicy, admitted.Interval = "CN=alice", "runtime-1@2", 2*time.Second
	admitted.PCRPolicy = "pcr-1@3"
	if err := s.CreateAgent(ctx(t), a, admitted); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, agent("other"))
	passed := hist("web-1", verifier.HistoryVerdicts, at.Add(time.Hour))
	passed.Verdicts = &verifier.VerdictPeriod{From: at, To: at.Add(time.Hour), Count: 1800}
	if err := s.Checkpoint(ctx(t), []verifier.Agent{a}, passed, hist("other", verifier.HistoryReboot, at)); err != nil {
		t.Fatal(err)
	}
	failure := hist("web-1", verifier.HistoryFailure, at.Add(time.Hour+time.Second))
	failure.Reason, failure.Check, failure.Detail = verifier.ReasonPolicyViolation, "ima_not-in-policy", "entry 7"
	failure.IMA = &verifier.IMAEntryRef{Index: 7, Path: "/usr/bin/x", Digest: "sha256:ab"}
	state := hist("web-1", verifier.HistoryState, at.Add(time.Hour+time.Second))
	state.From, state.To = verifier.StateAttesting, verifier.StateFailed
	ev := event("web-1", 1)
	revoked := hist("web-1", verifier.HistoryRevocation, at.Add(time.Hour+time.Second))
	revoked.Event = &verifier.EventRef{ID: ev.ID, Type: ev.Type}
	revoked.Deliveries = map[string]revocation.SinkStatus{"https://hook": {Delivered: true, DeliveredAt: at, Attempts: 2, LastError: "was down"}}
	if err := s.SaveAgent(ctx(t), a, []revocation.Event{ev}, failure, state, revoked); err != nil {
		t.Fatal(err)
	}
	// An entry stamped earlier but written later still comes later.
	late := hist("web-1", verifier.HistoryDeleted, at)
	late.Operator = "CN=bob"
	if err := s.DeleteAgent(ctx(t), "web-1", late); err != nil {
		t.Fatal(err)
	}

	h := mustHistory(t, s, "web-1", time.Time{}, 0)
	sameKinds(t, h, verifier.HistoryAdmitted, verifier.HistoryVerdicts, verifier.HistoryFailure, verifier.HistoryState, verifier.HistoryRevocation, verifier.HistoryDeleted)
	for i := 1; i < len(h); i++ {
		if h[i].Seq <= h[i-1].Seq {
			t.Fatalf("Seq does not grow: %d then %d", h[i-1].Seq, h[i].Seq)
		}
	}
	if g := h[0]; g.Operator != "CN=alice" || g.RuntimePolicy != "runtime-1@2" || g.PCRPolicy != "pcr-1@3" || g.Interval != 2*time.Second || !g.At.Equal(at) || g.AgentID != "web-1" {
		t.Errorf("admitted entry %+v", g)
	}
	if g := h[1].Verdicts; g == nil || g.Count != 1800 || !g.From.Equal(at) || !g.To.Equal(at.Add(time.Hour)) {
		t.Errorf("verdicts entry %+v", h[1].Verdicts)
	}
	if g := h[2]; g.Reason != verifier.ReasonPolicyViolation || g.Check != "ima_not-in-policy" || g.IMA == nil || *g.IMA != *failure.IMA {
		t.Errorf("failure entry %+v", g)
	}
	if g := h[3]; g.From != verifier.StateAttesting || g.To != verifier.StateFailed {
		t.Errorf("state entry %+v", g)
	}
	if g := h[4].Event; g == nil || g.ID != ev.ID || g.Type != ev.Type {
		t.Errorf("revocation entry %+v", h[4])
	}
	if g := h[4].Deliveries["https://hook"]; !g.Delivered || !g.DeliveredAt.Equal(at) || g.Attempts != 2 || g.LastError != "was down" {
		t.Errorf("deliveries %+v", h[4].Deliveries)
	}
	sameKinds(t, mustHistory(t, s, "other", time.Time{}, 0), verifier.HistoryReboot)
	sameKinds(t, mustHistory(t, s, "nobody", time.Time{}, 0))
	// A prefix of another agent's ID is another agent.
	mustCreate(t, s, agent("web-10"))
	if err := s.SaveAgent(ctx(t), agent("web-10"), nil, hist("web-10", verifier.HistoryReboot, at)); err != nil {
		t.Fatal(err)
	}
	if got := len(mustHistory(t, s, "web-1", time.Time{}, 0)); got != 6 {
		t.Fatalf("web-1 has %d entries after web-10 got one", got)
	}
}

// since keeps the entries at or after it; limit keeps the newest.
func historySinceAndLimit(t *testing.T, s verifier.Store) {
	at := t0()
	var hs []verifier.HistoryEntry
	for i := range 5 {
		hs = append(hs, hist("web-1", verifier.HistoryReboot, at.Add(time.Duration(i)*time.Minute)))
		hs[i].ResetCount = uint32(i)
	}
	if err := s.CreateAgent(ctx(t), agent("web-1"), hs...); err != nil {
		t.Fatal(err)
	}
	h := mustHistory(t, s, "web-1", at.Add(2*time.Minute), 0)
	if len(h) != 3 || h[0].ResetCount != 2 || h[2].ResetCount != 4 {
		t.Fatalf("since: %+v", h)
	}
	h = mustHistory(t, s, "web-1", time.Time{}, 2)
	if len(h) != 2 || h[0].ResetCount != 3 || h[1].ResetCount != 4 {
		t.Fatalf("limit: %+v", h)
	}
}

// A write that fails stores none of its history.
func historyRollback(t *testing.T, s verifier.Store) {
	mustCreate(t, s, agent("web-1"))
	if err := s.CreateAgent(ctx(t), agent("web-1"), hist("web-1", verifier.HistoryAdmitted, t0())); !errors.Is(err, verifier.ErrExists) {
		t.Fatalf("create taken: %v", err)
	}
	if err := s.SaveAgent(ctx(t), agent("ghost"), nil, hist("ghost", verifier.HistoryFailure, t0())); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("save unknown: %v", err)
	}
	if err := s.DeleteAgent(ctx(t), "ghost", hist("ghost", verifier.HistoryDeleted, t0())); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	sameKinds(t, mustHistory(t, s, "web-1", time.Time{}, 0))
	sameKinds(t, mustHistory(t, s, "ghost", time.Time{}, 0))
}

// A checkpoint does not write the history of an agent deleted meanwhile,
// as it does not recreate its record.
func historyCheckpointDropsDeleted(t *testing.T, s verifier.Store) {
	mustCreate(t, s, agent("kept"))
	if err := s.Checkpoint(ctx(t), []verifier.Agent{agent("gone")}, hist("gone", verifier.HistoryVerdicts, t0()), hist("kept", verifier.HistoryVerdicts, t0())); err != nil {
		t.Fatal(err)
	}
	sameKinds(t, mustHistory(t, s, "gone", time.Time{}, 0))
	sameKinds(t, mustHistory(t, s, "kept", time.Time{}, 0), verifier.HistoryVerdicts)
	// History alone, with no record to write, is a checkpoint too.
	if err := s.Checkpoint(ctx(t), nil, hist("kept", verifier.HistoryReboot, t0())); err != nil {
		t.Fatal(err)
	}
	sameKinds(t, mustHistory(t, s, "kept", time.Time{}, 0), verifier.HistoryVerdicts, verifier.HistoryReboot)
}

// Pruning removes what is older than the cutoff, and all but the newest
// entries of an agent with too many, and says how many it removed.
func historyPrune(t *testing.T, s verifier.Store) {
	at := t0()
	var a, b []verifier.HistoryEntry
	for i := range 6 {
		a = append(a, hist("a", verifier.HistoryReboot, at.Add(time.Duration(i)*time.Hour)))
		a[i].ResetCount = uint32(i)
	}
	for i := range 2 {
		b = append(b, hist("b", verifier.HistoryReboot, at.Add(time.Duration(i+4)*time.Hour)))
	}
	if err := s.CreateAgent(ctx(t), agent("a"), a...); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAgent(ctx(t), agent("b"), b...); err != nil {
		t.Fatal(err)
	}
	// Older than 2h after t0: a loses 0 and 1; then at most 3 each: a
	// keeps 3, 4, 5.
	n, err := s.PruneHistory(ctx(t), at.Add(2*time.Hour), 3)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("pruned %d, want 3", n)
	}
	h := mustHistory(t, s, "a", time.Time{}, 0)
	if len(h) != 3 || h[0].ResetCount != 3 || h[2].ResetCount != 5 {
		t.Fatalf("a after prune: %+v", h)
	}
	if got := len(mustHistory(t, s, "b", time.Time{}, 0)); got != 2 {
		t.Fatalf("b after prune: %d entries", got)
	}
	if n, err := s.PruneHistory(ctx(t), at, 0); err != nil || n != 0 {
		t.Fatalf("nothing to prune: %d, %v", n, err)
	}
}

// EventStatus answers for pending and delivered events, and leaves out
// what it does not have.
func eventStatus(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 2)
	owner := "replica-1"
	claim(t, s, owner, t0(), 10)
	st := revocation.SinkStatus{Attempts: 2, LastError: "receiver answered 502"}
	if err := s.RecordDelivery(ctx(t), owner, es[0].ID, "https://hook", st); err != nil {
		t.Fatal(err)
	}
	done := revocation.SinkStatus{Delivered: true, DeliveredAt: t0(), Attempts: 1}
	if err := s.RecordDelivery(ctx(t), owner, es[1].ID, "https://hook", done); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx(t), owner, es[1].ID, t0()); err != nil {
		t.Fatal(err)
	}
	got, err := s.EventStatus(ctx(t), []string{es[0].ID, es[1].ID, "vigil-unknown"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("EventStatus: %d events, want 2: %+v", len(got), got)
	}
	if g := got[es[0].ID]["https://hook"]; g.Attempts != 2 || g.LastError != st.LastError || g.Delivered {
		t.Errorf("pending event's status %+v", g)
	}
	if g := got[es[1].ID]["https://hook"]; !g.Delivered || g.Attempts != 1 || !g.DeliveredAt.Equal(t0()) {
		t.Errorf("delivered event's status %+v", g)
	}
}
