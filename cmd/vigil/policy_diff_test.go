package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
)

// `vigil policy diff A B`: exit 0 and nothing printed when the policies
// accept the same, 1 and one line per change when they differ, 2 on bad
// input; --json says the same in a document.
func TestPolicyDiffCLI(t *testing.T) {
	dir := t.TempDir()
	a := ima.NewRuntimePolicy()
	a.Digests["/usr/bin/a"] = []string{"aa"}
	a.Digests["/usr/bin/gone"] = []string{"bb"}
	a.Digests["/usr/bin/c"] = []string{"cc", "dd"}
	a.Excludes = []string{"/tmp/.*"}
	b := ima.NewRuntimePolicy()
	b.Meta.Timestamp = "later"
	b.Digests["/usr/bin/a"] = []string{"AA"}
	b.Digests["/usr/bin/new"] = []string{"ee"}
	b.Digests["/usr/bin/c"] = []string{"dd", "ff"}
	b.Excludes = []string{"/tmp/.*", "/var/log/.*"}
	b.Keyrings[".ima"] = []string{"01"}
	fa := writePolicyJSON(t, filepath.Join(dir, "a.json"), a)
	fb := writePolicyJSON(t, filepath.Join(dir, "b.json"), b)

	out, _, code, _ := runAll(t, "policy", "diff", fa, fb)
	want := "--- " + fa + "\n+++ " + fb + "\n" +
		"- digests /usr/bin/gone: bb\n+ digests /usr/bin/new: ee\n~ digests /usr/bin/c: +ff -cc\n+ excludes /var/log/.*\n+ keyrings .ima: 01\n"
	if code != 1 || out != want {
		t.Fatalf("exit %d\n%s\nwant\n%s", code, out, want)
	}
	d, code := policyDiff(t, fa, fb)
	if code != 1 || d.Identical || d.Counts.PathsAdded != 1 || d.Counts.PathsRemoved != 1 || d.Counts.PathsChanged != 1 || d.Counts.ExcludesAdded != 1 || d.Counts.Other != 1 {
		t.Fatalf("json: exit %d %+v", code, d)
	}
	// The same policy, respelt (another timestamp, upper-case digests, in
	// another order): identical.
	a2 := a
	a2.Meta.Timestamp = "another"
	a2.Digests = map[string][]string{"/usr/bin/a": {"AA"}, "/usr/bin/gone": {"bb"}, "/usr/bin/c": {"dd", "cc"}}
	fa2 := writePolicyJSON(t, filepath.Join(dir, "a2.json"), a2)
	if out, _, code, _ := runAll(t, "policy", "diff", fa, fa2); code != 0 || out != "" {
		t.Fatalf("identical: exit %d %q", code, out)
	}
	if d, code := policyDiff(t, fa, fa2); code != 0 || !d.Identical {
		t.Fatalf("identical json: exit %d %+v", code, d)
	}

	// Signed policies open with --policy-key, as for vigil ima verify.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, pub := writeKeyPair(t, dir, "signer", key, &key.PublicKey)
	signed := filepath.Join(dir, "b.signed.json")
	if _, _, code, msg := runAll(t, "policy", "sign", "--key", priv, fb, "--out", signed); code != 0 {
		t.Fatalf("sign: %s", msg)
	}
	if out, _, code, _ := runAll(t, "policy", "diff", fb, signed, "--policy-key", pub); code != 0 || out != "" {
		t.Fatalf("signed: exit %d %q", code, out)
	}

	boot := filepath.Join(dir, "boot.json")
	os.WriteFile(boot, []byte(`{"kind": "boot"}`), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{fa}, "want two runtime policy arguments"},
		{[]string{fa, fb, fb}, "want two runtime policy arguments"},
		{[]string{fa, filepath.Join(dir, "missing.json")}, "B: open "},
		{[]string{boot, fb}, "A " + boot + ": ima: runtime policy kind"},
		{[]string{fa, signed}, "give --policy-key FILE"},
	} {
		_, _, code, msg := runAll(t, append([]string{"policy", "diff"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%v: exit %d %q, want one line with %q", tc.args, code, msg, tc.want)
		}
	}
}

// `vigil policy check POLICY --ima-log FILE` lists what would fail (entry,
// path, digest, rule), says what it cannot check without a quote, and
// exits 0, 1 or 2.
func TestPolicyCheckCLI(t *testing.T) {
	dir := t.TempDir()
	log := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	full, _ := createPolicy(t, "--ima-log", log)
	// Drop two paths and change a digest: three failures.
	var dropped []string
	for p := range full.Digests {
		if p != "boot_aggregate" && len(dropped) < 2 {
			dropped = append(dropped, p)
			delete(full.Digests, p)
		}
	}
	var changed string
	for p := range full.Digests {
		if p != "boot_aggregate" {
			changed = p
			full.Digests[p] = []string{strings.Repeat("ab", 20)}
			break
		}
	}
	pol := writePolicyJSON(t, filepath.Join(dir, "pol.json"), full)
	rep, code := checkReport(t, pol, log)
	if code != 1 || rep.OK || rep.Entries != 826 {
		t.Fatalf("exit %d %+v", code, rep)
	}
	rules := map[string]ima.Rule{}
	for _, f := range rep.Failures {
		if f.Entry < 1 || f.Digest == "" || !strings.HasPrefix(f.Digest, "sha1:") {
			t.Errorf("failure %+v", f)
		}
		rules[f.Path] = f.Rule
	}
	if rules[dropped[0]] != ima.RuleNotInPolicy || rules[dropped[1]] != ima.RuleNotInPolicy || rules[changed] != ima.RuleDigestMismatch || rep.FailureCount < 3 {
		t.Fatalf("failures %+v", rep.Failures)
	}
	out, _, code, msg := runAll(t, "policy", "check", pol, "--ima-log", log)
	if code != 1 || !strings.HasPrefix(out, "note: there is no quote") || !strings.Contains(out, ": not-in-policy: ") || !strings.Contains(out, ": digest-mismatch: ") ||
		!strings.Contains(msg, "would fail") {
		t.Fatalf("text: exit %d %s\n%s", code, msg, out)
	}

	// A signed policy needs its key.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, pub := writeKeyPair(t, dir, "signer", key, &key.PublicKey)
	good, _ := createPolicy(t, "--ima-log", log)
	goodFile := writePolicyJSON(t, filepath.Join(dir, "good.json"), good)
	signed := filepath.Join(dir, "good.signed.json")
	if _, _, code, msg := runAll(t, "policy", "sign", "--key", priv, goodFile, "--out", signed); code != 0 {
		t.Fatalf("sign: %s", msg)
	}
	if rep, code := checkReport(t, signed, log, "--policy-key", pub); code != 0 || !rep.OK {
		t.Fatalf("signed: exit %d %+v", code, rep.Failures)
	}

	bad := filepath.Join(dir, "bad.log")
	os.WriteFile(bad, []byte("10 "+strings.Repeat("1", 40)+" ima-ng sha1:zz /x\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{signed, "--ima-log", log}, "give --policy-key FILE"},
		{[]string{goodFile}, "missing required flag(s) --ima-log"},
		{[]string{"--ima-log", log}, "want one POLICY argument"},
		{[]string{goodFile, "--ima-log", bad}, "--ima-log " + bad + ": ima: ascii list, line 1"},
		{[]string{goodFile, "--ima-log", filepath.Join(dir, "none.log")}, "none.log"},
		{[]string{log, "--ima-log", log}, "POLICY " + log + ": ima: runtime policy: not JSON"},
	} {
		_, _, code, msg := runAll(t, append([]string{"policy", "check"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%v: exit %d %q, want one line with %q", tc.args, code, msg, tc.want)
		}
	}
}
