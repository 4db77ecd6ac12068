package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// extendPCR extends one PCR of a host's TPM in the banks given, with the
// digest of what (in each bank's hash), and returns the PCR's new value in
// each of those banks.
func extendPCR(t testing.TB, tpm agent.TPM, pcr int, what string, banks ...tpm2.TPMAlgID) map[tpm2.TPMAlgID][]byte {
	t.Helper()
	ctx := context.Background()
	digests := map[tpm2.TPMAlgID][]byte{}
	for _, b := range banks {
		h, _ := evidence.HashOf(b)
		hh := h.New()
		hh.Write([]byte(what))
		digests[b] = hh.Sum(nil)
	}
	if err := tpm.PCRExtend(ctx, pcr, digests); err != nil {
		t.Fatal(err)
	}
	return readPCR(t, tpm, pcr, banks...)
}

// readPCR reads one PCR in the banks given.
func readPCR(t testing.TB, tpm agent.TPM, pcr int, banks ...tpm2.TPMAlgID) map[tpm2.TPMAlgID][]byte {
	t.Helper()
	got, err := tpm.PCRRead(context.Background(), evidence.Selection([]int{pcr}, banks...))
	if err != nil {
		t.Fatal(err)
	}
	out := map[tpm2.TPMAlgID][]byte{}
	for _, b := range banks {
		out[b] = got[b][pcr]
	}
	return out
}

// nextValue is what PCR value v becomes once extended with the digest of
// what, in bank.
func nextValue(bank tpm2.TPMAlgID, v []byte, what string) []byte {
	h, _ := evidence.HashOf(bank)
	d := h.New()
	d.Write([]byte(what))
	e := h.New()
	e.Write(v)
	e.Write(d.Sum(nil))
	return e.Sum(nil)
}

// pcrPolicyBody is a PCR policy in Vigil's format allowing values.
func pcrPolicyBody(t testing.TB, values map[tpm2.TPMAlgID]map[int][][]byte) []byte {
	t.Helper()
	p, err := pcrpolicy.New(values)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addPCRPolicy(t testing.TB, svc *Service, name string, body []byte) Policy {
	t.Helper()
	p, err := svc.AddPolicy(context.Background(), CheckPolicy, name, PolicyPCR, body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// selectionOfChallenge reads a challenge's PCR selection as bank → PCRs.
func selectionOfChallenge(t testing.TB, ch wire.Challenge) map[tpm2.TPMAlgID][]int {
	t.Helper()
	sel, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
	if err != nil {
		t.Fatal(err)
	}
	out := map[tpm2.TPMAlgID][]int{}
	for _, s := range sel.PCRSelections {
		out[s.Hash] = evidence.SelectedPCRs(s)
	}
	return out
}

// A host with a PCR policy alone (a workload extends PCR 16): its
// challenges quote PCR 16 of the SHA-256 bank and nothing else; it passes
// while PCR 16's value is in the allowed list, and is failed, naming PCR
// 16, the bank and the value, once it leaves it.
func TestPCRPolicyFailsAHostWhosePCRLeavesTheList(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(0)
	h := f.hosts[0]
	sha := tpm2.TPMAlgSHA256
	v1 := extendPCR(t, h.tpm, 16, "workload v1", sha)[sha]
	v2 := nextValue(sha, v1, "workload v2")
	addPCRPolicy(t, svc, "workload", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {v1, v2}}}))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "workload"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha: {16}}) || ch.WantIMA || ch.WantBootLog {
		t.Fatalf("challenge for a PCR policy alone: selection %v, IMA %v, boot log %v", got, ch.WantIMA, ch.WantBootLog)
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("PCR 16 at an allowed value: %+v, %v", v, err)
	}
	extendPCR(t, h.tpm, 16, "workload v2", sha)
	mustAttest(t, svc, h, false)

	v3 := extendPCR(t, h.tpm, 16, "tampered", sha)[sha]
	v, err := h.attest(t, svc, false)
	if err != nil || v.State != string(StateFailed) || v.Reason != string(ReasonPolicyViolation) {
		t.Fatalf("PCR 16 out of its list: %+v, %v", v, err)
	}
	want := fmt.Sprintf("PCR 16 (sha256) = %x, not one of the 2 allowed values", v3)
	if !strings.Contains(v.Detail, want) {
		t.Fatalf("detail %q, want it to say %q", v.Detail, want)
	}
	a, _ := svc.Status(ctx, h.id)
	if a.State != StateFailed || !strings.Contains(a.Detail, "pcr_not_allowed") {
		t.Fatalf("status %s %q", a.State, a.Detail)
	}
	hist, err := svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var failure, verdicts *HistoryEntry
	for i := range hist {
		switch hist[i].Kind {
		case HistoryFailure:
			failure = &hist[i]
		case HistoryVerdicts:
			verdicts = &hist[i]
		}
	}
	if failure == nil || failure.Check != "pcr_not_allowed" || !strings.Contains(failure.Detail, "PCR 16 (sha256)") {
		t.Fatalf("history failure %+v", failure)
	}
	if verdicts == nil || verdicts.PCRPolicy != "workload@1" || verdicts.Verdicts.Count != 2 {
		t.Fatalf("history verdicts %+v", verdicts)
	}
	if hist[0].Kind != HistoryAdmitted || hist[0].PCRPolicy != "workload@1" {
		t.Fatalf("admission %+v", hist[0])
	}
	// Readmitted under a policy that allows the new value: attesting again.
	addPCRPolicy(t, svc, "workload", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {v1, v2, v3}}}))
	if _, err := svc.Readmit(ctx, h.id); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, true)
}

