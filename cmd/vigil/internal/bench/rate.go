package bench

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// Rates. A run measures one window per step; a step offers a rate: the
// fleet's hosts ÷ the interval they attest at. Without Options.Rates there
// is one step at Agents ÷ Interval, the classic run. With Rates the
// interval is derived: each step paces every host at Agents ÷ rate. A
// sweep (Options.Sweep) doubles the rate after each step until one
// saturates.
//
// The verifier judges every verdict the same whatever its pace, so a
// sweep admits the fleet once, with the slowest step's interval (at least
// a second): no host can then fall silent for the verifier at any step,
// and the lean generator attests sooner than the verifier asks, which it
// allows. (The agent generator follows the verifier's interval, so it
// runs one rate only, admitted with exactly that interval.)

// minPace is the shortest interval a host is paced at: past it a rate
// needs more hosts.
const minPace = 10 * time.Millisecond

// maxSweepSteps bounds an automatic sweep.
const maxSweepSteps = 10

// keepsUpShare is the share of the offered rate a step must deliver for
// the verifier (and the generator) to be said to keep up, and
// maxLateShare the share of attestations that may start after their slot
// (a host whose previous round trip ran past it): past either, the step
// is saturated.
const (
	keepsUpShare = 0.98
	maxLateShare = 0.05
)

// paceFor is the interval each of agents hosts attests at to offer rate
// attestations a second.
func paceFor(agents int, rate float64) time.Duration {
	return time.Duration(math.Round(float64(agents) / rate * float64(time.Second)))
}

// planRates checks the rates asked for and returns each step's pace and the
// interval the hosts are admitted with. lean says the hosts are paced by
// the lean generator, which may attest sooner than the verifier asks.
func planRates(agents int, rates []float64, lean bool) (paces []time.Duration, admit time.Duration, err error) {
	slowest := 0.0
	for _, r := range rates {
		if !(r > 0) || math.IsInf(r, 0) {
			return nil, 0, fmt.Errorf("rate %v: want a positive number of attestations a second", r)
		}
		p := paceFor(agents, r)
		if p < minPace {
			return nil, 0, fmt.Errorf("rate %v/s with %d hosts is one attestation per host every %s: "+
				"below %s a host cannot keep its pace, use at least %d hosts", r, agents, p, minPace, int(math.Ceil(r*minPace.Seconds())))
		}
		paces = append(paces, p)
		if slowest == 0 || r < slowest {
			slowest = r
		}
	}
	admit = paceFor(agents, slowest)
	if lean {
		admit = max(admit, time.Second)
	}
	return paces, admit, nil
}

// Step is one rate's window in a run with --rate.
type Step struct {
	// OfferedPerSec is the rate the fleet offered (hosts ÷ IntervalMS), and
	// VerdictsPerSec what the verifier delivered.
	OfferedPerSec  float64 `json:"offered_per_sec"`
	IntervalMS     float64 `json:"interval_ms"`
	WindowSeconds  float64 `json:"window_seconds"`
	Verdicts       uint64  `json:"verdicts"`
	VerdictsPerSec float64 `json:"verdicts_per_sec"`
	// Attestations counts the evidence requests sent in the window (the
	// lean generator; the agent generator's are its verdicts and errors).
	Attestations uint64 `json:"attestations"`
	// The verifier's CPU in the window, per verdict, and its use of the
	// machine in cores (CPU seconds ÷ window seconds).
	VerifierCPUSeconds      float64 `json:"verifier_cpu_seconds"`
	VerifierCPUUSPerVerdict float64 `json:"verifier_cpu_us_per_verdict"`
	VerifierCores           float64 `json:"verifier_cpu_cores"`
	// The load generator's (this process: soft TPMs, hosts, and the
	// registrar unless external), per attestation, in cores, over the
	// window only: with Presigned, the signing done before the window is
	// not in it (PresignCPUSeconds).
	LoadCPUSeconds          float64 `json:"load_generator_cpu_seconds"`
	LoadCPUUSPerAttestation float64 `json:"load_generator_cpu_us_per_attestation"`
	LoadCores               float64 `json:"load_generator_cpu_cores"`
	// OtherCores is the CPU the rest of the machine used in the window
	// (from /proc/stat), StealCores what the hypervisor took; MachineCores
	// is the number of CPUs. -1 when not known (another OS).
	OtherCores   float64 `json:"other_cpu_cores"`
	StealCores   float64 `json:"steal_cpu_cores"`
	MachineCores int     `json:"machine_cores"`
	LatencyMS    Latency `json:"latency_ms"`
	// ServerLatencyMS is the verifier's own time per verdict.
	ServerLatencyMS Latency           `json:"server_latency_ms"`
	Errors          map[string]uint64 `json:"errors"`
	// LateStarts counts attestations that started after their slot had
	// passed (the host's previous round trip or backoff ran past it);
	// WakeLagP99MS is how late the others woke up, the generator's own
	// scheduling delay (lean generator only).
	LateStarts   uint64  `json:"late_starts"`
	WakeLagP99MS float64 `json:"wake_lag_p99_ms"`
	// Limit is what held the rate back: "none" (the step delivered what
	// it offered), "verifier", "load-generator", "other-processes" (the
	// machine's CPU was full, mostly used by that), or "hosts" (CPU was
	// left, but each host waited for its verdicts longer than its pace
	// allows: more hosts are needed for the rate), "undetermined".
	// LimitReason says why, in numbers.
	Limit       string  `json:"limit"`
	LimitReason string  `json:"limit_reason"`
	RSSMB       float64 `json:"rss_mb"`
	// Presigned says every request of the step was made before its
	// settling and window (Options.Presign): PresignSeconds is how long
	// that took (the challenges fetched, the quotes signed, the evidence
	// encoded, the connections opened), PresignCPUSeconds the load
	// generator's CPU over it, PresignedRequests how many requests were
	// made (for the settling, the window and some slack, not all sent)
	// and PresignedMB their size.
	Presigned         bool    `json:"presigned,omitempty"`
	PresignSeconds    float64 `json:"presign_seconds,omitempty"`
	PresignCPUSeconds float64 `json:"presign_cpu_seconds,omitempty"`
	PresignedRequests uint64  `json:"presigned_requests,omitempty"`
	PresignedMB       float64 `json:"presigned_mb,omitempty"`
}

