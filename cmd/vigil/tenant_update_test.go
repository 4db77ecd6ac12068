package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/verifier"
)

// vigil tenant agent update, policy show --version and policy history
// against a running verifier (no registrar or agent needed: admin only).
func TestTenantAgentUpdateAndPolicyVersions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	addr := freeAddr(t)
	startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", addr,
		"--registrar", "https://127.0.0.1:1", "--log-level", "error")
	waitHealthy(t, tlsDir, "https://"+addr)
	tenant := func(args ...string) (string, int) {
		t.Helper()
		return run(t, ctx, append([]string{"tenant", "--tls-dir", tlsDir, "--verifier", "https://" + addr}, args...)...)
	}
	mustTenant := func(args ...string) string {
		t.Helper()
		out, code := tenant(args...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	var bodies []string
	for i := range 2 {
		rp := ima.NewRuntimePolicy()
		rp.Digests[fmt.Sprintf("/usr/bin/tool-%d", i)] = []string{strings.Repeat("ab", 32)}
		body, err := rp.JSON()
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, fmt.Sprintf("rt-%d.json", i))
		os.WriteFile(file, body, 0o600)
		mustTenant("policy", "add", "rt", "--runtime", file)
		bodies = append(bodies, string(body))
	}

	// Versions: each one's body, and the list.
	if out := mustTenant("policy", "show", "rt", "--version", "1"); out != bodies[0] {
		t.Errorf("policy show --version 1:\n%s", out)
	}
	if out := mustTenant("policy", "show", "rt"); out != bodies[1] {
		t.Errorf("policy show (latest):\n%s", out)
	}
	var p verifier.Policy
	if err := json.Unmarshal([]byte(mustTenant("policy", "show", "rt", "--version", "1", "--json")), &p); err != nil || p.Version != 1 || string(p.Body) != bodies[0] {
		t.Errorf("policy show --version 1 --json: %+v, %v", p, err)
	}
	out := mustTenant("policy", "history", "rt")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "1 ") || !strings.HasPrefix(lines[2], "2 ") {
		t.Errorf("policy history:\n%s", out)
	}
	var ps []verifier.Policy
	if err := json.Unmarshal([]byte(mustTenant("policy", "history", "rt", "--json")), &ps); err != nil || len(ps) != 2 || ps[0].Version != 1 {
		t.Errorf("policy history --json: %+v, %v", ps, err)
	}

	// Pinned at admission, updated to follow the latest with a new interval.
	var a struct {
		RuntimePolicy        string `json:"runtime_policy"`
		RuntimePolicyVersion int    `json:"runtime_policy_version"`
		Interval             string `json:"interval"`
	}
	json.Unmarshal([]byte(mustTenant("agent", "add", "web-1", "--runtime-policy", "rt@1", "--json")), &a)
	if a.RuntimePolicy != "rt" || a.RuntimePolicyVersion != 1 {
		t.Fatalf("agent add --runtime-policy rt@1: %+v", a)
	}
	a.RuntimePolicyVersion = 0
	json.Unmarshal([]byte(mustTenant("agent", "update", "web-1", "--runtime-policy", "rt", "--interval", "5s", "--json")), &a)
	if a.RuntimePolicy != "rt" || a.RuntimePolicyVersion != 0 || a.Interval != "5s" {
		t.Fatalf("agent update: %+v", a)
	}
	if out := mustTenant("agent", "history", "web-1"); !strings.Contains(out, "updated") || !strings.Contains(out, "by vigil-admin; runtime policy rt@1 (pinned) → rt@2; interval") {
		t.Errorf("agent history after the update:\n%s", out)
	}

	// Bad input: exit 2.
	for _, args := range [][]string{
		{"agent", "update", "web-1"},
		{"agent", "update", "web-1", "--runtime-policy", ""},
		{"agent", "update", "web-1", "--runtime-policy", "nope"},
		{"agent", "update", "web-1", "--runtime-policy", "rt@notanumber"},
		{"agent", "update", "web-1", "--runtime-policy", "rt@9"},
		{"agent", "update", "web-1", "--boot-policy", "rt"},
		{"agent", "update", "nobody", "--interval", "5s"},
		{"agent", "add", "web-2", "--runtime-policy", "rt@9"},
		{"policy", "show", "rt", "--version", "9"},
		{"policy", "show", "rt", "--version", "0"},
		{"policy", "history", "nope"},
	} {
		if _, code := tenant(args...); code != exitUsage {
			t.Errorf("vigil tenant %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}