// A PCR policy naming PCR 16 in the SHA-1 and SHA-256 banks, with a
// runtime policy: the challenge quotes PCR 10 and 16 of SHA-256 and PCR 16
// of SHA-1, the verifier checks the PCR digest over both banks, and an
// extend of the SHA-1 bank alone fails the host naming that bank.
func TestPCRPolicyInTwoBanksWithARuntimePolicy(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 4)
	svc := f.service(0)
	h := f.hosts[0]
	sha1, sha256 := tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256
	v := extendPCR(t, h.tpm, 16, "workload", sha1, sha256)
	addPCRPolicy(t, svc, "both", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha1: {16: {v[sha1]}}, sha256: {16: {v[sha256]}}}))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, RuntimePolicy: "rt", PCRPolicy: "both"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	// PCRs 0-9 are quoted for the runtime policy's boot_aggregate.
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha1: {16}, sha256: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16}}) || !ch.WantIMA {
		t.Fatalf("selection %v, IMA %v", got, ch.WantIMA)
	}
	ev := h.answer(t, ch)
	if len(ev.PCRs) != 2 || len(ev.PCRs[uint16(sha1)]) != 1 || len(ev.PCRs[uint16(sha256)]) != 12 {
		t.Fatalf("PCR values sent: %v", ev.PCRs)
	}
	// The PCR digest covers both banks: a SHA-1 value that is not the one
	// quoted is evidence that does not hold together.
	bad := h.answer(t, ch)
	bad.PCRs[uint16(sha1)][16] = v[sha256][:20]
	if v, err := svc.Evidence(ctx, bad); err != nil || v.State != string(StateFailed) || !strings.Contains(v.Detail, "pcr_digest_mismatch") {
		t.Fatalf("a SHA-1 value not quoted: %+v, %v", v, err)
	}
	if _, err := svc.Readmit(ctx, h.id); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, true)
	h.appendGood(t, 2)
	mustAttest(t, svc, h, false)

	extendPCR(t, h.tpm, 16, "sha1 only", sha1)
	h.appendGood(t, 1)
	got, err := h.attest(t, svc, false)
	if err != nil || got.State != string(StateFailed) || got.Reason != string(ReasonPolicyViolation) ||
		!strings.Contains(got.Detail, "PCR 16 (sha1) = ") || !strings.Contains(got.Detail, "not the allowed value") {
		t.Fatalf("SHA-1 PCR 16 out of its list: %+v, %v", got, err)
	}
}

// Keylime's tpm_policy with SHA-1 digests (hash_alg sha1) checks the SHA-1
// bank: read unchanged, "mask" and all.
func TestKeylimeTPMPolicyWithSHA1Digests(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(0)
	h := f.hosts[0]
	sha1 := tpm2.TPMAlgSHA1
	v := extendPCR(t, h.tpm, 23, "app", sha1)[sha1]
	doc := fmt.Sprintf(`{"23": ["%x", "%s"], "mask": "0x800000"}`, v, strings.Repeat("ff", 20))
	addPCRPolicy(t, svc, "keylime", []byte(doc))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "keylime"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha1: {23}}) {
		t.Fatalf("selection %v", got)
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("%+v, %v", v, err)
	}
	extendPCR(t, h.tpm, 23, "app v2", sha1)
	if v, err := h.attest(t, svc, false); err != nil || !strings.Contains(v.Detail, "PCR 23 (sha1)") {
		t.Fatalf("%+v, %v", v, err)
	}
}

