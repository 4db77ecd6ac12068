package ima

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/dsse"
)

func TestBadPolicies(t *testing.T) {
	tests := []struct {
		name, json, key string
	}{
		{"not json", `{`, ""},
		{"digest not hex", `{"digests": {"/a": ["zz"]}}`, `digests["/a"][0]`},
		{"digest too long", `{"digests": {"/a": ["` + strings.Repeat("ab", 65) + `"]}}`, `digests["/a"][0]`},
		{"odd digest", `{"keyrings": {".ima": ["abc"]}}`, `keyrings[".ima"][0]`},
		{"unknown prefix", `{"ima-buf": {"x": ["md4:00"]}}`, `ima-buf["x"][0]`},
		{"python-only regex", `{"excludes": ["/tmp/(?!keep)"]}`, "excludes[0]"},
		{"unknown log hash", `{"ima": {"log_hash_alg": "crc32"}}`, "ima.log_hash_alg"},
		{"dm policy", `{"ima": {"dm_policy": {"x": 1}}}`, "ima.dm_policy"},
		{"newer version", `{"meta": {"version": 2}}`, "meta.version"},
		{"bad keys", `{"verification-keys": "{\"pubkeys\": [\"!!\"]}"}`, "verification-keys.pubkeys[0]"},
		{"bad dsse payload", `{"payload": "%%%"}`, "payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.json))
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Key != tc.key {
				t.Fatalf("err %v (key %q), want key %q", err, keyOf(pe), tc.key)
			}
		})
	}
}

func keyOf(pe *PolicyError) string {
	if pe == nil {
		return ""
	}
	return pe.Key
}

// Excludes follow Keylime: one alternation, anchored at the start only.
func TestExcludes(t *testing.T) {
	pol, err := ParsePolicy([]byte(`{"excludes": ["/tmp/.*", "/var/log", "boot_aggregate"]}`))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/tmp/x":          true,
		"/var/log/syslog": true, // prefix match, as Python's re.match
		"/usr/tmp/x":      false,
		"boot_aggregate":  true,
		"/usr/bin/ls":     false,
	} {
		if got := pol.Excluded([]byte(path)); got != want {
			t.Errorf("Excluded(%q) = %v", path, got)
		}
	}
}

