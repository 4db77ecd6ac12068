package verifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/wire"
)

func challengeFor(h *serviceHost) wire.ChallengeRequest { return wire.ChallengeRequest{AgentID: h.id} }

// addRuntimePolicy stores a version of runtime policy name: the fleet's
// "rt" as it was first stored, without the paths drop, with the paths and
// file digests (hex) allow.
func (f *fleet) addRuntimePolicy(t *testing.T, svc *Service, name string, drop []string, allow map[string]string) Policy {
	t.Helper()
	ctx := context.Background()
	first, err := f.st.GetPolicyVersion(ctx, "rt", 1)
	if err != nil {
		t.Fatal(err)
	}
	var rp ima.RuntimePolicy
	if err := json.Unmarshal(first.Body, &rp); err != nil {
		t.Fatal(err)
	}
	for _, p := range drop {
		delete(rp.Digests, p)
	}
	for p, digest := range allow {
		rp.Digests[p] = []string{digest}
	}
	body, err := json.Marshal(rp)
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.AddPolicy(ctx, CheckPolicy, name, PolicyRuntime, body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// An update applies from the next verdict: evidence for a challenge issued
// before it is refused (not failed), the next challenge asks for the IMA
// list from its start and the PCRs the new policies need, and the new
// policy judges; the history names the operator and what changed.
func TestUpdateAppliesFromTheNextVerdict(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	h.appendGood(t, 2)
	mustAttest(t, svc, h, false)
	// The next file: allowed by rt, not by strict.
	next := h.good[2].Path
	f.addRuntimePolicy(t, svc, "strict", []string{next}, nil)

	old, err := svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	carol := httpapi.WithOperator(ctx, "carol")
	a, err := svc.Update(carol, h.id, UpdateRequest{RuntimePolicy: ptr("strict"), Interval: ptr(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if a.RuntimePolicy != "strict" || a.RuntimePolicyVersion != 0 || a.Interval != 5*time.Second || a.State != StateAttesting {
		t.Fatalf("updated record: %+v", a)
	}
	if stored := f.stored(t, h.id); stored.RuntimePolicy != "strict" || stored.Interval != 5*time.Second {
		t.Fatalf("the update is not stored before it is answered: %+v", stored)
	}
	// Evidence asked for under the old policy is refused, and changes
	// nothing.
	if _, err := svc.Evidence(ctx, h.answer(t, old)); !isRefusal(err, RefusedConflict) {
		t.Fatalf("evidence for a challenge issued before the update: %v, want a 409 refusal", err)
	}
	ch, err := svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	if ch.IMAOffset != 0 || ch.IntervalMS != 5000 || ch.WantBootLog {
		t.Fatalf("challenge after the update: offset %d, interval %d ms, boot log %v; want 0, 5000, false", ch.IMAOffset, ch.IntervalMS, ch.WantBootLog)
	}
	// The whole list passes the new policy; the next file does not.
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("first verdict under the new policy: %+v, %v", v, err)
	}
	h.appendGood(t, 1)
	v, err := h.attest(t, svc, false)
	if err != nil || v.State != string(StateFailed) || !strings.Contains(v.Detail, next) {
		t.Fatalf("a file the new policy does not allow: %+v, %v", v, err)
	}

	hist, err := svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(hist, func(e HistoryEntry) bool { return e.Kind == HistoryUpdated })
	if i < 1 {
		t.Fatalf("no updated entry: %v", historyKinds(hist))
	}
	u := hist[i]
	if u.Operator != "carol" || u.RuntimePolicy != "strict@1" || u.Interval != 5*time.Second ||
		!strings.Contains(u.Detail, "runtime policy rt@1 → strict@1") || !strings.Contains(u.Detail, "→ 5s") {
		t.Fatalf("updated entry %+v", u)
	}
	// The verdicts before it were counted under the old policy, those
	// after under the new.
	if p := hist[i-1]; p.Kind != HistoryVerdicts || p.RuntimePolicy != "rt@1" || p.Verdicts.Count != 2 {
		t.Fatalf("verdicts before the update: %+v", p)
	}
	if p := hist[i+1]; p.Kind != HistoryVerdicts || p.RuntimePolicy != "strict@1" || p.Verdicts.Count != 1 {
		t.Fatalf("verdicts after the update: %+v", p)
	}
}

// A boot policy added to an attesting agent: the next challenge selects
// PCRs 0-9 too and asks for the boot log, and evidence without one fails.
func TestUpdateAddingABootPolicyAsksForTheBootLog(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	selection := func(ch wire.Challenge) tpm2.TPMLPCRSelection {
		t.Helper()
		sel, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
		if err != nil {
			t.Fatal(err)
		}
		return *sel
	}
	ch, err := svc.Challenge(ctx, challengeFor(h))
	if err != nil || ch.WantBootLog || !sameSelection(selection(ch), Selection(Agent{RuntimePolicy: "r"}, nil)) {
		t.Fatalf("challenge before: %+v, %v", ch, err)
	}
	if _, err := svc.AddPolicy(ctx, nil, "boot", PolicyBoot, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Update(ctx, h.id, UpdateRequest{BootPolicy: ptr("boot")}); err != nil {
		t.Fatal(err)
	}
	// The challenge issued before selected PCR 10 alone: its evidence is
	// refused rather than failing the host for quoting too few PCRs.
	if _, err := svc.Evidence(ctx, h.answer(t, ch)); !isRefusal(err, RefusedConflict) {
		t.Fatalf("evidence for a challenge issued before the update: %v, want a 409 refusal", err)
	}
	if a, _ := svc.Status(ctx, h.id); a.State != StateAttesting {
		t.Fatalf("after evidence for an old challenge: %s %s", a.State, a.Detail)
	}
	ch, err = svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	if !ch.WantBootLog || !sameSelection(selection(ch), Selection(Agent{RuntimePolicy: "r", BootPolicy: "b"}, nil)) {
		t.Fatalf("challenge after a boot policy was added: boot log %v, selection %+v", ch.WantBootLog, selection(ch))
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateFailed) || !strings.Contains(v.Detail, "boot log") {
		t.Fatalf("evidence without the boot log now asked for: %+v, %v", v, err)
	}
}

// A changed boot policy wants the boot log again; the same one does not.
func TestUpdatedRecord(t *testing.T) {
	a := Agent{ID: "h", BootPolicy: "b", BootChecked: true, RuntimePolicy: "r", IMAEntries: 7, IMAState: []byte{1}, LastNonce: 5, State: StateFailed}
	same, _ := a.updated(agentUpdate{boot: &policyChoice{name: "b"}, runtime: &policyChoice{name: "r"}}, 100)
	if !same.BootChecked || same.IMAEntries != 7 || same.LastNonce != 5 {
		t.Fatalf("an update naming the same policies: %+v", same)
	}
	next, _ := a.updated(agentUpdate{boot: &policyChoice{name: "b", pin: 2}}, 100)
	if next.BootChecked || next.BootPolicyVersion != 2 || next.IMAEntries != 7 || next.LastNonce != 100 || next.State != StateFailed {
		t.Fatalf("boot policy pinned: %+v", next)
	}
	next, _ = a.updated(agentUpdate{runtime: &policyChoice{name: "r2"}}, 100)
	if !next.BootChecked || next.IMAEntries != 0 || next.IMAState != nil || next.RuntimePolicy != "r2" {
		t.Fatalf("runtime policy changed: %+v", next)
	}
	next, _ = a.updated(agentUpdate{interval: ptr(time.Minute), identities: &[]string{}}, 100)
	if next.LastNonce != 5 || next.Interval != time.Minute || next.Identities != nil {
		t.Fatalf("interval and identities: %+v", next)
	}
}

// A looser policy does not readmit a failed host: it stays failed until an
// operator readmits it, and is then judged by the new policy.
func TestUpdateLeavesAFailedAgentFailed(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	h.appendBad(t)
	if v, err := h.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("tampered host: %+v, %v", v, err)
	}
	f.addRuntimePolicy(t, svc, "loose", nil, map[string]string{"/tmp/miner": fmt.Sprintf("%x", sha256.Sum256([]byte("miner")))})
	a, err := svc.Update(ctx, h.id, UpdateRequest{RuntimePolicy: ptr("loose")})
	if err != nil {
		t.Fatal(err)
	}
	if a.State != StateFailed {
		t.Fatalf("after an update to a looser policy: %s, want failed", a.State)
	}
	if st, _ := svc.Status(ctx, h.id); st.State != StateFailed {
		t.Fatalf("status after the update: %s", st.State)
	}
	if _, err := svc.Challenge(ctx, challengeFor(h)); !isRefusal(err, RefusedForbidden) {
		t.Fatalf("a failed agent's challenge after an update: %v, want refused", err)
	}
	if stored := f.stored(t, h.id); stored.State != StateFailed || stored.RuntimePolicy != "loose" {
		t.Fatalf("stored: %s %s", stored.State, stored.RuntimePolicy)
	}
	// Only an operator's readmission brings it back.
	if _, err := svc.Readmit(ctx, h.id); err != nil {
		t.Fatal(err)
	}
	if a, _ := svc.Status(ctx, h.id); a.State != StatePending || a.RuntimePolicy != "loose" {
		t.Fatalf("after readmission: %+v", a)
	}
	mustAttest(t, svc, h, true)
}

// A pinned agent keeps being judged by its version when a new one is
// stored; an agent following the latest is judged by the new one. A policy
// in use, pinned or not, cannot be deleted.
func TestPinnedPolicyVersion(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2, 10)
	svc := f.service(time.Hour)
	pinned, latest := f.hosts[0], f.hosts[1]
	a, err := svc.Admit(ctx, AdmitRequest{AgentID: pinned.id, RuntimePolicy: "rt@1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.RuntimePolicy != "rt" || a.RuntimePolicyVersion != 1 {
		t.Fatalf("admitted pinned: %+v", a)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: latest.id, RuntimePolicy: "rt"}); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, pinned, true)
	mustAttest(t, svc, latest, true)
	// Version 2 allows neither host's next file.
	v2 := f.addRuntimePolicy(t, svc, "rt", []string{pinned.good[0].Path, latest.good[0].Path}, nil)
	if v2.Version != 2 {
		t.Fatalf("new version %d", v2.Version)
	}
	pinned.appendGood(t, 1)
	latest.appendGood(t, 1)
	mustAttest(t, svc, pinned, false)
	if v, err := latest.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("the host following the latest version: %+v, %v; want failed by version 2", v, err)
	}
	// A restarted verifier (a cold cache) judges by the pin too: the whole
	// list, with the file version 2 does not allow.
	if _, err := svc.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	svc = f.service(time.Hour)
	pinned.appendGood(t, 1)
	mustAttest(t, svc, pinned, true)

	hist, err := svc.History(ctx, pinned.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if (e.Kind == HistoryVerdicts || e.Kind == HistoryAdmitted) && e.RuntimePolicy != "rt@1" {
			t.Fatalf("pinned agent's %s entry names %s, want rt@1", e.Kind, e.RuntimePolicy)
		}
	}
	if err := svc.DeletePolicy(ctx, "rt"); !isRefusal(err, RefusedConflict) {
		t.Fatalf("deleting a policy an agent is pinned to: %v, want 409", err)
	}

	// Pinning by update, and following the latest again.
	if a, err := svc.Update(ctx, latest.id, UpdateRequest{RuntimePolicy: ptr("rt@1")}); err != nil || a.RuntimePolicyVersion != 1 || a.State != StateFailed {
		t.Fatalf("pin by update: %+v, %v", a, err)
	}
	a, err = svc.Update(ctx, pinned.id, UpdateRequest{RuntimePolicy: ptr("rt")})
	if err != nil || a.RuntimePolicyVersion != 0 {
		t.Fatalf("unpin by update: %+v, %v", a, err)
	}
	hist, _ = svc.History(ctx, pinned.id, time.Time{}, 0)
	if u := hist[len(hist)-1]; u.Kind != HistoryUpdated || u.RuntimePolicy != "rt@2" || u.Detail != "runtime policy rt@1 (pinned) → rt@2" {
		t.Fatalf("unpinning entry %+v", u)
	}
	// Its next verdict is version 2's: the files logged since the update
	// (and before) are judged again, and one is not allowed.
	if v, err := pinned.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("after unpinning: %+v, %v", v, err)
	}
}

