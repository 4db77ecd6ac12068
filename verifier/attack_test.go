package verifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// These tests play an unauthenticated peer — no TPM of the host's, no
// client certificate — against a healthy host attesting through the
// verifier's HTTP handler with a soft TPM. Each asserts that the host keeps
// attesting, that no event is raised, and that the store holds what it
// held. (cmd/vigil's end-to-end tests do the same over swtpm.)

// storeSnapshot is everything the verifier stored that an attack could
// change: every agent record and every revocation event.
func storeSnapshot(t *testing.T, st Store) string {
	t.Helper()
	ctx := context.Background()
	agents, err := st.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events, err := st.PendingEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sort.Slice(agents, func(i, j int) bool { return agents[i].ID < agents[j].ID })
	for _, a := range agents {
		rec, _ := wire.Marshal(a)
		fmt.Fprintf(&b, "agent %x\n", rec)
	}
	for _, e := range events {
		fmt.Fprintf(&b, "event %s %s %s\n", e.Event.ID, e.Event.Type, e.Event.Data.AgentID)
	}
	return b.String()
}

// httpHost drives a serviceHost through the HTTP handler, as the agent
// does.
func (h *serviceHost) challengeHTTP(t *testing.T, hd http.Handler, started bool) wire.Challenge {
	t.Helper()
	body, _ := wire.Marshal(wire.ChallengeRequest{AgentID: h.id, Started: started})
	rec := post(hd, wire.PathChallenge, body)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: challenge: %d %s", h.id, rec.Code, rec.Body.Bytes())
	}
	var ch wire.Challenge
	if err := wire.Unmarshal(rec.Body.Bytes(), &ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

func (h *serviceHost) evidenceHTTP(t *testing.T, hd http.Handler, ev wire.Evidence) (int, wire.Verdict) {
	t.Helper()
	body, _ := wire.Marshal(ev)
	rec := postEvidence(hd, ev.AgentID, ev.Nonce, body)
	var v wire.Verdict
	if rec.Code == http.StatusOK {
		if err := wire.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Code, v
}

func (h *serviceHost) mustAttestHTTP(t *testing.T, hd http.Handler, ch wire.Challenge) wire.Challenge {
	t.Helper()
	code, v := h.evidenceHTTP(t, hd, h.answer(t, ch))
	if code != http.StatusOK || v.State != string(StateAttesting) || v.Next == nil {
		t.Fatalf("%s: genuine evidence: %d %+v", h.id, code, v)
	}
	return *v.Next
}

func attackFleet(t *testing.T) (*fleet, *Service, http.Handler, *serviceHost) {
	t.Helper()
	f := newFleet(t, 1, 10)
	svc := f.service(0)
	f.admitAll(t, svc)
	if err := svc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f, svc, Handler(svc, HandlerOptions{CheckPolicy: CheckPolicy}), f.hosts[0]
}

func TestAttackChallengesCannotBeStolen(t *testing.T) {
	f, svc, hd, h := attackFleet(t)
	// The genuine agent holds a challenge; a stranger asks for many in its
	// name before the agent answers (today's attack took two).
	ch := h.challengeHTTP(t, hd, true)
	before := storeSnapshot(t, f.st)
	stranger := &serviceHost{id: h.id}
	for range 50 {
		stranger.challengeHTTP(t, hd, true)
		stranger.challengeHTTP(t, hd, false)
	}
	if after := storeSnapshot(t, f.st); after != before {
		t.Fatalf("asking for challenges changed the store:\nbefore %s\nafter  %s", before, after)
	}
	next := h.mustAttestHTTP(t, hd, ch)
	h.appendGood(t, 2)
	for range 10 {
		stranger.challengeHTTP(t, hd, false)
	}
	h.mustAttestHTTP(t, hd, next)
	if a, _ := svc.Status(context.Background(), h.id); a.State != StateAttesting || a.Attestations != 2 {
		t.Fatalf("host after the stranger's challenges: %s, %d attestations", a.State, a.Attestations)
	}
}

func TestAttackForgedEvidenceIsRefusedAndChangesNothing(t *testing.T) {
	f, svc, hd, h := attackFleet(t)
	ctx := context.Background()
	next := h.mustAttestHTTP(t, hd, h.challengeHTTP(t, hd, true))
	genuine := h.answer(t, next)

	// The stranger's own TPM, with an AK the registrar never saw.
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	strangerTPM := &serviceHost{id: h.id, tpm: agent.NewSoftTPM(st), list: h.list}
	if strangerTPM.ak, err = strangerTPM.tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC); err != nil {
		t.Fatal(err)
	}

	before := storeSnapshot(t, f.st)
	for _, tc := range []struct {
		name string
		ev   func() wire.Evidence
		want int
	}{
		{"garbage quote over a fresh nonce", func() wire.Evidence {
			ch := h.challengeHTTP(t, hd, false)
			return wire.Evidence{AgentID: h.id, Nonce: ch.Nonce, Quote: []byte("garbage"), Signature: []byte{1, 2, 3}, IMAOffset: ch.IMAOffset}
		}, http.StatusBadRequest},
		{"unsigned quote copied from the host", func() wire.Evidence {
			ev := genuine
			ch := h.challengeHTTP(t, hd, false)
			ev.Nonce, ev.Signature = ch.Nonce, nil
			return ev
		}, http.StatusBadRequest},
		{"quote by another TPM's AK", func() wire.Evidence {
			return strangerTPM.answer(t, h.challengeHTTP(t, hd, false))
		}, http.StatusForbidden},
		{"the host's quote under another nonce", func() wire.Evidence {
			ev := genuine
			ev.Nonce = h.challengeHTTP(t, hd, false).Nonce
			return ev
		}, http.StatusConflict},
		{"a forged nonce", func() wire.Evidence {
			ev := genuine
			ev.Nonce = append([]byte(nil), ev.Nonce...)
			ev.Nonce[31] ^= 1
			return ev
		}, http.StatusConflict},
	} {
		code, _ := h.evidenceHTTP(t, hd, tc.ev())
		if code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	// A body over what the challenge asked for, in the host's name.
	ch := h.challengeHTTP(t, hd, false)
	big, _ := wire.Marshal(wire.Evidence{AgentID: h.id, Nonce: ch.Nonce, IMA: make([]byte, wire.MaxEvidenceIMA)})
	if rec := postEvidence(hd, h.id, ch.Nonce, big); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize evidence: %d, want 413", rec.Code)
	}
	if after := storeSnapshot(t, f.st); after != before {
		t.Fatalf("refused evidence changed the store:\nbefore %s\nafter  %s", before, after)
	}
	// The genuine evidence, held back all along, still passes, once: a
	// replay of it is refused.
	code, v := h.evidenceHTTP(t, hd, genuine)
	if code != http.StatusOK || v.State != string(StateAttesting) {
		t.Fatalf("genuine evidence after the attacks: %d %+v", code, v)
	}
	afterGenuine := storeSnapshot(t, f.st)
	if code, _ := h.evidenceHTTP(t, hd, genuine); code != http.StatusConflict {
		t.Errorf("replayed evidence: %d, want 409", code)
	}
	if storeSnapshot(t, f.st) != afterGenuine {
		t.Error("a replay changed the store")
	}
	h.mustAttestHTTP(t, hd, *v.Next)
	if a, _ := svc.Status(ctx, h.id); a.State != StateAttesting || a.Attestations != 3 {
		t.Fatalf("host after the attacks: %s after %d attestations, want attesting after 3", a.State, a.Attestations)
	}
	if evs, _ := f.st.PendingEvents(ctx); len(evs) != 0 {
		t.Fatalf("events raised: %+v", evs)
	}
}

func TestAttackUnknownAgentStoresNothing(t *testing.T) {
	f, _, hd, h := attackFleet(t)
	before := storeSnapshot(t, f.st)
	body, _ := wire.Marshal(wire.ChallengeRequest{AgentID: "nobody"})
	if rec := post(hd, wire.PathChallenge, body); rec.Code != http.StatusForbidden {
		t.Errorf("challenge for an agent never admitted: %d, want 403", rec.Code)
	}
	ev, _ := wire.Marshal(wire.Evidence{AgentID: "nobody", Nonce: make([]byte, 32)})
	if rec := postEvidence(hd, "nobody", make([]byte, 32), ev); rec.Code != http.StatusForbidden {
		t.Errorf("evidence for an agent never admitted: %d, want 403", rec.Code)
	}
	if after := storeSnapshot(t, f.st); after != before {
		t.Fatalf("the store changed:\nbefore %s\nafter  %s", before, after)
	}
	h.mustAttestHTTP(t, hd, h.challengeHTTP(t, hd, true))
}

func TestRefusalsAreCounted(t *testing.T) {
	_, svc, hd, h := attackFleet(t)
	counts := map[string]int{}
	svc.OnRefused = func(reason string) { counts[reason]++ }
	var logged strings.Builder
	svc.Log = slog.New(slog.NewTextHandler(&logged, nil))
	ch := h.challengeHTTP(t, hd, true)
	forged := append([]byte(nil), ch.Nonce...)
	forged[31] ^= 1
	for range 100 {
		body, _ := wire.Marshal(wire.Evidence{AgentID: h.id, Nonce: forged})
		postEvidence(hd, h.id, forged, body)
	}
	if counts[refusedBadNonce] != 100 {
		t.Fatalf("refusals counted: %v, want 100 %s", counts, refusedBadNonce)
	}
	// A flood is logged once per reason and interval, not once per request.
	if n := strings.Count(logged.String(), "agent request refused"); n != 1 {
		t.Fatalf("%d log lines for 100 refusals:\n%s", n, logged.String())
	}
}

// flakyStore is the real store behind a switch that makes every write fail,
// as a full disk does.
type flakyStore struct {
	BoltStore
	down atomic.Bool
}

var errDiskFull = errors.New("write: no space left on device")

func (s *flakyStore) SaveAgent(ctx context.Context, a Agent, events []revocation.Event, history ...HistoryEntry) error {
	if s.down.Load() {
		return errDiskFull
	}
	return s.BoltStore.SaveAgent(ctx, a, events, history...)
}

func (s *flakyStore) Checkpoint(ctx context.Context, agents []Agent, history ...HistoryEntry) error {
	if s.down.Load() {
		return errDiskFull
	}
	return s.BoltStore.Checkpoint(ctx, agents, history...)
}

func (s *flakyStore) UpdateAgent(ctx context.Context, id string, fn func(*Agent) ([]revocation.Event, error)) error {
	if s.down.Load() {
		return errDiskFull
	}
	return s.BoltStore.UpdateAgent(ctx, id, fn)
}

func (s *flakyStore) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errDiskFull
	}
	return s.BoltStore.Ping(ctx)
}