// stepLoad is what the judgement of a step's limit looks at.
type stepLoad struct {
	offered, achieved float64
	// late is the share of attestations that started late (lean
	// generator; 0 otherwise).
	late float64
	// cores used in the window by the verifier, the load generator and the
	// rest of the machine; machine is the number of CPUs (0: unknown).
	verifier, generator, other float64
	machine                    int
	pace                       time.Duration
	latencyP50                 time.Duration
	// remote says the verifier runs on another machine: machine is this
	// one's CPUs, which the verifier does not use.
	remote bool
}

// machineFullShare is the share of the machine's CPUs busy from which a
// step is said to be CPU-bound: past 80 %, the scheduler's and the
// kernel's own work (softirqs of the loopback traffic, counted as other
// processes' or nobody's) leave no CPU a process could still take.
const machineFullShare = 0.80

// judgeLimit says what held a step back. A step that delivered 98 % of
// what it offered, with at most 5 % of its attestations late, was held
// back by nothing. Otherwise, on a machine whose
// CPUs were ≥ 80 % busy, the limit is whoever used most of them: the
// verifier when it used at least as much as everything else together
// (then the generator, however lean, could at most give it its share);
// else the load generator, or other processes. With CPU left, a host whose
// round trips take half its pace or more cannot offer its share: the run
// needs more hosts. A verifier on another machine is the limit whenever
// this machine had CPU to spare. Otherwise the cause is not one this bench
// can see.
func judgeLimit(s stepLoad) (limit, reason string) {
	busy := s.verifier + s.generator + s.other
	cpu := fmt.Sprintf("verifier %.2f, load generator %.2f, other %.2f of %d cores", s.verifier, s.generator, s.other, s.machine)
	share := 0.0
	if s.offered > 0 {
		share = s.achieved / s.offered
	}
	if s.late > 0 {
		cpu += fmt.Sprintf("; %.0f%% of attestations started late", 100*s.late)
	}
	switch {
	case share >= keepsUpShare && s.late <= maxLateShare:
		return "none", fmt.Sprintf("delivered %.0f%% of the offered rate (%s)", 100*share, cpu)
	case s.machine > 0 && busy >= machineFullShare*float64(s.machine):
		reason = fmt.Sprintf("delivered %.0f%% of the offered rate with the machine's CPUs %.0f%% busy (%s)", 100*share, 100*busy/float64(s.machine), cpu)
		switch {
		case s.verifier >= s.generator+s.other:
			return "verifier", reason
		case s.generator >= s.other:
			return "load-generator", reason
		}
		return "other-processes", reason
	case s.remote:
		return "verifier", fmt.Sprintf("delivered %.0f%% of the offered rate with this machine's CPU to spare (%s): "+
			"the verifier runs elsewhere, so it (or the network to it) held the rate back", 100*share, cpu)
	case s.pace > 0 && s.latencyP50 >= s.pace/2:
		return "hosts", fmt.Sprintf("delivered %.0f%% of the offered rate with CPU to spare (%s), but a round trip's median %s is half or more of a host's %s pace: add hosts",
			100*share, cpu, s.latencyP50.Round(10*time.Microsecond), s.pace)
	}
	return "undetermined", fmt.Sprintf("delivered %.0f%% of the offered rate with CPU to spare (%s)", 100*share, cpu)
}

