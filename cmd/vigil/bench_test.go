package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/cmd/vigil/internal/bench"
	"github.com/vigil-attest/vigil/internal/pgtest"
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
		{"bench", "--store", "mysql://x"},
		{"bench", "--ima-entries", "-1"},
		{"bench", "--ak-alg", "dsa"},
		{"bench", "--no-such-flag"},
		{"bench", "extra-argument"},
		{"bench", "--in-process", "--cpuprofile", filepath.Join(t.TempDir(), "p")},
		{"bench", "verifier-process"},
		// Replicas share a store, run as children, and a kill needs one left.
		{"bench", "--replicas", "0"},
		{"bench", "--replicas", "2"},
		{"bench", "--replicas", "2", "--store", "postgres://x@127.0.0.1/db", "--in-process"},
		{"bench", "--replicas", "2", "--store", "postgres://x@127.0.0.1/db", "--cpuprofile", filepath.Join(t.TempDir(), "p")},
		{"bench", "--kill-replica-after", "1s"},
		{"bench", "--replicas", "2", "--store", "postgres://x@127.0.0.1/db", "--kill-replica-after", "30s", "--duration", "20s"},
		// External mode: --verifier needs its registrar and TLS directory,
		// and the external flags need --verifier.
		{"bench", "--verifier", "https://127.0.0.1:8891"},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890"},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--tls-dir", t.TempDir()},
		{"bench", "--verifier", "http://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890", "--tls-dir", t.TempDir()},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "127.0.0.1:8890", "--tls-dir", t.TempDir()},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890", "--tls-dir", t.TempDir(), "--in-process"},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890", "--tls-dir", t.TempDir(), "--verifier-pid", "0"},
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890", "--tls-dir", t.TempDir(), "--verifier-pid", "many"},
		// A TLS directory without the CA is found out before any network call.
		{"bench", "--verifier", "https://127.0.0.1:8891", "--registrar", "https://127.0.0.1:8890", "--tls-dir", t.TempDir()},
		{"bench", "--registrar", "https://127.0.0.1:8890"},
		{"bench", "--tls-dir", t.TempDir()},
		{"bench", "--ek-ca", t.TempDir()},
		{"bench", "--verifier-pid", "1"},
		{"bench", "ek-ca"},
		{"bench", "ek-ca", "a", "b"},
	} {
		if out, code := run(t, ctx, args...); code != exitUsage {
			t.Errorf("vigil %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
		}
	}
}

// TestBenchExternalVerifier benchmarks a registrar and a verifier started
// by hand (as processes, with `vigil ca init` and `vigil bench ek-ca` files),
// reading the verifier's CPU once from /proc (--verifier-pid) and once from
// its /metrics; every run's agents end attesting with no error, and are
// gone from both services afterwards.
func TestBenchExternalVerifier(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	ctx := context.Background()
	dir := t.TempDir()
	tlsDir, ekCA := filepath.Join(dir, "tls"), filepath.Join(dir, "ek-ca")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != exitOK {
		t.Fatalf("ca init: exit %d", code)
	}
	out, code := run(t, ctx, "bench", "ek-ca", ekCA, "--json")
	if code != exitOK {
		t.Fatalf("bench ek-ca: exit %d", code)
	}
	var made struct{ Certificate, Key string }
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.Certificate != filepath.Join(ekCA, bench.EKCACert) {
		t.Fatalf("bench ek-ca --json: %q (%v)", out, err)
	}
	if _, code := run(t, ctx, "bench", "ek-ca", ekCA); code != exitUsage {
		t.Errorf("second bench ek-ca: exit %d, want 2", code)
	}

	regAddr, verAddr := freeAddr(t), freeAddr(t)
	regURL, verURL := "https://"+regAddr, "https://"+verAddr
	startProcess(t, nil, "registrar", "--data", filepath.Join(dir, "registrar"), "--tls-dir", tlsDir,
		"--listen", regAddr, "--ek-roots", ekCA, "--log-level", "warn")
	ver := startProcess(t, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir,
		"--listen", verAddr, "--registrar", regURL, "--log-level", "warn", "--min-interval", "100ms",
		// Under the race detector the load generator can be slow enough for
		// a first attestation to outlast three short intervals.
		"--liveness", "1m")
	waitHealthy(t, tlsDir, regURL)
	waitHealthy(t, tlsDir, verURL)

	external := []string{"bench", "--verifier", verURL, "--registrar", regURL, "--tls-dir", tlsDir, "--ek-ca", ekCA,
		"--agents", "6", "--duration", "2s", "--interval", "250ms", "--ak-alg", "ecc", "--key-cache", t.TempDir(), "--json"}
	pid := strconv.Itoa(ver.Pid())
	for _, tc := range []struct {
		name   string
		args   []string
		source string
	}{
		{"proc", []string{"--verifier-pid", pid}, "external verifier process " + pid},
		{"metrics", nil, "process_cpu_seconds_total from its /metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := run(t, ctx, append(append([]string{}, external...), tc.args...)...)
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
			if sum.Agents != 6 || sum.Attesting != 6 || sum.States["attesting"] != 6 {
				t.Errorf("%d of %d agents attesting at the end, want 6 of 6 (states %v)", sum.Attesting, sum.Agents, sum.States)
			}
			if sum.VerifierMode != "external" || sum.VerifierURL != verURL || sum.RegistrarURL != regURL {
				t.Errorf("mode %q, verifier %q, registrar %q", sum.VerifierMode, sum.VerifierURL, sum.RegistrarURL)
			}
			if sum.Verdicts == 0 || sum.LatencyMS.Max <= 0 {
				t.Errorf("no verdicts measured: %+v", sum)
			}
			if sum.CPUSeconds <= 0 || sum.CPUUSPerVerdict <= 0 || sum.RSSMB <= 0 {
				t.Errorf("verifier CPU %v s, %v µs per verdict, RSS %v MB: want figures > 0", sum.CPUSeconds, sum.CPUUSPerVerdict, sum.RSSMB)
			}
			if !strings.Contains(sum.CPUSource, tc.source) {
				t.Errorf("cpu_source %q, want it to say %q", sum.CPUSource, tc.source)
			}
			if sum.ServerLatencyMS.Max <= 0 || !strings.Contains(sum.ServerLatencySource, "histogram") {
				t.Errorf("server latency %+v from %q", sum.ServerLatencyMS, sum.ServerLatencySource)
			}
			var raw map[string]any
			json.Unmarshal([]byte(out), &raw)
			for _, k := range []string{"agents", "verdicts", "verdicts_per_sec", "cpu_us_per_verdict", "latency_ms", "errors", "rss_mb", "ak_alg"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("summary lacks %q", k)
				}
			}
		})
	}

	// The runs took their agents and policies away with them.
	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}
	for _, list := range [][]string{{"agent", "list"}, {"registrar", "list"}, {"policy", "list"}} {
		out, code := run(t, ctx, append(append(append([]string{}, tenant...), list...), "--json")...)
		var items []any
		if code != exitOK || json.Unmarshal([]byte(out), &items) != nil || len(items) != 0 {
			t.Errorf("tenant %s after the runs: exit %d, %s", strings.Join(list, " "), code, out)
		}
	}

	// The verifier serves no pprof: a profile cannot be had, and the bench
	// says so before making any host.
	out, code = run(t, ctx, append(append([]string{}, external...), "--cpuprofile", filepath.Join(dir, "p.pprof"))...)
	if code != exitUsage {
		t.Errorf("--cpuprofile of an external verifier without pprof: exit %d, want 2\n%s", code, out)
	}
	// --verifier-pid must be the process on the verifier's port.
	if _, code := run(t, ctx, append(append([]string{}, external...), "--verifier-pid", strconv.Itoa(os.Getpid()))...); code != exitUsage {
		t.Errorf("--verifier-pid of another process: exit %d, want 2", code)
	}
}

