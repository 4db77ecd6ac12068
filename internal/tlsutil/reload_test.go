package tlsutil

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadServerAndClientCertificates: after a renewal and Reload, new
// connections see the new server certificate and present the new admin
// certificate; a connection made before keeps working; a failed Reload
// keeps the pair in force.
func TestReloadServerAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	if err := InitDir(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	srvCfg, srvPair, _, err := ReloadableServerConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, SerialHex(r.TLS.VerifiedChains[0][0]))
	}))
	// Not StartTLS, which would add httptest's own certificate, preferred
	// to GetCertificate when the client sends no server name.
	srv.Listener = tls.NewListener(srv.Listener, srvCfg)
	srv.Start()
	srv.URL = strings.Replace(srv.URL, "http://", "https://", 1)
	defer srv.Close()

	cliCfg, cliPair, err := ReloadableAdminClientConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	// get asks over a fresh connection (keepAlive false) or the pooled one,
	// and returns the server's serial and the client serial it saw.
	pooled := &http.Client{Transport: &http.Transport{TLSClientConfig: cliCfg}}
	get := func(c *http.Client) (server, client string) {
		t.Helper()
		rsp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer rsp.Body.Close()
		b, _ := io.ReadAll(rsp.Body)
		if rsp.StatusCode != 200 {
			t.Fatalf("%s: %s", rsp.Status, b)
		}
		return SerialHex(rsp.TLS.PeerCertificates[0]), string(b)
	}
	fresh := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cliCfg, DisableKeepAlives: true}}
	}
	srv0, cli0 := get(pooled)
	if srv0 != SerialHex(srvPair.Leaf()) || cli0 != SerialHex(cliPair.Leaf()) {
		t.Fatalf("serials %s %s, want %s %s", srv0, cli0, SerialHex(srvPair.Leaf()), SerialHex(cliPair.Leaf()))
	}

	if err := RenewServerCert(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := RenewAdminCert(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	before, after, err := srvPair.Reload()
	if err != nil || SerialHex(before) != srv0 || SerialHex(after) == srv0 {
		t.Fatalf("server reload: %v, %s -> %s", err, SerialHex(before), SerialHex(after))
	}
	if _, _, err := cliPair.Reload(); err != nil {
		t.Fatal(err)
	}
	// The pooled connection is the old one, still up.
	if s, c := get(pooled); s != srv0 || c != cli0 {
		t.Errorf("old connection: serials %s %s, want the old %s %s", s, c, srv0, cli0)
	}
	srv1, cli1 := get(fresh())
	if srv1 != SerialHex(after) || cli1 == cli0 || cli1 != SerialHex(cliPair.Leaf()) {
		t.Errorf("new connection: serials %s %s, want %s %s", srv1, cli1, SerialHex(after), SerialHex(cliPair.Leaf()))
	}

	// A broken file: Reload fails naming it, and the pair in force stays.
	os.WriteFile(filepath.Join(dir, ServerCert), []byte("not a certificate"), 0o644)
	if _, _, err := srvPair.Reload(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, ServerCert)) {
		t.Fatalf("reload of a broken certificate: %v", err)
	}
	if s, _ := get(fresh()); s != srv1 {
		t.Errorf("after a failed reload: serial %s, want %s", s, srv1)
	}
}