// A PCR policy naming a bank the host's TPM has not allocated (the soft
// TPM has sha1 and sha256, no sha384): the quote leaves the bank out, and
// the host fails naming it.
func TestPCRPolicyBankTheTPMLacks(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(0)
	h := f.hosts[0]
	sha384, sha256 := tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA256
	cur := readPCR(t, h.tpm, 16, sha256)[sha256]
	addPCRPolicy(t, svc, "p384", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{
		sha384: {16: {make([]byte, 48)}}, sha256: {16: {cur}},
	}))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "p384"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	sel, _ := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
	if _, _, err := h.tpm.Quote(ctx, h.ak, ch.Nonce, *sel); err == nil {
		t.Fatal("the soft TPM quoted a bank it has not")
	}
	// What the agent sends (agent.quoteConsistent): the bank left out.
	sel.PCRSelections = slices.DeleteFunc(sel.PCRSelections, func(s tpm2.TPMSPCRSelection) bool { return s.Hash == sha384 })
	ch.PCRSelection = tpm2.Marshal(*sel)
	v, err := svc.Evidence(ctx, h.answer(t, ch))
	if err != nil || v.State != string(StateFailed) || v.Reason != string(ReasonInvalidEvidence) ||
		!strings.Contains(v.Detail, "sha384 PCRs [16]") || !strings.Contains(v.Detail, "is the sha384 bank allocated") {
		t.Fatalf("a quote without the sha384 bank: %+v, %v", v, err)
	}
	if a, _ := svc.Status(ctx, h.id); !strings.Contains(a.Detail, "pcr_selection_mismatch") {
		t.Fatalf("status detail %q", a.Detail)
	}
}

