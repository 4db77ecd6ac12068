package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

// runMsg is run, with the error's message (what vigil prints on standard
// error) after the standard output.
func runMsg(t *testing.T, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, hoistFlags(app, append([]string{"vigil"}, args...)))
	if err != nil {
		fmt.Fprintf(&out, "%v\n", err)
	}
	return out.String() + errOut.String(), exitCode(err)
}

// `vigil quote verify --pcr-policy FILE` holds the quoted PCR values to a
// PCR policy with the verifier's pipeline: a pass, a value out of its list
// (exit 1, pcr_not_allowed naming the PCR and its bank), a PCR the quote
// does not cover, and bad input (exit 2). The simulator's SHA-384 bank
// shows a policy naming banks besides SHA-256.
func TestQuoteVerifyPCRPolicy(t *testing.T) {
	tpm := evidencetest.Simulator(t).Conn()
	h := evidencetest.NewHost(t, tpm, evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256))
	h.ExtendDigests(t, 16, tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
		{HashAlg: tpm2.TPMAlgSHA256, Digest: evidencetest.Digest(crypto.SHA256, []byte("workload"))},
		{HashAlg: tpm2.TPMAlgSHA384, Digest: evidencetest.Digest(crypto.SHA384, []byte("workload"))},
	}})
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 0, 0x01}},
		{Hash: tpm2.TPMAlgSHA384, PCRSelect: []byte{0, 0, 0x01}},
	}}
	nonce := []byte("fresh nonce from the verifier 01")
	attest, sig := h.Quote(t, nonce, sel)
	pcrs := h.ReadPCRs(t, sel)
	dir := t.TempDir()
	args := []string{"--ak", writeFile(t, dir, "ak.pub", h.AKBytes), "--quote", writeFile(t, dir, "quote", attest),
		"--sig", writeFile(t, dir, "sig", sig), "--nonce", hex.EncodeToString(nonce), "--pcrs", writeJSON(t, dir, "pcrs.json", pcrs)}
	v256, v384 := pcrs[tpm2.TPMAlgSHA256][16], pcrs[tpm2.TPMAlgSHA384][16]

	vigilFormat := writeFile(t, dir, "vigil.json", fmt.Appendf(nil, `{"version": 1, "pcrs": {"sha256": {"16": ["%x"]}, "sha384": {"16": ["%s", "%x"]}}}`,
		v256, strings.Repeat("00", 48), v384))
	if r, code := verifyQuote(t, append(args, "--pcr-policy", vigilFormat)...); code != exitOK {
		t.Fatalf("allowed values: exit %d, %v", code, r.Failures)
	}
	// Keylime's tpm_policy, SHA-256 digests, mask and all.
	keylime := writeFile(t, dir, "keylime.json", fmt.Appendf(nil, `{"16": ["%s", "%s"], "mask": "0x10000"}`, strings.Repeat("00", 32), strings.Repeat("ff", 32)))
	r, code := verifyQuote(t, append(args, "--pcr-policy", keylime)...)
	if code != exitFailure || len(r.Failures) != 1 || r.Failures[0].Reason != "pcr_not_allowed" ||
		r.Failures[0].Detail != fmt.Sprintf("PCR 16 (sha256) = %x, not one of the 2 allowed values", v256) {
		t.Fatalf("a value out of its list: exit %d, %+v", code, r.Failures)
	}
	out, _ := run(t, context.Background(), append([]string{"quote", "verify"}, append(args, "--pcr-policy", keylime)...)...)
	if !strings.Contains(out, "FAIL pcr_not_allowed: PCR 16 (sha256)") {
		t.Errorf("text report:\n%s", out)
	}
	// A PCR the quote does not cover.
	other := writeFile(t, dir, "other.json", fmt.Appendf(nil, `{"version": 1, "pcrs": {"sha256": {"16": ["%x"], "17": ["%s"]}}}`, v256, strings.Repeat("ff", 32)))
	if r, code := verifyQuote(t, append(args, "--pcr-policy", other)...); code != exitFailure || len(r.Failures) != 1 || r.Failures[0].Reason != "pcr_not_quoted" ||
		!strings.Contains(r.Failures[0].Detail, "PCR 17 (sha256)") {
		t.Fatalf("a PCR not quoted: exit %d, %+v", code, r.Failures)
	}

	// Bad input: exit 2, naming the field.
	bad := writeFile(t, dir, "bad.json", []byte(`{"version": 1, "pcrs": {"sha256": {"24": ["00"]}}}`))
	out, code = runMsg(t, context.Background(), append([]string{"quote", "verify"}, append(args, "--pcr-policy", bad)...)...)
	if code != exitUsage || !strings.Contains(out, "pcrs.sha256.24") {
		t.Fatalf("a bad policy: exit %d\n%s", code, out)
	}
	noPCRs := []string{"--ak", args[1], "--quote", args[3], "--sig", args[5], "--pcr-policy", vigilFormat}
	if out, code := runMsg(t, context.Background(), append([]string{"quote", "verify"}, noPCRs...)...); code != exitUsage || !strings.Contains(out, "--pcr-policy needs --pcrs") {
		t.Fatalf("--pcr-policy without --pcrs: exit %d\n%s", code, out)
	}
}

