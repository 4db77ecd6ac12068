package main

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSIGHUPReloadsEKRoots: a registrar whose EK roots do not cover a
// host refuses it; the host's manufacturer CA is put in the roots
// directory, SIGHUP, and the same process admits the host. Then a corrupt
// file in the directory: SIGHUP fails naming it, and the roots in force
// stay.
func TestSIGHUPReloadsEKRoots(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init failed")
	}
	// Unrelated roots: the deployment's own CA, self-signed.
	roots := filepath.Join(dir, "ek-roots")
	os.MkdirAll(roots, 0o700)
	copyFile(t, filepath.Join(tlsDir, tlsutil.CACert), filepath.Join(roots, "unrelated.crt"))
	addr := freeAddr(t)
	url := "https://" + addr
	reg := startProcess(t, nil, "registrar", "--data", filepath.Join(dir, "data"), "--tls-dir", tlsDir, "--listen", addr,
		"--ek-roots", roots, "--log-level", "info", "--log-format", "text")
	waitHealthy(t, tlsDir, url)
	pid := reg.Pid()

	enroll := func() int {
		t.Helper()
		_, code := run(t, ctx, "agent", "enroll", "--data", filepath.Join(dir, "agent"), "--tpm", sw.Spec(),
			"--registrar", url, "--ca", filepath.Join(tlsDir, tlsutil.CACert), "--id", "web-1", "--log-level", "warn")
		return code
	}
	if code := enroll(); code == 0 {
		t.Fatal("enrollment accepted before the host's EK root was configured")
	}

	for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		copyFile(t, filepath.Join(sw.CADir(), name), filepath.Join(roots, name))
	}
	from := len(reg.Output())
	if err := reg.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	out := reg.waitOutput(from, 10*time.Second, "msg=reloaded", `what="ek policy"`, "roots_added=")
	t.Logf("reload logged: %s", lastLine(out))
	if code := enroll(); code != 0 {
		t.Fatalf("enrollment after SIGHUP: exit %d, want 0", code)
	}

	// A corrupt certificate file: the reload fails naming it, the roots
	// in force stay.
	broken := filepath.Join(roots, "broken.pem")
	os.WriteFile(broken, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}), 0o644)
	from = len(reg.Output())
	reg.Signal(syscall.SIGHUP)
	out = reg.waitOutput(from, 10*time.Second, "reload failed", broken)
	t.Logf("failed reload logged: %s", lastLine(out))
	if code := enroll(); code != 0 {
		t.Fatalf("enrollment after a failed reload: exit %d, want 0 (old roots kept)", code)
	}
	if reg.Exited() || reg.Pid() != pid {
		t.Fatal("the registrar did not stay the same process")
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
