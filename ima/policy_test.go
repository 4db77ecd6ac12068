package ima

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
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

// A DSSE envelope reads as its payload.
func TestDSSEPolicy(t *testing.T) {
	inner := `{"digests": {"/a": ["` + strings.Repeat("00", 32) + `"]}}`
	env := `{"payloadType": "application/vnd.keylime+json", "payload": "` + base64.StdEncoding.EncodeToString([]byte(inner)) + `", "signatures": []}`
	pol, err := ParsePolicy([]byte(env))
	if err != nil || pol.Paths() != 1 {
		t.Fatalf("%v", err)
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
			return
		}
		pol.Excluded([]byte("/usr/bin/x"))
		match(pol.digests, []byte("/a"), SHA256, make([]byte, 32))
	})
}
