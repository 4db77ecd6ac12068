package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/tlsutil"
)

// operatorGet asks url with the client certificate certFile over a new
// connection: the status, or 0 and the error of a refused handshake.
func operatorGet(t *testing.T, tlsDir, certFile, keyFile, url string) (int, error) {
	t.Helper()
	cfg, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	rsp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, rsp.Body)
	rsp.Body.Close()
	return rsp.StatusCode, nil
}

// lineWith is the first line of out that holds s.
func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestCAIssueAndRevokeAdmin: an operator's own admin certificate from
// `vigil ca issue-admin` reaches a running verifier's admin API; after
// `vigil ca revoke-admin` and SIGHUP the same process refuses it while the
// default admin certificate still works, a registrar started afterwards
// refuses it from the start, and a broken CRL at a later SIGHUP changes
// nothing.
func TestCAIssueAndRevokeAdmin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init failed")
	}
	out, code := run(t, ctx, "ca", "issue-admin", "alice", "--tls-dir", tlsDir, "--json")
	if code != 0 {
		t.Fatalf("ca issue-admin alice: exit %d", code)
	}
	var issued struct{ Name, Cert, Key, Serial string }
	if err := json.Unmarshal([]byte(out), &issued); err != nil {
		t.Fatalf("issue-admin --json: %v: %q", err, out)
	}
	aliceCrt, aliceKey := filepath.Join(tlsDir, "alice.crt"), filepath.Join(tlsDir, "alice.key")
	if issued.Name != "alice" || issued.Cert != aliceCrt || issued.Key != aliceKey || issued.Serial == "" {
		t.Fatalf("issue-admin --json: %+v", issued)
	}
	if st, err := os.Stat(aliceKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v, want mode 0600", err)
	}
	cert, err := tlsutil.LoadKeyPair(aliceCrt, aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf().Subject.CommonName != "alice" || tlsutil.SerialHex(cert.Leaf()) != issued.Serial {
		t.Fatalf("alice.crt: CN %q serial %s, printed %s", cert.Leaf().Subject.CommonName, tlsutil.SerialHex(cert.Leaf()), issued.Serial)
	}
	aliceKeyBefore, _ := os.ReadFile(aliceKey)
	if _, code := run(t, ctx, "ca", "issue-admin", "alice", "--tls-dir", tlsDir); code != exitUsage {
		t.Errorf("second issue-admin alice: exit %d, want 2", code)
	}
	if now, _ := os.ReadFile(aliceKey); !bytes.Equal(now, aliceKeyBefore) {
		t.Error("a second issue-admin replaced alice.key")
	}
	for _, args := range [][]string{
		{"ca", "issue-admin", "bad name", "--tls-dir", tlsDir},
		{"ca", "issue-admin", "x/../../y", "--tls-dir", tlsDir},
		{"ca", "issue-admin", strings.Repeat("a", 65), "--tls-dir", tlsDir},
		{"ca", "issue-admin", "bob"},
		{"ca", "issue-admin", "bob", "--tls-dir", t.TempDir()},
		{"ca", "revoke-admin", "--tls-dir", tlsDir},
		{"ca", "revoke-admin", "alice", "--serial", issued.Serial, "--tls-dir", tlsDir},
		{"ca", "revoke-admin", "nobody", "--tls-dir", tlsDir},
		{"ca", "revoke-admin", "--serial", "xyz", "--tls-dir", tlsDir},
		{"ca", "revoke-admin", "server", "--tls-dir", tlsDir},
	} {
		if _, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	if _, err := os.Stat(filepath.Join(tlsDir, tlsutil.AdminCRLFile)); err == nil {
		t.Fatal("refused revocations wrote admin.crl")
	}

	roots := filepath.Join(dir, "ek-roots")
	os.MkdirAll(roots, 0o700)
	copyFile(t, filepath.Join(tlsDir, tlsutil.CACert), filepath.Join(roots, "unrelated.crt"))
	regURL := startRegistrarCmd(t, tlsDir, roots)
	verAddr := freeAddr(t)
	verURL := "https://" + verAddr
	ver := startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", verAddr,
		"--registrar", regURL, "--log-level", "info", "--log-format", "text")
	waitHealthy(t, tlsDir, verURL)
	pid := ver.Pid()

	agents := verURL + "/v1/agents"
	adminCrt, adminKey := filepath.Join(tlsDir, tlsutil.AdminCert), filepath.Join(tlsDir, tlsutil.AdminKey)
	if code, err := operatorGet(t, tlsDir, aliceCrt, aliceKey, agents); err != nil || code != 200 {
		t.Fatalf("GET /v1/agents as alice: %d %v, want 200", code, err)
	}
	if code, err := operatorGet(t, tlsDir, "", "", agents); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/agents without a certificate: %d %v, want 401", code, err)
	}
	// Alice keeps a connection open across her revocation.
	aliceConn := newKeepAlive(t, tlsDir, aliceCrt, aliceKey)
	if code, reused := aliceConn.get(t, agents); code != 200 || reused {
		t.Fatalf("GET /v1/agents as alice on a new kept-alive connection: %d (reused %v), want 200", code, reused)
	}

	out, code = run(t, ctx, "ca", "revoke-admin", "alice", "--tls-dir", tlsDir)
	if code != 0 || !strings.Contains(out, issued.Serial) {
		t.Fatalf("ca revoke-admin alice: exit %d: %q", code, out)
	}
	crlFile := filepath.Join(tlsDir, tlsutil.AdminCRLFile)
	crlBefore, _ := os.ReadFile(crlFile)
	out, code = run(t, ctx, "ca", "revoke-admin", "--serial", strings.ToUpper(issued.Serial), "--tls-dir", tlsDir, "--json")
	var again struct {
		AlreadyRevoked bool `json:"already_revoked"`
		Revoked        int
	}
	if code != 0 || json.Unmarshal([]byte(out), &again) != nil || !again.AlreadyRevoked || again.Revoked != 1 {
		t.Fatalf("revoking alice again by serial: exit %d: %q", code, out)
	}
	if now, _ := os.ReadFile(crlFile); !bytes.Equal(now, crlBefore) {
		t.Error("revoking twice rewrote admin.crl")
	}

	from := len(ver.Output())
	if err := ver.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logged := ver.waitOutput(from, 10*time.Second, `what="admin crl"`, "newly_revoked=", issued.Serial)
	t.Logf("reload logged: %s", lineWith(logged[from:], `what="admin crl"`))
	if code, err := operatorGet(t, tlsDir, aliceCrt, aliceKey, agents); err == nil && code != http.StatusUnauthorized {
		t.Errorf("GET /v1/agents as revoked alice: %d, want a refused handshake or 401", code)
	} else {
		t.Logf("revoked alice: %d %v", code, err)
	}
	if code, err := operatorGet(t, tlsDir, adminCrt, adminKey, agents); err != nil || code != 200 {
		t.Errorf("GET /v1/agents as the default admin after alice's revocation: %d %v, want 200", code, err)
	}
	// The connection she opened before is refused from its next request
	// on, and closed.
	if code, reused := aliceConn.get(t, agents); code != http.StatusUnauthorized || !reused {
		t.Errorf("GET /v1/agents as revoked alice on the connection she opened before: %d (reused %v), want 401 on that connection", code, reused)
	}
	if code, reused := aliceConn.get(t, agents); code == 200 || reused {
		t.Errorf("after the 401 alice's connection stayed open: %d (reused %v)", code, reused)
	}

	// A registrar started now reads admin.crl at start.
	os.RemoveAll(roots)
	os.MkdirAll(roots, 0o700)
	copyFile(t, filepath.Join(tlsDir, tlsutil.CACert), filepath.Join(roots, "unrelated.crt"))
	reg2 := startRegistrarCmd(t, tlsDir, roots)
	if code, err := operatorGet(t, tlsDir, aliceCrt, aliceKey, reg2+"/v1/agents"); err == nil && code != http.StatusUnauthorized {
		t.Errorf("registrar started after the revocation admitted alice: %d", code)
	}
	if code, err := operatorGet(t, tlsDir, adminCrt, adminKey, reg2+"/v1/agents"); err != nil || code != 200 {
		t.Errorf("registrar started after the revocation, default admin: %d %v, want 200", code, err)
	}

	// A CRL from another CA at the next SIGHUP: refused naming the file,
	// and alice stays revoked.
	other := filepath.Join(dir, "other")
	if _, code := run(t, ctx, "ca", "init", other); code != 0 {
		t.Fatal("ca init other")
	}
	if _, code := run(t, ctx, "ca", "revoke-admin", "--serial", "1", "--tls-dir", other); code != 0 {
		t.Fatal("revoke-admin in the other CA")
	}
	copyFile(t, filepath.Join(other, tlsutil.AdminCRLFile), crlFile)
	from = len(ver.Output())
	ver.Signal(syscall.SIGHUP)
	logged = ver.waitOutput(from, 10*time.Second, "reload failed", crlFile, "not signed by the deployment's CA")
	t.Logf("failed reload logged: %s", lineWith(logged[from:], crlFile))
	if code, err := operatorGet(t, tlsDir, aliceCrt, aliceKey, agents); err == nil && code != http.StatusUnauthorized {
		t.Errorf("GET /v1/agents as alice after a failed reload: %d, want her refused still", code)
	}
	if code, err := operatorGet(t, tlsDir, adminCrt, adminKey, agents); err != nil || code != 200 {
		t.Errorf("default admin after a failed reload: %d %v", code, err)
	}
	if ver.Exited() || ver.Pid() != pid {
		t.Fatal("the verifier did not stay the same process")
	}
}

