package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/vigil-attest/vigil/internal/tlsutil"
)

// The verifier's profiler is off unless asked for, and then only for admin
// clients.
func TestVerifierPprofIsOptInAndAdminOnly(t *testing.T) {
	ctx := context.Background()
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != exitOK {
		t.Fatalf("ca init: exit %d", code)
	}
	anonymous, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tlsutil.AdminClientConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	get := func(cfg *tls.Config, url string) int {
		t.Helper()
		rsp, err := httpClient(cfg).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		return rsp.StatusCode
	}
	for _, tc := range []struct {
		flags                    []string
		adminWant, anonymousWant int
	}{
		{nil, http.StatusNotFound, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK, http.StatusUnauthorized},
	} {
		addr := freeAddr(t)
		args := append([]string{"verifier", "--data", t.TempDir(), "--tls-dir", tlsDir, "--listen", addr,
			"--registrar", "https://127.0.0.1:1", "--log-level", "warn"}, tc.flags...)
		p := startProcess(t, nil, args...)
		url := "https://" + addr
		waitHealthy(t, tlsDir, url)
		if got := get(admin, url+"/debug/pprof/"); got != tc.adminWant {
			t.Errorf("%v: admin GET /debug/pprof/: %d, want %d", tc.flags, got, tc.adminWant)
		}
		if got := get(anonymous, url+"/debug/pprof/cmdline"); got != tc.anonymousWant {
			t.Errorf("%v: anonymous GET /debug/pprof/cmdline: %d, want %d", tc.flags, got, tc.anonymousWant)
		}
		p.Stop()
	}
}