func TestStoreThatCannotBeWritten(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2, 10)
	flaky := &flakyStore{BoltStore: f.st}
	svc := f.service(time.Hour)
	svc.Store = flaky
	f.admitAll(t, svc)
	hd := Handler(svc, HandlerOptions{CheckPolicy: CheckPolicy})
	tampered, good := f.hosts[0], f.hosts[1]
	mustAttest(t, svc, tampered, true)
	mustAttest(t, svc, good, true)
	ready := func() int {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}

	flaky.down.Store(true)
	if _, err := svc.Checkpoint(ctx); err != nil {
		t.Fatalf("an empty checkpoint: %v", err)
	}
	// The good host's progress cannot be checkpointed: the verifier learns
	// the store is down and stops answering verdicts good.
	good.appendGood(t, 1)
	mustAttest(t, svc, good, false)
	if _, err := svc.Checkpoint(ctx); err == nil {
		t.Fatal("checkpoint on a full disk succeeded")
	}
	if ready() != http.StatusServiceUnavailable {
		t.Error("/readyz: ready while the store cannot be written")
	}
	if _, err := good.attest(t, svc, false); !isRefusal(err, RefusedUnavailable) {
		t.Errorf("good evidence while the store cannot be written: %v, want 503, no verdict good", err)
	}

	// The tampered host fails on its evidence: it shows failed at once
	// and stays so; its failure waits for the store.
	tampered.appendBad(t)
	v, err := tampered.attest(t, svc, false)
	if err != nil || v.State != string(StateFailed) || v.Reason != string(ReasonPolicyViolation) {
		t.Fatalf("tampered host on a full disk: %+v, %v", v, err)
	}
	if a, _ := svc.Status(ctx, tampered.id); a.State != StateFailed || a.Reason != ReasonPolicyViolation {
		t.Errorf("tampered host shows %s %s", a.State, a.Reason)
	}
	svc.Liveness = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	svc.CheckLiveness(ctx)
	if a, _ := svc.Status(ctx, tampered.id); a.Reason != ReasonPolicyViolation {
		t.Errorf("liveness overwrote the failure: %s", a.Reason)
	}
	svc.Liveness = 0

	// The disk is freed: the failure that happened is what is stored,
	// with its revocation.
	flaky.down.Store(false)
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz after the store recovered: %d", code)
	}
	a := f.stored(t, tampered.id)
	if a.State != StateFailed || a.Reason != ReasonPolicyViolation || !strings.Contains(a.Detail, "/tmp/miner") {
		t.Fatalf("stored after recovery: %s %s %q, want failed policy_violation on /tmp/miner", a.State, a.Reason, a.Detail)
	}
	evs, err := f.st.PendingEvents(ctx)
	if err != nil || len(evs) != 1 || evs[0].Event.Type != revocation.TypeRevoked || evs[0].Event.Data.Reason != string(ReasonPolicyViolation) {
		t.Fatalf("outbox after recovery: %+v, %v; want one revocation for the policy violation", evs, err)
	}
	mustAttest(t, svc, good, false)
}

