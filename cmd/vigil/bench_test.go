package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/bench"
)

// TestBenchShortRun runs a small bench with the verifier as a child
// process, as `vigil bench` runs it: every agent must end attesting, with
// no error, and the verifier's CPU must be read from the child.
func TestBenchShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	ctx := context.Background()
	profile := filepath.Join(t.TempDir(), "verifier.pprof")
	out, code := run(t, ctx, "bench", "--agents", "3", "--duration", "2s", "--interval", "500ms",
		"--ak-alg", "ecc", "--key-cache", t.TempDir(), "--vigil-binary", vigilBinary,
		"--cpuprofile", profile, "--json")
	if code != exitOK {
		t.Fatalf("exit %d, want 0; output:\n%s", code, out)
	}
	var sum bench.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out)
	}
	if len(sum.Errors) != 0 {
		t.Errorf("errors: %v", sum.Errors)
	}
	if sum.Agents != 3 || sum.Attesting != 3 {
		t.Errorf("%d of %d agents attesting at the end, want 3 of 3 (states %v)", sum.Attesting, sum.Agents, sum.States)
	}
	if sum.Verdicts == 0 || sum.VerdictsPerSec <= 0 || sum.LatencyMS.Max <= 0 {
		t.Errorf("no verdicts measured: %+v", sum)
	}
	if sum.AKAlg != "ecc" || sum.IMAEntries != 20 {
		t.Errorf("ak_alg %q, ima entries %d: want ecc, 20", sum.AKAlg, sum.IMAEntries)
	}
	if !strings.Contains(sum.CPUSource, "child process") || sum.RSSMB <= 0 {
		t.Errorf("CPU source %q, RSS %v MB: want the verifier child's", sum.CPUSource, sum.RSSMB)
	}
	if sum.CPUProfile != profile {
		t.Errorf("cpu_profile %q, want %q", sum.CPUProfile, profile)
	}
	// The JSON keys the CLI contract names.
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"agents", "verdicts", "verdicts_per_sec", "cpu_us_per_verdict", "latency_ms", "errors", "rss_mb", "ak_alg"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		if _, ok := raw["latency_ms"].(map[string]any)[k]; !ok {
			t.Errorf("latency_ms lacks %q", k)
		}
	}
}

func TestBenchUsageErrorsExitTwo(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"bench", "--agents", "0"},
		{"bench", "--agents", "many"},
		{"bench", "--duration", "0s"},
		{"bench", "--interval", "1ms"},
		{"bench", "--ima-entries", "-1"},
		{"bench", "--ak-alg", "dsa"},
		{"bench", "--no-such-flag"},
		{"bench", "extra-argument"},
		{"bench", "--in-process", "--cpuprofile", filepath.Join(t.TempDir(), "p")},
		{"bench", "verifier-process"},
	} {
		if out, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
		}
	}
}