// Updates and admissions that name what does not exist, or would leave an
// agent unchecked, are refused with what is wrong, and change nothing.
func TestUpdateRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 1)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	id := f.hosts[0].id
	if _, err := svc.AddPolicy(ctx, nil, "boot", PolicyBoot, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req  UpdateRequest
		kind RefusalKind
		want string
	}{
		{UpdateRequest{}, RefusedInvalid, "nothing to update"},
		{UpdateRequest{RuntimePolicy: ptr("")}, RefusedInvalid, "at least one policy"},
		{UpdateRequest{RuntimePolicy: ptr("nope")}, RefusedInvalid, `runtime policy "nope" does not exist`},
		{UpdateRequest{RuntimePolicy: ptr("rt@x")}, RefusedInvalid, `version "x"`},
		{UpdateRequest{RuntimePolicy: ptr("rt@0")}, RefusedInvalid, `version "0"`},
		{UpdateRequest{RuntimePolicy: ptr("rt@9")}, RefusedInvalid, `has no version 9 (the latest is 1)`},
		{UpdateRequest{BootPolicy: ptr("rt")}, RefusedInvalid, `is a runtime policy, not a boot policy`},
		{UpdateRequest{Interval: ptr(time.Millisecond)}, RefusedInvalid, "interval"},
		{UpdateRequest{Identities: &[]string{"not a URI"}}, RefusedInvalid, "absolute URI"},
	} {
		_, err := svc.Update(ctx, id, c.req)
		if !isRefusal(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("update %+v: %v, want a refusal naming %q", c.req, err, c.want)
		}
	}
	if _, err := svc.Update(ctx, "nobody", UpdateRequest{RuntimePolicy: ptr("rt")}); !isRefusal(err, RefusedNotFound) {
		t.Errorf("update of an unknown agent: %v", err)
	}
	for _, ref := range []string{"rt@x", "rt@2", "rt@"} {
		if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "web-9", RuntimePolicy: ref}); !isRefusal(err, RefusedInvalid) {
			t.Errorf("admission with %q: %v", ref, err)
		}
	}
	// The boot policy can replace the runtime one in one update.
	a, err := svc.Update(ctx, id, UpdateRequest{RuntimePolicy: ptr(""), BootPolicy: ptr("boot@1")})
	if err != nil || a.RuntimePolicy != "" || a.BootPolicy != "boot" || a.BootPolicyVersion != 1 {
		t.Fatalf("swap runtime for boot: %+v, %v", a, err)
	}
	// An update that changes nothing stores nothing.
	before, _ := svc.History(ctx, id, time.Time{}, 0)
	if _, err := svc.Update(ctx, id, UpdateRequest{BootPolicy: ptr("boot@1")}); err != nil {
		t.Fatal(err)
	}
	if after, _ := svc.History(ctx, id, time.Time{}, 0); len(after) != len(before) {
		t.Fatalf("an update changing nothing wrote history: %v", historyKinds(after))
	}
}

