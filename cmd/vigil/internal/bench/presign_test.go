package bench

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// TestRunPresigned runs a small fleet whose requests are all presigned
// before each window, with RSA and ECC AKs, against a verifier in this
// process: every request sent in a window gets a passing verdict, none is
// an error, and each step sent what its schedule offers out of what was
// presigned for it.
func TestRunPresigned(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		t.Run(map[tpm2.TPMAlgID]string{tpm2.TPMAlgECC: "ecc", tpm2.TPMAlgRSA: "rsa"}[alg], func(t *testing.T) {
			const agents = 3
			rates := []float64{6, 12}
			var progress strings.Builder
			sum, err := Run(context.Background(), Options{
				Agents: agents, Duration: time.Second, Rates: rates, IMAEntries: 3,
				AKAlg: alg, Dir: t.TempDir(), Presign: true, Progress: &progress,
			})
			if err != nil {
				t.Fatalf("%v\n%s", err, progress.String())
			}
			if len(sum.Errors) != 0 || sum.Attesting != agents {
				t.Errorf("errors %v, %d attesting\n%s", sum.Errors, sum.Attesting, progress.String())
			}
			if !sum.Presigned || sum.PresignAdmissionIntervalMS < 15*60*1000 || len(sum.Steps) != 2 {
				t.Fatalf("presigned %v, admitted every %d ms, %d steps", sum.Presigned, sum.PresignAdmissionIntervalMS, len(sum.Steps))
			}
			for i, st := range sum.Steps {
				pace := paceFor(agents, rates[i])
				want := uint64(agents * presignCount(pace, presignSettle(pace), time.Second))
				if !st.Presigned || st.PresignedRequests != want || st.PresignedMB <= 0 || st.PresignSeconds <= 0 {
					t.Errorf("step %d: presigned %v, %d requests (want %d), %v MB in %v s", i+1, st.Presigned, st.PresignedRequests, want, st.PresignedMB, st.PresignSeconds)
				}
				// Every request sent in the window passed.
				if len(st.Errors) != 0 || st.Verdicts == 0 || st.Verdicts != st.Attestations {
					t.Errorf("step %d: %d verdicts of %d requests, errors %v", i+1, st.Verdicts, st.Attestations, st.Errors)
				}
				// The schedule's share of them: rate × window, give or take
				// one a host.
				if exp := rates[i] * st.WindowSeconds; math.Abs(float64(st.Verdicts)-exp) > agents {
					t.Errorf("step %d: %d verdicts in %.2f s, want %.1f ± %d", i+1, st.Verdicts, st.WindowSeconds, exp, agents)
				}
			}
			if !strings.Contains(progress.String(), "presigned ") || !strings.Contains(progress.String(), "MB) in ") {
				t.Errorf("no presigning in the progress:\n%s", progress.String())
			}
		})
	}
}

