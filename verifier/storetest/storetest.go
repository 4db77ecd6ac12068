// Package storetest states the contract of verifier.Store as tests, so that
// every backend (bbolt, PostgreSQL) is held to the same one: a backend's
// test calls Run with a constructor of empty stores.
//
// Each subtest states one promise of the interface's doc comments. Rules
// that belong to the verifier (policy versioning, a policy in use, when an
// event is done with) are not asked of a backend; where a backend could be
// tempted to enforce one, a subtest says it must not.
//
// It imports testing, so only tests may import it: the vigil binary must
// not link it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// Run runs the contract against stores made by newStore, a fresh empty one
// per subtest. newStore closes what it opens with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) verifier.Store) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, verifier.Store)
	}{
		{"GetUnknownAgentIsNotFound", getUnknownAgent},
		{"CreateThenGetKeepsEveryField", createThenGet},
		{"CreateTakenIDIsExistsAndKeepsTheFirst", createTaken},
		{"ListAgentsReturnsEveryAgent", listAgents},
		{"DeleteAgent", deleteAgent},
		{"SaveAgentStoresRecordAndEventsTogether", saveAgent},
		{"SaveAgentNeverCreates", saveAgentNeverCreates},
		{"SaveAgentFromManyGoroutines", saveAgentConcurrent},
		{"CheckpointDoesNotRecreateDeletedAgents", checkpoint},
		{"UpdateAgentStoresChangeWithEvents", updateAgent},
		{"UpdateAgentErrorStoresNothing", updateAgentRollback},
		{"UpdateUnknownAgentIsNotFound", updateUnknownAgent},
		{"GetUnknownPolicyIsNotFound", getUnknownPolicy},
		{"PolicyVersionsHighestWins", policyVersions},
		{"CreatePolicyTakenVersionIsExists", policyVersionTaken},
		{"DeletePolicyRemovesEveryVersion", deletePolicy},
		{"DeletePolicyIsNotRefusedByTheStore", deletePolicyInUse},
		{"GetPolicyVersionAnswersEveryStoredVersion", getPolicyVersion},
		{"PolicyVersionsOldestFirstWithoutBodies", listPolicyVersions},
		{"AgentKeepsItsPolicyPins", agentPolicyPins},
		{"SecretIsMadeOnceAndStable", secret},
		{"SecretFromManyGoroutinesAgrees", secretConcurrent},
		{"Ping", ping},
		{"OutboxEventsRoundTrip", outboxRoundTrip},
		{"RecordDeliveryReplacesOneSinkStatus", recordDelivery},
		{"MarkDeliveredLeavesThePendingEvents", markDelivered},
		{"PruneDeliveredRemovesOnlyOldDelivered", pruneDelivered},
		{"ClaimHoldsUntilItLapses", claimHolds},
		{"LapsedClaimIsTakenOver", claimTakenOver},
		{"WritesOfANonOwnerFailAndStoreNothing", claimFences},
		{"ConcurrentClaimsNeverShareAnEvent", claimConcurrent},
		{"EventsOutliveTheirAgent", eventsOutliveAgent},
		{"HistoryInOrderWithEveryWrite", historyInOrder},
		{"HistorySinceAndLimit", historySinceAndLimit},
		{"HistoryOfAFailedWriteIsNotStored", historyRollback},
		{"CheckpointDropsHistoryOfDeletedAgents", historyCheckpointDropsDeleted},
		{"PruneHistoryByAgeAndCount", historyPrune},
		{"EventStatusPendingAndDelivered", eventStatus},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

// t0 is a fixed instant with nanoseconds: a store must keep them, as
// liveness windows are seconds long.
func t0() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.UTC) }

func agent(id string) verifier.Agent {
	return verifier.Agent{
		ID:             id,
		RuntimePolicy:  "runtime-1",
		BootPolicy:     "boot-1",
		Identities:     []string{"spiffe://example.org/node/" + id},
		Interval:       2 * time.Second,
		State:          verifier.StateAttesting,
		AdmittedAt:     t0(),
		LastAttestedAt: t0().Add(time.Minute),
		Attestations:   42,
		Clock:          &evidence.ClockInfo{Clock: 1234567, ResetCount: 3, RestartCount: 1, Safe: true},
		BootChecked:    true,
		IMAEntries:     17,
		IMAState:       []byte{1, 2, 3, 4},
		LastNonce:      t0().UnixNano(),
	}
}