// nextSweepRate is the rate after a step, in a sweep: double, until the
// step after the first that did not keep up (one more, to see the plateau
// past saturation), or until the pace would be too short for the hosts.
// prevLimit is the limit of the step before this one ("" for none).
func nextSweepRate(agents int, rate float64, limit, prevLimit string) (float64, bool) {
	if limit != "none" && prevLimit != "" && prevLimit != "none" {
		return 0, false
	}
	next := 2 * rate
	if paceFor(agents, next) < minPace {
		return 0, false
	}
	return next, true
}

// Saturation sums up a run with --rate.
type Saturation struct {
	// MaxVerdictsPerSec is the most any step delivered, at
	// AtOfferedPerSec.
	MaxVerdictsPerSec float64 `json:"max_verdicts_per_sec"`
	AtOfferedPerSec   float64 `json:"at_offered_per_sec"`
	// VerifierLimitedAtPerSec is the lowest offered rate at which the
	// verifier's CPU was the limit (0: at no step), and
	// VerifierCPUUSPerVerdict its CPU per verdict there.
	VerifierLimitedAtPerSec float64 `json:"verifier_limited_at_per_sec"`
	VerifierCPUUSPerVerdict float64 `json:"verifier_cpu_us_per_verdict,omitempty"`
	// VerifierAloneEstimatePerSec is what that CPU per verdict would give
	// with every core of this machine to the verifier: an extrapolation,
	// not a measurement.
	VerifierAloneEstimatePerSec float64 `json:"verifier_alone_estimate_per_sec,omitempty"`
	// LimitedBy is the limit of the step that delivered the most, or of
	// the last step if it delivered less.
	LimitedBy string `json:"limited_by"`
}

// saturation sums up the steps.
func saturation(steps []Step) *Saturation {
	if len(steps) == 0 {
		return nil
	}
	s := &Saturation{}
	best := 0
	for i, st := range steps {
		if st.VerdictsPerSec > steps[best].VerdictsPerSec {
			best = i
		}
		if st.Limit == "verifier" && s.VerifierLimitedAtPerSec == 0 {
			s.VerifierLimitedAtPerSec = st.OfferedPerSec
			s.VerifierCPUUSPerVerdict = st.VerifierCPUUSPerVerdict
			if st.VerifierCPUUSPerVerdict > 0 && st.MachineCores > 0 {
				s.VerifierAloneEstimatePerSec = round(float64(st.MachineCores)*1e6/st.VerifierCPUUSPerVerdict, 0)
			}
		}
	}
	s.MaxVerdictsPerSec, s.AtOfferedPerSec = steps[best].VerdictsPerSec, steps[best].OfferedPerSec
	s.LimitedBy = steps[best].Limit
	if last := steps[len(steps)-1]; last.Limit != "none" {
		s.LimitedBy = last.Limit
	}
	return s
}

// machineCPU is the machine's CPU time from /proc/stat, in clock ticks.
type machineCPU struct {
	busy, steal, total uint64
	ok                 bool
}

// readMachineCPU reads the first line of /proc/stat: user, nice, system,
// idle, iowait, irq, softirq, steal (guest time is inside user).
func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	return parseMachineCPU(b)
}

func parseMachineCPU(b []byte) machineCPU {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return machineCPU{}
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(string(f[i+1]), 10, 64)
		if err != nil {
			return machineCPU{}
		}
		v[i] = n
	}
	m := machineCPU{steal: v[7], ok: true}
	for _, n := range v {
		m.total += n
	}
	m.busy = m.total - v[3] - v[4] - v[7]
	return m
}

// cores converts the machine's CPU between two readings into cores busy
// and stolen over a window of wall time.
func machineCores(a, b machineCPU, window time.Duration) (busy, steal float64, ok bool) {
	if !a.ok || !b.ok || b.total < a.total || window <= 0 {
		return 0, 0, false
	}
	secs := window.Seconds()
	return float64(b.busy-a.busy) / clockTicks / secs, float64(b.steal-a.steal) / clockTicks / secs, true
}
