package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier"
)

// Options configure a bench run.
type Options struct {
	Agents int
	// Duration is the measurement window, after every agent has been
	// started and one interval of warm-up.
	Duration time.Duration
	Interval time.Duration
	// IMAEntries is how many new IMA entries each host appends before
	// each quote.
	IMAEntries int
	// AKAlg is tpm2.TPMAlgRSA or tpm2.TPMAlgECC.
	AKAlg tpm2.TPMAlgID
	// KeyCacheDir holds pre-generated RSA keys across runs; empty means a
	// directory inside Dir (generated afresh, slow for RSA fleets).
	KeyCacheDir string
	// VerifierExe is the vigil binary to run the verifier from, as a child
	// process (`VerifierExe bench verifier-process`), so that its CPU and
	// memory are its own. Empty runs the verifier in this process, and the
	// CPU and RSS reported are then the whole process's.
	VerifierExe string
	// VerifierURL, when set, is a verifier already running (external
	// mode): no registrar or verifier is started; hosts enroll at
	// RegistrarURL, which must be the registrar that verifier fetches AKs
	// from, and are admitted with the admin certificate of TLSDir (made by
	// `vigil ca init`, whose CA signed both services' certificates). The
	// run's agents and policy are removed from both at the end.
	VerifierURL  string
	RegistrarURL string
	TLSDir       string
	// EKCADir is the simulated manufacturer (InitEKCA) whose certificate
	// the external registrar has among its EK roots. Empty means a new
	// manufacturer, which only a registrar with EK policy "any" accepts.
	EKCADir string
	// VerifierPID is the external verifier's process on this machine, whose
	// CPU and VmHWM are read from /proc. 0 means read
	// process_cpu_seconds_total and process_resident_memory_bytes from its
	// /metrics, or, if it exports none and runs here, /proc for the process
	// found listening on its port.
	VerifierPID int
	// CPUProfile, if set, receives a pprof CPU profile of the verifier over
	// the measurement window (child process, or an external verifier that
	// serves /debug/pprof/).
	CPUProfile string
	// LoadCPUProfile, if set, receives a pprof CPU profile of this process
	// (the load generator) over the measurement windows, from the first
	// step's start to the last one's end; with Presign, over the first
	// step's window only (the next steps' presigning would swamp it).
	LoadCPUProfile string
	// Store, when set, is the PostgreSQL URL the bench's verifier keeps its
	// state in (an empty database), instead of its embedded store.
	Store string
	// Replicas is the number of verifier replicas, child processes over
	// the shared Store (0 or 1: one verifier, no replication). Hosts are
	// admitted through any replica and know every replica's URL.
	Replicas int
	// KillReplicaAfter, when set (Replicas ≥ 2), SIGKILLs the first
	// replica that far into the measurement window.
	KillReplicaAfter time.Duration
	// Rates, when set, are the attestation rates to measure at, one window
	// of Duration each, in order: verdicts a second the fleet offers, its
	// hosts ÷ the interval each attests at, which is derived (Interval
	// must be left zero). See rate.go.
	Rates []float64
	// Sweep goes on after Rates (or Agents ÷ Interval) doubling the rate
	// until a step saturates (judgeLimit), and one step more.
	Sweep bool
	// LoadGenerator is how the hosts attest: "lean" (the default with one
	// verifier: in-memory IMA lists, hand-encoded evidence, a minimal
	// HTTP/1.1 client, see lean.go) or "agent" (the agent's own Attester
	// and net/http, and IMA lists in files; the default with replicas, whose
	// failover is the agent's).
	LoadGenerator string
	// Presign (lean generator, one verifier) makes every request of each
	// step before its window: the challenges fetched ahead, the quotes
	// signed and the evidence encoded, so that in the window the generator
	// only sends bytes and reads verdicts, and RSA AKs no longer hold the
	// rate back. The verifier's work per verdict is unchanged. Hosts are
	// then admitted with a long interval, so that every nonce outlives its
	// presigning and window (see presign.go).
	Presign bool
	// Dir holds stores, TLS files and host state; empty means a temporary
	// directory removed at the end.
	Dir string
	// Progress receives progress lines; nil means none.
	Progress io.Writer

	// paces are the steps' intervals per host, from Rates or Interval.
	paces []time.Duration
	// presignAdmit is the interval hosts are admitted with under Presign
	// (presignAdmitInterval); presignReplay, in tests, has host 0 send its
	// request of that index twice in each step.
	presignAdmit  time.Duration
	presignReplay int
}

// lean reports whether the lean generator drives the hosts.
func (o *Options) lean() bool { return o.LoadGenerator == "lean" }