func TestSilenceHeals(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(0)
	now := time.Now()
	svc.Now = func() time.Time { return now }
	svc.Liveness = time.Second
	f.admitAll(t, svc)
	h := f.hosts[0]
	v := mustAttest(t, svc, h, true)
	now = now.Add(2 * time.Second)
	if n, err := svc.CheckLiveness(ctx); err != nil || n != 1 {
		t.Fatalf("liveness: %d, %v", n, err)
	}
	// A challenge issued before the silence does not bring it back:
	// coming back takes complete fresh evidence.
	h.appendGood(t, 1)
	now = now.Add(-time.Second) // still unexpired
	if _, err := svc.Evidence(ctx, h.answer(t, *v.Next)); !isRefusal(err, RefusedConflict) {
		t.Fatalf("evidence over a nonce from before the silence: %v, want refused", err)
	}
	now = now.Add(time.Second + time.Millisecond)
	v, err := h.attest(t, svc, false)
	if err != nil || v.State != string(StateAttesting) {
		t.Fatalf("complete fresh evidence after silence: %+v, %v", v, err)
	}
	if a := f.stored(t, h.id); a.State != StateAttesting || a.Reason != "" || !a.FailedAt.IsZero() {
		t.Fatalf("stored after coming back: %+v", a)
	}
	evs, err := f.st.PendingEvents(ctx)
	if err != nil || len(evs) != 2 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Event.Time.Before(evs[j].Event.Time) })
	if evs[0].Event.Type != revocation.TypeRevoked || evs[1].Event.Type != revocation.TypeReadmitted {
		t.Fatalf("events %s then %s, want revoked then readmitted", evs[0].Event.Type, evs[1].Event.Type)
	}

	// Proven compromise does not heal.
	h.appendBad(t)
	if v, err := h.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("tampered: %+v, %v", v, err)
	}
	if _, err := h.attest(t, svc, true); !isRefusal(err, RefusedForbidden) {
		t.Fatalf("evidence after a policy violation: %v, want refused until an operator readmits", err)
	}

	// Nor does silence with auto-recovery off.
	g := newFleet(t, 1, 10)
	never := g.service(0)
	never.Now, never.Liveness, never.AutoRecover = svc.Now, time.Second, RecoverNever
	g.admitAll(t, never)
	mustAttest(t, never, g.hosts[0], true)
	now = now.Add(2 * time.Second)
	never.CheckLiveness(ctx)
	if _, err := g.hosts[0].attest(t, never, true); !isRefusal(err, RefusedForbidden) {
		t.Fatalf("--auto-recover never: %v, want refused", err)
	}
}

func TestAdmissionBounds(t *testing.T) {
	svc, _ := newTestService(t)
	admitOne(t, svc, time.Second)
	ctx := context.Background()
	long := "spiffe://example.org/" + strings.Repeat("x", MaxIdentityLen)
	many := make([]string, MaxIdentities+1)
	for i := range many {
		many[i] = fmt.Sprintf("spiffe://example.org/n/%d", i)
	}
	for _, req := range []AdmitRequest{
		{AgentID: "b", RuntimePolicy: "rt", Interval: 3100000000000000000},
		{AgentID: "b", RuntimePolicy: "rt", Interval: 999 * time.Millisecond},
		{AgentID: "b", RuntimePolicy: "rt", Interval: 25 * time.Hour},
		{AgentID: "b", RuntimePolicy: "rt", Identities: []string{long}},
		{AgentID: "b", RuntimePolicy: "rt", Identities: many},
		{AgentID: strings.Repeat("b", 129), RuntimePolicy: "rt"},
	} {
		if _, err := svc.Admit(ctx, req); !isRefusal(err, RefusedInvalid) {
			t.Errorf("admission %.80v: %v, want 400", req, err)
		}
	}
	if _, err := svc.Store.GetAgent(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused admission was stored: %v", err)
	}
}