func event(id string, n int) revocation.Event {
	e := revocation.NewEvent(revocation.TypeRevoked, t0().Add(time.Duration(n)*time.Second), revocation.Data{
		AgentID: id, State: string(verifier.StateFailed), Reason: string(verifier.ReasonPolicyViolation),
		Check: "ima", Detail: fmt.Sprintf("entry %d", n), Identities: []string{"spiffe://example.org/node/" + id},
		Attestations: uint64(n), LastAttestedAt: t0(), ResetCount: 3, RestartCount: 1,
	})
	return e
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustCreate(t *testing.T, s verifier.Store, a verifier.Agent) {
	t.Helper()
	if err := s.CreateAgent(ctx(t), a); err != nil {
		t.Fatalf("CreateAgent(%s): %v", a.ID, err)
	}
}

func mustGet(t *testing.T, s verifier.Store, id string) verifier.Agent {
	t.Helper()
	a, err := s.GetAgent(ctx(t), id)
	if err != nil {
		t.Fatalf("GetAgent(%s): %v", id, err)
	}
	return a
}

func sameAgent(t *testing.T, got, want verifier.Agent) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stored agent\n got %+v\nwant %+v", got, want)
	}
}

// pending returns the pending events by ID.
func pending(t *testing.T, s verifier.Store) map[string]revocation.Pending {
	t.Helper()
	ps, err := s.PendingEvents(ctx(t))
	if err != nil {
		t.Fatalf("PendingEvents: %v", err)
	}
	out := map[string]revocation.Pending{}
	for _, p := range ps {
		if _, dup := out[p.Event.ID]; dup {
			t.Fatalf("event %s pending twice", p.Event.ID)
		}
		out[p.Event.ID] = p
	}
	return out
}

func getUnknownAgent(t *testing.T, s verifier.Store) {
	if _, err := s.GetAgent(ctx(t), "nobody"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("GetAgent of an unknown ID: %v, want ErrNotFound", err)
	}
}

func createThenGet(t *testing.T, s verifier.Store) {
	want := agent("web-1")
	mustCreate(t, s, want)
	sameAgent(t, mustGet(t, s, "web-1"), want)
	// A pending agent has none of the optional fields.
	bare := verifier.Agent{ID: "web-2", BootPolicy: "b", State: verifier.StatePending, AdmittedAt: t0()}
	mustCreate(t, s, bare)
	sameAgent(t, mustGet(t, s, "web-2"), bare)
}

func createTaken(t *testing.T, s verifier.Store) {
	first := agent("web-1")
	mustCreate(t, s, first)
	second := agent("web-1")
	second.RuntimePolicy = "other"
	if err := s.CreateAgent(ctx(t), second); !errors.Is(err, verifier.ErrExists) {
		t.Fatalf("CreateAgent of a taken ID: %v, want ErrExists", err)
	}
	sameAgent(t, mustGet(t, s, "web-1"), first)
}