// A DSSE envelope is not read by ParsePolicy: only ParseSignedPolicy opens
// it, and only with a key its signature verifies against.
func TestDSSEPolicy(t *testing.T) {
	inner := `{"digests": {"/a": ["` + strings.Repeat("00", 32) + `"]}}`
	env := `{"payloadType": "application/vnd.keylime+json", "payload": "` + base64.StdEncoding.EncodeToString([]byte(inner)) + `", "signatures": []}`
	var pe *PolicyError
	if _, err := ParsePolicy([]byte(env)); !errors.As(err, &pe) || !strings.Contains(err.Error(), "--policy-key") {
		t.Fatalf("unverified envelope: %v", err)
	}
	if _, err := ParseSignedPolicy([]byte(env), nil); err == nil {
		t.Fatal("unsigned envelope opened")
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := dsse.NewSigner(key, "key.pem")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signer.Public()
	e, _ := dsse.Sign(dsse.PayloadTypeKeylime, []byte(inner), signer)
	signed, _ := e.Marshal()
	pol, err := ParseSignedPolicy(signed, []dsse.PublicKey{pub})
	if err != nil || pol.Paths() != 1 {
		t.Fatalf("signed policy: %v", err)
	}
	if _, err := ParseSignedPolicy(signed, nil); !errors.Is(err, dsse.ErrNoKeys) {
		t.Fatalf("no key: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPub, _ := dsse.NewPublicKey(&other.PublicKey, "other.pem")
	if _, err := ParseSignedPolicy(signed, []dsse.PublicKey{otherPub}); !errors.Is(err, dsse.ErrNoValidSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	// A signed boot policy (or anything else) is still not a runtime policy.
	e, _ = dsse.Sign(dsse.PayloadTypeKeylime, []byte(`{"kind": "vigil-boot-policy", "version": 1}`), signer)
	signedBoot, _ := e.Marshal()
	if _, err := ParseSignedPolicy(signedBoot, []dsse.PublicKey{pub}); !errors.As(err, &pe) || pe.Key != "kind" {
		t.Fatalf("signed boot policy: %v", err)
	}
	// Another payload type is refused.
	e, _ = dsse.Sign("application/json", []byte(inner), signer)
	otherType, _ := e.Marshal()
	if _, err := ParseSignedPolicy(otherType, []dsse.PublicKey{pub}); !errors.Is(err, dsse.ErrPayloadType) {
		t.Fatalf("payload type: %v", err)
	}
}

// Keylime's real signed policy opens with its key; the bad copy does not.
func TestKeylimeSignedPolicy(t *testing.T) {
	keys, err := dsse.ParsePublicKeys(readData(t, "policy", "keylime-runtime-policy-pubkey.pub"), "keylime-runtime-policy-pubkey.pub")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParseSignedPolicy(readData(t, "policy", "keylime-runtime-policy-test-signed.json"), keys)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ParsePolicy(readData(t, "policy", "keylime-runtime-policy-test.json"))
	if err != nil {
		t.Fatal(err)
	}
	if pol.Paths() != plain.Paths() || pol.Paths() == 0 {
		t.Fatalf("%d paths, the plain policy has %d", pol.Paths(), plain.Paths())
	}
	if _, err := ParseSignedPolicy(readData(t, "policy", "keylime-runtime-policy-test-signed-bad.json"), keys); err == nil {
		t.Fatal("bad signature accepted")
	}
}

// The top level is Keylime's schema and nothing else: a boot policy, a
// Keylime measured-boot reference state or any other object is refused,
// naming the member.
func TestStrictPolicyShape(t *testing.T) {
	full := `{"meta": {"version": 1, "generator": 1, "timestamp": "x", "extra": 1}, "release": 0, "digests": {}, "excludes": [],
		"keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null}, "ima-buf": {}, "verification-keys": ""}`
	if _, err := ParsePolicy([]byte(full)); err != nil {
		t.Fatalf("every Keylime member: %v", err)
	}
	for _, name := range []string{"keylime-policy-sha256.json", "keylime-runtime-policy-test.json"} {
		if _, err := ParsePolicy(readData(t, "policy", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tc := range map[string]struct{ doc, key string }{
		"boot policy":      {`{"kind": "vigil-boot-policy", "version": 1, "bank": "sha256", "boot_digests": []}`, "kind"},
		"misspelt member":  {`{"meta": {"version": 1}, "digest": {}}`, "digest"},
		"extra member":     {`{"digests": {}, "allowlist": []}`, "allowlist"},
		"wrong case":       {`{"Digests": {"/a": ["00"]}}`, "Digests"},
		"empty object":     {`{}`, ""},
		"null":             {`null`, ""},
		"array":            {`[]`, ""},
		"trailing data":    {`{"digests": {}} {"digests": {}}`, ""},
		"negative release": {`{"release": -1}`, "release"},
		"meta not object":  {`{"meta": 3}`, "meta"},
	} {
		_, err := ParsePolicy([]byte(tc.doc))
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Key != tc.key {
			t.Errorf("%s: %v (key %q), want key %q", name, err, keyOf(pe), tc.key)
		}
	}
	mb := readData(t, "policy", "keylime-example_reference_state.json")
	_, err := ParsePolicy(mb)
	if err == nil || !strings.Contains(err.Error(), "boot policy") {
		t.Errorf("Keylime measured-boot reference state: %v", err)
	}
}

// A generated policy survives Keylime's JSON form.
func TestPolicyJSONRoundTrip(t *testing.T) {
	data := readData(t, "ima", "rust-keylime-ascii_runtime_measurements")
	rp, err := PolicyFromLog(data, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := rp.JSON()
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy(js)
	if err != nil {
		t.Fatal(err)
	}
	if pol.Paths() != len(rp.Digests) || pol.Paths() < 100 {
		t.Fatalf("%d paths, generated %d", pol.Paths(), len(rp.Digests))
	}
	for _, k := range []string{`"meta"`, `"release"`, `"digests"`, `"excludes"`, `"keyrings"`, `"ima"`, `"ima-buf"`, `"verification-keys"`, `"dm_policy": null`, `"log_hash_alg": "sha1"`} {
		if !strings.Contains(string(js), k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	for _, name := range []string{"keylime-policy-sha256.json", "keylime-runtime-policy-test.json", "keylime-runtime-policy-test-signed.json"} {
		if data, err := readPolicySeed(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"digests": {"/a": ["sha256:00", "ab"]}, "excludes": ["/tmp/.*"], "ima": {"ignored_keyrings": ["*"]}}`))
	f.Add([]byte(`{"verification-keys": "{\"keyids\": [1], \"pubkeys\": [\"MAA=\"]}"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, err := ParsePolicy(data)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		pol.Excluded([]byte("/usr/bin/x"))
		match(pol.digests, []byte("/a"), SHA256, make([]byte, 32))
	})
}