// Versions, pins, the policy cache, deletion while in use and updates
// cover PCR policies as they cover the others; a new version naming other
// PCRs changes what the next challenge asks for, and the challenge issued
// before is refused (the agent asks again) rather than failing the host.
func TestPCRPolicyVersionsPinsUpdatesAndHistory(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(0)
	h := f.hosts[0]
	sha := tpm2.TPMAlgSHA256
	v16 := extendPCR(t, h.tpm, 16, "a", sha)[sha]
	v17 := readPCR(t, h.tpm, 17, sha)[sha]
	addPCRPolicy(t, svc, "pcr", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {v16}}}))

	// Kinds are kept apart.
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, RuntimePolicy: "pcr"}); refusalKind(err) != RefusedInvalid || !strings.Contains(err.Error(), "is a pcr policy") {
		t.Fatalf("a PCR policy as a runtime policy: %v", err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "rt"}); refusalKind(err) != RefusedInvalid || !strings.Contains(err.Error(), "is a runtime policy, not a pcr policy") {
		t.Fatalf("a runtime policy as a PCR policy: %v", err)
	}
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyPCR, pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {v16}}})); refusalKind(err) != RefusedConflict {
		t.Fatalf("a PCR policy under a runtime policy's name: %v", err)
	}
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "bad", PolicyPCR, []byte(`{"16": ["zz"]}`)); refusalKind(err) != RefusedInvalid || !strings.Contains(err.Error(), "field 16[0]") {
		t.Fatalf("a bad PCR policy: %v", err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "pcr@2"}); refusalKind(err) != RefusedInvalid || !strings.Contains(err.Error(), "no version 2") {
		t.Fatalf("a version not stored: %v", err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "pcr"}); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, true)
	mustAttest(t, svc, h, false)

	// In use: not deleted.
	if err := svc.DeletePolicy(ctx, "pcr"); refusalKind(err) != RefusedConflict || !strings.Contains(err.Error(), h.id) {
		t.Fatalf("deleting a PCR policy in use: %v", err)
	}

	// Version 2 names PCR 17 too. A challenge issued before it asked for
	// PCR 16 alone: its evidence is refused, and the next one asks for 17.
	old, err := svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	addPCRPolicy(t, svc, "pcr", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {v16}, 17: {v17}}}))
	if _, err := svc.Evidence(ctx, h.answer(t, old)); !isRefusal(err, RefusedConflict) {
		t.Fatalf("evidence for a challenge asking for the PCRs of version 1: %v, want a 409 refusal", err)
	}
	if a, _ := svc.Status(ctx, h.id); a.State != StateAttesting {
		t.Fatalf("after evidence for an old challenge: %s %s", a.State, a.Detail)
	}
	ch, err := svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha: {16, 17}}) {
		t.Fatalf("selection under version 2: %v", got)
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("under version 2: %+v, %v", v, err)
	}

	// Pinned to version 1: PCR 16 alone again, whatever comes later.
	if _, err := svc.Update(ctx, h.id, UpdateRequest{PCRPolicy: ptr("pcr@1")}); err != nil {
		t.Fatal(err)
	}
	addPCRPolicy(t, svc, "pcr", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {make([]byte, 32)}}}))
	ch, err = svc.Challenge(ctx, challengeFor(h))
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha: {16}}) {
		t.Fatalf("selection pinned to version 1: %v", got)
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("pinned to version 1 while version 3 allows nothing it has: %+v, %v", v, err)
	}

	// An agent keeps one policy at least.
	if _, err := svc.Update(ctx, h.id, UpdateRequest{PCRPolicy: ptr("")}); refusalKind(err) != RefusedInvalid || !strings.Contains(err.Error(), "at least one policy") {
		t.Fatalf("removing the only policy: %v", err)
	}
	// Following the latest (version 3) again: the host fails on its next
	// evidence.
	if _, err := svc.Update(ctx, h.id, UpdateRequest{PCRPolicy: ptr("pcr")}); err != nil {
		t.Fatal(err)
	}
	if v, err := h.attest(t, svc, false); err != nil || v.State != string(StateFailed) || !strings.Contains(v.Detail, "PCR 16 (sha256)") {
		t.Fatalf("under version 3: %+v, %v", v, err)
	}

	hist, err := svc.History(ctx, h.id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var counted, updates []string
	for _, e := range hist {
		switch e.Kind {
		case HistoryVerdicts:
			counted = append(counted, fmt.Sprintf("%s×%d", e.PCRPolicy, e.Verdicts.Count))
		case HistoryUpdated:
			updates = append(updates, e.PCRPolicy+": "+e.Detail)
		}
	}
	if want := []string{"pcr@1×2", "pcr@2×1", "pcr@1×1"}; !slices.Equal(counted, want) {
		t.Errorf("passing verdicts counted %v, want %v", counted, want)
	}
	if want := []string{"pcr@1: pcr policy pcr@2 → pcr@1 (pinned)", "pcr@3: pcr policy pcr@1 (pinned) → pcr@3"}; !slices.Equal(updates, want) {
		t.Errorf("updates %q, want %q", updates, want)
	}

	// Deleted once no agent uses it; the cache forgets every version.
	if err := svc.Remove(ctx, h.id); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeletePolicy(ctx, "pcr"); err != nil {
		t.Fatal(err)
	}
	svc.policies.mu.RLock()
	n := len(svc.policies.pcr)
	svc.policies.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d compiled PCR policies left after the deletion", n)
	}
}