// TestRunPresignedReplay has one host send a presigned request twice in a
// row, inside the window: the verifier refuses the second (its nonce is
// spent), the bench counts it as an error and not as a verdict, and the
// host's later requests pass.
func TestRunPresignedReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	const agents, rate = 3, 6.0
	window := 3 * time.Second
	pace := paceFor(agents, rate)
	// A slot in the middle of the window: the copy goes one slot later,
	// still in it.
	replay := int((presignSettle(pace) + window/2 + pace - 1) / pace)
	var progress strings.Builder
	sum, err := Run(context.Background(), Options{
		Agents: agents, Duration: window, Rates: []float64{rate}, IMAEntries: 3,
		AKAlg: tpm2.TPMAlgRSA, Dir: t.TempDir(), Presign: true, Progress: &progress, presignReplay: replay,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	const refused = "evidence: refused 409"
	if len(sum.Errors) != 1 || sum.Errors[refused] != 1 {
		t.Fatalf("errors %v, want one %q\n%s", sum.Errors, refused, progress.String())
	}
	st := sum.Steps[0]
	if len(st.Errors) != 1 || st.Errors[refused] != 1 {
		t.Errorf("window errors %v, want the replay's", st.Errors)
	}
	if st.Verdicts != st.Attestations-1 {
		t.Errorf("%d verdicts of %d requests, want all but the replay", st.Verdicts, st.Attestations)
	}
	// The copy is sent, not made: the step presigned what it needs.
	if want := uint64(agents * presignCount(pace, presignSettle(pace), window)); st.PresignedRequests != want {
		t.Errorf("%d presigned requests, want %d", st.PresignedRequests, want)
	}
	if sum.Attesting != agents {
		t.Errorf("%d attesting at the end, want %d", sum.Attesting, agents)
	}
}

func TestOptionsPresignRefused(t *testing.T) {
	for _, o := range []Options{
		{Presign: true, LoadGenerator: "agent"},
		{Presign: true, Replicas: 2, Store: "postgres://x", VerifierExe: "vigil"},
		{Presign: true, LoadGenerator: "lean", Replicas: 2, Store: "postgres://x", VerifierExe: "vigil"},
		// Nonces cannot be made to last two days.
		{Presign: true, Duration: 48 * time.Hour},
	} {
		_, err := Run(context.Background(), o)
		var usage *UsageError
		if !errors.As(err, &usage) {
			t.Errorf("%+v: %v, want a usage error", o, err)
		}
	}
}

// TestPresignTooMuchRefused: a step whose presigned requests would not fit
// the bound is refused before any host is made.
func TestPresignTooMuchRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registrar and a verifier")
	}
	_, err := Run(context.Background(), Options{
		Agents: 1000, Duration: time.Minute, Rates: []float64{100000}, IMAEntries: 20,
		AKAlg: tpm2.TPMAlgECC, Dir: t.TempDir(), Presign: true,
	})
	var usage *UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "GiB") {
		t.Errorf("%v, want a usage error about the bound", err)
	}
}

func TestPresignAdmitInterval(t *testing.T) {
	for _, tc := range []struct {
		interval, window, pace time.Duration
	}{
		{time.Second, 10 * time.Second, 250 * time.Millisecond},
		{2 * time.Second, 20 * time.Second, 2 * time.Second},
		{time.Second, time.Hour, 10 * time.Millisecond},
	} {
		admit, err := presignAdmitInterval(tc.interval, tc.window, tc.pace)
		if err != nil {
			t.Fatal(err)
		}
		// A nonce fetched before presigning (within presignBudget) lives
		// past the settling, the window and the slack: the verifier's
		// lifetime is max(30 s, 2 intervals).
		settle := presignSettle(tc.pace)
		need := presignBudget + settle + tc.window + presignSlack(settle+tc.window)
		if life := max(30*time.Second, 2*admit); life < need || admit%time.Minute != 0 || admit < tc.interval {
			t.Errorf("%+v: admitted every %s, nonces live %s, need %s", tc, admit, life, need)
		}
	}
	if _, err := presignAdmitInterval(time.Second, 48*time.Hour, time.Second); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a 48 h window: %v", err)
	}
}

func TestPresignCount(t *testing.T) {
	// 1000 hosts at 8000/s: every 125 ms, 2 s of settling and a 10 s window
	// (and 1.24 s of slack): 107 slots.
	if got := presignCount(125*time.Millisecond, 2*time.Second, 10*time.Second); got != 107 {
		t.Errorf("presignCount = %d, want 107", got)
	}
	// Every host covers its slots over settle + window, whatever its phase.
	for _, pace := range []time.Duration{10 * time.Millisecond, 333 * time.Millisecond, 2 * time.Second} {
		settle, window := presignSettle(pace), 5*time.Second
		if n := presignCount(pace, settle, window); time.Duration(n-1)*pace < settle+window+time.Second {
			t.Errorf("pace %s: %d requests cover %s", pace, n, time.Duration(n-1)*pace)
		}
	}
}