func listAgents(t *testing.T, s verifier.Store) {
	if as, err := s.ListAgents(ctx(t)); err != nil || len(as) != 0 {
		t.Fatalf("ListAgents of an empty store: %d agents, %v", len(as), err)
	}
	want := map[string]verifier.Agent{}
	for i := range 5 {
		a := agent(fmt.Sprintf("web-%d", i))
		a.Attestations = uint64(i)
		mustCreate(t, s, a)
		want[a.ID] = a
	}
	as, err := s.ListAgents(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != len(want) {
		t.Fatalf("ListAgents: %d agents, want %d", len(as), len(want))
	}
	for _, a := range as {
		sameAgent(t, a, want[a.ID])
	}
}

func deleteAgent(t *testing.T, s verifier.Store) {
	mustCreate(t, s, agent("web-1"))
	mustCreate(t, s, agent("web-2"))
	if err := s.DeleteAgent(ctx(t), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAgent(ctx(t), "web-1"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("GetAgent after DeleteAgent: %v, want ErrNotFound", err)
	}
	if err := s.DeleteAgent(ctx(t), "web-1"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("second DeleteAgent: %v, want ErrNotFound", err)
	}
	mustGet(t, s, "web-2")
	// The ID is free again.
	mustCreate(t, s, agent("web-1"))
}

func saveAgent(t *testing.T, s verifier.Store) {
	a := agent("web-1")
	mustCreate(t, s, a)
	a.State, a.Reason, a.Detail, a.FailedAt = verifier.StateFailed, verifier.ReasonPolicyViolation, "entry 6 /tmp/evil", t0().Add(time.Hour)
	e1, e2 := event("web-1", 1), event("web-1", 2)
	if err := s.SaveAgent(ctx(t), a, []revocation.Event{e1, e2}); err != nil {
		t.Fatal(err)
	}
	sameAgent(t, mustGet(t, s, "web-1"), a)
	p := pending(t, s)
	if len(p) != 2 {
		t.Fatalf("%d pending events after SaveAgent with two", len(p))
	}
	for _, e := range []revocation.Event{e1, e2} {
		if !reflect.DeepEqual(p[e.ID].Event, e) {
			t.Fatalf("stored event\n got %+v\nwant %+v", p[e.ID].Event, e)
		}
	}
	// No events is a plain save.
	a.Attestations++
	if err := s.SaveAgent(ctx(t), a, nil); err != nil {
		t.Fatal(err)
	}
	sameAgent(t, mustGet(t, s, "web-1"), a)
	if n := len(pending(t, s)); n != 2 {
		t.Fatalf("%d pending events after a save without events, want 2", n)
	}
}

func saveAgentNeverCreates(t *testing.T, s verifier.Store) {
	err := s.SaveAgent(ctx(t), agent("ghost"), []revocation.Event{event("ghost", 1)})
	if !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("SaveAgent of an agent not stored: %v, want ErrNotFound", err)
	}
	if _, err := s.GetAgent(ctx(t), "ghost"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("SaveAgent created the agent: %v", err)
	}
	if n := len(pending(t, s)); n != 0 {
		t.Fatalf("a refused SaveAgent stored %d events", n)
	}
}

func saveAgentConcurrent(t *testing.T, s verifier.Store) {
	const n = 50
	for i := range n {
		mustCreate(t, s, agent(fmt.Sprintf("web-%d", i)))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := agent(fmt.Sprintf("web-%d", i))
			a.Attestations = uint64(1000 + i)
			if err := s.SaveAgent(ctx(t), a, []revocation.Event{event(a.ID, i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if got := mustGet(t, s, fmt.Sprintf("web-%d", i)).Attestations; got != uint64(1000+i) {
			t.Fatalf("web-%d: attestations %d after its save returned", i, got)
		}
	}
	if got := len(pending(t, s)); got != n {
		t.Fatalf("%d pending events after %d saves with one each", got, n)
	}
}

func checkpoint(t *testing.T, s verifier.Store) {
	if err := s.Checkpoint(ctx(t), nil); err != nil {
		t.Fatalf("empty Checkpoint: %v", err)
	}
	a, b, gone := agent("web-1"), agent("web-2"), agent("web-3")
	for _, x := range []verifier.Agent{a, b, gone} {
		mustCreate(t, s, x)
	}
	if err := s.DeleteAgent(ctx(t), gone.ID); err != nil {
		t.Fatal(err)
	}
	a.Attestations, b.Attestations, gone.Attestations = 100, 200, 300
	a.IMAEntries = 99
	if err := s.Checkpoint(ctx(t), []verifier.Agent{a, gone, b}); err != nil {
		t.Fatalf("Checkpoint with a deleted agent among others: %v", err)
	}
	sameAgent(t, mustGet(t, s, a.ID), a)
	sameAgent(t, mustGet(t, s, b.ID), b)
	if _, err := s.GetAgent(ctx(t), gone.ID); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("Checkpoint recreated a deleted agent: %v", err)
	}
}

func updateAgent(t *testing.T, s verifier.Store) {
	a := agent("web-1")
	mustCreate(t, s, a)
	e := event("web-1", 1)
	var seen verifier.Agent
	err := s.UpdateAgent(ctx(t), "web-1", func(cur *verifier.Agent) ([]revocation.Event, error) {
		seen = *cur
		cur.State, cur.Reason = verifier.StateFailed, verifier.ReasonLivenessTimeout
		return []revocation.Event{e}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sameAgent(t, seen, a)
	a.State, a.Reason = verifier.StateFailed, verifier.ReasonLivenessTimeout
	sameAgent(t, mustGet(t, s, "web-1"), a)
	if p := pending(t, s); len(p) != 1 || !reflect.DeepEqual(p[e.ID].Event, e) {
		t.Fatalf("pending events after UpdateAgent: %+v", p)
	}
}

func updateAgentRollback(t *testing.T, s verifier.Store) {
	a := agent("web-1")
	mustCreate(t, s, a)
	boom := errors.New("boom")
	err := s.UpdateAgent(ctx(t), "web-1", func(cur *verifier.Agent) ([]revocation.Event, error) {
		cur.State = verifier.StateFailed
		return []revocation.Event{event("web-1", 1)}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateAgent returned %v, want fn's error", err)
	}
	sameAgent(t, mustGet(t, s, "web-1"), a)
	if n := len(pending(t, s)); n != 0 {
		t.Fatalf("a failed UpdateAgent stored %d events", n)
	}
}

func updateUnknownAgent(t *testing.T, s verifier.Store) {
	called := false
	err := s.UpdateAgent(ctx(t), "nobody", func(*verifier.Agent) ([]revocation.Event, error) {
		called = true
		return nil, nil
	})
	if !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("UpdateAgent of an unknown ID: %v, want ErrNotFound", err)
	}
	if called {
		t.Fatal("fn called for an unknown agent")
	}
	if _, err := s.GetAgent(ctx(t), "nobody"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatal("UpdateAgent created an agent")
	}
}

func policy(name string, kind verifier.PolicyKind, version int) verifier.Policy {
	body := []byte(fmt.Sprintf(`{"name":%q,"version":%d}`, name, version))
	return verifier.Policy{Name: name, Kind: kind, Version: version, SHA256: fmt.Sprintf("sum-%s-%d", name, version),
		CreatedAt: t0().Add(time.Duration(version) * time.Minute), Body: body}
}

func mustCreatePolicy(t *testing.T, s verifier.Store, p verifier.Policy) {
	t.Helper()
	if err := s.CreatePolicy(ctx(t), p); err != nil {
		t.Fatalf("CreatePolicy(%s v%d): %v", p.Name, p.Version, err)
	}
}

func getUnknownPolicy(t *testing.T, s verifier.Store) {
	if _, err := s.GetPolicy(ctx(t), "nothing"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("GetPolicy of an unknown name: %v, want ErrNotFound", err)
	}
	if ps, err := s.ListPolicies(ctx(t)); err != nil || len(ps) != 0 {
		t.Fatalf("ListPolicies of an empty store: %v, %v", ps, err)
	}
}

func policyVersions(t *testing.T, s verifier.Store) {
	r1, r2, b1 := policy("rt", verifier.PolicyRuntime, 1), policy("rt", verifier.PolicyRuntime, 2), policy("boot", verifier.PolicyBoot, 1)
	mustCreatePolicy(t, s, r1)
	mustCreatePolicy(t, s, r2)
	mustCreatePolicy(t, s, b1)
	// The version numbers are the caller's; the store stores them as given
	// and answers the highest, whatever the order they came in.
	r7, r5 := policy("rt", verifier.PolicyRuntime, 7), policy("rt", verifier.PolicyRuntime, 5)
	mustCreatePolicy(t, s, r7)
	mustCreatePolicy(t, s, r5)
	got, err := s.GetPolicy(ctx(t), "rt")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r7) {
		t.Fatalf("GetPolicy\n got %+v\nwant %+v (the highest version, as stored)", got, r7)
	}
	ps, err := s.ListPolicies(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ps, func(a, b verifier.Policy) int { return bytes.Compare([]byte(a.Name), []byte(b.Name)) })
	wantB, wantR := b1, r7
	wantB.Body, wantR.Body = nil, nil
	if len(ps) != 2 || !reflect.DeepEqual(ps[0], wantB) || !reflect.DeepEqual(ps[1], wantR) {
		t.Fatalf("ListPolicies: %+v, want the highest version of each, without bodies", ps)
	}
}

func policyVersionTaken(t *testing.T, s verifier.Store) {
	first := policy("rt", verifier.PolicyRuntime, 1)
	mustCreatePolicy(t, s, first)
	again := first
	again.Body, again.SHA256 = []byte("other"), "other"
	if err := s.CreatePolicy(ctx(t), again); !errors.Is(err, verifier.ErrExists) {
		t.Fatalf("CreatePolicy of a stored version: %v, want ErrExists", err)
	}
	if got, _ := s.GetPolicy(ctx(t), "rt"); !reflect.DeepEqual(got, first) {
		t.Fatalf("a refused CreatePolicy changed the policy to %+v", got)
	}
	// Of many racing for one version, exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 10 {
		wg.Go(func() {
			p := policy("rt", verifier.PolicyRuntime, 2)
			p.SHA256 = fmt.Sprint(i)
			err := s.CreatePolicy(ctx(t), p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case !errors.Is(err, verifier.ErrExists):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of 10 racing CreatePolicy calls for one version succeeded", won)
	}
}

func deletePolicy(t *testing.T, s verifier.Store) {
	for v := 1; v <= 3; v++ {
		mustCreatePolicy(t, s, policy("rt", verifier.PolicyRuntime, v))
	}
	mustCreatePolicy(t, s, policy("other", verifier.PolicyRuntime, 1))
	if err := s.DeletePolicy(ctx(t), "rt"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPolicy(ctx(t), "rt"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("GetPolicy after DeletePolicy: %v, want ErrNotFound", err)
	}
	if err := s.DeletePolicy(ctx(t), "rt"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("second DeletePolicy: %v, want ErrNotFound", err)
	}
	if _, err := s.GetPolicy(ctx(t), "other"); err != nil {
		t.Fatalf("DeletePolicy of another name: %v", err)
	}
	// Every version went: numbering can start again at 1, and an old
	// version does not come back as the highest.
	p := policy("rt", verifier.PolicyBoot, 1)
	mustCreatePolicy(t, s, p)
	if got, err := s.GetPolicy(ctx(t), "rt"); err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("GetPolicy of a name deleted and added again: %+v, %v", got, err)
	}
}

// deletePolicyInUse: that a policy in use is kept is the verifier's rule;
// a store that enforced it too would make two places to change it.
func deletePolicyInUse(t *testing.T, s verifier.Store) {
	mustCreatePolicy(t, s, policy("runtime-1", verifier.PolicyRuntime, 1))
	mustCreate(t, s, agent("web-1"))
	if err := s.DeletePolicy(ctx(t), "runtime-1"); err != nil {
		t.Fatalf("DeletePolicy of a policy an agent names: %v; the store keeps no rules", err)
	}
}

func secret(t *testing.T, s verifier.Store) {
	k1, err := s.Secret(ctx(t), "nonce-key", 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 || bytes.Equal(k1, make([]byte, 32)) {
		t.Fatalf("Secret made %x, want 32 random bytes", k1)
	}
	k2, err := s.Secret(ctx(t), "nonce-key", 32)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second Secret: %x, %v; want %x", k2, err, k1)
	}
	other, err := s.Secret(ctx(t), "other-key", 16)
	if err != nil || len(other) != 16 || bytes.Equal(other, k1[:16]) {
		t.Fatalf("Secret under another name: %x, %v", other, err)
	}
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if k3, _ := s.Secret(ctx(t), "nonce-key", 32); !bytes.Equal(k1, k3) {
		t.Fatal("a Ping changed a secret")
	}
}

func secretConcurrent(t *testing.T, s verifier.Store) {
	var wg sync.WaitGroup
	keys := make([][]byte, 20)
	for i := range keys {
		wg.Go(func() {
			k, err := s.Secret(ctx(t), "shared", 32)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatalf("concurrent first Secret calls disagree: %x and %x", keys[0], k)
		}
	}
}

func ping(t *testing.T, s verifier.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping of a writable store: %v", err)
	}
}

// withEvents stores agent id with events and returns them.
func withEvents(t *testing.T, s verifier.Store, id string, n int) []revocation.Event {
	t.Helper()
	a := agent(id)
	mustCreate(t, s, a)
	var es []revocation.Event
	for i := range n {
		es = append(es, event(id, i))
	}
	if err := s.SaveAgent(ctx(t), a, es); err != nil {
		t.Fatal(err)
	}
	return es
}

func outboxRoundTrip(t *testing.T, s verifier.Store) {
	if n := len(pending(t, s)); n != 0 {
		t.Fatalf("%d pending events in an empty store", n)
	}
	es := withEvents(t, s, "web-1", 3)
	p := pending(t, s)
	for _, e := range es {
		got, ok := p[e.ID]
		if !ok {
			t.Fatalf("event %s not pending", e.ID)
		}
		if !reflect.DeepEqual(got.Event, e) {
			t.Fatalf("pending event\n got %+v\nwant %+v", got.Event, e)
		}
		if len(got.Status) != 0 {
			t.Fatalf("a new event has statuses %+v", got.Status)
		}
	}
}

func recordDelivery(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 2)
	claim(t, s, ownerA, t0(), 2)
	failed := revocation.SinkStatus{Attempts: 1, NextAttempt: t0().Add(time.Minute), LastError: "receiver answered 503"}
	done := revocation.SinkStatus{Delivered: true, DeliveredAt: t0().Add(2 * time.Minute), Attempts: 2}
	other := revocation.SinkStatus{Attempts: 5, LastError: "refused"}
	for _, step := range []struct {
		sink string
		st   revocation.SinkStatus
	}{{"https://a/", failed}, {"https://b/", other}, {"https://a/", done}} {
		if err := s.RecordDelivery(ctx(t), ownerA, es[0].ID, step.sink, step.st); err != nil {
			t.Fatal(err)
		}
	}
	p := pending(t, s)
	want := map[string]revocation.SinkStatus{"https://a/": done, "https://b/": other}
	if got := p[es[0].ID].Status; !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses\n got %+v\nwant %+v", got, want)
	}
	if got := p[es[1].ID].Status; len(got) != 0 {
		t.Fatalf("another event's statuses changed: %+v", got)
	}
	// Delivered to a sink is not done: only MarkDelivered takes an event
	// out of the pending ones.
	if len(p) != 2 {
		t.Fatalf("%d pending events, want 2", len(p))
	}
	if err := s.RecordDelivery(ctx(t), ownerA, "vigil-unknown", "https://a/", done); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("RecordDelivery of an unknown event: %v, want ErrNotFound", err)
	}
}

func markDelivered(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 2)
	claim(t, s, ownerA, t0(), 2)
	if err := s.MarkDelivered(ctx(t), ownerA, es[0].ID, t0()); err != nil {
		t.Fatal(err)
	}
	p := pending(t, s)
	if _, ok := p[es[0].ID]; ok || len(p) != 1 {
		t.Fatalf("pending after MarkDelivered: %v", p)
	}
	if err := s.MarkDelivered(ctx(t), ownerA, es[0].ID, t0()); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("MarkDelivered of an event no longer pending: %v, want ErrNotFound", err)
	}
	if err := s.RecordDelivery(ctx(t), ownerA, es[0].ID, "https://a/", revocation.SinkStatus{Attempts: 9}); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("RecordDelivery of a delivered event: %v, want ErrNotFound", err)
	}
	if err := s.MarkDelivered(ctx(t), ownerA, "vigil-unknown", t0()); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("MarkDelivered of an unknown event: %v, want ErrNotFound", err)
	}
	if got := claim(t, s, ownerB, t0().Add(time.Hour), 10); len(got) != 1 || got[0].Event.ID != es[1].ID {
		t.Fatalf("claimed after MarkDelivered: %v; a delivered event is not claimed", got)
	}
}