// The same evidence gets the same verdict online and offline with a PCR
// policy too, next to boot and runtime policies. The PCR policy names
// SHA-1 PCR 0 and SHA-256 PCR 14 besides PCR 16: PCRs the boot log and
// IMA's boot_aggregate are checked over, quoted in part in the SHA-1 bank,
// which must not disturb those checks.
func TestSameVerdictOnlineAndOfflineWithAPCRPolicy(t *testing.T) {
	sha1, sha256 := tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, h *bootedHost)
		reason  Reason
		check   string
	}{
		{name: "pass"},
		{
			name:    "PCR 16 out of its list",
			prepare: func(t *testing.T, h *bootedHost) { extendPCR(t, h.tpm, 16, "tampered", sha256) },
			reason:  ReasonPolicyViolation, check: "pcr_not_allowed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newBootedHost(t)
			v16 := extendPCR(t, h.tpm, 16, "workload", sha1, sha256)
			v0 := readPCR(t, h.tpm, 0, sha1)[sha1]
			v14 := readPCR(t, h.tpm, 14, sha256)[sha256]
			var err error
			h.pol.PCR, err = pcrpolicy.New(map[tpm2.TPMAlgID]map[int][][]byte{
				sha1:   {0: {v0}, 16: {v16[sha1]}},
				sha256: {14: {v14}, 16: {v16[sha256]}},
			})
			if err != nil {
				t.Fatal(err)
			}
			a := Agent{ID: "h", BootPolicy: "boot", RuntimePolicy: "runtime", PCRPolicy: "pcr", State: StatePending}
			ask := Asked{Nonce: []byte("nonce for the same verdict test"), Selection: Selection(a, h.pol.PCR), WantIMA: true, WantBootLog: true}
			if tc.prepare != nil {
				tc.prepare(t, h)
			}
			ev := h.evidence(t, ask)
			on := new(Engine).Check(a, h.key, ask, ev, h.pol, time.Now())
			if on.Refused != nil {
				t.Fatalf("online refused the evidence: %v", on.Refused)
			}
			q, err := evidence.ParseQuote(ev.Quote, ev.Signature)
			if err != nil {
				t.Fatal(err)
			}
			pcrs := evidence.PCRValues{}
			for bank, v := range ev.PCRs {
				pcrs[tpm2.TPMAlgID(bank)] = v
			}
			off := verdict.Judge(verdict.Input{
				AK: h.key, Quote: q, Expect: evidence.Expect{Nonce: ev.Nonce, PCRs: pcrs}, PCRPolicy: h.pol.PCR,
				BootLog: ev.BootLog, BootPolicy: h.pol.Boot, IMALog: ev.IMA, RuntimePolicy: h.pol.Runtime,
			})
			if tc.check == "" {
				if on.Failure != nil || off.Verdict != nil || on.Agent.State != StateAttesting {
					t.Fatalf("online %v (state %s), offline %v; want both to pass", on.Failure, on.Agent.State, off.Verdict)
				}
				return
			}
			if on.Failure == nil || on.Failure.Reason != tc.reason || on.Failure.Check != tc.check || !strings.Contains(on.Failure.Detail, "PCR 16 (sha256)") {
				t.Fatalf("online: %v, want %s/%s", on.Failure, tc.reason, tc.check)
			}
			if off.Verdict == nil || !reflect.DeepEqual(off.Verdict, on.Failure) {
				t.Fatalf("offline verdict %v, online %v", off.Verdict, on.Failure)
			}
		})
	}
}

// The selection: boot PCRs (0-9, and 14 for shim's MOK lists) and PCR 10
// in SHA-256, the PCR policy's in its
// banks, banks in TPM order, each with a 3-byte bitmap; the marshalled
// form is TPML_PCR_SELECTION's.
func TestSelectionWithAPCRPolicy(t *testing.T) {
	p, err := pcrpolicy.New(map[tpm2.TPMAlgID]map[int][][]byte{
		tpm2.TPMAlgSHA384: {23: {make([]byte, 48)}},
		tpm2.TPMAlgSHA256: {16: {make([]byte, 32)}, 9: {make([]byte, 32)}},
		tpm2.TPMAlgSHA1:   {0: {make([]byte, 20)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sel := Selection(Agent{BootPolicy: "b", RuntimePolicy: "r", PCRPolicy: "p"}, p)
	want := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x01, 0, 0}},
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x47, 0x01}},
		{Hash: tpm2.TPMAlgSHA384, PCRSelect: []byte{0, 0, 0x80}},
	}}
	if !sameSelection(sel, want) {
		t.Fatalf("selection %+v", sel)
	}
	if got := marshalSelection(sel); string(got) != string(tpm2.Marshal(sel)) {
		t.Fatalf("marshalled %x, want %x", got, tpm2.Marshal(sel))
	}
	if got := Selection(Agent{PCRPolicy: "p"}, nil); len(got.PCRSelections) != 0 {
		t.Fatalf("a PCR policy that cannot be had selects %+v", got)
	}
	// What the host lacks, named.
	quoted := Selection(Agent{BootPolicy: "b", RuntimePolicy: "r"}, nil)
	if d := selectionDiff(sel, quoted); !strings.Contains(d, "sha1 PCRs [0] asked for, the quote has none of that bank") || !strings.Contains(d, "sha256 PCRs [16] asked for, not quoted") || !strings.Contains(d, "sha384 PCRs [23]") {
		t.Fatalf("diff %q", d)
	}
}