// TestPCRPolicyEndToEnd drives a PCR policy through the CLI, on loopback,
// against swtpm: `tenant policy add --pcr` (Keylime's tpm_policy, then a
// new version in Vigil's format naming the SHA-1 bank too), `tenant agent
// add --pcr-policy`, steady attestation while PCR 16 holds an allowed
// value, then an extend of PCR 16 out of the list fails the host, naming
// PCR 16 and its bank.
func TestPCRPolicyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	h := newBootedSwtpmHost(t, dir)

	// The workload's measurement into PCR 16.
	tpm := h.TPM(t)
	d := sha256.Sum256([]byte("workload v1"))
	d1 := d[:20]
	if err := tpm.PCRExtend(ctx, 16, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:], tpm2.TPMAlgSHA1: d1}); err != nil {
		t.Fatal(err)
	}
	cur, err := tpm.PCRRead(ctx, evidence.Selection([]int{16}, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256))
	tpm.Close()
	if err != nil {
		t.Fatal(err)
	}

	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	regURL := startRegistrarCmd(t, tlsDir, h.Swtpm.CADir())
	verAddr := freeAddr(t)
	verURL := "https://" + verAddr
	startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", verAddr,
		"--registrar", regURL, "--interval", "300ms", "--min-interval", "100ms", "--log-level", "warn")
	waitHealthy(t, tlsDir, verURL)
	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}
	mustRun := func(args ...string) string {
		t.Helper()
		out, code := run(t, ctx, append(append([]string{}, tenant...), args...)...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}

	// Keylime's tpm_policy, as its tenant writes it: SHA-256 digests.
	keylime := writeFile(t, dir, "tpm_policy.json", fmt.Appendf(nil, `{"16": ["%x", "%s"], "mask": "0x10000"}`, cur[tpm2.TPMAlgSHA256][16], strings.Repeat("ff", 32)))
	var p verifier.Policy
	if err := json.Unmarshal([]byte(mustRun("policy", "add", "workload", "--pcr", keylime, "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Kind != verifier.PolicyPCR || p.Version != 1 {
		t.Fatalf("stored %+v", p)
	}
	if out, code := runMsg(t, ctx, append(append([]string{}, tenant...), "policy", "add", "bad", "--pcr", writeFile(t, dir, "bad.json", []byte(`{"16": ["abc"]}`)))...); code != exitUsage || !strings.Contains(out, "16[0]") {
		t.Fatalf("a bad PCR policy: exit %d\n%s", code, out)
	}
	if out, code := run(t, ctx, append(append([]string{}, tenant...), "policy", "add", "x", "--pcr", keylime, "--runtime", keylime)...); code != exitUsage {
		t.Fatalf("--pcr and --runtime: exit %d\n%s", code, out)
	}
	// A new version in Vigil's format, naming SHA-1 too.
	vigilFormat := writeFile(t, dir, "pcr.json", fmt.Appendf(nil, `{"version": 1, "pcrs": {"sha256": {"16": ["%x"]}, "sha1": {"16": ["%x"]}}}`,
		cur[tpm2.TPMAlgSHA256][16], cur[tpm2.TPMAlgSHA1][16]))
	mustRun("policy", "add", "workload", "--pcr", vigilFormat)
	if out := mustRun("policy", "list"); !strings.Contains(out, "workload") || !strings.Contains(out, "pcr") {
		t.Errorf("policy list:\n%s", out)
	}
	out := mustRun("agent", "add", "host-1", "--pcr-policy", "workload", "--identity", "spiffe://example.org/node/host-1", "--interval", "300ms")
	if !strings.Contains(out, "pcr_policy:       workload") {
		t.Errorf("agent add:\n%s", out)
	}

	startProcess(t, nil, "agent", "--data", filepath.Join(dir, "agent"), "--tpm", h.Swtpm.Spec(),
		"--registrar", regURL, "--verifier", verURL, "--ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--id", "host-1", "--boot-log", h.BootLog, "--ima-log", h.IMALog.Path, "--log-level", "warn")
	waitFor := func(what string, ok func(agentStatus) bool) agentStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var st agentStatus
			if err := json.Unmarshal([]byte(mustRun("agent", "status", "host-1", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s; last status %+v", what, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("three good attestations", func(s agentStatus) bool { return s.State == "attesting" && s.Attestations >= 3 })

	// PCR 16 extended again: out of the list.
	tpm = h.TPM(t)
	d = sha256.Sum256([]byte("not the workload"))
	if err := tpm.PCRExtend(ctx, 16, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:], tpm2.TPMAlgSHA1: d[:20]}); err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	st := waitFor("failure on PCR 16", func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "policy_violation" || !strings.Contains(st.Detail, "pcr_not_allowed") || !strings.Contains(st.Detail, "PCR 16 (sha") {
		t.Fatalf("failed with %q %q, want policy_violation naming PCR 16", st.Reason, st.Detail)
	}
	var hist verifier.HistoryView
	if err := json.Unmarshal([]byte(mustRun("agent", "history", "host-1", "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	var sawVerdicts, sawFailure bool
	for _, e := range hist.Entries {
		sawVerdicts = sawVerdicts || e.Kind == verifier.HistoryVerdicts && e.PCRPolicy == "workload@2"
		sawFailure = sawFailure || e.Kind == verifier.HistoryFailure && e.Check == "pcr_not_allowed"
	}
	if !sawVerdicts || !sawFailure {
		t.Fatalf("history lacks the verdicts under workload@2 or the failure:\n%s", mustRun("agent", "history", "host-1"))
	}
	if out := mustRun("agent", "history", "host-1"); !strings.Contains(out, "PCR policy workload@2") {
		t.Errorf("agent history does not name the PCR policy:\n%s", out)
	}
	// In use: not deleted.
	if out, code := runMsg(t, ctx, append(append([]string{}, tenant...), "policy", "delete", "workload")...); code == 0 || !strings.Contains(out, "host-1") {
		t.Fatalf("deleting a PCR policy in use: exit %d\n%s", code, out)
	}
}