func pruneDelivered(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 5)
	claim(t, s, ownerA, t0(), 5)
	// es[0] delivered long ago, es[1] at the cutoff, es[2] after it;
	// es[3] and es[4] stay pending, es[4] older than any of them.
	cutoff := t0().Add(time.Hour)
	for i, when := range []time.Time{t0(), cutoff, cutoff.Add(time.Nanosecond)} {
		if err := s.MarkDelivered(ctx(t), ownerA, es[i].ID, when); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordDelivery(ctx(t), ownerA, es[3].ID, "https://a/", revocation.SinkStatus{Attempts: 100, LastError: "down for a week"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneDelivered(ctx(t), cutoff)
	if err != nil || n != 2 {
		t.Fatalf("PruneDelivered = %d, %v; want the 2 delivered at or before the cutoff", n, err)
	}
	if n, err := s.PruneDelivered(ctx(t), cutoff); err != nil || n != 0 {
		t.Fatalf("second PruneDelivered = %d, %v; want 0", n, err)
	}
	// The one delivered after the cutoff is still there to prune later.
	if n, err := s.PruneDelivered(ctx(t), cutoff.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("PruneDelivered past the last delivery = %d, %v; want 1", n, err)
	}
	p := pending(t, s)
	if _, ok := p[es[3].ID]; !ok || len(p) != 2 {
		t.Fatalf("pending after pruning: %v; undelivered events are never pruned", p)
	}
	if _, ok := p[es[4].ID]; !ok {
		t.Fatal("an undelivered event was pruned")
	}
	if n, err := s.PruneDelivered(ctx(t), t0().Add(1000*time.Hour)); err != nil || n != 0 {
		t.Fatalf("PruneDelivered with only pending events = %d, %v", n, err)
	}
}

func eventsOutliveAgent(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 1)
	if err := s.DeleteAgent(ctx(t), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := pending(t, s)[es[0].ID]; !ok {
		t.Fatal("deleting an agent dropped its undelivered revocation event")
	}
}

// Owners of claims, as two verifier replicas.
const (
	ownerA = "replica-a"
	ownerB = "replica-b"
)

// claimFor is the claims' duration in the outbox subtests.
const claimFor = time.Minute

// claim claims up to max events for owner at now and returns them.
func claim(t *testing.T, s verifier.Store, owner string, now time.Time, max int) []revocation.Pending {
	t.Helper()
	ps, err := s.ClaimEvents(ctx(t), owner, now, claimFor, max)
	if err != nil {
		t.Fatalf("ClaimEvents(%s): %v", owner, err)
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p.Event.ID] {
			t.Fatalf("ClaimEvents returned %s twice", p.Event.ID)
		}
		seen[p.Event.ID] = true
	}
	return ps
}

func ids(ps []revocation.Pending) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Event.ID)
	}
	slices.Sort(out)
	return out
}

