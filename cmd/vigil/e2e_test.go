package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent/agenttest"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
)

// e2eHost is a simulated host (agenttest.Host).
type e2eHost = agenttest.Host

// newBootedSwtpmHost is a host on a fresh swtpm whose logs and measured
// files live in dir, booted once.
func newBootedSwtpmHost(t *testing.T, dir string) *e2eHost {
	return agenttest.NewBootedSwtpmHost(t, dir)
}

type agentStatus struct {
	ID           string    `json:"agent_id"`
	State        string    `json:"state"`
	Reason       string    `json:"reason"`
	Detail       string    `json:"detail"`
	Attestations uint64    `json:"attestations"`
	LastAttested time.Time `json:"last_attested_at"`
	IMAEntries   uint64    `json:"ima_entries"`
}

// TestContinuousAttestationEndToEnd drives registrar, verifier and agent
// through the CLI, on loopback, against swtpm: admission with boot and
// runtime policies, steady attestation, a verifier restart, a file outside
// the runtime policy, a PCR 10 extend with no log entry, a reboot, and an
// agent that goes silent.
func TestContinuousAttestationEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	h := newBootedSwtpmHost(t, dir)

	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	regURL := startRegistrarCmd(t, tlsDir, h.Swtpm.CADir())
	verAddr := freeAddr(t)
	verURL := "https://" + verAddr
	verData := filepath.Join(dir, "verifier")
	verifierArgs := []string{"verifier", "--data", verData, "--tls-dir", tlsDir, "--listen", verAddr,
		"--registrar", regURL, "--interval", "300ms", "--min-interval", "100ms", "--log-level", "warn"}
	ver := startProcess(t, nil, verifierArgs...)
	waitHealthy(t, tlsDir, verURL)

	// Policies from the host's own known-good state.
	bootPol, runPol := filepath.Join(dir, "boot.json"), filepath.Join(dir, "runtime.json")
	if _, code := run(t, ctx, "policy", "create", "boot", "--boot-log", h.BootLog, "--out", bootPol); code != 0 {
		t.Fatal("policy create boot")
	}
	if _, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", h.IMALog.Path, "--out", runPol); code != 0 {
		t.Fatal("policy create runtime")
	}
	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}
	mustRun := func(args ...string) string {
		t.Helper()
		out, code := run(t, ctx, append(append([]string{}, tenant...), args...)...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	mustRun("policy", "add", "host-boot", "--boot", bootPol)
	mustRun("policy", "add", "host-runtime", "--runtime", runPol)
	mustRun("agent", "add", "host-1", "--boot-policy", "host-boot", "--runtime-policy", "host-runtime",
		"--identity", "spiffe://example.org/node/host-1", "--interval", "300ms")

	agentArgs := []string{"agent", "--data", filepath.Join(dir, "agent"), "--tpm", h.Swtpm.Spec(),
		"--registrar", regURL, "--verifier", verURL, "--ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--id", "host-1", "--boot-log", h.BootLog, "--ima-log", h.IMALog.Path, "--log-level", "warn"}
	ag := startProcess(t, nil, agentArgs...)

	status := func() agentStatus {
		t.Helper()
		var st agentStatus
		if err := json.Unmarshal([]byte(mustRun("agent", "status", "host-1", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor := func(what string, limit time.Duration, ok func(agentStatus) bool) agentStatus {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			st := status()
			if ok(st) {
				t.Logf("%s: %s %s attestations=%d ima_entries=%d %s", what, st.State, st.Reason, st.Attestations, st.IMAEntries, st.Detail)
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; last status %+v", what, limit, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Steady state: attesting across at least five attestations.
	st := waitFor("five good attestations", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= 5
	})
	if st.IMAEntries != 4 {
		t.Errorf("ima_entries %d, want 4 (boot_aggregate and three files)", st.IMAEntries)
	}

	// A verifier restart keeps agents, policies and state; attestation resumes.
	ver.Stop()
	ver = startProcess(t, nil, verifierArgs...)
	waitHealthy(t, tlsDir, verURL)
	before := st.Attestations
	waitFor("attestation after a verifier restart", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+3
	})
	if out := mustRun("policy", "list"); !strings.Contains(out, "host-runtime") || !strings.Contains(out, "host-boot") {
		t.Errorf("policies after restart:\n%s", out)
	}

	// A file outside the runtime policy fails the host within two intervals
	// (plus the time the measurement takes to reach a quote).
	tpm := h.TPM(t)
	bad := h.Measure(t, tpm, "not-in-policy")
	tpm.Close()
	measuredAt := time.Now()
	st = waitFor("failure on a file outside the policy", 10*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if took := time.Since(measuredAt); took > 2*300*time.Millisecond+time.Second {
		t.Logf("detected after %s", took)
	}
	if st.Reason != "policy_violation" || !strings.Contains(st.Detail, bad) {
		t.Fatalf("failed with %q %q, want policy_violation naming %s", st.Reason, st.Detail, bad)
	}

	// Allow the file in a new policy version and readmit: attesting again.
	allowed := agenttest.AllowFile(t, runPol, bad)
	mustRun("policy", "add", "host-runtime", "--runtime", allowed)
	mustRun("agent", "readmit", "host-1")
	before = st.Attestations
	st = waitFor("attestation after readmission", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations > before
	})
	if st.IMAEntries != 5 {
		t.Errorf("ima_entries %d after readmission, want 5 (the list replayed from entry 0)", st.IMAEntries)
	}

	// PCR 10 extended with nothing in the log: the log no longer replays to
	// the quote.
	tpm = h.TPM(t)
	d := sha256.Sum256([]byte("unlogged"))
	if err := tpm.PCRExtend(ctx, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:], tpm2.TPMAlgSHA1: d[:20]}); err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	st = waitFor("failure on an unlogged PCR 10 extend", 10*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "invalid_evidence" {
		t.Fatalf("failed with %q %q, want invalid_evidence", st.Reason, st.Detail)
	}

	// A reboot: the TPM resets, the host boots and measures afresh; after
	// readmission the verifier takes the new boot log and IMA from entry 0.
	if err := h.Swtpm.Restart(); err != nil {
		t.Fatal(err)
	}
	h.Boot(t)
	mustRun("agent", "readmit", "host-1")
	before = st.Attestations
	st = waitFor("attestation after a reboot", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+2
	})
	if st.IMAEntries != 4 {
		t.Errorf("ima_entries %d after the reboot, want 4 (the new boot's list)", st.IMAEntries)
	}

	// The agent dies: liveness fails it after three intervals.
	ag.Kill()
	st = waitFor("liveness timeout", 10*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "liveness_timeout" {
		t.Fatalf("failed with %q, want liveness_timeout", st.Reason)
	}

	// The history tells it all, in order, with who did what.
	var hist verifier.HistoryView
	if err := json.Unmarshal([]byte(mustRun("agent", "history", "host-1", "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind   verifier.HistoryKind
		detail string
	}{
		{verifier.HistoryAdmitted, "vigil-admin"},
		{verifier.HistoryState, "pending→attesting"},
		{verifier.HistoryFailure, bad},
		{verifier.HistoryRevocation, "dev.vigil.agent.revoked"},
		{verifier.HistoryReadmitted, "vigil-admin"},
		{verifier.HistoryFailure, "invalid_evidence"},
		{verifier.HistoryReadmitted, "vigil-admin"},
		{verifier.HistoryFailure, "liveness_timeout"},
	}
	i := 0
	for _, h := range hist.Entries {
		if i == len(want) {
			break
		}
		line := fmt.Sprintf("%s %s %s→%s %s %s", h.Operator, h.Reason, h.From, h.To, h.Detail, h.Check)
		if h.IMA != nil {
			line += " " + h.IMA.Path
		}
		if h.Event != nil {
			line += " " + h.Event.Type
		}
		if h.Kind == want[i].kind && strings.Contains(line, want[i].detail) {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("history lacks %s (%s) in order:\n%s", want[i].kind, want[i].detail, mustRun("agent", "history", "host-1"))
	}
	if out := mustRun("agent", "history", "host-1", "--since", "1h"); !strings.Contains(out, "IMA entry") || !strings.Contains(out, bad) {
		t.Errorf("agent history names no failing IMA entry:\n%s", out)
	}
}
