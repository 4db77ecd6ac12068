package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/testenv"
)

// writeKeyPair writes a private key (PKCS #8 PEM) and its public key (SPKI
// PEM) into dir.
func writeKeyPair(t *testing.T, dir, name string, key any, pub any) (priv, public string) {
	t.Helper()
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	priv, public = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644)
	return priv, public
}

// `vigil policy sign` makes an envelope `vigil ima verify --policy-key`
// opens; another key, or none, is bad input (exit 2) with a one-line error.
func TestPolicySignAndVerifyCLI(t *testing.T) {
	ctx := context.Background()
	log := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	data, _ := os.ReadFile(log)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.json")
	if out, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", log, "--out", pol); code != 0 {
		t.Fatalf("create: exit %d %s", code, out)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	strangerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPriv, ecPub := writeKeyPair(t, dir, "ec", ecKey, &ecKey.PublicKey)
	rsaPriv, rsaPub := writeKeyPair(t, dir, "rsa", rsaKey, &rsaKey.PublicKey)
	_, strangerPub := writeKeyPair(t, dir, "stranger", strangerKey, &strangerKey.PublicKey)
	rep, _ := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1)
	pcr10 := hex.EncodeToString(rep.PCR["sha1"])

	for _, k := range []struct{ priv, pub string }{{ecPriv, ecPub}, {rsaPriv, rsaPub}} {
		// To standard output: the envelope, in Keylime's layout.
		out, code := run(t, ctx, "policy", "sign", "--key", k.priv, pol)
		if code != 0 || !strings.HasPrefix(out, `{"payload": "`) {
			t.Fatalf("sign: exit %d %.80s", code, out)
		}
		var env dsse.Envelope
		if err := json.Unmarshal([]byte(out), &env); err != nil || env.PayloadType != dsse.PayloadTypeKeylime || len(env.Signatures) != 1 {
			t.Fatalf("envelope: %v %+v", err, env)
		}
		signed := filepath.Join(dir, "signed.json")
		if _, code := run(t, ctx, "policy", "sign", "--key", k.priv, pol, "--out", signed); code != 0 {
			t.Fatalf("sign --out: exit %d", code)
		}
		// The right key among others verifies it.
		if out, code := run(t, ctx, "ima", "verify", log, "--policy", signed, "--policy-key", strangerPub, "--policy-key", k.pub, "--pcr10", pcr10); code != 0 || !strings.HasPrefix(out, "ok: 826 entries") {
			t.Fatalf("verify with %s: exit %d %s", k.pub, code, out)
		}
		// A wrong key, or none: exit 2.
		if _, code := run(t, ctx, "ima", "verify", log, "--policy", signed, "--policy-key", strangerPub); code != exitUsage {
			t.Fatalf("wrong key: exit %d, want 2", code)
		}
		if _, code := run(t, ctx, "ima", "verify", log, "--policy", signed); code != exitUsage {
			t.Fatalf("no key: exit %d, want 2", code)
		}
	}
	// The errors say what happened in one line.
	signed := filepath.Join(dir, "signed.json")
	for args, want := range map[string]string{
		"--policy-key " + strangerPub: "no signature verifies: signatures[0]",
		"":                            "give --policy-key FILE",
		"--policy-key " + ecPriv:      `"PRIVATE KEY" block`,
	} {
		app := newApp()
		var errOut strings.Builder
		app.Writer, app.ErrWriter = &strings.Builder{}, &errOut
		argv := append([]string{"vigil", "ima", "verify", log, "--policy", signed}, strings.Fields(args)...)
		err := app.RunContext(ctx, hoistFlags(app, argv))
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: exit %d %v, want one line saying %q", args, exitCode(err), err, want)
		}
	}
}

// Keylime's own signed policy verifies with its key through the CLI, and its
// bad copy is bad input.
func TestKeylimeSignedPolicyCLI(t *testing.T) {
	ctx := context.Background()
	pub := testenv.Data(t, "policy", "keylime-runtime-policy-pubkey.pub")
	log := testenv.Data(t, "ima", "rust-keylime-ima_log.txt")
	good := testenv.Data(t, "policy", "keylime-runtime-policy-test-signed.json")
	bad := testenv.Data(t, "policy", "keylime-runtime-policy-test-signed-bad.json")
	// The log is not the policy's host: what matters is that the policy is
	// read (exit 0 or 1), not refused as input (exit 2).
	if _, code := run(t, ctx, "ima", "verify", log, "--policy", good, "--policy-key", pub); code == exitUsage {
		t.Fatalf("Keylime's signed policy: exit %d", code)
	}
	if _, code := run(t, ctx, "ima", "verify", log, "--policy", bad, "--policy-key", pub); code != exitUsage {
		t.Fatalf("Keylime's bad copy: exit %d, want 2", code)
	}
}

func TestPolicySignBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, pub := writeKeyPair(t, dir, "k", key, &key.PublicKey)
	notPolicy := filepath.Join(dir, "other.json")
	os.WriteFile(notPolicy, []byte(`{"hello": "world"}`), 0o644)
	pol := filepath.Join(dir, "p.json")
	os.WriteFile(pol, []byte(`{"meta": {"version": 1}, "digests": {}}`), 0o644)
	signed := filepath.Join(dir, "signed.json")
	if _, code := run(t, ctx, "policy", "sign", "--key", priv, pol, "--out", signed); code != 0 {
		t.Fatalf("sign: exit %d", code)
	}
	for _, args := range [][]string{
		{"policy", "sign", pol},                          // no --key
		{"policy", "sign", "--key", priv},                // no POLICY
		{"policy", "sign", "--key", pub, pol},            // a public key
		{"policy", "sign", "--key", priv, notPolicy},     // not a policy
		{"policy", "sign", "--key", priv, signed},        // already signed
		{"policy", "sign", "--key", priv, dir + "/none"}, // missing
	} {
		if _, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}

// A --policy-key the verifier cannot use stops it at start, as bad input.
func TestVerifierPolicyKeyBadInput(t *testing.T) {
	dir := t.TempDir()
	notKey := filepath.Join(dir, "not-a-key.pem")
	os.WriteFile(notKey, []byte("hello"), 0o644)
	for _, f := range []string{notKey, filepath.Join(dir, "missing.pem")} {
		_, code := run(t, context.Background(), "verifier", "--data", dir, "--tls-dir", dir, "--registrar", "https://127.0.0.1:1", "--policy-key", f)
		if code != exitUsage {
			t.Errorf("--policy-key %s: exit %d, want 2", f, code)
		}
	}
}