func eventIDs(es []revocation.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

func claimHolds(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 5)
	all := eventIDs(es)
	a := claim(t, s, ownerA, t0(), 2)
	if len(a) != 2 {
		t.Fatalf("claimed %d events with max 2", len(a))
	}
	for _, p := range a {
		if !reflect.DeepEqual(p.Event, es[slices.IndexFunc(es, func(e revocation.Event) bool { return e.ID == p.Event.ID })]) || len(p.Status) != 0 {
			t.Fatalf("claimed event %+v is not the one stored", p)
		}
	}
	b := claim(t, s, ownerB, t0(), 10)
	if got := ids(append(a, b...)); !slices.Equal(got, all) {
		t.Fatalf("A claimed %v and B %v; want every event once", ids(a), ids(b))
	}
	// Held until the claim lapses, and renewed by claiming again.
	if got := claim(t, s, ownerB, t0().Add(claimFor/2), 10); !slices.Equal(ids(got), ids(b)) {
		t.Fatalf("B renewing its claim got %v, want its own %v", ids(got), ids(b))
	}
	if got := claim(t, s, ownerA, t0().Add(claimFor-time.Nanosecond), 10); !slices.Equal(ids(got), ids(a)) {
		t.Fatalf("A before B's renewed claim lapsed got %v, want only its own %v", ids(got), ids(a))
	}
	if got := claim(t, s, ownerA, t0().Add(claimFor+claimFor/2-time.Nanosecond), 10); !slices.Equal(ids(got), ids(a)) {
		t.Fatalf("A before B's renewed claim lapsed got %v, want only its own %v", ids(got), ids(a))
	}
	// A claim lapses at its instant, not after.
	if got := claim(t, s, ownerA, t0().Add(claimFor+claimFor/2), 10); !slices.Equal(ids(got), all) {
		t.Fatalf("A once B's claim lapsed got %v, want every event", ids(got))
	}
	if got := claim(t, s, ownerB, t0().Add(claimFor+claimFor/2), 10); len(got) != 0 {
		t.Fatalf("B claimed %v, all A's", ids(got))
	}
}

