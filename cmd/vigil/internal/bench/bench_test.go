package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
)

// TestRunInProcess is a short bench with the verifier in this process:
// every agent ends attesting, with no error.
func TestRunInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	var progress strings.Builder
	sum, err := Run(context.Background(), Options{
		// A 1 s interval gives the verifier's liveness check (three
		// intervals) room when the race detector and other tests slow the
		// fleet down.
		Agents: 3, Duration: 2 * time.Second, Interval: time.Second, IMAEntries: 5,
		AKAlg: tpm2.TPMAlgECC, Dir: t.TempDir(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Errors) != 0 {
		t.Errorf("errors: %v", sum.Errors)
	}
	if sum.Attesting != 3 || sum.States["attesting"] != 3 {
		t.Errorf("states at the end %v, want 3 attesting", sum.States)
	}
	if sum.Verdicts == 0 || sum.LatencyMS.P50 <= 0 || sum.LatencyMS.Max < sum.LatencyMS.P99 {
		t.Errorf("verdicts %d, latency %+v", sum.Verdicts, sum.LatencyMS)
	}
	if !strings.Contains(sum.CPUSource, "WHOLE bench process") {
		t.Errorf("in-process CPU source %q must say it is the whole process", sum.CPUSource)
	}
	if !strings.Contains(progress.String(), "verdicts") {
		t.Errorf("no progress shown:\n%s", progress.String())
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{IMAEntries: -1},
		{AKAlg: tpm2.TPMAlgSHA256},
		{CPUProfile: "p"},
		{VerifierURL: "https://127.0.0.1:1", TLSDir: "tls"},
		{VerifierURL: "https://127.0.0.1:1", RegistrarURL: "https://127.0.0.1:2"},
		{VerifierURL: "https://127.0.0.1:1", RegistrarURL: "https://127.0.0.1:2", TLSDir: "tls", VerifierExe: "vigil"},
		{VerifierURL: "https://127.0.0.1:1", RegistrarURL: "https://127.0.0.1:2", TLSDir: "tls", VerifierPID: -1},
		{RegistrarURL: "https://127.0.0.1:2"},
		{VerifierPID: 1},
		{EKCADir: "ek-ca"},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		bad        bool
	}{
		{name: "plain", stat: "4242 (vigil) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 123 456 789", want: 3250 * time.Millisecond},
		{name: "spaces and parens in the name", stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", want: 30 * time.Millisecond},
		{name: "no name", stat: "7 R 1 7", bad: true},
		{name: "short", stat: "7 (x) R 1 7 7", bad: true},
		{name: "negative", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 -1 2 0", bad: true},
		{name: "not a number", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 x 2 0", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted, got %v", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tvigil\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n"
	if got, err := parseStatusKB([]byte(status), "VmHWM:"); err != nil || got != 12345 {
		t.Fatalf("VmHWM: got %d, %v; want 12345", got, err)
	}
	for _, bad := range []string{"Name: x\n", "VmHWM: 12 MB\n", "VmHWM: x kB\n", "VmHWM:\n"} {
		if got, err := parseStatusKB([]byte(bad), "VmHWM:"); err == nil {
			t.Errorf("%q: accepted, got %d", bad, got)
		}
	}
}

func TestProcUsageOfThisProcess(t *testing.T) {
	u, err := procUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s, err := selfUsage()
	if err != nil {
		t.Fatal(err)
	}
	// Both read the kernel's accounts of this process; /proc rounds to
	// clock ticks.
	if u.PeakRSS <= 0 || s.PeakRSS <= 0 || u.CPU > s.CPU+time.Second {
		t.Errorf("/proc %+v, getrusage %+v", u, s)
	}
}

func TestPercentiles(t *testing.T) {
	var l []time.Duration
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	got := percentiles(l)
	want := Latency{P50: 50, P90: 90, P99: 99, Max: 100}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := percentiles(nil); got != (Latency{}) {
		t.Errorf("empty: %+v", got)
	}
	if got := percentiles([]time.Duration{7 * time.Millisecond}); got != (Latency{7, 7, 7, 7}) {
		t.Errorf("one: %+v", got)
	}
}

func TestErrorKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&agent.RefusedError{Status: 409, Msg: "no open challenge"}, "evidence: refused 409"},
		{fmt.Errorf("post: %w", context.DeadlineExceeded), "evidence: timeout"},
		{&url.Error{Op: "Post", URL: "https://x", Err: errors.New("connection reset")}, "evidence: transport"},
		{errors.New("boom"), "evidence: other"},
	} {
		if got := errorKind("evidence", tc.err); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.err, got, tc.want)
		}
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte("4242 (vigil) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 123 456 789"))
	f.Add([]byte("7 (a) b) R"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseStatCPU(b); err == nil && d < 0 {
			t.Fatalf("negative CPU %v", d)
		}
	})
}

func FuzzParseStatusKB(f *testing.F) {
	f.Add([]byte("VmHWM:\t   12345 kB\n"))
	f.Add([]byte("VmHWM: 1 MB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := parseStatusKB(b, "VmHWM:"); err == nil && n < 0 {
			t.Fatalf("negative size %d", n)
		}
	})
}
