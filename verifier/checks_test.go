package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/wire"
)

const testRuntimePolicy = `{"meta": {"version": 1}, "digests": {"/usr/bin/true": ["` +
	"0000000000000000000000000000000000000000" + `"]}}`

const testBootPolicy = `{"kind": "vigil-boot-policy", "version": 1, "bank": "sha256", "secure_boot": "any",
	"skip": ["scrtm", "firmware_blobs", "pk", "kek", "db", "dbx", "boot_digests", "kernel_cmdline"]}`

// adminServer serves the verifier's handler over TLS with a BoltStore, the
// policy check made of keys, and returns a client holding the admin
// certificate.
func adminServer(t *testing.T, keys []dsse.PublicKey) (*Service, string, *http.Client) {
	t.Helper()
	svc, _ := newTestService(t)
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if err := tlsutil.InitDir(tlsDir, tlsutil.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := tlsutil.ServerConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(Handler(svc, HandlerOptions{CheckPolicy: NewPolicyCheck(keys)}))
	srv.TLS = srvCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cliCfg, err := tlsutil.AdminClientConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	return svc, srv.URL, &http.Client{Transport: &http.Transport{TLSClientConfig: cliCfg}}
}

// putPolicy uploads a policy; it returns the status and the error text.
func putPolicy(t *testing.T, client *http.Client, url, name, kind string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url+PathPolicies+"/"+name+"?kind="+kind, bytes.NewReader(body))
	rsp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	var e wire.Error
	b, _ := io.ReadAll(rsp.Body)
	json.Unmarshal(b, &e)
	return rsp.StatusCode, e.Error
}

func signPolicy(t *testing.T, payloadType string, policy []byte, key any) []byte {
	t.Helper()
	var s *dsse.Signer
	var err error
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		s, err = dsse.NewSigner(k, "test key")
	case *rsa.PrivateKey:
		s, err = dsse.NewSigner(k, "test key")
	}
	if err != nil {
		t.Fatal(err)
	}
	e, err := dsse.Sign(payloadType, policy, s)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := e.Marshal()
	return b
}

func publicKey(t *testing.T, pub any, source string) dsse.PublicKey {
	t.Helper()
	k, err := dsse.NewPublicKey(pub, source)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The admin API stores a signed policy only when a configured key verifies
// it, answers 400 saying why otherwise, and keeps taking plain policies.
func TestSignedPolicyUpload(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := []dsse.PublicKey{publicKey(t, &ecKey.PublicKey, "ec.pub"), publicKey(t, &rsaKey.PublicKey, "rsa.pub")}
	svc, url, client := adminServer(t, keys)
	ctx := context.Background()

	for name, key := range map[string]any{"signed-ec": ecKey, "signed-rsa": rsaKey} {
		code, msg := putPolicy(t, client, url, name, "runtime", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testRuntimePolicy), key))
		if code != http.StatusCreated {
			t.Fatalf("%s: %d %s", name, code, msg)
		}
		// The compile path reads the stored envelope.
		pol := new(policyCache).resolve(ctx, svc.Store, Agent{RuntimePolicy: name})
		if p, err := pol.Runtime, pol.RuntimeErr; err != nil || p.Paths() != 1 {
			t.Fatalf("%s: compiled %v", name, err)
		}
	}
	if code, msg := putPolicy(t, client, url, "plain", "runtime", []byte(testRuntimePolicy)); code != http.StatusCreated {
		t.Fatalf("plain policy: %d %s", code, msg)
	}
	if code, msg := putPolicy(t, client, url, "signed-boot", "boot", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testBootPolicy), ecKey)); code != http.StatusCreated {
		t.Fatalf("signed boot policy: %d %s", code, msg)
	} else if err := new(policyCache).resolve(ctx, svc.Store, Agent{BootPolicy: "signed-boot"}).BootErr; err != nil {
		t.Fatalf("signed boot policy compiled: %v", err)
	}

	for _, tc := range []struct {
		name, kind string
		body       []byte
		want       string
	}{
		{"unconfigured-key", "runtime", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testRuntimePolicy), stranger), "no signature verifies"},
		{"wrong-type", "runtime", signPolicy(t, "application/json", []byte(testRuntimePolicy), ecKey), "wrong DSSE payload type"},
		{"boot-as-runtime", "runtime", []byte(testBootPolicy), `this looks like a boot policy`},
		{"signed-boot-as-runtime", "runtime", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testBootPolicy), ecKey), `this looks like a boot policy`},
		{"runtime-as-boot", "boot", []byte(testRuntimePolicy), `unknown field "meta"`},
		{"other-json", "runtime", []byte(`{"hello": "world"}`), `unknown member "hello"`},
		{"empty-object", "runtime", []byte(`{}`), "not a runtime policy"},
	} {
		code, msg := putPolicy(t, client, url, tc.name, tc.kind, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.name, code, msg, tc.want)
		}
		if _, err := svc.Store.GetPolicy(ctx, tc.name); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: refused policy stored (%v)", tc.name, err)
		}
	}
	// The refusal names the signature and the keys tried.
	_, msg := putPolicy(t, client, url, "x", "runtime", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testRuntimePolicy), stranger))
	if !strings.Contains(msg, "signatures[0]") || !strings.Contains(msg, "ec.pub") || !strings.Contains(msg, "rsa.pub") {
		t.Errorf("refusal %q does not name the signature and the keys", msg)
	}
}