// A PCR policy added to an attesting host with a runtime policy may quote
// PCR 10 in a bank its IMA list was not verified in from its start (SHA-1
// here): the IMA check goes on in the banks it tracks, and the PCR policy
// judges the SHA-1 value.
func TestPCRPolicyAddedLaterQuotesPCR10InAnotherBank(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 4)
	svc := f.service(0)
	f.admitAll(t, svc)
	h := f.hosts[0]
	sha1 := tpm2.TPMAlgSHA1
	mustAttest(t, svc, h, true)
	h.appendGood(t, 1)
	mustAttest(t, svc, h, false)

	cur := readPCR(t, h.tpm, 10, sha1)[sha1]
	addPCRPolicy(t, svc, "pcr10", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha1: {10: {cur}}}))
	if _, err := svc.Update(ctx, h.id, UpdateRequest{PCRPolicy: ptr("pcr10")}); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, svc, h, false)
	h.appendGood(t, 1)
	v, err := h.attest(t, svc, false)
	if err != nil || v.State != string(StateFailed) || !strings.Contains(v.Detail, "PCR 10 (sha1)") {
		t.Fatalf("SHA-1 PCR 10 moved on: %+v, %v", v, err)
	}
}

// The policy cache keeps compiled PCR policies by name and by name@version
// as it keeps the others, and forgets them the same way: a new version
// stored elsewhere (a replica's refresh) is compiled at the next use.
func TestPolicyCacheCoversPCRPolicies(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 0, 0)
	svc := f.service(0)
	sha := tpm2.TPMAlgSHA256
	addPCRPolicy(t, svc, "p", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {make([]byte, 32)}}}))
	var c policyCache
	latest := c.resolve(ctx, f.st, Agent{PCRPolicy: "p"})
	pinned := c.resolve(ctx, f.st, Agent{PCRPolicy: "p", PCRPolicyVersion: 1})
	if latest.PCR == nil || latest.PCRVersion != 1 || pinned.PCR == nil || pinned.PCRVersion != 1 || latest.PCR == pinned.PCR {
		t.Fatalf("latest %+v, pinned %+v", latest, pinned)
	}
	if again, _, _ := c.pcrPolicy(ctx, f.st, Agent{PCRPolicy: "p"}); again != latest.PCR {
		t.Fatal("compiled again while cached")
	}
	// Version 2, stored by another replica, names PCR 17 too.
	v2 := addPCRPolicy(t, svc, "p", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {make([]byte, 32)}, 17: {make([]byte, 32)}}}))
	c.refresh([]Policy{v2})
	got := c.resolve(ctx, f.st, Agent{PCRPolicy: "p"})
	if got.PCRVersion != 2 || !slices.Equal(got.PCR.PCRs(sha), []int{16, 17}) {
		t.Fatalf("after a new version elsewhere: version %d, PCRs %v", got.PCRVersion, got.PCR.PCRs(sha))
	}
	if p, _, _ := c.pcrPolicy(ctx, f.st, Agent{PCRPolicy: "p", PCRPolicyVersion: 1}); p != pinned.PCR {
		t.Fatal("the pinned version was not kept")
	}
	// A policy of another kind under the name: not compiled as a PCR policy.
	if _, _, err := c.pcrPolicy(ctx, f.st, Agent{PCRPolicy: "rt"}); err == nil || !strings.Contains(err.Error(), "is a runtime policy") {
		t.Fatalf("a runtime policy as a PCR policy: %v", err)
	}
}

// A PCR policy that cannot be had (a stored version that does not compile)
// leaves its PCRs out of the challenge, here an empty selection, and the
// host fails for it once its quote proved where the evidence came from,
// as for a runtime or boot policy.
func TestPCRPolicyUnavailable(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(0)
	h := f.hosts[0]
	sha := tpm2.TPMAlgSHA256
	p := addPCRPolicy(t, svc, "p", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{sha: {16: {make([]byte, 32)}}}))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "p"}); err != nil {
		t.Fatal(err)
	}
	// Stored behind the service's back, unchecked.
	p.Version, p.Body = 2, []byte(`{"16": ["not hex"]}`)
	if err := f.st.CreatePolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	svc.policies.forget("p")
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); len(got) != 0 {
		t.Fatalf("selection %v, want none", got)
	}
	v, err := svc.Evidence(ctx, h.answer(t, ch))
	if err != nil || v.State != string(StateFailed) || v.Reason != string(ReasonPolicyViolation) || !strings.Contains(v.Detail, `pcr policy "p"`) {
		t.Fatalf("%+v, %v", v, err)
	}
	if a, _ := svc.Status(ctx, h.id); !strings.Contains(a.Detail, "pcr_policy_unavailable") {
		t.Fatalf("status %q", a.Detail)
	}
}
