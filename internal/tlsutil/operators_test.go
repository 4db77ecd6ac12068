package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// adminServer serves AdminIdentity's answer (the operator's CN, or 401)
// with cfg, as httpapi.Admin does.
func adminServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, err := AdminIdentity(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, cn)
	}))
	// Not StartTLS, which would add httptest's own certificate.
	srv.Listener = tls.NewListener(srv.Listener, cfg)
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "http://", "https://", 1)
}

// getAs asks url over a new connection with cfg and returns the status
// and body, or the error of a refused handshake.
func getAs(t *testing.T, url string, cfg *tls.Config) (int, string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	rsp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	return rsp.StatusCode, string(b), nil
}

// TestNamedOperatorIssuedAndRevoked: an admin certificate issued for alice
// is admitted as alice; once revoked (and the CRL reloaded) it is refused
// at the handshake, by a server reading the CRL at start too, and on a
// resumed session, while the default admin certificate still works.
func TestNamedOperatorIssuedAndRevoked(t *testing.T) {
	dir := t.TempDir()
	if err := InitDir(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	alice, err := IssueAdminCert(dir, "", "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if alice.CertFile != filepath.Join(dir, "alice.crt") || alice.KeyFile != filepath.Join(dir, "alice.key") {
		t.Errorf("files %s %s", alice.CertFile, alice.KeyFile)
	}
	if st, err := os.Stat(alice.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v, want mode 0600", st.Mode(), err)
	}
	if alice.Cert.Subject.CommonName != "alice" || !slices.Contains(alice.Cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("certificate %v %v", alice.Cert.Subject, alice.Cert.ExtKeyUsage)
	}
	if _, err := IssueAdminCert(dir, "", "alice", 0); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second issue for alice: %v, want a refusal", err)
	}
	for _, bad := range []string{"", "a b", "../x", "a/b", "é", strings.Repeat("a", 65)} {
		if _, err := IssueAdminCert(dir, "", bad, 0); err == nil {
			t.Errorf("operator name %q accepted", bad)
		}
	}
	for _, good := range []string{"bob.smith@example.org", "ci_bot-2", strings.Repeat("a", 64)} {
		if err := CheckOperatorName(good); err != nil {
			t.Errorf("operator name %q: %v", good, err)
		}
	}

	cfg, _, crl, err := ReloadableServerConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if crl.List() != nil {
		t.Fatal("a CRL without a file")
	}
	url := adminServer(t, cfg)
	aliceCfg, err := ClientConfig(filepath.Join(dir, CACert), alice.CertFile, alice.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	aliceCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	admin, err := AdminClientConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := getAs(t, url, aliceCfg); err != nil || code != 200 || body != "alice" {
		t.Fatalf("alice before revocation: %d %q %v", code, body, err)
	}
	// A second connection resumes the session: after the revocation a
	// resumption must be refused as well.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: aliceCfg, DisableKeepAlives: true}}
	rsp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if !rsp.TLS.DidResume {
		t.Error("the second connection did not resume the session")
	}

	rev, err := RevokeAdminCert(dir, alice.Cert.SerialNumber)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Already || rev.Entries != 1 || rev.Number.Cmp(big.NewInt(1)) != 0 || rev.File != filepath.Join(dir, AdminCRLFile) {
		t.Errorf("revocation %+v", rev)
	}
	// Not reloaded yet: still in.
	if code, _, err := getAs(t, url, aliceCfg); err != nil || code != 200 {
		t.Errorf("alice before the reload: %d %v", code, err)
	}
	before, after, err := crl.Reload()
	if err != nil || before != nil || after == nil || !slices.Equal(RevokedSerials(after), []string{SerialHex(alice.Cert)}) {
		t.Fatalf("reload: %v, %v -> %v", err, before, RevokedSerials(after))
	}
	if code, body, err := getAs(t, url, aliceCfg); err == nil {
		t.Errorf("alice after revocation (resumed or not): %d %q, want a refused handshake", code, body)
	} else {
		t.Logf("alice refused: %v", err)
	}
	aliceCfg.ClientSessionCache = nil
	if code, body, err := getAs(t, url, aliceCfg); err == nil {
		t.Errorf("alice after revocation: %d %q, want a refused handshake", code, body)
	}
	if code, body, err := getAs(t, url, admin); err != nil || code != 200 || body != AdminCommonName {
		t.Errorf("default admin after alice's revocation: %d %q %v", code, body, err)
	}

	// A server started now reads the CRL at once.
	fresh, err := ServerConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	url2 := adminServer(t, fresh)
	if code, body, err := getAs(t, url2, aliceCfg); err == nil {
		t.Errorf("alice at a server started after revocation: %d %q", code, body)
	}
	if code, _, err := getAs(t, url2, admin); err != nil || code != 200 {
		t.Errorf("default admin at a server started after revocation: %d %v", code, err)
	}
}

// TestRevokeTwiceKeepsOneEntry: revoking a serial already on the list
// leaves the list as it was; another serial gets the next CRL number.
func TestRevokeTwiceKeepsOneEntry(t *testing.T) {
	dir := t.TempDir()
	if err := InitDir(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	alice, err := IssueAdminCert(dir, filepath.Join(dir, "operators"), "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RevokeAdminCert(dir, alice.Cert.SerialNumber); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, AdminCRLFile)
	first, _ := os.ReadFile(file)
	rev, err := RevokeAdminCert(dir, alice.Cert.SerialNumber)
	if err != nil || !rev.Already || rev.Entries != 1 || rev.Number.Int64() != 1 {
		t.Fatalf("second revocation: %+v %v", rev, err)
	}
	if again, _ := os.ReadFile(file); string(again) != string(first) {
		t.Error("a second revocation rewrote the list")
	}
	crl, err := LoadAdminCRL(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := RevokedSerials(crl.List()); len(got) != 1 || got[0] != SerialHex(alice.Cert) {
		t.Errorf("entries %v, want alice's alone", got)
	}
	if !crl.Revoked(alice.Cert) {
		t.Error("alice not revoked")
	}
	rev, err = RevokeAdminCert(dir, big.NewInt(0xabcd))
	if err != nil || rev.Already || rev.Entries != 2 || rev.Number.Int64() != 2 {
		t.Fatalf("another serial: %+v %v", rev, err)
	}
	if _, after, err := crl.Reload(); err != nil || len(after.RevokedCertificateEntries) != 2 || after.Number.Int64() != 2 {
		t.Fatalf("reload: %v %v", err, after)
	}
	// The serial to revoke by name: a client certificate of this CA.
	if c, err := ReadAdminCert(dir, alice.CertFile); err != nil || c.SerialNumber.Cmp(alice.Cert.SerialNumber) != 0 {
		t.Errorf("ReadAdminCert: %v", err)
	}
	if _, err := ReadAdminCert(dir, filepath.Join(dir, ServerCert)); err == nil {
		t.Error("the server certificate taken for an admin certificate")
	}
}

// TestAdminCRLMustBeSignedByTheCA: a CRL signed by another CA, or one that
// does not parse, stops a server at start with an error naming the file;
// at a reload it is refused and the list in force stays, as is an older
// list put back.
func TestAdminCRLMustBeSignedByTheCA(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if err := InitDir(d, InitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, AdminCRLFile)
	if _, err := RevokeAdminCert(other, big.NewInt(1)); err != nil {
		t.Fatal(err)
	}
	foreign, err := os.ReadFile(filepath.Join(other, AdminCRLFile))
	if err != nil {
		t.Fatal(err)
	}
	for what, data := range map[string][]byte{
		"signed by another CA": foreign,
		"not PEM":              []byte("not a CRL"),
		"not DER":              pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte("junk")}),
	} {
		os.WriteFile(file, data, 0o644)
		if _, err := ServerConfig(dir); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("ServerConfig with a CRL %s: %v, want an error naming %s", what, err, file)
		}
		if _, _, _, err := ReloadableServerConfig(dir); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("ReloadableServerConfig with a CRL %s: %v, want an error naming %s", what, err, file)
		} else if what == "signed by another CA" {
			t.Logf("refused: %v", err)
		}
		if _, err := RevokeAdminCert(dir, big.NewInt(2)); err == nil {
			t.Errorf("revoking into a CRL %s succeeded", what)
		}
	}

	// At a reload: refused, and the list in force stays.
	os.Remove(file)
	alice, err := IssueAdminCert(dir, "", "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RevokeAdminCert(dir, alice.Cert.SerialNumber); err != nil {
		t.Fatal(err)
	}
	older, _ := os.ReadFile(file)
	if _, err := RevokeAdminCert(dir, big.NewInt(7)); err != nil {
		t.Fatal(err)
	}
	crl, err := LoadAdminCRL(dir)
	if err != nil {
		t.Fatal(err)
	}
	for what, data := range map[string][]byte{"signed by another CA": foreign, "older": older, "gone": nil} {
		if data == nil {
			os.Remove(file)
		} else {
			os.WriteFile(file, data, 0o644)
		}
		if _, _, err := crl.Reload(); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("reload of a CRL %s: %v, want an error naming %s", what, err, file)
		}
		if !crl.Revoked(alice.Cert) || crl.List().Number.Int64() != 2 {
			t.Errorf("after a failed reload (%s) the list in force changed", what)
		}
	}
}
