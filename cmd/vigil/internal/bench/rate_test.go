package bench

import (
	"strings"
	"testing"
	"time"
)

func TestPaceFor(t *testing.T) {
	for _, tc := range []struct {
		agents int
		rate   float64
		want   time.Duration
	}{
		{10000, 5000, 2 * time.Second},
		{1000, 500, 2 * time.Second},
		{1000, 4000, 250 * time.Millisecond},
		{50, 3200, 15625 * time.Microsecond},
		{3, 7, 428571429 * time.Nanosecond},
	} {
		if got := paceFor(tc.agents, tc.rate); got != tc.want {
			t.Errorf("%d hosts at %v/s: every %s, want %s", tc.agents, tc.rate, got, tc.want)
		}
		// The fleet then offers the rate asked.
		if got := float64(tc.agents) / paceFor(tc.agents, tc.rate).Seconds(); got < tc.rate*0.999999 || got > tc.rate*1.000001 {
			t.Errorf("%d hosts at %v/s offer %v/s", tc.agents, tc.rate, got)
		}
	}
}

func TestPlanRates(t *testing.T) {
	paces, admit, err := planRates(1000, []float64{500, 2000, 1000}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{2 * time.Second, 500 * time.Millisecond, time.Second}
	for i := range want {
		if paces[i] != want[i] {
			t.Errorf("paces %v, want %v", paces, want)
		}
	}
	// Admitted with the slowest step's interval.
	if admit != 2*time.Second {
		t.Errorf("admitted every %s, want 2s", admit)
	}
	// The lean generator admits with at least a second, so that a fast
	// pace leaves the verifier's liveness window room.
	if _, admit, _ := planRates(100, []float64{1000, 2000}, true); admit != time.Second {
		t.Errorf("lean at 100 hosts and 1000/s: admitted every %s, want 1s", admit)
	}
	if _, admit, _ := planRates(100, []float64{1000}, false); admit != 100*time.Millisecond {
		t.Errorf("agent at 100 hosts and 1000/s: admitted every %s, want 100ms", admit)
	}
	for _, bad := range [][]float64{{0}, {-5}, {500, 0}} {
		if _, _, err := planRates(1000, bad, true); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	// 50 hosts cannot offer 10,000/s: every 5 ms is below the shortest pace.
	if _, _, err := planRates(50, []float64{10000}, true); err == nil || !strings.Contains(err.Error(), "at least 100 hosts") {
		t.Errorf("50 hosts at 10,000/s: %v", err)
	}
}

func TestScheduleSpreadsHosts(t *testing.T) {
	start := time.Unix(1000, 0)
	s := &schedule{start: start, pace: time.Second}
	// Host 3 first attests at its phase after the start, then every pace.
	first := start.Add(time.Duration(phase(3) * float64(time.Second)))
	if got := s.after(3, 4, start.Add(-time.Hour)); !got.Equal(first) {
		t.Errorf("first slot %v, want %v", got.Sub(start), first.Sub(start))
	}
	if got := s.after(3, 4, first); !got.Equal(first.Add(time.Second)) {
		t.Errorf("slot after the first %v", got.Sub(start))
	}
	if got := s.after(3, 4, first.Add(5*time.Second+time.Nanosecond)); !got.Equal(first.Add(6 * time.Second)) {
		t.Errorf("slot after 5 paces %v", got.Sub(start))
	}
	// Phases are spread over the pace: 10,000 hosts put 1,000 ± 10 % in
	// each tenth of it, and are the same from one run to the next.
	counts := make([]int, 10)
	for i := range 10000 {
		f := phase(i)
		if f < 0 || f >= 1 || f != phase(i) {
			t.Fatalf("phase(%d) = %v", i, f)
		}
		counts[int(s.after(i, 10000, start.Add(-1)).Sub(start)/(100*time.Millisecond))]++
	}
	for i, c := range counts {
		if c < 900 || c > 1100 {
			t.Errorf("tenth %d of the pace has %d hosts' slots, want about 1000", i, c)
		}
	}
}

func TestJudgeLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    stepLoad
		want string
	}{
		{"kept up", stepLoad{offered: 1000, achieved: 990, verifier: 0.3, generator: 0.2, machine: 2}, "none"},
		{"kept up on a full machine", stepLoad{offered: 1000, achieved: 985, verifier: 1.5, generator: 0.4, machine: 2}, "none"},
		{"delivered 96% on a full machine", stepLoad{offered: 8000, achieved: 7650, verifier: 1.45, generator: 0.52, machine: 2}, "verifier"},
		{"delivered all, but late", stepLoad{offered: 8000, achieved: 7990, late: 0.4, verifier: 1.45, generator: 0.52, machine: 2}, "verifier"},
		{"a few late", stepLoad{offered: 8000, achieved: 7990, late: 0.01, verifier: 1.45, generator: 0.52, machine: 2}, "none"},
		{"verifier took most of a full machine", stepLoad{offered: 8000, achieved: 5500, verifier: 1.3, generator: 0.6, other: 0.05, machine: 2}, "verifier"},
		{"verifier exactly half", stepLoad{offered: 8000, achieved: 5500, verifier: 0.9, generator: 0.9, machine: 2}, "verifier"},
		{"generator took most of a full machine (RSA quotes)", stepLoad{offered: 4000, achieved: 1300, verifier: 0.4, generator: 1.5, machine: 2}, "load-generator"},
		{"other processes", stepLoad{offered: 4000, achieved: 1300, verifier: 0.4, generator: 0.3, other: 1.1, machine: 2}, "other-processes"},
		{"too few hosts", stepLoad{offered: 4000, achieved: 2000, verifier: 0.4, generator: 0.3, machine: 2, pace: 10 * time.Millisecond, latencyP50: 8 * time.Millisecond}, "hosts"},
		{"cause unseen", stepLoad{offered: 4000, achieved: 2000, verifier: 0.4, generator: 0.3, machine: 2, pace: time.Second, latencyP50: time.Millisecond}, "undetermined"},
		{"10,000 hosts at 2 s", stepLoad{offered: 5000, achieved: 4885, verifier: 1.24, generator: 0.43, other: 0.02, machine: 2, pace: 2 * time.Second, latencyP50: 1600 * time.Microsecond}, "verifier"},
		{"just under full", stepLoad{offered: 5000, achieved: 4885, verifier: 1.04, generator: 0.43, other: 0.02, machine: 2, pace: 2 * time.Second, latencyP50: 1600 * time.Microsecond}, "undetermined"},
		{"machine unknown", stepLoad{offered: 4000, achieved: 2000, verifier: 1.9, generator: 0.1}, "undetermined"},
		{"remote verifier", stepLoad{offered: 4000, achieved: 2000, generator: 0.5, machine: 2, remote: true}, "verifier"},
		{"remote verifier, generator full", stepLoad{offered: 4000, achieved: 2000, generator: 1.9, machine: 2, remote: true}, "load-generator"},
		{"nothing offered", stepLoad{machine: 2}, "undetermined"},
	} {
		got, reason := judgeLimit(tc.s)
		if got != tc.want {
			t.Errorf("%s: limit %q (%s), want %q", tc.name, got, reason, tc.want)
		}
		if reason == "" {
			t.Errorf("%s: no reason", tc.name)
		}
	}
}

