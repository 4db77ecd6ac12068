package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, b)
}

type report struct {
	OK       bool                `json:"ok"`
	Failures []*evidence.Failure `json:"failures"`
	Clock    *evidence.ClockInfo `json:"clock"`
	Replayed evidence.PCRValues  `json:"pcrs_replayed"`
	Boot     *bootlog.BootState  `json:"boot"`
	IMA      *struct {
		Entries   uint64 `json:"entries"`
		Committed uint64 `json:"committed"`
	} `json:"ima"`
	IMAPolicyApplied *bool `json:"ima_policy_applied"`
}

func verifyQuote(t *testing.T, args ...string) (report, int) {
	t.Helper()
	out, code := run(t, context.Background(), append([]string{"quote", "verify", "--json"}, args...)...)
	var r report
	if code != exitUsage {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out)
		}
		if r.OK != (code == exitOK) {
			t.Errorf("ok=%v but exit %d", r.OK, code)
		}
	}
	return r, code
}

func reasonsOf(r report) []evidence.Reason {
	var out []evidence.Reason
	for _, f := range r.Failures {
		out = append(out, f.Reason)
	}
	return out
}

// measuredHost is a simulator TPM into which a real machine's UEFI log was
// measured event by event, so that the TPM's PCRs 0-9 are what that
// machine's were; its quote, AK and PCR values are written to files.
type measuredHost struct {
	dir, ak, quote, sig, pcrs, bootLog string
	nonce                              []byte
}

func newMeasuredHost(t *testing.T, rawLog []byte) measuredHost {
	t.Helper()
	tpm := evidencetest.Simulator(t).Conn()
	h := evidencetest.NewHost(t, tpm, evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256))
	l, err := bootlog.Parse(rawLog)
	if err != nil {
		t.Fatal(err)
	}
	ev1, err := l.Events(tpm2.TPMAlgSHA1)
	if err != nil {
		t.Fatal(err)
	}
	ev256, err := l.Events(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ev1 {
		if ev1[i].Type == "EV_NO_ACTION" || ev1[i].Type == "No Action" {
			continue
		}
		d1, _ := hex.DecodeString(ev1[i].Digest)
		d256, _ := hex.DecodeString(ev256[i].Digest)
		h.ExtendDigests(t, ev1[i].PCR, tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA1, Digest: d1}, {HashAlg: tpm2.TPMAlgSHA256, Digest: d256},
		}})
	}
	sel := evidence.Selection([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14}, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256)
	m := measuredHost{dir: t.TempDir(), nonce: []byte("fresh nonce from the verifier 01")}
	attest, sig := h.Quote(t, m.nonce, sel)
	m.ak = writeFile(t, m.dir, "ak.pub", h.AKBytes)
	m.quote = writeFile(t, m.dir, "quote.bin", attest)
	m.sig = writeFile(t, m.dir, "quote.sig", sig)
	m.pcrs = writeJSON(t, m.dir, "pcrs.json", h.ReadPCRs(t, sel))
	m.bootLog = writeFile(t, m.dir, "binary_bios_measurements", rawLog)
	return m
}

func (m measuredHost) args(extra ...string) []string {
	return append([]string{"--ak", m.ak, "--quote", m.quote, "--sig", m.sig, "--nonce", hex.EncodeToString(m.nonce), "--pcrs", m.pcrs}, extra...)
}

