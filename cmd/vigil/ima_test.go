package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
)

func TestIMAReplayCLI(t *testing.T) {
	log := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	data, _ := os.ReadFile(log)
	for _, bank := range []string{"sha1", "sha256"} {
		out, code := run(t, context.Background(), "ima", "replay", log, "--bank", bank, "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		var got struct {
			Entries    int    `json:"entries"`
			PCR10      string `json:"pcr10"`
			Violations int    `json:"violations"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		a, _ := ima.ParseAlgorithm(bank)
		want, err := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, a)
		if err != nil {
			t.Fatal(err)
		}
		if got.Entries != 826 || got.Violations != 0 || got.PCR10 != hex.EncodeToString(want.PCR[bank]) {
			t.Fatalf("%s: %+v", bank, got)
		}
	}
}

func TestIMAShowCLI(t *testing.T) {
	log := testenv.Data(t, "ima", "tpm2-tss-sml-ima-sig-sha256-invalidated.bin")
	out, code := run(t, context.Background(), "ima", "show", log, "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var got struct {
		Format  string `json:"format"`
		Entries []struct {
			Path      string `json:"path"`
			HashCheck string `json:"hash_check"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Format != "binary" || len(got.Entries) != 2 || got.Entries[0].HashCheck != "ok" || got.Entries[1].HashCheck != "violation" || got.Entries[1].Path != "/init" {
		t.Fatalf("%+v", got)
	}
}

func TestIMABadInputExitsTwo(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("10 "+strings.Repeat("1", 40)+" ima-ng sha1:zz /x\n"), 0o644)
	truncated := filepath.Join(dir, "truncated")
	os.WriteFile(truncated, []byte{10, 0, 0, 0, 1, 2}, 0o644)
	for _, args := range [][]string{
		{"ima", "show", bad},
		{"ima", "replay", truncated},
		{"ima", "replay", bad, "--bank", "md5"},
		{"ima", "verify", bad},
		{"ima", "show", filepath.Join(dir, "missing")},
		{"policy", "create", "runtime"},
		{"policy", "create", "runtime", "--ima-log", bad},
	} {
		if _, code := run(t, context.Background(), args...); code != 2 {
			t.Errorf("vigil %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}

// A policy generated from a log passes that log (with its quoted PCR 10) and
// fails a log with one more, unknown, file: exit 1 and a failure naming it.
func TestPolicyCreateAndVerifyCLI(t *testing.T) {
	log := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	data, _ := os.ReadFile(log)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.json")
	if out, code := run(t, context.Background(), "policy", "create", "runtime", "--ima-log", log, "--out", pol); code != 0 {
		t.Fatalf("create: exit %d %s", code, out)
	}
	rep, _ := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1, ima.SHA256)
	out, code := run(t, context.Background(), "ima", "verify", log, "--policy", pol, "--json",
		"--pcr10", hex.EncodeToString(rep.PCR["sha1"]), "--pcr10", "sha256:"+hex.EncodeToString(rep.PCR["sha256"]))
	if code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("verify: exit %d %s", code, out)
	}
	// A wrong quote, and a quote that covers none of the entries: exit 1.
	for _, q := range []string{strings.Repeat("1", 40), strings.Repeat("0", 40)} {
		if _, code := run(t, context.Background(), "ima", "verify", log, "--policy", pol, "--pcr10", q); code != 1 {
			t.Fatalf("pcr10 %s: exit %d", q, code)
		}
	}
	// One more file, unknown to the policy.
	d := sha256.Sum256([]byte("evil"))
	es, _ := ima.ParseAll([]byte("10 "+strings.Repeat("0", 40)+" ima-ng sha256:"+hex.EncodeToString(d[:])+" /tmp/evil\n"), ima.ParseOptions{})
	sum := sha1Sum(es[0].TemplateData)
	extra := "10 " + hex.EncodeToString(sum) + " ima-ng sha256:" + hex.EncodeToString(d[:]) + " /tmp/evil\n"
	bad := filepath.Join(dir, "bad.log")
	os.WriteFile(bad, append(append([]byte{}, data...), extra...), 0o644)
	out, code = run(t, context.Background(), "ima", "verify", bad, "--policy", pol, "--json")
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, out)
	}
	var res struct {
		OK       bool          `json:"ok"`
		Failures []ima.Failure `json:"failures"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.OK || len(res.Failures) != 1 || res.Failures[0].Entry != 826 || res.Failures[0].Path != "/tmp/evil" || res.Failures[0].Rule != ima.RuleNotInPolicy {
		t.Fatalf("%+v", res)
	}
}

func sha1Sum(b []byte) []byte {
	s, _ := ima.Sum(ima.SHA1, b)
	return s
}

func TestPolicyCreateRootfsCLI(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "usr", "bin"), 0o755)
	os.MkdirAll(filepath.Join(dir, "usr", "lib"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr", "bin", "tool"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr", "lib", "libx.so.1"), []byte("\x7fELF rest of a library"), 0o644)
	os.WriteFile(filepath.Join(dir, "usr", "lib", "notes.txt"), []byte("not code"), 0o644)
	os.Symlink("tool", filepath.Join(dir, "usr", "bin", "alias"))
	out, code := run(t, context.Background(), "policy", "create", "runtime", "--rootfs", dir)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rp ima.RuntimePolicy
	if err := json.Unmarshal([]byte(out), &rp); err != nil {
		t.Fatal(err)
	}
	tool := sha256.Sum256([]byte("#!/bin/sh\necho hi\n"))
	lib := sha256.Sum256([]byte("\x7fELF rest of a library"))
	if len(rp.Digests) != 2 || rp.Digests["/usr/bin/tool"][0] != hex.EncodeToString(tool[:]) || rp.Digests["/usr/lib/libx.so.1"][0] != hex.EncodeToString(lib[:]) {
		t.Fatalf("%+v", rp.Digests)
	}
	// Keylime's required keys are all there.
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("policy lacks %q", k)
		}
	}
	if _, err := ima.ParsePolicy([]byte(out)); err != nil {
		t.Fatal(err)
	}
}
