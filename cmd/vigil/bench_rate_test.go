package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/cmd/vigil/internal/bench"
)

// TestBenchRateShortRun runs two rates with the verifier as a child
// process: each step reports what the contract names, and the run's
// summary is the last step's.
func TestBenchRateShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	// Enough verdicts a step (40 and 80 in 1 s) that the verifier's CPU is
	// more than /proc's 10 ms tick: at 4 and 8 a second it read 0 at times.
	out, code := run(t, context.Background(), "bench", "--agents", "4", "--duration", "1s", "--rate", "40,80",
		"--ima-entries", "5", "--key-cache", t.TempDir(), "--vigil-binary", vigilBinary, "--json")
	if code != exitOK {
		t.Fatalf("exit %d, want 0; output:\n%s", code, out)
	}
	var sum bench.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out)
	}
	// ECC AKs and the lean generator by default.
	if sum.AKAlg != "ecc" || sum.LoadGenerator != "lean" || len(sum.Steps) != 2 || sum.Saturation == nil {
		t.Fatalf("ak %q, generator %q, %d steps, saturation %v", sum.AKAlg, sum.LoadGenerator, len(sum.Steps), sum.Saturation)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"offered_per_sec", "load_generator_cpu_us_per_attestation", "limit", "steps", "saturation"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	step := raw["steps"].([]any)[0].(map[string]any)
	for _, k := range []string{"offered_per_sec", "verdicts_per_sec", "verifier_cpu_us_per_verdict", "verifier_cpu_cores",
		"load_generator_cpu_us_per_attestation", "load_generator_cpu_cores", "latency_ms", "errors", "limit", "limit_reason"} {
		if _, ok := step[k]; !ok {
			t.Errorf("a step lacks %q", k)
		}
	}
	if !strings.Contains(sum.CPUSource, "child process") || sum.Steps[1].VerifierCPUSeconds <= 0 {
		t.Errorf("CPU source %q, step 2 verifier CPU %v", sum.CPUSource, sum.Steps[1].VerifierCPUSeconds)
	}

	// The table, without --json.
	out, code = run(t, context.Background(), "bench", "--agents", "2", "--duration", "1s", "--rate", "4",
		"--ima-entries", "1", "--key-cache", t.TempDir(), "--vigil-binary", vigilBinary)
	if code != exitOK || !strings.Contains(out, "µs/verdict") || !strings.Contains(out, "saturation") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestBenchRateUsageErrorsExitTwo(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"bench", "--rate", "0"},
		{"bench", "--rate", "-5"},
		{"bench", "--rate", "fast"},
		{"bench", "--rate", "100,"},
		{"bench", "--rate", "100", "--interval", "1s"},
		{"bench", "--agents", "10", "--rate", "5000"},
		{"bench", "--rate", "100,200", "--cpuprofile", "p"},
		{"bench", "--sweep", "--cpuprofile", "p"},
		{"bench", "--load-generator", "fast"},
		{"bench", "--load-generator", "agent", "--sweep"},
		{"bench", "--load-generator", "agent", "--rate", "10,20"},
		{"bench", "--presign", "--load-generator", "agent"},
		{"bench", "--presign", "--replicas", "2", "--store", "postgres://u@127.0.0.1:1/db"},
		{"bench", "--presign", "--duration", "48h"},
	} {
		if out, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
		}
	}
}