// TestQuoteVerifyBootChain runs the whole offline check on a TPM quote over
// a real machine's boot: quote, log replay, boot policy created by `vigil
// policy create boot`, and the forgeries each caught with its own reason.
func TestQuoteVerifyBootChain(t *testing.T) {
	m := newMeasuredHost(t, testdata.Rhel8EventLog)

	policy := filepath.Join(m.dir, "boot-policy.json")
	if _, code := run(t, context.Background(), "policy", "create", "boot", "--boot-log", m.bootLog, "--out", policy); code != exitOK {
		t.Fatalf("policy create boot: exit %d", code)
	}
	r, code := verifyQuote(t, m.args("--boot-log", m.bootLog, "--boot-policy", policy)...)
	if code != exitOK {
		t.Fatalf("genuine evidence: exit %d, failures %v", code, r.Failures)
	}
	if r.Boot == nil || !r.Boot.SecureBoot || len(r.Replayed[tpm2.TPMAlgSHA256]) < 10 || r.Clock == nil {
		t.Fatalf("report lacks boot state, replayed PCRs or clock: %+v", r)
	}

	// A policy that no longer allows the boot loader.
	var pol map[string]any
	b, _ := os.ReadFile(policy)
	json.Unmarshal(b, &pol)
	digests := pol["boot_digests"].([]any)
	pol["boot_digests"] = digests[:len(digests)-1]
	strict := writeJSON(t, m.dir, "strict-policy.json", pol)

	raw := testdata.Rhel8EventLog
	forged := filepath.Join(m.dir, "forged-log")
	os.WriteFile(forged, dropLastPCR4App(t, raw), 0o600)
	otherNonce := "00" + hex.EncodeToString(m.nonce[1:])
	pcrs := map[string]map[string]string{}
	b, _ = os.ReadFile(m.pcrs)
	json.Unmarshal(b, &pcrs)
	pcrs["sha256"]["7"] = strings.Repeat("00", 32)
	alteredPCRs := writeJSON(t, m.dir, "altered-pcrs.json", pcrs)

	for _, tc := range []struct {
		name string
		args []string
		want evidence.Reason
	}{
		{"boot loader not in policy", m.args("--boot-log", m.bootLog, "--boot-policy", strict), "boot_digest_not_allowed"},
		{"dropped boot event", m.args("--boot-log", forged), bootlog.ReasonReplayMismatch},
		{"wrong nonce", []string{"--ak", m.ak, "--quote", m.quote, "--sig", m.sig, "--nonce", otherNonce, "--pcrs", m.pcrs}, evidence.ReasonNonceMismatch},
		{"altered PCR 7", []string{"--ak", m.ak, "--quote", m.quote, "--sig", m.sig, "--nonce", hex.EncodeToString(m.nonce), "--pcrs", alteredPCRs}, evidence.ReasonPCRDigestMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, code := verifyQuote(t, tc.args...)
			if code != exitFailure || !slices.Contains(reasonsOf(r), tc.want) {
				t.Fatalf("exit %d, reasons %v; want exit 1 with %s", code, reasonsOf(r), tc.want)
			}
		})
	}
}

