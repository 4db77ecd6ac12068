package verifier

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// The history names what happened, in order: the admission and who made
// it, the first verdict's change of state, passing verdicts counted under
// the policy version that judged them (a new version starts a new count),
// the failure with its IMA entry, the revocation with its delivery status,
// and the readmission with its operator. Passing verdicts never take an
// entry each.
func TestHistoryRecordsWhatHappened(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour)
	h := f.hosts[0]
	alice := httpapi.WithOperator(ctx, "alice")
	if _, err := svc.Admit(alice, AdmitRequest{AgentID: h.id, RuntimePolicy: "rt"}); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, true)
	for range 5 {
		h.appendGood(t, 1)
		mustAttest(t, svc, h, false)
	}
	// Passing verdicts are counted, not stored one by one.
	if n, err := svc.Checkpoint(ctx); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d, %v", n, err)
	}
	stored, err := f.st.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 {
		t.Fatalf("stored history after six passing verdicts: %+v; want the admission and pending → attesting", stored)
	}
	got, err := svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := got[len(got)-1]
	if last.Kind != HistoryVerdicts || last.Verdicts.Count != 6 || last.RuntimePolicy != "rt@1" || last.Seq != 0 {
		t.Fatalf("the open count of passing verdicts: %+v", last)
	}

	// A new version of the policy: the count under version 1 closes.
	body, _ := f.st.GetPolicy(ctx, "rt")
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, body.Body); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, false)
	h.appendBad(t)
	if v, err := h.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("tampered host: %+v, %v", v, err)
	}
	bob := httpapi.WithOperator(ctx, "bob")
	if _, err := svc.Readmit(bob, h.id); err != nil {
		t.Fatal(err)
	}
	got, err = svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []HistoryKind{HistoryAdmitted, HistoryState, HistoryVerdicts, HistoryVerdicts, HistoryFailure, HistoryState, HistoryRevocation,
		HistoryReadmitted, HistoryState, HistoryRevocation}
	if len(got) != len(want) {
		t.Fatalf("history %v, want %v", historyKinds(got), want)
	}
	for i := range want {
		if got[i].Kind != want[i] {
			t.Fatalf("history %v, want %v", historyKinds(got), want)
		}
	}
	if a := got[0]; a.Operator != "alice" || a.RuntimePolicy != "rt@1" {
		t.Errorf("admission %+v", a)
	}
	if s := got[1]; s.From != StatePending || s.To != StateAttesting {
		t.Errorf("first state change %+v", s)
	}
	if v := got[2]; v.Verdicts.Count != 6 || v.RuntimePolicy != "rt@1" {
		t.Errorf("verdicts under version 1: %+v", v.Verdicts)
	}
	if v := got[3]; v.Verdicts.Count != 1 || v.RuntimePolicy != "rt@2" {
		t.Errorf("verdicts under version 2: %+v %s", v.Verdicts, v.RuntimePolicy)
	}
	if fl := got[4]; fl.Reason != ReasonPolicyViolation || fl.IMA == nil || fl.IMA.Path != "/tmp/miner" || fl.IMA.Index != 6 {
		t.Errorf("failure %+v ima %+v", fl, fl.IMA)
	}
	if r := got[6]; r.Event == nil || r.Event.Type != "dev.vigil.agent.revoked" || r.Deliveries == nil {
		t.Errorf("revocation %+v", r)
	}
	if r := got[7]; r.Operator != "bob" {
		t.Errorf("readmission %+v", r)
	}
	if s := got[8]; s.From != StateFailed || s.To != StatePending {
		t.Errorf("state after readmission %+v", s)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("entries %d and %d out of order: %v", i-1, i, historyKinds(got))
		}
	}

	// --since and limit.
	if tail, _ := svc.History(ctx, h.id, time.Time{}, 2); len(tail) != 2 || tail[1].Kind != HistoryRevocation {
		t.Errorf("limit 2: %v", historyKinds(tail))
	}
	if none, _ := svc.History(ctx, h.id, time.Now().Add(time.Hour), 0); len(none) != 0 {
		t.Errorf("since the future: %v", historyKinds(none))
	}
	// Deleting keeps the history, and says who deleted.
	if err := svc.Remove(alice, h.id); err != nil {
		t.Fatal(err)
	}
	got, err = svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil || got[len(got)-1].Kind != HistoryDeleted || got[len(got)-1].Operator != "alice" {
		t.Fatalf("after deletion: %v, %v", historyKinds(got), err)
	}
	if _, err := svc.History(ctx, "never-admitted", time.Time{}, 0); !isRefusal(err, RefusedNotFound) {
		t.Fatalf("unknown agent: %v", err)
	}
}

// Pruning keeps the newest entries an agent may have.
func TestHistoryPruned(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour, func(c *Config) { c.HistoryMaxPerAgent = 3 })
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	h.appendBad(t)
	if _, err := h.attest(t, svc, false); err != nil {
		t.Fatal(err)
	}
	n, err := svc.PruneHistory(ctx)
	if err != nil || n == 0 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if got, _ := f.st.History(ctx, h.id, time.Time{}, 0); len(got) != 3 || got[2].Kind != HistoryRevocation {
		t.Fatalf("after pruning: %v", historyKinds(got))
	}
}

func historyKinds(h []HistoryEntry) []HistoryKind {
	out := make([]HistoryKind, len(h))
	for i, e := range h {
		out[i] = e.Kind
	}
	return out
}

// okSink stands for a webhook receiver that accepts everything (the
// edge: identity issuers are not Vigil's).
type okSink struct{}

func (okSink) Name() string                                    { return "https://issuer.test/hook" }
func (okSink) Deliver(context.Context, revocation.Event) error { return nil }

// Once every webhook has a revocation, the history records it with each
// webhook's final status, so the delivery stays known after the outbox
// prunes the event.
func TestHistoryRecordsDelivery(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	v := newTestVerifier(t, f.st, f.aks, time.Hour, func(c *Config) { c.Sinks = []revocation.Sink{okSink{}} })
	svc := v.Service()
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	h.appendBad(t)
	if _, err := h.attest(t, svc, false); err != nil {
		t.Fatal(err)
	}
	v.DispatchOnce(ctx)
	// The outbox forgets delivered events after its retention.
	if n, err := f.st.PruneDelivered(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruned %d delivered events, %v", n, err)
	}
	got, err := svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var revoked, delivered *HistoryEntry
	for i := range got {
		switch got[i].Kind {
		case HistoryRevocation:
			revoked = &got[i]
		case HistoryDelivered:
			delivered = &got[i]
		}
	}
	if delivered == nil || revoked == nil {
		t.Fatalf("history %v: want a revocation and its delivery", historyKinds(got))
	}
	if d := delivered.Deliveries["https://issuer.test/hook"]; !d.Delivered || d.Attempts != 1 || delivered.Event.ID != revoked.Event.ID {
		t.Errorf("delivered entry %+v", delivered)
	}
	if d := revoked.Deliveries["https://issuer.test/hook"]; !d.Delivered {
		t.Errorf("the revocation entry lost its delivery with the outbox: %+v", revoked.Deliveries)
	}
}
