package tlsutil

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitDirRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := InitDir(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CAKey))
	err := InitDir(dir, InitOptions{})
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second InitDir: %v, want refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKey))
	if string(before) != string(after) {
		t.Fatal("CA key changed")
	}
}

func TestAdminRequiresClientCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := InitDir(dir, InitOptions{SANs: []string{"vigil.example", "10.1.2.3"}}); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, err := AdminIdentity(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, cn)
	}))
	srv.TLS = srvCfg
	srv.StartTLS()
	defer srv.Close()

	get := func(cfg *tls.Config) (int, string) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		rsp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer rsp.Body.Close()
		b, _ := io.ReadAll(rsp.Body)
		return rsp.StatusCode, string(b)
	}
	admin, err := AdminClientConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(admin); code != 200 || body != AdminCommonName {
		t.Errorf("admin: %d %q", code, body)
	}
	anon, err := ClientConfig(filepath.Join(dir, CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(anon); code != http.StatusForbidden {
		t.Errorf("no client cert: %d, want 403", code)
	}

	// A client certificate from another CA fails the handshake.
	other := t.TempDir()
	if err := InitDir(other, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign, err := ClientConfig(filepath.Join(dir, CACert), filepath.Join(other, AdminCert), filepath.Join(other, AdminKey))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: foreign}}
	if rsp, err := c.Get(srv.URL); err == nil {
		rsp.Body.Close()
		t.Errorf("foreign client certificate accepted: %d", rsp.StatusCode)
	}

	// TLS 1.2 is refused.
	old := admin.Clone()
	old.MaxVersion = tls.VersionTLS12
	old.MinVersion = tls.VersionTLS12
	c = &http.Client{Transport: &http.Transport{TLSClientConfig: old}}
	if rsp, err := c.Get(srv.URL); err == nil {
		rsp.Body.Close()
		t.Error("TLS 1.2 accepted")
	}
}