// The admin API: PATCH /v1/agents/{id}, a policy's versions, one version.
func TestPolicyVersionsAndUpdateOverHTTP(t *testing.T) {
	f := newFleet(t, 1, 1)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	f.addRuntimePolicy(t, svc, "rt", nil, map[string]string{"/usr/bin/more": strings.Repeat("ab", 32)})
	hd := Handler(svc, HandlerOptions{CheckPolicy: CheckPolicy})
	do := func(method, path, body string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, bytes.NewReader([]byte(body)))
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{
			Subject: pkix.Name{CommonName: "dave"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}}}}
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, r)
		return rec
	}
	rec := do(http.MethodGet, PathPolicies+"/rt/versions", "")
	var ps []Policy
	if err := json.Unmarshal(rec.Body.Bytes(), &ps); rec.Code != http.StatusOK || err != nil || len(ps) != 2 || ps[0].Version != 1 || ps[1].Version != 2 || ps[0].Body != nil {
		t.Fatalf("versions: %d %s", rec.Code, rec.Body)
	}
	rec = do(http.MethodGet, PathPolicies+"/rt?version=1", "")
	var p Policy
	if err := json.Unmarshal(rec.Body.Bytes(), &p); rec.Code != http.StatusOK || err != nil || p.Version != 1 || len(p.Body) == 0 {
		t.Fatalf("version 1: %d %s", rec.Code, rec.Body)
	}
	for path, want := range map[string]int{
		PathPolicies + "/rt?version=x":        http.StatusBadRequest,
		PathPolicies + "/rt?version=0":        http.StatusBadRequest,
		PathPolicies + "/rt?version=3":        http.StatusNotFound,
		PathPolicies + "/nope/versions":       http.StatusNotFound,
		PathPolicies + "/nope?version=1":      http.StatusNotFound,
		PathPolicies + "/rt?version=2&more=1": http.StatusOK,
	} {
		if rec := do(http.MethodGet, path, ""); rec.Code != want {
			t.Errorf("GET %s: %d %s, want %d", path, rec.Code, rec.Body, want)
		}
	}
	id := f.hosts[0].id
	rec = do(http.MethodPatch, PathAgents+"/"+id, `{"runtime_policy": "rt@1", "interval": 3000000000}`)
	var v AgentView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); rec.Code != http.StatusOK || err != nil || v.RuntimePolicyVersion != 1 || v.Interval != "3s" {
		t.Fatalf("PATCH: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"runtime_policy_version": 1`) {
		t.Errorf("the agent's JSON does not show its pin: %s", rec.Body)
	}
	for body, want := range map[string]int{
		`{"runtime_policy": "rt@notanumber"}`: http.StatusBadRequest,
		`{"runtime_policy": "rt@7"}`:          http.StatusBadRequest,
		`{"runtime_policy": ""}`:              http.StatusBadRequest,
		`{"colour": "blue"}`:                  http.StatusBadRequest,
	} {
		if rec := do(http.MethodPatch, PathAgents+"/"+id, body); rec.Code != want {
			t.Errorf("PATCH %s: %d %s, want %d", body, rec.Code, rec.Body, want)
		}
	}
	if rec := do(http.MethodPatch, PathAgents+"/nobody", `{"runtime_policy": "rt"}`); rec.Code != http.StatusNotFound {
		t.Errorf("PATCH of an unknown agent: %d %s", rec.Code, rec.Body)
	}
	hist, _ := svc.History(context.Background(), id, time.Time{}, 0)
	if u := hist[len(hist)-1]; u.Kind != HistoryUpdated || u.Operator != "dave" {
		t.Fatalf("last entry %+v, want dave's update", u)
	}
}
