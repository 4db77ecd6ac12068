package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vigil-attest/vigil/agent/agenttest"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
)

// browser is a headless Chromium driven by chromedp, closed with the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := testenv.RequireBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		// The dashboard's certificate is from the deployment's private CA.
		chromedp.IgnoreCertErrors,
		// Root in a container has no user namespace to sandbox into.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return ctx
}

// serveWebhooks serves rec over TLS with the deployment's server
// certificate, so the verifier trusts it with --webhook-ca ca.crt.
func serveWebhooks(t *testing.T, tlsDir string, rec *webhookReceiver) string {
	t.Helper()
	cfg, err := tlsutil.ServerConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(rec)
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/hooks/vigil"
}

// TestDashboardInABrowser drives the dashboard in headless Chromium: after
// a tamper, the fleet page shows the host failed with the failing file and
// its revocation delivered, the host page shows the failing entry and the
// timeline, and the fleet page follows a readmission live, without a
// reload.
func TestDashboardInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bctx := browser(t)
	ctx := context.Background()
	dir := t.TempDir()
	h := newBootedSwtpmHost(t, dir)
	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	rec := &webhookReceiver{key: []byte("0123456789abcdef0123456789abcdef")}
	hookURL := serveWebhooks(t, tlsDir, rec)
	secret := filepath.Join(dir, "webhook.secret")
	os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString(rec.key)), 0o600)
	regURL := startRegistrarCmd(t, tlsDir, h.Swtpm.CADir())
	verAddr := freeAddr(t)
	verURL := "https://" + verAddr
	startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", verAddr,
		"--registrar", regURL, "--interval", "500ms", "--min-interval", "100ms", "--log-level", "warn",
		"--webhook", hookURL, "--webhook-secret-file", secret, "--webhook-ca", filepath.Join(tlsDir, tlsutil.CACert))
	waitHealthy(t, tlsDir, verURL)
	runPol := filepath.Join(dir, "runtime.json")
	if _, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", h.IMALog.Path, "--out", runPol); code != 0 {
		t.Fatal("policy create runtime")
	}
	tenant := func(args ...string) string {
		t.Helper()
		out, code := run(t, ctx, append([]string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}, args...)...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	state := func() string {
		var st agentStatus
		json.Unmarshal([]byte(tenant("agent", "status", "host-1", "--json")), &st)
		return st.State
	}
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for state() != want {
			if time.Now().After(deadline) {
				t.Fatalf("host-1 not %s within 30s", want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	tenant("policy", "add", "host-runtime", "--runtime", runPol)
	tenant("agent", "add", "host-1", "--runtime-policy", "host-runtime", "--interval", "500ms")
	startProcess(t, nil, "agent", "--data", filepath.Join(dir, "agent"), "--tpm", h.Spec(),
		"--registrar", regURL, "--verifier", verURL, "--ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--id", "host-1", "--ima-log", h.IMALog.Path, "--boot-log", h.BootLog, "--log-level", "warn")
	waitState("attesting")

	dashAddr := freeAddr(t)
	startProcess(t, nil, "dashboard", "--listen", dashAddr, "--tls-dir", tlsDir, "--verifier", verURL, "--refresh", "500ms", "--log-level", "warn")
	waitHealthy(t, tlsDir, "https://"+dashAddr)

	// A tamper.
	tpm := h.TPM(t)
	bad := h.Measure(t, tpm, "not-in-policy")
	tpm.Close()
	waitState("failed")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, got := rec.snapshot(); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revocation was not delivered to the webhook")
		}
		time.Sleep(100 * time.Millisecond)
	}

	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(c, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	do(
		chromedp.Navigate("https://"+dashAddr+"/"),
		chromedp.WaitVisible(`#hosts tr.failed[data-agent="host-1"]`),
		// The delivery status is written when the webhook answered; the
		// page catches up live.
		chromedp.WaitVisible(`#revocations .delivery.delivered`),
	)
	hostRow, revocations := text(`#hosts tr[data-agent="host-1"]`), text(`#revocations`)
	for _, want := range []string{"failed", "policy_violation", bad} {
		if !strings.Contains(hostRow, want) {
			t.Errorf("fleet page row for host-1 lacks %q: %q", want, hostRow)
		}
	}
	if !strings.Contains(revocations, "dev.vigil.agent.revoked") || !strings.Contains(revocations, "delivered to "+hookURL) {
		t.Errorf("fleet page revocations: %q", revocations)
	}
	do(chromedp.Click(`#hosts tr[data-agent="host-1"] a`), chromedp.WaitVisible(`#failing`))
	failing, timeline := text(`#failing`), text(`#timeline`)
	if !strings.Contains(failing, bad) {
		t.Errorf("host page's failing entry: %q, want %s", failing, bad)
	}
	for _, want := range []string{"failure", "revocation", "admitted", "by vigil-admin", "attesting → failed"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("host page's timeline lacks %q:\n%s", want, timeline)
		}
	}

	// make screenshots: the pages as they show a failed host.
	if dir := os.Getenv("VIGIL_SCREENSHOTS"); dir != "" {
		shot := func() []byte {
			b, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		host := shot()
		do(chromedp.Navigate("https://"+dashAddr+"/"), chromedp.WaitVisible(`#revocations .delivery.delivered`))
		fleet := shot()
		os.WriteFile(filepath.Join(dir, "dashboard-fleet.png"), fleet, 0o644)
		os.WriteFile(filepath.Join(dir, "dashboard-host.png"), host, 0o644)
	}

	// A named operator, alice, with an admin certificate of her own,
	// allows the file in a new policy version and readmits the host: the
	// fleet page follows, turning the host back to attesting without a
	// reload.
	aliceDir := filepath.Join(dir, "alice")
	os.MkdirAll(aliceDir, 0o700)
	if _, code := run(t, ctx, "ca", "issue-admin", "alice", "--tls-dir", tlsDir, "--out", aliceDir); code != 0 {
		t.Fatal("ca issue-admin alice")
	}
	// vigil tenant reads admin.crt and admin.key from its --tls-dir.
	for from, to := range map[string]string{
		filepath.Join(tlsDir, tlsutil.CACert): tlsutil.CACert,
		filepath.Join(aliceDir, "alice.crt"):  tlsutil.AdminCert,
		filepath.Join(aliceDir, "alice.key"):  tlsutil.AdminKey,
	} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(aliceDir, to), b, 0o600)
	}
	alice := func(args ...string) {
		t.Helper()
		if _, code := run(t, ctx, append([]string{"tenant", "--tls-dir", aliceDir, "--registrar", regURL, "--verifier", verURL}, args...)...); code != 0 {
			t.Fatalf("alice: vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
	}
	do(chromedp.Navigate("https://"+dashAddr+"/"), chromedp.WaitVisible(`#hosts tr.failed[data-agent="host-1"]`))
	alice("policy", "add", "host-runtime", "--runtime", agenttest.AllowFile(t, runPol, bad))
	alice("agent", "readmit", "host-1")
	do(chromedp.WaitVisible(`#hosts tr.attesting[data-agent="host-1"]`))

	// alice pins the host to that version and slows it down; then the host
	// reboots (its TPM resets, it boots and measures afresh) and keeps
	// attesting.
	alice("agent", "update", "host-1", "--runtime-policy", "host-runtime@2", "--interval", "700ms")
	if err := h.Swtpm.Restart(); err != nil {
		t.Fatal(err)
	}
	h.Boot(t)
	var hist verifier.HistoryView
	deadline = time.Now().Add(30 * time.Second)
	for {
		hist = verifier.HistoryView{}
		json.Unmarshal([]byte(tenant("agent", "history", "host-1", "--json")), &hist)
		if n := len(hist.Entries); n > 0 && slices.ContainsFunc(hist.Entries, func(e verifier.HistoryEntry) bool { return e.Kind == verifier.HistoryReboot }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reboot in the history:\n%s", tenant("agent", "history", "host-1"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if state() != "attesting" {
		t.Fatalf("host-1 is %s after the reboot", state())
	}

	// In order, in the history and on the host page: the tamper, alice's
	// readmission, her update, the reboot.
	steps := []struct {
		kind verifier.HistoryKind
		what func(verifier.HistoryEntry) bool
		page string // what the timeline shows for it
	}{
		{verifier.HistoryFailure, func(e verifier.HistoryEntry) bool { return e.IMA != nil && e.IMA.Path == bad }, bad},
		{verifier.HistoryReadmitted, func(e verifier.HistoryEntry) bool { return e.Operator == "alice" }, "readmitted by alice"},
		{verifier.HistoryUpdated, func(e verifier.HistoryEntry) bool {
			return e.Operator == "alice" && strings.Contains(e.Detail, "host-runtime@2")
		}, "updated by alice"},
		{verifier.HistoryReboot, func(e verifier.HistoryEntry) bool { return e.ResetCount > 0 }, "reboot"},
	}
	i := 0
	for _, e := range hist.Entries {
		if i < len(steps) && e.Kind == steps[i].kind && steps[i].what(e) {
			i++
		}
	}
	if i < len(steps) {
		t.Fatalf("agent history --json lacks %s in order:\n%s", steps[i].kind, tenant("agent", "history", "host-1"))
	}
	do(chromedp.Navigate("https://"+dashAddr+"/agents/host-1"), chromedp.WaitVisible(`#timeline li[data-kind="reboot"]`))
	timeline = text(`#timeline`)
	// The timeline is newest first.
	last := len(timeline)
	for _, st := range steps {
		at := strings.LastIndex(timeline[:last], st.page)
		if at < 0 {
			t.Fatalf("the host page's timeline lacks %q before position %d:\n%s", st.page, last, timeline)
		}
		last = at
	}
}