func (o *Options) defaults() error {
	if o.Agents <= 0 {
		o.Agents = 100
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if len(o.Rates) > 0 && o.Interval > 0 {
		return errors.New("with rates the interval is derived (hosts ÷ rate): leave Interval out")
	}
	switch o.LoadGenerator {
	case "":
		o.LoadGenerator = "lean"
		if o.Replicas > 1 {
			o.LoadGenerator = "agent"
		}
	case "lean":
		if o.Replicas > 1 {
			return errors.New("the lean load generator attests to one verifier: replicas need the agent generator, whose failover is the agent's")
		}
	case "agent":
		if len(o.Rates) > 1 || o.Sweep {
			return errors.New("the agent load generator follows the verifier's interval, so it runs one rate: sweeps need the lean generator")
		}
	default:
		return fmt.Errorf("load generator %q: want lean or agent", o.LoadGenerator)
	}
	if len(o.Rates) > 0 {
		paces, admit, err := planRates(o.Agents, o.Rates, o.lean())
		if err != nil {
			return err
		}
		if !o.lean() && admit < 100*time.Millisecond {
			return fmt.Errorf("rate %v/s with %d hosts is an interval of %s: the agent generator needs 100ms or more", o.Rates[0], o.Agents, admit)
		}
		o.paces, o.Interval = paces, admit
	}
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if len(o.paces) == 0 {
		o.paces = []time.Duration{o.Interval}
	}
	if o.Presign {
		switch {
		case o.Replicas > 1:
			return errors.New("presigning makes the lean generator's requests ahead: it cannot be used with replicas, which attest with the agent load generator")
		case !o.lean():
			return fmt.Errorf("presigning makes the lean generator's requests ahead: it cannot be used with the %s load generator", o.LoadGenerator)
		}
		admit, err := presignAdmitInterval(o.Interval, o.Duration, slices.Max(o.paces))
		if err != nil {
			return err
		}
		o.presignAdmit = admit
	}
	if o.CPUProfile != "" && (len(o.paces) > 1 || o.Sweep) {
		return errors.New("a CPU profile covers one window: profile one rate at a time")
	}
	if o.IMAEntries < 0 {
		return fmt.Errorf("IMA entries per attestation: %d is negative", o.IMAEntries)
	}
	if o.AKAlg == 0 {
		o.AKAlg = tpm2.TPMAlgRSA
	}
	if o.AKAlg != tpm2.TPMAlgRSA && o.AKAlg != tpm2.TPMAlgECC {
		return fmt.Errorf("AK algorithm %#x: want RSA or ECC", o.AKAlg)
	}
	if o.VerifierURL != "" {
		switch {
		case o.RegistrarURL == "":
			return errors.New("an external verifier needs the registrar it fetches AKs from (RegistrarURL)")
		case o.TLSDir == "":
			return errors.New("an external verifier needs the TLS directory of its deployment (TLSDir)")
		case o.VerifierExe != "":
			return errors.New("an external verifier and a child-process verifier are exclusive")
		case o.VerifierPID < 0:
			return fmt.Errorf("verifier PID %d is negative", o.VerifierPID)
		}
	} else if o.RegistrarURL != "" || o.TLSDir != "" || o.EKCADir != "" || o.VerifierPID != 0 {
		return errors.New("RegistrarURL, TLSDir, EKCADir and VerifierPID describe an external verifier: set VerifierURL")
	}
	if o.CPUProfile != "" && o.VerifierExe == "" && o.VerifierURL == "" {
		return errors.New("a CPU profile of the verifier needs the verifier in a child process or external")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Replicas > 1 {
		switch {
		case o.Store == "":
			return errors.New("verifier replicas share one store: set Store")
		case o.VerifierExe == "" || o.VerifierURL != "":
			return errors.New("verifier replicas run as child processes: set VerifierExe, not VerifierURL")
		case o.CPUProfile != "":
			return errors.New("a CPU profile is of one verifier: it cannot be taken with replicas")
		}
	}
	if o.KillReplicaAfter != 0 {
		switch {
		case o.Replicas < 2:
			return errors.New("killing a replica needs 2 replicas or more")
		case o.KillReplicaAfter < 0 || o.KillReplicaAfter >= o.Duration:
			return fmt.Errorf("kill a replica %s into a %s window: want within it", o.KillReplicaAfter, o.Duration)
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// Summary is the outcome of a run, the `--json` output of `vigil bench`.
type Summary struct {
	Agents int `json:"agents"`
	// Attesting counts agents the verifier had in state attesting at the
	// end; States has every state's count.
	Attesting int            `json:"attesting"`
	States    map[string]int `json:"states"`
	// VerifierMode is "child", "in-process" or "external"; VerifierURL
	// and RegistrarURL are where the fleet attested and enrolled.
	VerifierMode string `json:"verifier_mode"`
	// VerifierStore is where the bench's verifier keeps its state:
	// "embedded" (bbolt) or "postgres"; empty for an external verifier.
	VerifierStore string `json:"verifier_store,omitempty"`
	VerifierURL   string `json:"verifier_url"`
	// Replicas is the number of verifier replicas; VerifierURLs are their
	// URLs, every one of which each host knows.
	Replicas     int      `json:"replicas"`
	VerifierURLs []string `json:"verifier_urls,omitempty"`
	RegistrarURL string   `json:"registrar_url"`
	AKAlg        string   `json:"ak_alg"`
	EKAlg        string   `json:"ek_alg"`
	IMAEntries   int      `json:"ima_entries_per_attestation"`
	IntervalMS   int64    `json:"interval_ms"`
	// Policies says what each verdict is checked against.
	Policies string `json:"policies"`
	// WindowSeconds is the length of the measurement window.
	WindowSeconds  float64 `json:"window_seconds"`
	Verdicts       uint64  `json:"verdicts"`
	VerdictsPerSec float64 `json:"verdicts_per_sec"`
	LatencyMS      Latency `json:"latency_ms"`
	// ServerLatencyMS is the verifier's own time per verdict, from
	// evidence received to verdict stored (waiting for the agent's lock and
	// the store's group commit included); LatencyMS is what the agents see.
	// ServerLatencySource says how it was measured.
	ServerLatencyMS     Latency           `json:"server_latency_ms"`
	ServerLatencySource string            `json:"server_latency_source"`
	Errors              map[string]uint64 `json:"errors"`
	// CPUSeconds is the verifier's CPU time in the window and
	// CPUUSPerVerdict that divided by the verdicts; CPUSource says whose
	// CPU it is and how it was read.
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUUSPerVerdict float64 `json:"cpu_us_per_verdict"`
	CPUSource       string  `json:"cpu_source"`
	// LoadCPUSeconds is the CPU the bench process itself (soft TPMs,
	// agents, and the registrar unless external) used in the window, when
	// the verifier is not in this process.
	LoadCPUSeconds float64 `json:"load_generator_cpu_seconds,omitempty"`
	// RSSMB is the verifier's peak resident set size; RSSSource says how
	// it was read.
	RSSMB        float64 `json:"rss_mb"`
	RSSSource    string  `json:"rss_source"`
	SetupSeconds float64 `json:"setup_seconds"`
	CPUProfile   string  `json:"cpu_profile,omitempty"`

	// LoadGenerator is "lean" or "agent" (Options.LoadGenerator).
	LoadGenerator string `json:"load_generator"`
	// OfferedPerSec is the rate the fleet offered in the window (hosts ÷
	// their interval); Attestations the evidence requests it sent.
	OfferedPerSec float64 `json:"offered_per_sec"`
	Attestations  uint64  `json:"attestations"`
	// LoadCPUUSPerAttestation is LoadCPUSeconds per attestation, over the
	// window only: with Presigned, the signing before it is not in it.
	LoadCPUUSPerAttestation float64 `json:"load_generator_cpu_us_per_attestation,omitempty"`
	// Presigned says each window's requests were made before it
	// (Options.Presign). PresignAdmissionIntervalMS is then the interval
	// the hosts were admitted with, so that every presigned nonce outlives
	// its use (IntervalMS stays the one --interval or the rates give), and
	// the presign figures are the last step's (Step).
	Presigned                  bool    `json:"presigned,omitempty"`
	PresignAdmissionIntervalMS int64   `json:"presign_admission_interval_ms,omitempty"`
	PresignSeconds             float64 `json:"presign_seconds,omitempty"`
	PresignCPUSeconds          float64 `json:"presign_cpu_seconds,omitempty"`
	PresignedRequests          uint64  `json:"presigned_requests,omitempty"`
	PresignedMB                float64 `json:"presigned_mb,omitempty"`
	// Limit and LimitReason say what held the window's rate back (Step).
	Limit       string `json:"limit"`
	LimitReason string `json:"limit_reason"`
	// Steps are the windows of a run with rates (Options.Rates, Sweep), in
	// order; the fields above are then the last step's, and IntervalMS the
	// interval the hosts were admitted with. Saturation sums them up.
	Steps      []Step      `json:"steps,omitempty"`
	Saturation *Saturation `json:"saturation,omitempty"`

	// ReplicaKilledAtMS is when the first replica was SIGKILLed, in ms
	// into the window (with KillReplicaAfter).
	ReplicaKilledAtMS int64 `json:"replica_killed_at_ms,omitempty"`
	// HostsFailed counts this run's hosts not attesting at the end, by
	// "state" or "state: reason".
	HostsFailed map[string]int `json:"hosts_failed"`
	// LongestGapMS is the longest time between two good verdicts of one
	// host over the window (and, for each host, from its last good verdict
	// to the window's end); LongestGapHost is that host.
	LongestGapMS   float64 `json:"longest_gap_ms"`
	LongestGapHost string  `json:"longest_gap_host,omitempty"`
	// FailoverErrors are errors of hosts that attested well again
	// afterwards, seen after a replica was killed (connection refused, a
	// redirect to the dead replica, 503 unassigned while its hosts are
	// taken over, …) or, with replicas, any time a verifier could not be
	// reached or could not serve the host yet (503 unassigned just after
	// admission): the failover's, not counted in Errors. The errors of a
	// host that had not recovered by the end of the window are in Errors.
	FailoverErrors map[string]uint64 `json:"failover_errors,omitempty"`
	// Revocations counts the revocation events the verifier raised for
	// this run's hosts (its outbox in PostgreSQL, pending and delivered);
	// RevocationsSource says so. Only with Store.
	Revocations       *int   `json:"revocations,omitempty"`
	RevocationsSource string `json:"revocations_source,omitempty"`
	Note              string `json:"note"`
}

// note is said with every result: the numbers come from a machine the
// verifier shares with its load.
const note = "the load generator (soft TPMs, agents, registrar) shares this machine with the verifier: " +
	"verdicts/s and latency are those of this machine under both loads; CPU per verdict is the figure that transfers"

// poolSize is the number of distinct files the fleet measures; every
// host's runtime policy lists them all.
const poolSize = 512

// Run runs the bench until it is done or ctx ends.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if err := opts.defaults(); err != nil {
		// What was asked cannot be run.
		return Summary{}, &UsageError{Err: err}
	}
	setupStart := time.Now()
	sum := Summary{
		Agents: opts.Agents, AKAlg: tpmfacts.AlgName(opts.AKAlg), EKAlg: "ecc",
		IMAEntries: opts.IMAEntries, IntervalMS: opts.Interval.Milliseconds(),
		Policies: "runtime (IMA) policy only; no boot policy, so steady-state verdicts check quote + IMA",
		Errors:   map[string]uint64{}, States: map[string]int{}, HostsFailed: map[string]int{},
		Replicas: opts.Replicas, LoadGenerator: opts.LoadGenerator,
	}
	say := func(format string, args ...any) { fmt.Fprintf(opts.Progress, format+"\n", args...) }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	workers := max(4, 4*runtime.NumCPU())

	// The deployment under test, checked before any host is made.
	var dep *deployment
	var err error
	if opts.VerifierURL != "" {
		dep, err = startExternal(ctx, opts, say)
		if err != nil {
			return sum, err
		}
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "vigil-bench-")
		if err != nil {
			return sum, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if dep == nil {
		// CA, simulated TPM maker and registrar in this process; the
		// verifier a child or in this process.
		if dep, err = startLocal(ctx, opts, dir, quiet); err != nil {
			return sum, err
		}
	}
	defer dep.close()
	sum.VerifierMode, sum.VerifierURL, sum.RegistrarURL = dep.mode, dep.verifierURL, dep.registrarURL
	if len(dep.verifierURLs) > 1 {
		sum.VerifierURLs = dep.verifierURLs
	}
	if dep.mode != "external" {
		sum.VerifierStore = "embedded"
		if opts.Store != "" {
			sum.VerifierStore = "postgres"
		}
	}
	sum.CPUSource, sum.RSSSource, sum.ServerLatencySource, sum.Note = dep.meter.cpuSource, dep.meter.rssSource, dep.serverSource, dep.note
	if opts.CPUProfile != "" && dep.profile == nil {
		return sum, usageErrorf("the %s verifier cannot be profiled", dep.mode)
	}
	say("vigil bench: %d agents, %s AKs, %d IMA entries per attestation, every %s, measuring for %s", opts.Agents, sum.AKAlg, opts.IMAEntries, opts.Interval, opts.Duration)
	if opts.KillReplicaAfter > 0 {
		say("  the first replica (%s %s) is to be SIGKILLed %s into the window", dep.replicaNames[dep.verifierURLs[0]], dep.verifierURLs[0], opts.KillReplicaAfter)
	}
	say("  %s", dep.describe)
	say("  verifier CPU from %s", dep.meter.cpuSource)

	// Fleet: keys, hosts, the shared pool of measured files, one policy.
	keysDir := opts.KeyCacheDir
	if keysDir == "" {
		keysDir = filepath.Join(dir, "keys")
	}
	keys, err := soft.NewKeyCache(keysDir)
	if err != nil {
		return sum, err
	}
	if opts.AKAlg == tpm2.TPMAlgRSA {
		t := time.Now()
		if err := keys.Prefill(ctx, opts.Agents, "ak0"); err != nil {
			return sum, err
		}
		say("  RSA AK keys ready in %s (cache %s)", time.Since(t).Round(time.Millisecond), keysDir)
	}
	boot, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		return sum, err
	}
	bootPath := filepath.Join(dir, "binary_bios_measurements")
	if err := os.WriteFile(bootPath, boot.Bytes(), 0o600); err != nil {
		return sum, err
	}
	pool, err := makePool(filepath.Join(dir, "pool"))
	if err != nil {
		return sum, err
	}
	var table *simhost.IMATable
	if opts.lean() {
		// The pool's entries encoded and hashed once, for every host's
		// in-memory list.
		if table, err = simhost.NewIMATable(simhost.FormatBinary, pool); err != nil {
			return sum, err
		}
	}
	perRequest := 0
	if opts.Presign {
		// What the steps asked for would hold, checked before any host is
		// made (a sweep's later steps are checked as they come).
		perRequest = presignRequestSize(table, opts.IMAEntries)
		for _, p := range opts.paces {
			if n, b := presignEstimate(opts.Agents, perRequest, p, opts.Duration); b > maxPresignBytes {
				return sum, usageErrorf("presigning %.0f attestations/s over a %s window would hold %d requests of up to %d bytes, ~%.1f GiB, "+
					"over the %d GiB bound: use a shorter --duration, a lower rate or fewer --ima-entries",
					float64(opts.Agents)/p.Seconds(), opts.Duration, n, perRequest, float64(b)/(1<<30), maxPresignBytes>>30)
			}
		}
		say("  presigning: each step's requests are made before its window; hosts are admitted with a %s interval, so that a nonce "+
			"lives %s and a host may be quiet for %s (the verifier's default, max(30s, 2 intervals), and 3 intervals)",
			opts.presignAdmit, 2*opts.presignAdmit, 3*opts.presignAdmit)
	}
	hosts := make([]*host, opts.Agents)
	t := time.Now()
	if err := parallel(ctx, opts.Agents, workers, func(i int) error {
		h, err := newHost(ctx, dir, dep.idPrefix, i, dep.mfr, keys, boot, table)
		hosts[i] = h
		return err
	}); err != nil {
		return sum, fmt.Errorf("manufacture hosts: %w", err)
	}
	say("  %d soft TPMs manufactured and booted in %s", opts.Agents, time.Since(t).Round(time.Millisecond))
	clientTLS, err := tlsutil.ClientConfig(filepath.Join(dep.tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		return sum, err
	}
	adminTLS, err := tlsutil.AdminClientConfig(dep.tlsDir)
	if err != nil {
		return sum, err
	}
	adminHTTP := &http.Client{Transport: &http.Transport{TLSClientConfig: adminTLS, MaxIdleConnsPerHost: workers}, Timeout: time.Minute}
	defer adminHTTP.CloseIdleConnections()
	admin := &verifier.AdminClient{BaseURL: dep.verifierURL, HTTP: adminHTTP}
	// Hosts are admitted through every replica in turn; what is read after
	// the first replica may have been killed is read from the last.
	admins := make([]*verifier.AdminClient, len(dep.verifierURLs))
	for i, u := range dep.verifierURLs {
		admins[i] = &verifier.AdminClient{BaseURL: u, HTTP: adminHTTP}
	}
	lastAdmin := admins[len(admins)-1]
	policyName := dep.idPrefix + "runtime"
	if dep.mode == "external" {
		// The deployment outlives the run: take this run's agents and
		// policy out of it, whatever happened (after the agents stopped:
		// deferred calls run last first).
		defer removeFleet(context.WithoutCancel(ctx), say, hosts, workers, admin,
			&registrar.AdminClient{BaseURL: dep.registrarURL, HTTP: adminHTTP}, policyName)
	}

	enrollHTTP := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, MaxIdleConnsPerHost: workers}, Timeout: 30 * time.Second}
	defer enrollHTTP.CloseIdleConnections()
	t = time.Now()
	if err := parallel(ctx, opts.Agents, workers, func(i int) error {
		h := hosts[i]
		e := &agent.Enroller{Open: h.open, DataDir: filepath.Join(h.dir, "agent"), RegistrarURL: dep.registrarURL,
			HTTP: enrollHTTP, AgentID: h.id, EKAlg: tpm2.TPMAlgECC, AKAlg: opts.AKAlg, Log: quiet}
		if _, err := e.Enroll(ctx); err != nil {
			if dep.enrollHint != "" {
				return fmt.Errorf("enroll %s: %w (%s)", h.id, err, dep.enrollHint)
			}
			return fmt.Errorf("enroll %s: %w", h.id, err)
		}
		return nil
	}); err != nil {
		return sum, err
	}
	say("  %d hosts enrolled (EK certificate checked, AK activated) in %s", opts.Agents, time.Since(t).Round(time.Millisecond))

	polJSON, err := runtimePolicy(hosts[0], pool)
	if err != nil {
		return sum, err
	}
	if _, err := admin.AddPolicy(ctx, policyName, verifier.PolicyRuntime, polJSON); err != nil {
		return sum, fmt.Errorf("add runtime policy: %w", err)
	}
	// Admit and start: each host starts attesting as soon as it is
	// admitted, at its own phase within one interval from the start of
	// admission, so the load is spread as in a fleet whose machines booted
	// at different times. Admitting every host first would start each
	// one's liveness window (counted from its admission) long before a
	// large fleet's last host is admitted.
	rec := newRecorder()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	stopAgents := func() {
		cancel()
		wg.Wait()
		for _, h := range hosts {
			if h.http != nil {
				h.http.CloseIdleConnections()
			}
		}
	}
	defer stopAgents()
	var fleet *leanFleet
	if opts.lean() {
		fleet = &leanFleet{table: table, url: dep.verifierURL, tls: clientTLS, bootLog: boot.Bytes(), entries: opts.IMAEntries, hosts: opts.Agents,
			replay: opts.presignReplay}
	}
	// The warm-up's pace: the first step's, but under Presign, whose steps
	// start schedules of their own, no faster than 1,000 attestations a
	// second, which a generator signing RSA quotes keeps up with beside the
	// admissions.
	warmPace := opts.paces[0]
	if opts.Presign {
		warmPace = max(warmPace, time.Duration(opts.Agents)*time.Millisecond)
	}
	t = time.Now()
	if fleet != nil {
		fleet.sched.Store(&schedule{start: t, pace: warmPace})
	}
	admitEvery := opts.Interval
	if opts.Presign {
		admitEvery = opts.presignAdmit
	}
	// The lean generator's loops run by phases (the warm-up's, each
	// presigned step's), each stopped between two exchanges.
	loops := newHostLoops()
	if err := parallel(ctx, opts.Agents, workers, func(i int) error {
		h := hosts[i]
		if _, err := admins[i%len(admins)].Admit(ctx, verifier.AdmitRequest{AgentID: h.id, RuntimePolicy: policyName,
			Identities: []string{"spiffe://bench.vigil.example/node/" + h.id}, Interval: admitEvery}); err != nil {
			if opts.Presign {
				return fmt.Errorf("admit %s with the %s interval presigning needs: %w", h.id, admitEvery, err)
			}
			return fmt.Errorf("admit %s: %w", h.id, err)
		}
		if fleet != nil {
			if err := h.prepareLean(fleet); err != nil {
				return err
			}
			h.lean.stop = loops.stop
			wg.Add(1)
			loops.wg.Add(1)
			go func() {
				defer wg.Done()
				defer loops.wg.Done()
				h.leanLoop(runCtx, fleet, i, rec)
			}()
			return nil
		}
		h.http = agentClient(clientTLS, h)
		h.att = &agent.Attester{Open: h.open, DataDir: filepath.Join(h.dir, "agent"), VerifierURLs: dep.verifierURLs,
			HTTP: h.http, BootLogPath: bootPath, IMALogPath: h.ima.Path, Log: quiet}
		if err := h.att.Prepare(); err != nil {
			return err
		}
		phase := time.Until(t.Add(time.Duration(int64(opts.Interval) * int64(i) / int64(len(hosts)))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.attestLoop(runCtx, h.att.VerifierURLs, pool, opts.IMAEntries, max(phase, 0), rec)
		}()
		return nil
	}); err != nil {
		return sum, err
	}
	say("  %d hosts admitted with a %d-file runtime policy in %s, each attesting from its admission on (%s load generator)",
		opts.Agents, len(pool)+1, time.Since(t).Round(time.Millisecond), opts.LoadGenerator)
	sum.SetupSeconds = round(time.Since(setupStart).Seconds(), 1)

	// Warm-up: every host's first attestation (IMA list from entry 0, a
	// new TLS connection) is not steady state. Wait until every host has
	// passed once, then one interval more.
	if !warmUp(ctx, rec, opts.Agents, warmPace, say) {
		return sum, ctx.Err()
	}

	var prof chan error
	startProfile := func() {
		prof = make(chan error, 1)
		go func() { prof <- dep.profile(ctx, opts.Duration, opts.CPUProfile) }()
	}
	if opts.CPUProfile != "" && !opts.Presign {
		startProfile()
	}
	stepped := len(opts.Rates) > 0 || opts.Sweep
	m := &measurer{opts: opts, dep: dep, rec: rec, say: say}
	var stopLoad func()
	defer func() {
		if stopLoad != nil {
			stopLoad()
		}
	}()
	startLoad := func() (err error) {
		stopLoad, err = startLoadProfile(opts.LoadCPUProfile)
		return err
	}
	if opts.LoadCPUProfile != "" && !opts.Presign {
		if err := startLoad(); err != nil {
			return sum, err
		}
	}
	rate := float64(opts.Agents) / opts.paces[0].Seconds()
	var last Step
	for k := 0; ; k++ {
		pace := paceFor(opts.Agents, rate)
		if k < len(opts.paces) {
			pace = opts.paces[k]
			rate = float64(opts.Agents) / pace.Seconds()
		}
		// A new step starts a new schedule from now, which every host is
		// on within one pace; then the queues it left settle. The first
		// step goes on with the warm-up's schedule.
		settle := max(2*time.Second, 2*pace)
		if k == 0 {
			settle = 0
		}
		var pre *presignStats
		if opts.Presign {
			// Every request of the step made now; the hosts are quiet
			// meanwhile, and start on a new schedule after.
			settle = presignSettle(pace)
			n := presignCount(pace, settle, opts.Duration)
			if _, b := presignEstimate(opts.Agents, perRequest, pace, opts.Duration); b > maxPresignBytes {
				// A sweep's step past what the rates asked for.
				say("  the sweep stops: presigning %.0f attestations/s over a %s window would hold ~%.1f GiB of requests, over the %d GiB bound",
					rate, opts.Duration, float64(b)/(1<<30), maxPresignBytes>>30)
				break
			}
			if stepped {
				say("  step %d: presigning %d requests per host (%d in all) for %.0f verdicts/s over %s of settling and the window",
					k+1, n, n*opts.Agents, rate, settle+opts.Duration)
			} else {
				say("  presigning %d requests per host (%d in all) for %s of settling and the window", n, n*opts.Agents, settle+opts.Duration)
			}
			loops.halt()
			loops = newHostLoops()
			st, err := presignStep(ctx, runCtx, hosts, fleet, n, workers, rec)
			if err != nil {
				return sum, err
			}
			say("  presigned %d requests (%.1f MB) in %s: challenges fetched in %s, then signed and encoded; load generator CPU %.1f s (%.0f µs per request)",
				st.requests, float64(st.bytes)/1e6, st.took.Round(time.Millisecond), st.fetched.Round(time.Millisecond),
				st.cpu.Seconds(), float64(st.cpu.Microseconds())/float64(max(st.requests, 1)))
			if st.failedHosts > 0 {
				say("  WARNING: %d hosts could not fetch all their challenges (errors counted); they send what they have", st.failedHosts)
			}
			if err := st.checkNonceLife(settle, opts.Duration); err != nil {
				return sum, err
			}
			pre = &st
			fleet.setPace(pace)
			for i, h := range hosts {
				h.lean.stop = loops.stop
				wg.Add(1)
				loops.wg.Add(1)
				go func() {
					defer wg.Done()
					defer loops.wg.Done()
					h.presignedLoop(runCtx, fleet, i, rec)
				}()
			}
		} else if fleet != nil && opts.AKAlg == tpm2.TPMAlgECC {
			// The ECDSA nonces the step's quotes will use, made before
			// it (the hosts attest meanwhile: let them settle after).
			t := time.Now()
			if err := presignFor(ctx, hosts, workers, settle+opts.Duration+2*pace, pace); err != nil {
				return sum, err
			}
			if k == 0 {
				settle = max(time.Second, pace)
			}
			say("  ECDSA nonces for the next window made ahead in %s", time.Since(t).Round(time.Millisecond))
		}
		if k > 0 && !opts.Presign {
			fleet.setPace(pace)
		}
		if stepped && !opts.Presign {
			say("  step %d: offering %.0f verdicts/s (each host every %s)", k+1, rate, pace)
		} else if stepped {
			say("  step %d: offering %.0f verdicts/s (each host every %s), presigned", k+1, rate, pace)
		}
		if settle > 0 {
			say("  settling for %s", settle.Round(time.Millisecond))
			if !sleep(ctx, settle) {
				return sum, ctx.Err()
			}
		}
		if k == 0 && opts.Presign {
			// Profiles of the window, not of the presigning.
			if opts.CPUProfile != "" {
				startProfile()
			}
			if opts.LoadCPUProfile != "" {
				if err := startLoad(); err != nil {
					return sum, err
				}
			}
		}
		st, err := m.step(ctx, rate, pace)
		if err != nil {
			return sum, err
		}
		if k == 0 && opts.Presign && opts.LoadCPUProfile != "" {
			pprof.StopCPUProfile()
		}
		if pre != nil {
			st.Presigned, st.PresignedRequests = true, pre.requests
			st.PresignSeconds, st.PresignCPUSeconds = round(pre.took.Seconds(), 3), round(pre.cpu.Seconds(), 3)
			st.PresignedMB = round(float64(pre.bytes)/1e6, 3)
		}
		last = st
		if stepped {
			sum.Steps = append(sum.Steps, st)
			say("  step %d: offered %.0f/s, delivered %.1f/s; verifier %.1f µs CPU per verdict (%.2f cores), load generator %.1f µs per attestation (%.2f cores); p50 %.1f ms, p99 %.1f ms; %d errors; limit: %s",
				k+1, st.OfferedPerSec, st.VerdictsPerSec, st.VerifierCPUUSPerVerdict, st.VerifierCores, st.LoadCPUUSPerAttestation, st.LoadCores,
				st.LatencyMS.P50, st.LatencyMS.P99, errCount(st.Errors), st.Limit)
		}
		if k+1 < len(opts.paces) {
			continue
		}
		if !opts.Sweep {
			break
		}
		prevLimit := ""
		if len(sum.Steps) > 1 {
			prevLimit = sum.Steps[len(sum.Steps)-2].Limit
		}
		next, ok := nextSweepRate(opts.Agents, rate, st.Limit, prevLimit)
		if !ok || k+1 >= maxSweepSteps {
			break
		}
		rate = next
		opts.paces = append(opts.paces, paceFor(opts.Agents, rate))
	}
	rec.setMeasuring(false)
	rec.closeWindow(time.Now())
	if opts.LoadCPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if opts.Presign {
		sum.Presigned, sum.PresignAdmissionIntervalMS = true, opts.presignAdmit.Milliseconds()
		sum.PresignSeconds, sum.PresignCPUSeconds = last.PresignSeconds, last.PresignCPUSeconds
		sum.PresignedRequests, sum.PresignedMB = last.PresignedRequests, last.PresignedMB
	}
	// The states at the end are read while the agents still attest: once
	// they stop, the verifier rightly fails them for silence.
	views, err := lastAdmin.List(ctx)
	if err != nil {
		return sum, fmt.Errorf("list agents: %w", err)
	}
	for _, v := range views {
		// A shared verifier has other agents than this run's.
		if strings.HasPrefix(v.ID, dep.idPrefix) {
			sum.States[string(v.State)]++
			if v.State != verifier.StateAttesting {
				k := string(v.State)
				if v.Reason != "" {
					k += ": " + string(v.Reason)
				}
				sum.HostsFailed[k]++
			}
		}
	}
	sum.Attesting = sum.States[string(verifier.StateAttesting)]
	if opts.Store != "" && dep.mode != "external" {
		n, err := countRevocations(ctx, opts.Store, dep.idPrefix)
		if err != nil {
			return sum, fmt.Errorf("count revocation events: %w", err)
		}
		sum.Revocations = &n
		sum.RevocationsSource = "revocation events for this run's hosts in the verifier's outbox in PostgreSQL (verifier_outbox and verifier_outbox_delivered), " +
			"read at the end of the window: one per host the verifier failed"
	}
	if prof != nil {
		if err := <-prof; err != nil {
			return sum, fmt.Errorf("CPU profile: %w", err)
		}
		sum.CPUProfile = opts.CPUProfile
	}
	stopAgents()

	sum.ReplicaKilledAtMS = m.killedAtMS
	sum.WindowSeconds = last.WindowSeconds
	sum.Verdicts, sum.VerdictsPerSec, sum.Attestations = last.Verdicts, last.VerdictsPerSec, last.Attestations
	sum.LatencyMS, sum.ServerLatencyMS = last.LatencyMS, last.ServerLatencyMS
	sum.OfferedPerSec, sum.Limit, sum.LimitReason = last.OfferedPerSec, last.Limit, last.LimitReason
	rec.mu.Lock()
	for k, n := range rec.errors {
		sum.Errors[k] = n
	}
	if len(rec.failoverErrors) > 0 {
		sum.FailoverErrors = maps.Clone(rec.failoverErrors)
	}
	sum.LongestGapMS, sum.LongestGapHost = ms(rec.longestGap), rec.longestGapHost
	rec.mu.Unlock()
	sum.CPUSeconds, sum.CPUUSPerVerdict = last.VerifierCPUSeconds, last.VerifierCPUUSPerVerdict
	sum.RSSMB = last.RSSMB
	if dep.mode != "in-process" {
		sum.LoadCPUSeconds, sum.LoadCPUUSPerAttestation = last.LoadCPUSeconds, last.LoadCPUUSPerAttestation
	}
	if stepped {
		sum.Saturation = saturation(sum.Steps)
	}
	return sum, nil
}

// startLoadProfile starts a CPU profile of this process into path; stop
// ends it (again, harmlessly) and closes the file.
func startLoadProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("load generator CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// errCount sums errors by kind.
func errCount(errs map[string]uint64) uint64 {
	var n uint64
	for _, c := range errs {
		n += c
	}
	return n
}

// measurer measures one window of a run.
type measurer struct {
	opts       Options
	dep        *deployment
	rec        *recorder
	say        func(string, ...any)
	killedAtMS int64
}

// step measures one window of opts.Duration at the given rate and pace:
// the verifier's CPU and verdicts, the load generator's CPU, the machine's.
func (m *measurer) step(ctx context.Context, rate float64, pace time.Duration) (Step, error) {
	opts, dep, rec, say := m.opts, m.dep, m.rec, m.say
	u0, err := dep.meter.read(ctx)
	if err != nil {
		return Step{}, err
	}
	self0, err := selfUsage()
	if err != nil {
		return Step{}, err
	}
	mach0 := readMachineCPU()
	if _, err := dep.serverTimes(ctx); err != nil {
		return Step{}, err
	}
	rec.startWindow()
	winStart := time.Now()
	progress := time.NewTicker(progressEvery(opts.Duration))
	defer progress.Stop()
	end := time.NewTimer(opts.Duration)
	defer end.Stop()
	var killC <-chan time.Time
	if opts.KillReplicaAfter > 0 && m.killedAtMS == 0 {
		kill := time.NewTimer(opts.KillReplicaAfter)
		defer kill.Stop()
		killC = kill.C
	}
	killed := ""
	prev, prevAt := rec.snapshot(), winStart
wait:
	for {
		select {
		case <-ctx.Done():
			return Step{}, ctx.Err()
		case <-killC:
			rec.startFailover()
			if err := dep.killReplica(ctx); err != nil {
				return Step{}, fmt.Errorf("kill a replica: %w", err)
			}
			killed = dep.verifierURLs[0]
			m.killedAtMS = time.Since(winStart).Milliseconds()
			say("  %5.1fs  SIGKILLed replica %s (%s)", time.Since(winStart).Seconds(), dep.replicaNames[killed], killed)
		case now := <-progress.C:
			s := rec.snapshot()
			line := fmt.Sprintf("  %5.1fs  %d verdicts (%.0f/s now), %d agents seen attesting, %d errors",
				now.Sub(winStart).Seconds(), s.verdicts, float64(s.verdicts-prev.verdicts)/now.Sub(prevAt).Seconds(), s.goodAgents, s.errors)
			if len(dep.verifierURLs) > 1 {
				var per []string
				for _, u := range dep.verifierURLs {
					p := fmt.Sprintf("%s %d", dep.replicaNames[u], s.byURL[u]-prev.byURL[u])
					if u == killed {
						p += " (killed)"
					}
					per = append(per, p)
				}
				line += fmt.Sprintf(", %d failover errors; verdicts since the last line by replica: %s", s.failoverErrors, strings.Join(per, ", "))
			}
			say("%s", line)
			prev, prevAt = s, now
			if dep.meter.sample != nil {
				dep.meter.sample(ctx)
			}
		case <-end.C:
			break wait
		}
	}
	rec.setMeasuring(false)
	window := time.Since(winStart)
	u1, err := dep.meter.read(ctx)
	if err != nil {
		return Step{}, err
	}
	self1, err := selfUsage()
	if err != nil {
		return Step{}, err
	}
	mach1 := readMachineCPU()
	server, err := dep.serverTimes(ctx)
	if err != nil {
		return Step{}, err
	}
	w := rec.window()
	secs := window.Seconds()
	st := Step{
		OfferedPerSec: round(rate, 1), IntervalMS: float64(pace.Microseconds()) / 1000,
		WindowSeconds: round(secs, 3), Verdicts: w.verdicts, VerdictsPerSec: round(float64(w.verdicts)/secs, 1),
		Attestations: w.attempts, LatencyMS: w.latency, ServerLatencyMS: server, Errors: w.errors,
		LateStarts: w.late, WakeLagP99MS: w.lagP99, MachineCores: runtime.NumCPU(), OtherCores: -1,
		RSSMB: round(float64(u1.PeakRSS)/(1<<20), 1),
	}
	if !opts.lean() {
		// The agent generator sends evidence after each challenge it got:
		// its attestations are its verdicts and evidence errors.
		st.Attestations = w.verdicts
		for k, n := range w.errors {
			if strings.HasPrefix(k, "evidence") {
				st.Attestations += n
			}
		}
	}
	cpu := u1.CPU - u0.CPU
	st.VerifierCPUSeconds, st.VerifierCores = round(cpu.Seconds(), 3), round(cpu.Seconds()/secs, 3)
	if w.verdicts > 0 {
		st.VerifierCPUUSPerVerdict = round(float64(cpu.Microseconds())/float64(w.verdicts), 1)
	}
	load := self1.CPU - self0.CPU
	if dep.mode == "in-process" {
		load = 0 // inside the verifier's figure
	}
	st.LoadCPUSeconds, st.LoadCores = round(load.Seconds(), 3), round(load.Seconds()/secs, 3)
	if st.Attestations > 0 {
		st.LoadCPUUSPerAttestation = round(float64(load.Microseconds())/float64(st.Attestations), 1)
	}
	busy, steal, ok := machineCores(mach0, mach1, window)
	verifierHere := !dep.remote
	if ok {
		other := busy - st.LoadCores
		if verifierHere {
			other -= st.VerifierCores
		}
		st.OtherCores, st.StealCores = round(max(other, 0), 3), round(steal, 3)
	}
	sl := stepLoad{offered: rate, achieved: float64(w.verdicts) / secs, verifier: st.VerifierCores, generator: st.LoadCores,
		late:  float64(w.late) / float64(max(w.attempts, 1)),
		other: max(st.OtherCores, 0), pace: pace, latencyP50: time.Duration(w.latency.P50 * float64(time.Millisecond))}
	if ok {
		sl.machine = st.MachineCores
	}
	if !verifierHere {
		sl.verifier, sl.remote = 0, true
	}
	st.Limit, st.LimitReason = judgeLimit(sl)
	if dep.mode == "in-process" {
		st.LimitReason += "; the verifier runs in this process, so its CPU includes the load generator's"
	}
	return st, nil
}

// removeFleet deletes a run's agents from an external verifier and
// registrar, and then its policy, so that the deployment does not go on
// expecting them (and fail them for silence).
func removeFleet(ctx context.Context, say func(string, ...any), hosts []*host, workers int,
	admin *verifier.AdminClient, reg *registrar.AdminClient, policy string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var live []*host
	for _, h := range hosts {
		if h != nil {
			live = append(live, h)
		}
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	del := func(f func(context.Context, string) error) func(int) error {
		return func(i int) error {
			if err := f(ctx, live[i].id); err != nil && !isNotFound(err) {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			return nil
		}
	}
	parallel(ctx, len(live), workers, del(admin.Delete))
	if err := admin.DeletePolicy(ctx, policy); err != nil && !isNotFound(err) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	parallel(ctx, len(live), workers, del(reg.Delete))
	if n := failed.Load(); n > 0 {
		say("  WARNING: %d deletions failed cleaning up this run's agents and policy %s (first: %v)", n, policy, firstErr.Load())
		return
	}
	say("  removed this run's %d agents from the verifier and the registrar, and policy %s", len(live), policy)
}

func progressEvery(d time.Duration) time.Duration {
	return min(max(d/10, time.Second), 5*time.Second)
}

func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

// makePool writes poolSize small distinct files and measures them once:
// hosts append these entries, and the runtime policy lists them.
func makePool(dir string) ([]simhost.IMAEntry, error) {
	bin := filepath.Join(dir, "usr", "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return nil, err
	}
	pool := make([]simhost.IMAEntry, poolSize)
	for i := range pool {
		p := filepath.Join(bin, fmt.Sprintf("tool-%03d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("#!/bin/true tool %d\n", i)), 0o700); err != nil {
			return nil, err
		}
		e, err := simhost.MeasureFile(p)
		if err != nil {
			return nil, err
		}
		pool[i] = e
	}
	return pool, nil
}

// runtimePolicy is `vigil policy create runtime` for a known-good host
// that has run every file of the pool: boot_aggregate (the same for every
// host, which all boot the same log) and the pool.
func runtimePolicy(h *host, pool []simhost.IMAEntry) ([]byte, error) {
	var list []byte
	if h.mem != nil {
		list = h.mem.Bytes()
	} else {
		var err error
		if list, err = os.ReadFile(h.ima.Path); err != nil {
			return nil, err
		}
	}
	for _, e := range pool {
		list = e.AppendBinary(list)
	}
	rp, err := ima.PolicyFromLog(list, ima.ParseOptions{})
	if err != nil {
		return nil, err
	}
	return rp.JSON()
}

// fetchProfile saves the CPU profile of the verifier whose pprof handlers
// are under pprofURL over the next d.
func fetchProfile(ctx context.Context, client *http.Client, pprofURL string, d time.Duration, path string) error {
	if pprofURL == "" {
		return errors.New("the verifier serves no pprof endpoint")
	}
	secs := max(1, int(math.Round(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofURL, secs), nil)
	if err != nil {
		return err
	}
	rsp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(rsp.Body, 512))
		return fmt.Errorf("%s: %s", rsp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rsp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// warmUpLimit bounds the wait for every host's first good verdict: a
// verifier that cannot get there is measured anyway, and its errors and
// failed agents show in the summary.
const warmUpLimit = 2 * time.Minute

// warmUp waits until all n agents have had a good verdict (or warmUpLimit
// passed), then one interval more, reporting progress. It returns false if
// ctx ended.
func warmUp(ctx context.Context, rec *recorder, n int, interval time.Duration, say func(string, ...any)) bool {
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastSay := start
	for {
		s := rec.snapshot()
		if s.goodAgents >= n {
			say("  warm-up: all %d hosts passed their first attestation in %s; one interval more", n, time.Since(start).Round(time.Millisecond))
			break
		}
		if s.settled >= n {
			say("  warm-up: %d hosts passed their first attestation and %d failed, in %s; one interval more", s.goodAgents, n-s.goodAgents, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > warmUpLimit {
			say("  warm-up: only %d of %d hosts passed a first attestation within %s; measuring anyway", s.goodAgents, n, warmUpLimit)
			break
		}
		if time.Since(lastSay) >= 2*time.Second {
			say("  warm-up: %d of %d hosts passed their first attestation, %d errors", s.goodAgents, n, s.errors)
			lastSay = time.Now()
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return sleep(ctx, interval)
}