// dropLastPCR4App removes the last PCR 4 event from a crypto-agile log.
func dropLastPCR4App(t *testing.T, raw []byte) []byte {
	t.Helper()
	l, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := l.Events(tpm2.TPMAlgSHA256)
	last := -1
	for i, e := range ev {
		if e.PCR == 4 && e.Type != "EV_SEPARATOR" && e.Type != "Separator" {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("no PCR 4 event")
	}
	// Rebuild by walking the raw log: header event, then agile events.
	le := func(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24 }
	off := 32 + le(raw[28:])
	spec := raw[32:off]
	sizes := map[int]int{}
	for i := range le(spec[24:]) {
		sizes[int(spec[28+4*i])|int(spec[29+4*i])<<8] = int(spec[30+4*i]) | int(spec[31+4*i])<<8
	}
	for i := 0; off < len(raw); i++ {
		start := off
		n := le(raw[off+8:])
		off += 12
		for range n {
			off += 2 + sizes[int(raw[off])|int(raw[off+1])<<8]
		}
		off += 4 + le(raw[off:])
		if i == last {
			return slices.Concat(raw[:start], raw[off:])
		}
	}
	t.Fatal("event not found")
	return nil
}

// TestQuoteVerifyRealTPM verifies go-attestation's Windows GCP quote and its
// boot log end to end through the CLI.
func TestQuoteVerifyRealTPM(t *testing.T) {
	rq := evidencetest.WindowsGCPQuote(t)
	dir := t.TempDir()
	args := []string{
		"--ak", writeFile(t, dir, "ak.tpmt", rq.AK),
		"--quote", writeFile(t, dir, "quote", rq.Attest),
		"--sig", writeFile(t, dir, "sig", rq.Sig),
		"--pcrs", writeJSON(t, dir, "pcrs.json", rq.PCRs),
		"--boot-log", writeFile(t, dir, "log", rq.BootLog),
	}
	r, code := verifyQuote(t, args...)
	if code != exitOK || len(r.Replayed[tpm2.TPMAlgSHA1]) == 0 {
		t.Fatalf("exit %d, failures %v, replayed %v", code, r.Failures, r.Replayed)
	}
}

// TestQuoteVerifyIMA checks the IMA list through the CLI: its replay must
// reach the quoted PCR 10 and every entry must meet the runtime policy.
func TestQuoteVerifyIMA(t *testing.T) {
	logFile := testenv.Data(t, "ima", "keylime-ima-log-sha256")
	imaLog, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ima.Replay(imaLog, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1, ima.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// A Go-signed quote stands in for a TPM here: no TPM can be driven to a
	// chosen PCR 10, and the quote check itself is tested on real TPMs.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sel := evidence.Selection([]int{10}, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256)
	pcrs := evidence.PCRValues{}
	pcrs.Set(tpm2.TPMAlgSHA1, 10, rep.PCR["sha1"])
	pcrs.Set(tpm2.TPMAlgSHA256, 10, rep.PCR["sha256"])
	nonce := []byte("0123456789abcdef")
	attest, sig, err := evidencetest.SoftQuote(key, tpm2.TPMAlgSHA256, nonce, evidence.ClockInfo{Clock: 42}, sel, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "runtime-policy.json")
	if _, code := run(t, context.Background(), "policy", "create", "runtime", "--ima-log", logFile, "--out", good); code != exitOK {
		t.Fatalf("policy create runtime: exit %d", code)
	}
	base := []string{
		"--ak", writeFile(t, dir, "ak", tpm2.Marshal(evidencetest.SoftPublic(key, tpm2.TPMAlgSHA256))),
		"--quote", writeFile(t, dir, "quote", attest), "--sig", writeFile(t, dir, "sig", sig),
		"--nonce", hex.EncodeToString(nonce), "--pcrs", writeJSON(t, dir, "pcrs.json", pcrs), "--ima-log", logFile,
	}
	r, code := verifyQuote(t, append(base, "--runtime-policy", good)...)
	if code != exitOK || r.IMA == nil || r.IMA.Committed != r.IMA.Entries || r.IMA.Entries == 0 {
		t.Fatalf("exit %d, failures %v, ima %+v", code, r.Failures, r.IMA)
	}
	// Signed, it is read only with a key that verifies it.
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, pub := writeKeyPair(t, dir, "policy", ecKey, &ecKey.PublicKey)
	_, otherPub := writeKeyPair(t, dir, "other", other, &other.PublicKey)
	signed := filepath.Join(dir, "runtime-policy.signed.json")
	if _, code := run(t, context.Background(), "policy", "sign", "--key", priv, good, "--out", signed); code != exitOK {
		t.Fatalf("policy sign: exit %d", code)
	}
	if r, code := verifyQuote(t, append(base, "--runtime-policy", signed, "--policy-key", pub)...); code != exitOK || r.IMA == nil || r.IMA.Entries == 0 {
		t.Fatalf("signed policy: exit %d, failures %v", code, r.Failures)
	}
	for _, keyArgs := range [][]string{nil, {"--policy-key", otherPub}} {
		if _, code := verifyQuote(t, append(append(base, "--runtime-policy", signed), keyArgs...)...); code != exitUsage {
			t.Fatalf("signed policy with keys %v: exit %d, want 2", keyArgs, code)
		}
	}
	r, code = verifyQuote(t, append(base, "--runtime-policy", testenv.Data(t, "policy", "keylime-policy-sha256.json"))...)
	if code != exitFailure || len(r.Failures) == 0 || !strings.HasPrefix(string(r.Failures[0].Reason), "ima_") {
		t.Fatalf("foreign policy: exit %d, failures %v", code, r.Failures)
	}
	if r.IMAPolicyApplied == nil || !*r.IMAPolicyApplied {
		t.Errorf("a policy was applied, the report says %v", r.IMAPolicyApplied)
	}

	// Without a policy the list is only replayed against the quoted PCR 10,
	// and the report says so.
	r, code = verifyQuote(t, base...)
	if code != exitOK || r.IMA == nil || r.IMA.Committed != r.IMA.Entries || r.IMA.Entries == 0 {
		t.Fatalf("no policy: exit %d, failures %v, ima %+v", code, r.Failures, r.IMA)
	}
	if r.IMAPolicyApplied == nil || *r.IMAPolicyApplied {
		t.Errorf("no policy applied, the report says %v", r.IMAPolicyApplied)
	}
	out, code := run(t, context.Background(), append([]string{"quote", "verify"}, base...)...)
	if code != exitOK || !strings.Contains(out, "no policy applied") {
		t.Errorf("text report, exit %d:\n%s", code, out)
	}
	// A quote over another PCR 10: the list does not replay to it.
	moved := evidence.PCRValues{}
	// (Not zeros: that is PCR 10 before the first entry, a quote the list
	// is ahead of.)
	moved.Set(tpm2.TPMAlgSHA1, 10, bytes.Repeat([]byte{0x5a}, 20))
	moved.Set(tpm2.TPMAlgSHA256, 10, bytes.Repeat([]byte{0x5a}, 32))
	attest, sig, err = evidencetest.SoftQuote(key, tpm2.TPMAlgSHA256, nonce, evidence.ClockInfo{Clock: 43}, sel, moved)
	if err != nil {
		t.Fatal(err)
	}
	r, code = verifyQuote(t, "--ak", base[1], "--quote", writeFile(t, dir, "quote2", attest), "--sig", writeFile(t, dir, "sig2", sig),
		"--nonce", hex.EncodeToString(nonce), "--pcrs", writeJSON(t, dir, "pcrs2.json", moved), "--ima-log", logFile)
	if code != exitFailure || !slices.Contains(reasonsOf(r), "ima_pcr10-mismatch") {
		t.Fatalf("list against another PCR 10: exit %d, failures %v", code, r.Failures)
	}
	// A list that does not parse is bad input, as before.
	if _, code := verifyQuote(t, append(base[:len(base)-1:len(base)-1], writeFile(t, dir, "garbage-ima", []byte("10 zz ima-ng nonsense\n")))...); code != exitUsage {
		t.Fatalf("garbage IMA list: exit %d, want 2", code)
	}
}

func TestEventlogCommands(t *testing.T) {
	oracleFile := testenv.Data(t, "uefi", "expected-pcrs-by-tpm2_eventlog.json")
	b, err := os.ReadFile(oracleFile)
	if err != nil {
		t.Fatal(err)
	}
	var oracle map[string]map[string]map[string]string
	if err := json.Unmarshal(b, &oracle); err != nil {
		t.Fatal(err)
	}
	log := testenv.Data(t, "uefi", "rust-keylime-uefi_log.bin")
	out, code := run(t, context.Background(), "eventlog", "replay", log, "--bank", "sha256", "--json")
	if code != exitOK {
		t.Fatalf("replay: exit %d", code)
	}
	var rep struct {
		PCRs   map[string]string `json:"pcrs"`
		Events int               `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	want := oracle["rust-keylime-uefi_log.bin"]["sha256"]
	for i, v := range want {
		if rep.PCRs[i] != v {
			t.Errorf("PCR %s: %s, tpm2_eventlog says %s", i, rep.PCRs[i], v)
		}
	}
	if rep.Events == 0 {
		t.Error("no events counted")
	}

	out, code = run(t, context.Background(), "eventlog", "show", log, "--json")
	var show struct {
		Events []bootlog.Event `json:"events"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &show) != nil || len(show.Events) != rep.Events {
		t.Fatalf("show: exit %d, %d events (replay counted %d)", code, len(show.Events), rep.Events)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"bogus log", []string{"eventlog", "replay", testenv.Data(t, "uefi", "keylime-binary_bios_measurements-bogus")}},
		{"bogus log show", []string{"eventlog", "show", testenv.Data(t, "uefi", "keylime-binary_bios_measurements-bogus"), "--json"}},
		{"missing bank", []string{"eventlog", "replay", log, "--bank", "sha384"}},
		{"unknown bank", []string{"eventlog", "replay", log, "--bank", "md5"}},
		{"no file", []string{"eventlog", "replay", filepath.Join(t.TempDir(), "absent")}},
		{"bogus boot log for a policy", []string{"policy", "create", "boot", "--boot-log", testenv.Data(t, "uefi", "keylime-binary_bios_measurements-bogus")}},
		{"quote without AK", []string{"quote", "verify", "--quote", log, "--sig", log}},
		{"policy without log", []string{"quote", "verify", "--ak", log, "--quote", log, "--sig", log, "--boot-policy", log}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, code := run(t, context.Background(), tc.args...); code != exitUsage {
				t.Fatalf("exit %d, want %d", code, exitUsage)
			}
		})
	}
}