func TestNextSweepRate(t *testing.T) {
	if r, ok := nextSweepRate(1000, 500, "none", ""); !ok || r != 1000 {
		t.Errorf("after 500/s kept up: %v, %v", r, ok)
	}
	for _, limit := range []string{"verifier", "load-generator", "hosts", "undetermined"} {
		// One step past the first that saturated, to see the plateau…
		if r, ok := nextSweepRate(1000, 500, limit, "none"); !ok || r != 1000 {
			t.Errorf("stopped at the first step limited by %s", limit)
		}
		if r, ok := nextSweepRate(1000, 500, limit, ""); !ok || r != 1000 {
			t.Errorf("stopped at a first step limited by %s", limit)
		}
		// …and no further.
		if _, ok := nextSweepRate(1000, 500, limit, "verifier"); ok {
			t.Errorf("went on after two steps limited (%s)", limit)
		}
	}
	// 1000 hosts at 128,000/s would attest every 7.8 ms: too short.
	if _, ok := nextSweepRate(1000, 64000, "none", "none"); ok {
		t.Error("went past the shortest pace")
	}
}

func TestSaturation(t *testing.T) {
	if saturation(nil) != nil {
		t.Error("a summary of no steps")
	}
	steps := []Step{
		{OfferedPerSec: 1000, VerdictsPerSec: 1000, Limit: "none", MachineCores: 2, VerifierCPUUSPerVerdict: 300},
		{OfferedPerSec: 2000, VerdictsPerSec: 2000, Limit: "none", MachineCores: 2, VerifierCPUUSPerVerdict: 260},
		{OfferedPerSec: 4000, VerdictsPerSec: 3100, Limit: "verifier", MachineCores: 2, VerifierCPUUSPerVerdict: 250},
		{OfferedPerSec: 8000, VerdictsPerSec: 3000, Limit: "verifier", MachineCores: 2, VerifierCPUUSPerVerdict: 240},
	}
	got := saturation(steps)
	want := Saturation{MaxVerdictsPerSec: 3100, AtOfferedPerSec: 4000, VerifierLimitedAtPerSec: 4000, VerifierCPUUSPerVerdict: 250,
		VerifierAloneEstimatePerSec: 8000, LimitedBy: "verifier"}
	if *got != want {
		t.Errorf("got %+v, want %+v", *got, want)
	}
	// A sweep that never saturates was limited by nothing, and the
	// verifier's CPU was the limit nowhere.
	got = saturation(steps[:2])
	if got.LimitedBy != "none" || got.VerifierLimitedAtPerSec != 0 || got.MaxVerdictsPerSec != 2000 {
		t.Errorf("unsaturated: %+v", *got)
	}
	// The generator limited the last step after the best one.
	got = saturation(append(steps[:2:2], Step{OfferedPerSec: 4000, VerdictsPerSec: 1500, Limit: "load-generator"}))
	if got.LimitedBy != "load-generator" || got.MaxVerdictsPerSec != 2000 {
		t.Errorf("generator-bound: %+v", *got)
	}
}

func TestParseMachineCPU(t *testing.T) {
	a := parseMachineCPU([]byte("cpu  100 0 50 1000 10 0 5 20 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if !a.ok || a.total != 1185 || a.busy != 155 || a.steal != 20 {
		t.Fatalf("%+v", a)
	}
	b := parseMachineCPU([]byte("cpu  300 0 150 1100 10 0 5 20 0 0\n"))
	busy, steal, ok := machineCores(a, b, time.Second)
	if !ok || busy != 3 || steal != 0 {
		t.Errorf("busy %v, steal %v, %v: want 3 cores (300 ticks in a second)", busy, steal, ok)
	}
	for _, bad := range []string{"", "intr 1 2", "cpu 1 2 3", "cpu a b c d e f g h"} {
		if m := parseMachineCPU([]byte(bad)); m.ok {
			t.Errorf("%q: %+v", bad, m)
		}
	}
	if _, _, ok := machineCores(machineCPU{}, b, time.Second); ok {
		t.Error("cores from an unread /proc/stat")
	}
	if m := readMachineCPU(); !m.ok || m.total == 0 {
		t.Errorf("this machine's /proc/stat: %+v", m)
	}
}