// Without --policy-key, a signed policy is refused saying so.
func TestSignedPolicyWithoutKeys(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, url, client := adminServer(t, nil)
	code, msg := putPolicy(t, client, url, "signed", "runtime", signPolicy(t, dsse.PayloadTypeKeylime, []byte(testRuntimePolicy), key))
	if code != http.StatusBadRequest || !strings.Contains(msg, "no policy signing key configured") || !strings.Contains(msg, "--policy-key") {
		t.Fatalf("%d %q", code, msg)
	}
	if code, msg := putPolicy(t, client, url, "plain", "runtime", []byte(testRuntimePolicy)); code != http.StatusCreated {
		t.Fatalf("plain policy: %d %s", code, msg)
	}
}

// Keylime's own signed policy uploads with Keylime's key, and its bad copy
// does not.
func TestKeylimeSignedPolicyUpload(t *testing.T) {
	dir := testenv.DataDir()
	if dir == "" {
		testenv.Missing(t, "shared test data (../shared/testdata or $VIGIL_TESTDATA) not found")
	}
	keys, err := dsse.LoadPublicKeys(filepath.Join(dir, "policy", "keylime-runtime-policy-pubkey.pub"))
	if err != nil {
		t.Fatal(err)
	}
	_, url, client := adminServer(t, keys)
	for file, want := range map[string]int{
		"keylime-runtime-policy-test-signed.json":     http.StatusCreated,
		"keylime-runtime-policy-test-signed-bad.json": http.StatusBadRequest,
	} {
		body, err := os.ReadFile(filepath.Join(dir, "policy", file))
		if err != nil {
			t.Fatal(err)
		}
		if code, msg := putPolicy(t, client, url, strings.TrimSuffix(file, ".json"), "runtime", body); code != want {
			t.Errorf("%s: %d %s, want %d", file, code, msg, want)
		}
	}
}

// The size limit's answer names it.
func TestPolicyTooLargeNamesTheLimit(t *testing.T) {
	if !strings.Contains(policyTooLarge, "256 MiB") {
		t.Fatalf("%q", policyTooLarge)
	}
}

// The admin API needs the admin certificate for policies at all.
func TestPolicyUploadNeedsAdmin(t *testing.T) {
	_, url, client := adminServer(t, nil)
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: client.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if code, _ := putPolicy(t, anon, url, "p", "runtime", []byte(testRuntimePolicy)); code != http.StatusUnauthorized {
		t.Fatalf("anonymous upload: %d, want 401", code)
	}
}