// TestAdminCRLBadAtStart: a service whose admin.crl is signed by another
// CA, or unreadable, does not start, and says which file.
func TestAdminCRLBadAtStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tlsDir, other := filepath.Join(dir, "tls"), filepath.Join(dir, "other")
	for _, d := range []string{tlsDir, other} {
		if _, code := run(t, ctx, "ca", "init", d); code != 0 {
			t.Fatal("ca init")
		}
	}
	if _, code := run(t, ctx, "ca", "revoke-admin", "--serial", "1", "--tls-dir", other); code != 0 {
		t.Fatal("revoke-admin")
	}
	crlFile := filepath.Join(tlsDir, tlsutil.AdminCRLFile)
	for what, data := range map[string][]byte{
		"signed by another CA": nil,
		"not a CRL":            []byte("garbage\n"),
	} {
		if data == nil {
			copyFile(t, filepath.Join(other, tlsutil.AdminCRLFile), crlFile)
		} else {
			os.WriteFile(crlFile, data, 0o644)
		}
		for _, args := range [][]string{
			{"registrar", "--data", t.TempDir(), "--tls-dir", tlsDir, "--ek-policy", "any", "--listen", "127.0.0.1:0"},
			{"verifier", "--data", t.TempDir(), "--tls-dir", tlsDir, "--registrar", "https://127.0.0.1:1", "--listen", "127.0.0.1:0"},
		} {
			var out, errOut bytes.Buffer
			app := newApp()
			app.Writer, app.ErrWriter = &out, &errOut
			err := app.RunContext(ctx, hoistFlags(app, append([]string{"vigil"}, args...)))
			if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), crlFile) {
				t.Errorf("vigil %s with a CRL %s: %v (exit %d), want an error naming %s", args[0], what, err, exitCode(err), crlFile)
			} else {
				t.Logf("vigil %s, CRL %s: %v", args[0], what, err)
			}
		}
	}
}

// keepAlive is a client that keeps one connection open between requests.
type keepAlive struct{ c *http.Client }

func newKeepAlive(t *testing.T, tlsDir, certFile, keyFile string) *keepAlive {
	t.Helper()
	cfg, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return &keepAlive{c: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// get asks url: the status (0 for a refused handshake or a broken
// connection), and whether the request went over a connection an earlier
// one had opened.
func (k *keepAlive) get(t *testing.T, url string) (code int, reused bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}))
	rsp, err := k.c.Do(req)
	if err != nil {
		t.Logf("GET %s: %v", url, err)
		return 0, reused
	}
	io.Copy(io.Discard, rsp.Body)
	rsp.Body.Close()
	return rsp.StatusCode, reused
}
