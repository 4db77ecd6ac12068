package verifier

import (
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

func TestTransitions(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a := admitted(AdmitRequest{AgentID: "h", RuntimePolicy: "rt", Identities: []string{"spiffe://x/h"}}, t0)
	if a.State != StatePending || !a.AdmittedAt.Equal(t0) {
		t.Fatalf("admitted: %+v", a)
	}
	a.Clock, a.IMAEntries, a.BootChecked = &evidence.ClockInfo{ResetCount: 1}, 7, true
	a = a.passed(t0.Add(time.Second))
	if a.State != StateAttesting || a.Attestations != 1 || !a.LastAttestedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("passed: %+v", a)
	}
	if _, _, ok := a.readmitted(t0); ok {
		t.Fatal("an attesting agent was readmitted")
	}

	f := Fail(ReasonLivenessTimeout, "no_evidence", "silent")
	failed, evs := a.failed(f, t0.Add(time.Minute))
	if failed.State != StateFailed || failed.Reason != ReasonLivenessTimeout || !failed.FailedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("failed: %+v", failed)
	}
	if len(evs) != 1 || evs[0].Type != revocation.TypeRevoked || evs[0].Data.Reason != string(ReasonLivenessTimeout) || evs[0].Data.Identities[0] != "spiffe://x/h" {
		t.Fatalf("failed raised %+v, want one revocation naming the reason and identities", evs)
	}

	back, evs := failed.untrusted().passed(t0.Add(2 * time.Minute)).recovered(t0.Add(2 * time.Minute))
	if back.State != StateAttesting || !back.FailedAt.IsZero() || back.Clock != nil || back.IMAEntries != 0 {
		t.Fatalf("recovered: %+v", back)
	}
	if len(evs) != 1 || evs[0].Type != revocation.TypeReadmitted {
		t.Fatalf("recovered raised %+v, want a readmission", evs)
	}

	re, evs, ok := failed.readmitted(t0.Add(time.Hour))
	if !ok || re.State != StatePending || re.Reason != "" || !re.FailedAt.IsZero() || !re.AdmittedAt.Equal(t0.Add(time.Hour)) ||
		re.Clock != nil || re.BootChecked || re.IMAEntries != 0 {
		t.Fatalf("readmitted: %+v", re)
	}
	if len(evs) != 1 || evs[0].Type != revocation.TypeReadmitted {
		t.Fatalf("readmitted raised %+v", evs)
	}
}