// The bench's verifier runs on PostgreSQL with --store, as a child process
// built as `vigil verifier --store` builds it.
func TestBenchOnPostgreSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	db := pgtest.Start(t)
	out, code := run(t, context.Background(), "bench", "--agents", "3", "--duration", "2s", "--interval", "500ms",
		"--ak-alg", "ecc", "--key-cache", t.TempDir(), "--vigil-binary", vigilBinary,
		"--store", db.NewDatabase(t), "--json")
	if code != exitOK {
		t.Fatalf("exit %d, want 0; output:\n%s", code, out)
	}
	var sum bench.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out)
	}
	if len(sum.Errors) != 0 || sum.Attesting != 3 || sum.Verdicts == 0 || sum.VerifierStore != "postgres" {
		t.Fatalf("on PostgreSQL: store %q, %d attesting, %d verdicts, errors %v", sum.VerifierStore, sum.Attesting, sum.Verdicts, sum.Errors)
	}
}

// TestBenchReplicasFailover runs the bench with 3 verifier replicas over
// PostgreSQL and SIGKILLs the first one a second into the window: every
// host must fail over to the others and end attesting, none failed.
func TestBenchReplicasFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	db := pgtest.Start(t)
	out, code := run(t, context.Background(), "bench", "--agents", "6", "--duration", "4s", "--interval", "500ms",
		"--ak-alg", "ecc", "--key-cache", t.TempDir(), "--vigil-binary", vigilBinary,
		"--replicas", "3", "--store", db.NewDatabase(t), "--kill-replica-after", "1s", "--json")
	if code != exitOK {
		t.Fatalf("exit %d, want 0; output:\n%s", code, out)
	}
	var sum bench.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out)
	}
	t.Logf("replicas %d, killed at %d ms, attesting %d, hosts failed %v, longest gap %.0f ms (%s), failover errors %v, errors %v, revocations %d, %d verdicts",
		sum.Replicas, sum.ReplicaKilledAtMS, sum.Attesting, sum.HostsFailed, sum.LongestGapMS, sum.LongestGapHost, sum.FailoverErrors, sum.Errors, deref(sum.Revocations), sum.Verdicts)
	if sum.Replicas != 3 || len(sum.VerifierURLs) != 3 {
		t.Errorf("replicas %d, URLs %v: want 3", sum.Replicas, sum.VerifierURLs)
	}
	if len(sum.HostsFailed) != 0 || sum.Attesting != 6 {
		t.Errorf("%d of 6 attesting at the end, hosts failed %v", sum.Attesting, sum.HostsFailed)
	}
	if len(sum.Errors) != 0 {
		t.Errorf("errors: %v", sum.Errors)
	}
	if sum.ReplicaKilledAtMS < 1000 || sum.LongestGapMS <= 0 {
		t.Errorf("replica killed at %d ms, longest gap %v ms: want ≥ 1000 and > 0", sum.ReplicaKilledAtMS, sum.LongestGapMS)
	}
	if sum.Revocations == nil || *sum.Revocations != 0 {
		t.Errorf("revocations %v, want 0", sum.Revocations)
	}
	if sum.VerifierStore != "postgres" || !strings.Contains(sum.CPUSource, "replica") {
		t.Errorf("store %q, CPU source %q", sum.VerifierStore, sum.CPUSource)
	}
}

func deref(n *int) int {
	if n == nil {
		return -1
	}
	return *n
}