func claimTakenOver(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 1)
	id := es[0].ID
	claim(t, s, ownerA, t0(), 10)
	failed := revocation.SinkStatus{Attempts: 1, NextAttempt: t0().Add(time.Second), LastError: "receiver answered 503"}
	if err := s.RecordDelivery(ctx(t), ownerA, id, "https://a/", failed); err != nil {
		t.Fatal(err)
	}
	// A lapsed claim nobody took is still A's.
	if err := s.RecordDelivery(ctx(t), ownerA, id, "https://a/", failed); err != nil {
		t.Fatalf("RecordDelivery on a lapsed claim nobody took: %v", err)
	}
	// A stops (died, or paused); B takes the event over with A's record.
	b := claim(t, s, ownerB, t0().Add(claimFor), 10)
	if len(b) != 1 || b[0].Event.ID != id || !reflect.DeepEqual(b[0].Status, map[string]revocation.SinkStatus{"https://a/": failed}) {
		t.Fatalf("B took over %+v, want the event with A's status", b)
	}
	done := revocation.SinkStatus{Delivered: true, DeliveredAt: t0().Add(claimFor), Attempts: 2}
	if err := s.RecordDelivery(ctx(t), ownerB, id, "https://a/", done); err != nil {
		t.Fatal(err)
	}
	// A wakes up: its writes are refused, and B's record stands.
	late := revocation.SinkStatus{Attempts: 2, NextAttempt: t0().Add(time.Hour), LastError: "late"}
	if err := s.RecordDelivery(ctx(t), ownerA, id, "https://a/", late); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("RecordDelivery by the former owner: %v, want ErrClaimLost", err)
	}
	if err := s.MarkDelivered(ctx(t), ownerA, id, t0()); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("MarkDelivered by the former owner: %v, want ErrClaimLost", err)
	}
	if got := pending(t, s)[id].Status; !reflect.DeepEqual(got, map[string]revocation.SinkStatus{"https://a/": done}) {
		t.Fatalf("statuses after the former owner's writes: %+v", got)
	}
	if got := claim(t, s, ownerA, t0().Add(claimFor+time.Second), 10); len(got) != 0 {
		t.Fatalf("A reclaimed %v while B holds it", ids(got))
	}
	if err := s.MarkDelivered(ctx(t), ownerB, id, t0().Add(claimFor)); err != nil {
		t.Fatal(err)
	}
	if len(pending(t, s)) != 0 {
		t.Fatal("still pending after the new owner marked it delivered")
	}
}

