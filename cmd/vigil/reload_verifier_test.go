package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// TestSIGHUPReloadsVerifierTLSAndWebhookSecret: while an agent attests,
// the verifier's server and admin certificates are renewed and its webhook
// secret rotated; after SIGHUP a new connection sees the new server
// certificate, the agent goes on attesting, and the next revocation
// verifies with the new secret at the receiver. The same process
// throughout.
func TestSIGHUPReloadsVerifierTLSAndWebhookSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	h := newBootedSwtpmHost(t, dir)

	// The receiver has already moved to the new secret; the verifier
	// starts with the old one.
	oldSecret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	raw := make([]byte, 32)
	rand.Read(raw)
	newSecret := revocation.SecretPrefix + base64.StdEncoding.EncodeToString(raw)
	newKey, err := revocation.ParseSecret(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	rcv := &webhookReceiver{key: newKey}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	secretFile, caFile := filepath.Join(dir, "secret"), filepath.Join(dir, "receiver-ca.pem")
	os.WriteFile(secretFile, []byte(oldSecret+"\n"), 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	regURL := startRegistrarCmd(t, tlsDir, h.Swtpm.CADir())
	verAddr := freeAddr(t)
	verURL := "https://" + verAddr
	ver := startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", verAddr,
		"--registrar", regURL, "--interval", "300ms", "--min-interval", "100ms", "--log-level", "info", "--log-format", "text",
		"--webhook", srv.URL, "--webhook-secret-file", secretFile, "--webhook-ca", caFile, "--webhook-max-backoff", "300ms")
	waitHealthy(t, tlsDir, verURL)
	pid := ver.Pid()

	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}
	mustRun := func(args ...string) string {
		t.Helper()
		out, code := run(t, ctx, append(append([]string{}, tenant...), args...)...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	runPol := filepath.Join(dir, "runtime.json")
	if _, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", h.IMALog.Path, "--out", runPol); code != 0 {
		t.Fatal("policy create runtime")
	}
	mustRun("policy", "add", "rt", "--runtime", runPol)
	mustRun("agent", "add", "host-1", "--runtime-policy", "rt", "--identity", "spiffe://example.org/node/host-1", "--interval", "300ms")
	startProcess(t, nil, "agent", "--data", filepath.Join(dir, "agent"), "--tpm", h.Swtpm.Spec(),
		"--registrar", regURL, "--verifier", verURL, "--ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--id", "host-1", "--boot-log", h.BootLog, "--ima-log", h.IMALog.Path, "--log-level", "warn")
	waitAttesting := func(what string, min uint64) agentStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var st agentStatus
			if err := json.Unmarshal([]byte(mustRun("agent", "status", "host-1", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			if st.State == "attesting" && st.Attestations >= min {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last status %+v", what, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := waitAttesting("three attestations", 3)

	pool, err := tlsutil.LoadCAPool(filepath.Join(tlsDir, tlsutil.CACert))
	if err != nil {
		t.Fatal(err)
	}
	serving := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", verAddr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return tlsutil.SerialHex(c.ConnectionState().PeerCertificates[0])
	}
	serial0 := serving()

	if err := tlsutil.RenewServerCert(tlsDir, tlsutil.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.RenewAdminCert(tlsDir, tlsutil.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	newCert, err := tlsutil.LoadKeyPair(filepath.Join(tlsDir, tlsutil.ServerCert), filepath.Join(tlsDir, tlsutil.ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(secretFile, []byte(newSecret+"\n"), 0o600)
	from := len(ver.Output())
	if err := ver.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	out := ver.waitOutput(from, 10*time.Second, `what="tls server certificate" file=`, `what="admin client certificate" file=`, `what="webhook secrets" rotated=`)
	for _, l := range strings.Split(out[from:], "\n") {
		if strings.Contains(l, "reload") {
			t.Logf("logged: %s", l)
		}
	}
	if serial1 := serving(); serial1 == serial0 || serial1 != tlsutil.SerialHex(newCert.Leaf()) {
		t.Errorf("after SIGHUP a new connection sees serial %s; want the new %s (was %s)", serial1, tlsutil.SerialHex(newCert.Leaf()), serial0)
	}
	after := waitAttesting("attesting on after the reload", before.Attestations+5)
	t.Logf("attestations %d before the reload, %d after", before.Attestations, after.Attestations)

	// A host that never attests fails for silence: its revocation must
	// verify with the new secret.
	mustRun("agent", "add", "silent-1", "--runtime-policy", "rt", "--identity", "spiffe://example.org/node/silent-1", "--interval", "300ms")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, accepted := rcv.snapshot()
		if len(accepted) > 0 {
			if accepted[0].Subject != "silent-1" || accepted[0].Type != revocation.TypeRevoked {
				t.Fatalf("delivered %+v, want silent-1's revocation", accepted[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no revocation verified with the new secret")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ver.Exited() || ver.Pid() != pid {
		t.Fatal("the verifier did not stay the same process")
	}
	if st := waitAttesting("host-1 still attesting", after.Attestations); st.State != "attesting" {
		t.Errorf("host-1: %+v", st)
	}
}
