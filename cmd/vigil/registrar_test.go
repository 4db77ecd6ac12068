package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/tlsutil"
)

// The registrar's /metrics is an admin endpoint on its TLS listener, and
// --metrics-listen serves it, alone, in plain HTTP for a private interface.
func TestRegistrarMetricsNeedAdminCertificate(t *testing.T) {
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if _, code := run(t, context.Background(), "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init failed")
	}
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	startProcess(t, nil, "registrar", "--data", t.TempDir(), "--tls-dir", tlsDir, "--listen", addr,
		"--ek-policy", "any", "--metrics-listen", metricsAddr, "--max-pending-per-ek", "2", "--log-level", "warn")
	url := "https://" + addr
	waitHealthy(t, tlsDir, url)

	anon, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tlsutil.AdminClientConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	get := func(client *http.Client, url string) (int, string) {
		t.Helper()
		rsp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer rsp.Body.Close()
		b, _ := io.ReadAll(rsp.Body)
		return rsp.StatusCode, string(b)
	}
	for _, path := range []string{"/metrics", "/v1/aks"} {
		if code, _ := get(httpClient(anon), url+path); code != http.StatusUnauthorized {
			t.Errorf("%s without a client certificate: %d, want 401", path, code)
		}
	}
	code, body := get(httpClient(admin), url+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `vigil_registrar_refused_total{reason="too_many_pending"} 0`) {
		t.Errorf("/metrics with the admin certificate: %d\n%s", code, body)
	}
	plain := &http.Client{}
	if code, body := get(plain, "http://"+metricsAddr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "vigil_registrar_refused_total") {
		t.Errorf("/metrics on --metrics-listen: %d\n%s", code, body)
	}
	if code, _ := get(plain, "http://"+metricsAddr+"/v1/agents"); code != http.StatusNotFound {
		t.Errorf("--metrics-listen serves /v1/agents: %d, want 404", code)
	}
}