func claimFences(t *testing.T, s verifier.Store) {
	es := withEvents(t, s, "web-1", 2)
	st := revocation.SinkStatus{Attempts: 1, LastError: "refused"}
	// Unclaimed: nobody's to write.
	if err := s.RecordDelivery(ctx(t), ownerA, es[0].ID, "https://a/", st); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("RecordDelivery of an unclaimed event: %v, want ErrClaimLost", err)
	}
	if err := s.MarkDelivered(ctx(t), ownerA, es[0].ID, t0()); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("MarkDelivered of an unclaimed event: %v, want ErrClaimLost", err)
	}
	claim(t, s, ownerA, t0(), 10)
	if err := s.RecordDelivery(ctx(t), ownerB, es[0].ID, "https://a/", st); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("RecordDelivery by a non-owner: %v, want ErrClaimLost", err)
	}
	if err := s.MarkDelivered(ctx(t), ownerB, es[1].ID, t0()); !errors.Is(err, revocation.ErrClaimLost) {
		t.Fatalf("MarkDelivered by a non-owner: %v, want ErrClaimLost", err)
	}
	p := pending(t, s)
	if len(p) != 2 || len(p[es[0].ID].Status) != 0 || len(p[es[1].ID].Status) != 0 {
		t.Fatalf("pending after a non-owner's writes: %+v; want both, untouched", p)
	}
	if err := s.RecordDelivery(ctx(t), ownerA, es[0].ID, "https://a/", st); err != nil {
		t.Fatalf("RecordDelivery by the owner: %v", err)
	}
}

// claimConcurrent: owners claiming at the same instant, over several
// rounds of lapsed claims, each get their own events and together all.
func claimConcurrent(t *testing.T, s verifier.Store) {
	const owners, n = 8, 100
	var es []revocation.Event
	for i := range 4 {
		es = append(es, withEvents(t, s, fmt.Sprintf("web-%d", i), n/4)...)
	}
	all := eventIDs(es)
	for round := range 5 {
		now := t0().Add(time.Duration(round) * 2 * claimFor)
		var mu sync.Mutex
		by := map[string]string{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for o := range owners {
			owner := fmt.Sprintf("replica-%d", o)
			wg.Go(func() {
				<-start
				// max leaves room for all events even when some owners
				// find most of them locked by the others.
				ps, err := s.ClaimEvents(ctx(t), owner, now, claimFor, 2*n/owners)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, p := range ps {
					if other, dup := by[p.Event.ID]; dup {
						t.Errorf("round %d: event %s claimed by %s and %s", round, p.Event.ID, other, owner)
					}
					by[p.Event.ID] = owner
				}
			})
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		if got := slices.Sorted(maps.Keys(by)); !slices.Equal(got, all) {
			t.Fatalf("round %d: %d of %d events claimed", round, len(got), len(all))
		}
	}
}