func TestQuoteVerifyBadInput(t *testing.T) {
	rq := evidencetest.WindowsGCPQuote(t)
	dir := t.TempDir()
	ak := writeFile(t, dir, "ak", rq.AK)
	q := writeFile(t, dir, "q", rq.Attest)
	s := writeFile(t, dir, "s", rq.Sig)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"AK garbage", []string{"--ak", writeFile(t, dir, "bad-ak", []byte("not a key")), "--quote", q, "--sig", s}},
		{"truncated quote", []string{"--ak", ak, "--quote", writeFile(t, dir, "short", rq.Attest[:20]), "--sig", s}},
		{"nonce not hex", []string{"--ak", ak, "--quote", q, "--sig", s, "--nonce", "xyz"}},
		{"PCR wrong length", []string{"--ak", ak, "--quote", q, "--sig", s, "--pcrs", writeFile(t, dir, "p.json", []byte(`{"sha1":{"0":"abcd"}}`))}},
		{"boot log garbage", []string{"--ak", ak, "--quote", q, "--sig", s, "--pcrs", writeJSON(t, dir, "pcrs.json", rq.PCRs), "--boot-log", writeFile(t, dir, "l", []byte("nonsense"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, code := verifyQuote(t, tc.args...); code != exitUsage {
				t.Fatalf("exit %d, want %d", code, exitUsage)
			}
		})
	}
}
