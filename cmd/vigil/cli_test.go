package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// run executes the vigil command tree in-process and returns its standard
// output and exit code.
func run(t *testing.T, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, hoistFlags(app, append([]string{"vigil"}, args...)))
	if err != nil {
		t.Logf("vigil %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), exitCode(err)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRegistrarCmd runs `vigil registrar` as a process, configured by a
// YAML file and an environment variable, proving both sources reach the
// flags.
func startRegistrarCmd(t *testing.T, tlsDir, roots string) string {
	t.Helper()
	addr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "registrar.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data: %s\ntls-dir: %s\nlisten: %s\n", t.TempDir(), tlsDir, addr)), 0o600)
	startProcess(t, []string{"VIGIL_EK_ROOTS=" + roots}, "registrar", "--config", cfg, "--log-level", "warn")
	waitHealthy(t, tlsDir, "https://"+addr)
	return "https://" + addr
}

func waitHealthy(t *testing.T, tlsDir, url string) {
	t.Helper()
	cfg, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	client := httpClient(cfg)
	for i := 0; ; i++ {
		rsp, err := client.Get(url + "/healthz")
		if err == nil {
			rsp.Body.Close()
			return
		}
		if i > 100 {
			t.Fatalf("%s did not come up: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Second}
}

func TestCAInitRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	out, code := run(t, context.Background(), "ca", "init", dir, "--json")
	if code != 0 {
		t.Fatalf("ca init: exit %d", code)
	}
	var res struct{ Files map[string]string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Files) != 6 {
		t.Fatalf("ca init --json: %q (%v)", out, err)
	}
	for _, f := range res.Files {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if _, code := run(t, context.Background(), "ca", "init", dir); code != exitUsage {
		t.Errorf("second ca init: exit %d, want 2", code)
	}
}

// TestCARenew renews the server and admin certificates in place: new
// serials, the same CA, and a directory without a CA is bad input.
func TestCARenew(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tls")
	if _, code := run(t, ctx, "ca", "init", dir); code != 0 {
		t.Fatalf("ca init: exit %d", code)
	}
	serial := func(name string) string {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return cert.SerialNumber.String()
	}
	ca, _ := os.ReadFile(filepath.Join(dir, tlsutil.CACert))
	server, admin := serial("server"), serial("admin")

	if out, code := run(t, ctx, "ca", "renew", dir, "--server"); code != 0 || !strings.Contains(out, "server.crt") || strings.Contains(out, "admin.crt") {
		t.Fatalf("ca renew --server: exit %d\n%s", code, out)
	}
	if serial("server") == server || serial("admin") != admin {
		t.Errorf("after renew --server: server %s→%s, admin %s→%s", server, serial("server"), admin, serial("admin"))
	}
	server = serial("server")
	if _, code := run(t, ctx, "ca", "renew", dir); code != 0 {
		t.Fatalf("ca renew: exit %d", code)
	}
	if serial("server") == server || serial("admin") == admin {
		t.Errorf("ca renew did not renew both")
	}
	if now, _ := os.ReadFile(filepath.Join(dir, tlsutil.CACert)); !bytes.Equal(now, ca) {
		t.Errorf("ca renew changed the CA")
	}
	if _, code := run(t, ctx, "ca", "renew", t.TempDir()); code != exitUsage {
		t.Errorf("ca renew of a directory without a CA: exit %d, want 2", code)
	}
}

func TestEnrollByHandThroughTheCLI(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	ctx := context.Background()
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init failed")
	}
	url := startRegistrarCmd(t, tlsDir, sw.CADir())

	out, code := run(t, ctx, "agent", "enroll", "--data", t.TempDir(), "--tpm", sw.Spec(),
		"--registrar", url, "--ca", filepath.Join(tlsDir, tlsutil.CACert), "--id", "web-1", "--ak-alg", "ecc", "--json", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("agent enroll: exit %d", code)
	}
	var enrolled map[string]any
	if err := json.Unmarshal([]byte(out), &enrolled); err != nil {
		t.Fatalf("enroll --json: %v: %q", err, out)
	}
	if enrolled["agent_id"] != "web-1" || enrolled["active"] != true || enrolled["ak_alg"] != "ecc" {
		t.Errorf("enroll output %v", enrolled)
	}

	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", url, "registrar"}
	out, code = run(t, ctx, append(tenant, "show", "web-1", "--json")...)
	if code != 0 {
		t.Fatalf("tenant registrar show: exit %d", code)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"agent_id", "active", "ek_sha256", "ak_alg", "registered_at"} {
		if _, ok := shown[field]; !ok {
			t.Errorf("show --json lacks %s: %v", field, shown)
		}
	}
	if shown["active"] != true || shown["ak_alg"] != "ecc" {
		t.Errorf("show: %v", shown)
	}
	if out, code = run(t, ctx, append(tenant, "list")...); code != 0 || !strings.Contains(out, "web-1") {
		t.Errorf("list: exit %d, %q", code, out)
	}
	if _, code = run(t, ctx, append(tenant, "delete", "web-1")...); code != 0 {
		t.Errorf("delete: exit %d", code)
	}
	if _, code = run(t, ctx, append(tenant, "show", "web-1")...); code != exitUsage {
		t.Errorf("show of a deleted agent: exit %d, want 2", code)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	ctx := context.Background()
	tlsDir := filepath.Join(t.TempDir(), "tls")
	run(t, ctx, "ca", "init", tlsDir)
	for _, args := range [][]string{
		{"registrar", "--no-such-flag"},
		{"registrar", "--data", t.TempDir()},
		{"registrar", "--data", t.TempDir(), "--tls-dir", tlsDir, "--ek-policy", "bogus"},
		{"registrar", "--data", t.TempDir(), "--tls-dir", tlsDir, "--ek-policy", "chain"},
		{"registrar", "--config", "/nonexistent.yaml"},
		{"agent", "enroll", "--data", t.TempDir(), "--tpm", "nonsense", "--registrar", "https://127.0.0.1:1", "--ca", filepath.Join(tlsDir, "ca.crt")},
		{"agent", "enroll", "--data", t.TempDir(), "--tpm", "sim", "--registrar", "https://127.0.0.1:1", "--ca", filepath.Join(tlsDir, "ca.crt"), "--ak-alg", "dsa"},
		{"agent", "enroll", "--data", t.TempDir(), "--tpm", "sim", "--registrar", "https://127.0.0.1:1", "--ca", filepath.Join(tlsDir, "ca.crt"), "--id", "bad id/with slash"},
		{"tenant", "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1", "registrar", "show"},
		{"ca", "init"},
		{"verifier", "--data", t.TempDir(), "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1", "--listen", "127.0.0.1:0", "--auto-recover", "sometimes"},
		{"verifier", "--data", t.TempDir(), "--store", "postgres://vigil@127.0.0.1:1/v", "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1"},
		{"registrar", "--tls-dir", tlsDir, "--ek-policy", "any"},
		{"verifier", "--data", t.TempDir(), "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1", "--listen", "127.0.0.1:0", "--metrics-listen", "not an address"},
	} {
		if _, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}

// A database that cannot be reached stops a service at start with an error
// that says which.
func TestUnreachableStoreIsNamed(t *testing.T) {
	ctx := context.Background()
	tlsDir := filepath.Join(t.TempDir(), "tls")
	run(t, ctx, "ca", "init", tlsDir)
	for _, args := range [][]string{
		{"registrar", "--store", "postgres://vigil@127.0.0.1:1/regdb?connect_timeout=2", "--tls-dir", tlsDir, "--ek-policy", "any", "--listen", "127.0.0.1:0"},
		{"verifier", "--store", "postgres://vigil@127.0.0.1:1/verdb?connect_timeout=2", "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1", "--listen", "127.0.0.1:0"},
	} {
		var out, errOut bytes.Buffer
		app := newApp()
		app.Writer, app.ErrWriter = &out, &errOut
		err := app.RunContext(ctx, hoistFlags(app, append([]string{"vigil"}, args...)))
		if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "cannot be reached") {
			t.Errorf("vigil %s: %v (exit %d), want an error saying the database cannot be reached", args[0], err, exitCode(err))
		}
	}
}
