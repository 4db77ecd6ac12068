package dsse

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/testenv"
)

func TestPAE(t *testing.T) {
	// The DSSE specification's example.
	got := PAE("http://example.com/HelloWorld", []byte("hello world"))
	want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
	if string(got) != want {
		t.Fatalf("PAE = %q, want %q", got, want)
	}
}

func pemOf(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PRIVATE KEY", der)
}

func spki(t *testing.T, k crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PUBLIC KEY", der)
}

// Keys of every supported kind and PEM encoding sign, and their public
// halves, in every supported encoding, verify.
func TestSignVerifyRoundTrip(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(ec256)
	cases := []struct {
		name     string
		priv     []byte
		pub      []byte
		certFrom crypto.Signer
	}{
		{"ecdsa-p256 pkcs8", pkcs8(t, ec256), spki(t, &ec256.PublicKey), nil},
		{"ecdsa-p256 sec1", pemOf(t, "EC PRIVATE KEY", sec1), spki(t, &ec256.PublicKey), nil},
		{"ecdsa-p384 pkcs8, certificate", pkcs8(t, ec384), nil, ec384},
		{"rsa pkcs1, pkcs1 public", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)), nil},
		{"rsa pkcs8, certificate", pkcs8(t, rsaKey), nil, rsaKey},
	}
	payload := []byte(`{"meta": {"version": 1}, "digests": {}}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParsePrivateKey(tc.priv, "priv.pem")
			if err != nil {
				t.Fatal(err)
			}
			pubPEM := tc.pub
			if tc.certFrom != nil {
				pubPEM = selfSigned(t, tc.certFrom)
			}
			keys, err := ParsePublicKeys(pubPEM, "pub.pem")
			if err != nil {
				t.Fatal(err)
			}
			if keys[0].KeyID != s.KeyID {
				t.Fatalf("key IDs differ: public %s, signer %s", keys[0].KeyID, s.KeyID)
			}
			if tc.certFrom != nil && keys[0].CertKeyID == "" {
				t.Fatal("certificate key without its x509 key ID")
			}
			env, err := Sign(PayloadTypeKeylime, payload, s)
			if err != nil {
				t.Fatal(err)
			}
			js, err := env.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(js, PayloadTypeKeylime, keys)
			if err != nil {
				t.Fatalf("open: %v\n%s", err, js)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("payload %q", got)
			}
			// Another key of the same kind refuses it, naming the signature
			// and the key.
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ok, _ := NewPublicKey(&other.PublicKey, "other.pem")
			_, err = Open(js, PayloadTypeKeylime, []PublicKey{ok})
			if !errors.Is(err, ErrNoValidSignature) || !strings.Contains(err.Error(), "signatures[0]") || !strings.Contains(err.Error(), "other.pem") {
				t.Fatalf("wrong key: %v", err)
			}
			// A changed payload fails.
			var e Envelope
			json.Unmarshal(js, &e)
			e.Payload = base64.StdEncoding.EncodeToString(append(payload, ' '))
			tampered, _ := e.Marshal()
			if _, err := Open(tampered, PayloadTypeKeylime, keys); !errors.Is(err, ErrNoValidSignature) {
				t.Fatalf("tampered payload: %v", err)
			}
			// The payload type is signed too.
			if _, err := Open(js, "application/json", keys); !errors.Is(err, ErrPayloadType) {
				t.Fatalf("payload type: %v", err)
			}
			if _, err := Open(js, PayloadTypeKeylime, nil); !errors.Is(err, ErrNoKeys) {
				t.Fatalf("no keys: %v", err)
			}
		})
	}
}

func selfSigned(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dsse_lib"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "CERTIFICATE", der)
}

// RSA PKCS #1 v1.5 signatures over SHA-256 verify too.
func TestRSAPKCS1v15Verifies(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	payload := []byte("{}")
	d := sha256Sum(PAE(PayloadTypeKeylime, payload))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d)
	if err != nil {
		t.Fatal(err)
	}
	env := &Envelope{Payload: base64.StdEncoding.EncodeToString(payload), PayloadType: PayloadTypeKeylime,
		Signatures: []Signature{{Sig: base64.StdEncoding.EncodeToString(sig)}}}
	js, _ := env.Marshal()
	pub, _ := NewPublicKey(&k.PublicKey, "rsa.pub")
	if _, err := Open(js, PayloadTypeKeylime, []PublicKey{pub}); err != nil {
		t.Fatal(err)
	}
}

func sha256Sum(b []byte) []byte {
	h := crypto.SHA256.New()
	h.Write(b)
	return h.Sum(nil)
}

func TestKeyRefusals(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, tc := range map[string]struct {
		pem  []byte
		want string
	}{
		"small rsa":   {spki(t, &small.PublicKey), "1024 bits"},
		"private key": {pkcs8(t, ec), `"PRIVATE KEY" block`},
		"no pem":      {[]byte("hello"), "no PEM public key"},
	} {
		if _, err := ParsePublicKeys(tc.pem, "k.pem"); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "k.pem") {
			t.Errorf("%s: %v, want %q naming k.pem", name, err, tc.want)
		}
	}
	if _, err := ParsePrivateKey(spki(t, &ec.PublicKey), "p.pem"); err == nil || !strings.Contains(err.Error(), "p.pem") {
		t.Errorf("public key as private: %v", err)
	}
	two := append(pkcs8(t, ec), pkcs8(t, ec)...)
	if _, err := ParsePrivateKey(two, "p.pem"); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two private keys: %v", err)
	}
	// Several keys in one file are named by block.
	ks, err := ParsePublicKeys(append(spki(t, &ec.PublicKey), spki(t, &small.PublicKey)...), "two.pem")
	if err == nil || !strings.Contains(err.Error(), "two.pem block 2") {
		t.Errorf("second block refused: %v, %d keys", err, len(ks))
	}
}

func TestParseRefusals(t *testing.T) {
	good := `{"payload": "e30=", "payloadType": "t", "signatures": [{"keyid": "x", "sig": "AAAA"}]}`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good envelope: %v", err)
	}
	for name, tc := range map[string]struct{ doc, field string }{
		"unknown member": {`{"payload": "e30=", "payloadType": "t", "signatures": [{"sig": "AAAA"}], "extra": 1}`, `"extra"`},
		"wrong case":     {`{"Payload": "e30=", "payloadType": "t", "signatures": [{"sig": "AAAA"}]}`, `"Payload"`},
		"sig member":     {`{"payload": "e30=", "payloadType": "t", "signatures": [{"Sig": "AAAA"}]}`, `signatures[0]."Sig"`},
		"no type":        {`{"payload": "e30=", "signatures": [{"sig": "AAAA"}]}`, "payloadType"},
		"bad payload":    {`{"payload": "%%", "payloadType": "t", "signatures": [{"sig": "AAAA"}]}`, "payload"},
		"unsigned":       {`{"payload": "e30=", "payloadType": "t", "signatures": []}`, "signatures"},
		"unpadded sig":   {`{"payload": "e30=", "payloadType": "t", "signatures": [{"sig": "AAAA"}, {"sig": "AAA"}]}`, "signatures[1].sig"},
		"empty sig":      {`{"payload": "e30=", "payloadType": "t", "signatures": [{"sig": ""}]}`, "signatures[0].sig"},
		"trailing":       {good + ` {}`, ""},
		"not an object":  {`[]`, ""},
	} {
		_, err := Parse([]byte(tc.doc))
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: %v, want a FormatError at %q", name, err, tc.field)
		}
	}
	many := `{"payload": "e30=", "payloadType": "t", "signatures": [` + strings.Repeat(`{"sig": "AAAA"}, `, MaxSignatures) + `{"sig": "AAAA"}]}`
	if _, err := Parse([]byte(many)); err == nil {
		t.Error("too many signatures accepted")
	}
}

// Keylime's own signed policy (keylime test/data) verifies with its key;
// its deliberately broken copy does not.
func TestKeylimeSignedPolicy(t *testing.T) {
	dir := filepath.Join(testenv.DataDir(), "policy")
	if testenv.DataDir() == "" {
		testenv.Missing(t, "shared test data (../shared/testdata or $VIGIL_TESTDATA) not found")
	}
	keys, err := LoadPublicKeys(filepath.Join(dir, "keylime-runtime-policy-pubkey.pub"))
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, "keylime-runtime-policy-test-signed.json"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	// Keylime's key ID is the SHA-256 of the PEM public key.
	if env.Signatures[0].KeyID != keys[0].KeyID {
		t.Errorf("keyid %s, Keylime wrote %s", keys[0].KeyID, env.Signatures[0].KeyID)
	}
	payload, err := Open(good, PayloadTypeKeylime, keys)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile(filepath.Join(dir, "keylime-runtime-policy-test.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(payload), bytes.TrimSpace(plain)) {
		t.Error("payload differs from keylime-runtime-policy-test.json")
	}

	bad, err := os.ReadFile(filepath.Join(dir, "keylime-runtime-policy-test-signed-bad.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, PayloadTypeKeylime, keys); err == nil || !strings.Contains(err.Error(), "signatures[0]") {
		t.Fatalf("bad copy: %v, want a refusal naming signatures[0]", err)
	}
	// The bad copy's signature, padded so that it decodes, still fails:
	// it is refused for its signature, not only for its encoding.
	var e Envelope
	json.Unmarshal(bad, &e)
	for len(e.Signatures[0].Sig)%4 != 0 {
		e.Signatures[0].Sig += "="
	}
	padded, _ := e.Marshal()
	if _, err := Open(padded, PayloadTypeKeylime, keys); !errors.Is(err, ErrNoValidSignature) {
		t.Fatalf("padded bad copy: %v", err)
	}
	// Another key refuses the good one.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ok, _ := NewPublicKey(&other.PublicKey, "other.pem")
	if _, err := Open(good, PayloadTypeKeylime, []PublicKey{ok}); !errors.Is(err, ErrNoValidSignature) {
		t.Fatalf("other key: %v", err)
	}
}

// Vigil's envelope has Keylime's JSON layout.
func TestMarshalLayout(t *testing.T) {
	e := &Envelope{Payload: "e30=", PayloadType: PayloadTypeKeylime, Signatures: []Signature{{KeyID: "ab", Sig: "AAAA"}}}
	js, _ := e.Marshal()
	want := `{"payload": "e30=", "payloadType": "application/vnd.keylime+json", "signatures": [{"keyid": "ab", "sig": "AAAA"}]}`
	if string(js) != want {
		t.Fatalf("%s\nwant %s", js, want)
	}
}

func TestIsEnvelope(t *testing.T) {
	for doc, want := range map[string]bool{
		`{"payload": "x"}`:           true,
		`{"digests": {}}`:            false,
		`[]`:                         false,
		`{"payload": null}`:          true,
		`not json`:                   false,
		`{"meta": {"payload": "x"}}`: false,
		`{"PAYLOAD": "x"}`:           false,
	} {
		if got := IsEnvelope([]byte(doc)); got != want {
			t.Errorf("IsEnvelope(%s) = %v", doc, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	if d := testenv.DataDir(); d != "" {
		for _, n := range []string{"keylime-runtime-policy-test-signed.json", "keylime-runtime-policy-test-signed-bad.json"} {
			if b, err := os.ReadFile(filepath.Join(d, "policy", n)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"payload": "e30=", "payloadType": "t", "signatures": [{"keyid": "x", "sig": "AAAA"}]}`))
	f.Add([]byte(`{"payload": "7b7d", "payloadType": "t", "signatures": [{"sig": "MEUCIQ-_"}]}`))
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := NewPublicKey(&k.PublicKey, "fuzz")
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		if _, err := e.UnverifiedPayload(); err != nil {
			t.Fatalf("parsed envelope's payload does not decode: %v", err)
		}
		if _, err := e.Verify([]PublicKey{pub}); err == nil {
			t.Fatal("a random envelope verified")
		}
		js, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(js); err != nil {
			t.Fatalf("re-marshalled envelope does not parse: %v\n%s", err, js)
		}
	})
}
