package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/cmd/vigil/internal/bench"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the verifier's cost per verdict with a simulated fleet (soft TPMs), on loopback or against a running verifier",
		Description: "Starts a registrar (in this process) and a verifier (a child process, so that its CPU and memory\n" +
			"are its own), manufactures --agents soft TPMs, enrolls and admits them with a runtime policy, and has\n" +
			"each attest every --interval over its own keep-alive HTTPS connection, appending --ima-entries new IMA\n" +
			"entries before each quote. Once every host has passed its first attestation, and one interval more, it\n" +
			"measures for --duration. Soft TPMs are a\n" +
			"simulation: this measures Vigil, not hardware. Exit 1 when any error happened or an agent did not end\n" +
			"attesting.\n\n" +
			"With --verifier URL it starts no service: it benchmarks the verifier already running at URL. Hosts enroll\n" +
			"at --registrar (the registrar that verifier fetches AKs from) with EK certificates from the simulated\n" +
			"manufacturer in --ek-ca (made by `vigil bench ek-ca DIR`, given to the registrar as --ek-roots DIR), and\n" +
			"are admitted with the admin certificate in --tls-dir. The verifier's CPU comes from /proc/PID/stat with\n" +
			"--verifier-pid, else from process_cpu_seconds_total on its /metrics (else, on this machine, from the\n" +
			"process found listening on its port). The run's agents and policy are deleted from both at the end.\n\n" +
			"With --rate R[,R2,…] the interval is derived instead: each step paces every host at --agents ÷ R, one\n" +
			"window of --duration per rate; --sweep goes on doubling the rate until a step saturates (delivers less\n" +
			"than 98% of what it offered, or starts more than 5% of its attestations late), and one step more. Each\n" +
			"step reports the verdicts/s delivered, the verifier's CPU per verdict and its use\n" +
			"of the machine, the load generator's CPU per attestation, latency, errors, and what held the rate back\n" +
			"(limit: none, verifier, load-generator, other-processes, hosts).\n\n" +
			"Hosts attest with the lean load generator by default (IMA lists in memory, evidence encoded by hand, a\n" +
			"minimal HTTP/1.1 client on one keep-alive TLS connection per host; the same requests an agent sends);\n" +
			"--load-generator agent runs the agent's own code instead, as replicas always do.\n\n" +
			"With --presign (lean generator only) every request of a step is made before its window: each host fetches\n" +
			"the challenges it will answer, in order, and its quotes are signed and its evidence encoded ahead, so that\n" +
			"in the window the generator only sends bytes and reads verdicts (RSA signatures no longer hold the rate\n" +
			"back); the verifier checks every verdict as before. Hosts are then admitted with a long interval, so that\n" +
			"every presigned nonce outlives the presigning and the window. The load generator's CPU per attestation is\n" +
			"the window's only; each step reports how long presigning took and what it made.\n\n" +
			"With --replicas N (N ≥ 2, with --store) it runs N verifier replicas over that database and every host\n" +
			"fails over between them; --kill-replica-after D SIGKILLs the first one D into the window and the summary\n" +
			"reports the failover (hosts_failed, longest_gap_ms, failover_errors, revocations).",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "agents", Value: 100, Usage: "number of simulated hosts"},
			&cli.DurationFlag{Name: "duration", Value: 20 * time.Second, Usage: "measurement window"},
			&cli.IntFlag{Name: "ima-entries", Value: 20, Usage: "new IMA entries per attestation"},
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "attestation interval of every host"},
			&cli.StringFlag{Name: "rate", Usage: "attestations a second the fleet offers, `R[,R2,…]`, one window each: each host attests every --agents ÷ R (instead of --interval)"},
			&cli.BoolFlag{Name: "sweep", Usage: "after the rates of --rate (or --agents ÷ --interval), keep doubling the rate until a step falls short of what it offered"},
			&cli.StringFlag{Name: "load-generator", Usage: "how the hosts attest: lean (default with one verifier) or agent (the agent's own code; the default with --replicas)"},
			&cli.BoolFlag{Name: "presign", Usage: "make every request of each step (challenges fetched, quotes signed, evidence encoded) before its window, so that the generator only sends in it (lean generator only)"},
			&cli.StringFlag{Name: "ak-alg", Value: "ecc", Usage: "AK algorithm: ecc (P-256) or rsa (RSA-2048)"},
			&cli.StringFlag{Name: "key-cache", Usage: "`DIR` of pre-generated RSA keys, kept across runs (default: vigil-bench-keys in the user cache directory)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a pprof CPU profile of the verifier over the measurement window to `FILE`"},
			&cli.StringFlag{Name: "load-cpuprofile", Hidden: true, Usage: "write a pprof CPU profile of this process (the load generator) over the measurement windows to `FILE`"},
			&cli.BoolFlag{Name: "in-process", Usage: "run the verifier in this process (CPU and RSS are then the whole process's)"},
			&cli.StringFlag{Name: "dir", Usage: "keep stores, certificates and host state in `DIR` (default: a temporary directory, removed afterwards)"},
			&cli.StringFlag{Name: "store", Usage: "run the verifier on the PostgreSQL database at `URL` (postgres://…; an empty database of its own) instead of its embedded store"},
			&cli.IntFlag{Name: "replicas", Value: 1, Usage: "run `N` verifier replicas (child processes) sharing --store, which N ≥ 2 needs; hosts know every replica and fail over"},
			&cli.DurationFlag{Name: "kill-replica-after", Usage: "with --replicas ≥ 2: SIGKILL the first replica `D` into the measurement window, and report the failover (hosts failed, longest gap between a host's verdicts, revocations)"},
			&cli.StringFlag{Name: "verifier", Usage: "benchmark the verifier already running at `URL` instead of starting one"},
			&cli.StringFlag{Name: "registrar", Usage: "with --verifier: the registrar at `URL` that verifier fetches AKs from; hosts enroll there"},
			&cli.StringFlag{Name: "tls-dir", Usage: "with --verifier: `DIR` made by `vigil ca init` for that deployment (CA and admin certificate)"},
			&cli.StringFlag{Name: "ek-ca", Usage: "with --verifier: `DIR` made by `vigil bench ek-ca`, the simulated TPM manufacturer the registrar has as --ek-roots (default: a new one, which only --ek-policy any accepts)"},
			&cli.IntFlag{Name: "verifier-pid", Usage: "with --verifier: the verifier's process `ID` on this machine, to read its CPU and peak RSS (VmHWM) from /proc (default: its /metrics)"},
			&cli.StringFlag{Name: "vigil-binary", Hidden: true, Usage: "vigil binary to run the verifier from (default: this executable)"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON (progress goes to standard error)"},
		},
		Subcommands: []*cli.Command{benchEKCACommand(), benchVerifierProcessCommand()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return badInputf("bench takes no arguments, got %q", c.Args().First())
			}
			opts, err := benchOptions(c)
			if err != nil {
				return badInput(err)
			}
			opts.Progress = c.App.Writer
			if c.Bool("json") {
				opts.Progress = c.App.ErrWriter
			}
			sum, err := bench.Run(c.Context, opts)
			var usage *bench.UsageError
			if errors.As(err, &usage) {
				return badInput(err)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(c.App.Writer, sum); err != nil {
					return err
				}
			} else {
				printBenchSummary(c.App.Writer, sum)
			}
			return benchVerdict(sum, c.Bool("json"))
		},
	}
}

func benchOptions(c *cli.Context) (bench.Options, error) {
	var opts bench.Options
	switch {
	case c.Int("agents") < 1:
		return opts, errors.New("--agents must be at least 1")
	case c.Duration("duration") < time.Second:
		return opts, errors.New("--duration must be at least 1s")
	case c.Duration("interval") < 100*time.Millisecond:
		return opts, errors.New("--interval must be at least 100ms")
	case c.Int("ima-entries") < 0 || c.Int("ima-entries") > 10000:
		return opts, errors.New("--ima-entries must be between 0 and 10000")
	}
	akAlg, err := tpmfacts.ParseAlg(c.String("ak-alg"))
	if err != nil {
		return opts, fmt.Errorf("--ak-alg: %w", err)
	}
	opts = bench.Options{
		Agents: c.Int("agents"), Duration: c.Duration("duration"), Interval: c.Duration("interval"),
		IMAEntries: c.Int("ima-entries"), AKAlg: akAlg, KeyCacheDir: c.String("key-cache"),
		CPUProfile: c.String("cpuprofile"), Dir: c.String("dir"), Store: c.String("store"),
		Sweep: c.Bool("sweep"), LoadGenerator: c.String("load-generator"), LoadCPUProfile: c.String("load-cpuprofile"),
	}
	switch opts.LoadGenerator {
	case "", "lean", "agent":
	default:
		return opts, fmt.Errorf("--load-generator %q: want lean or agent", opts.LoadGenerator)
	}
	opts.Presign = c.Bool("presign")
	switch {
	case opts.Presign && opts.LoadGenerator == "agent":
		return opts, errors.New("--presign makes the lean load generator's requests ahead: it cannot be used with --load-generator agent")
	case opts.Presign && c.Int("replicas") > 1:
		return opts, errors.New("--presign makes the lean load generator's requests ahead: it cannot be used with --replicas, which attest with the agent's code")
	}
	if c.IsSet("rate") {
		if c.IsSet("interval") {
			return opts, errors.New("--rate derives the interval (--agents ÷ rate): it cannot be used with --interval")
		}
		rates, err := parseRates(c.String("rate"))
		if err != nil {
			return opts, err
		}
		opts.Rates, opts.Interval = rates, 0
	}
	if (len(opts.Rates) > 1 || opts.Sweep) && c.String("cpuprofile") != "" {
		return opts, errors.New("--cpuprofile covers one window: profile one --rate at a time, without --sweep")
	}
	if u := opts.Store; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
			return opts, fmt.Errorf("--store %q: want postgres://USER@HOST:PORT/DATABASE", u)
		}
		if c.String("verifier") != "" {
			return opts, errors.New("--store is where the bench's own verifier keeps its state: it cannot be used with --verifier")
		}
	}
	opts.Replicas, opts.KillReplicaAfter = c.Int("replicas"), c.Duration("kill-replica-after")
	switch {
	case opts.Replicas < 1:
		return opts, errors.New("--replicas must be at least 1")
	case opts.Replicas > 1 && opts.Store == "":
		return opts, errors.New("--replicas N ≥ 2 share one store: give --store postgres://… too")
	case opts.Replicas > 1 && (c.Bool("in-process") || c.String("verifier") != ""):
		return opts, errors.New("--replicas runs the verifiers as child processes of the bench: it cannot be used with --in-process or --verifier")
	case opts.Replicas > 1 && c.String("cpuprofile") != "":
		return opts, errors.New("--cpuprofile profiles one verifier: it cannot be used with --replicas")
	case c.IsSet("kill-replica-after") && opts.Replicas < 2:
		return opts, errors.New("--kill-replica-after needs --replicas 2 or more: a replica must be left to fail over to")
	case c.IsSet("kill-replica-after") && (opts.KillReplicaAfter <= 0 || opts.KillReplicaAfter >= opts.Duration):
		return opts, errors.New("--kill-replica-after must be within the measurement window (0 < D < --duration)")
	}
	if opts.KeyCacheDir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		opts.KeyCacheDir = filepath.Join(cache, "vigil-bench-keys")
	}
	if u := c.String("verifier"); u != "" {
		switch {
		case c.String("registrar") == "":
			return opts, errors.New("--verifier needs --registrar: the registrar that verifier fetches AKs from, where the hosts enroll")
		case c.String("tls-dir") == "":
			return opts, errors.New("--verifier needs --tls-dir: the deployment's CA and admin certificate (`vigil ca init`)")
		case c.Bool("in-process"):
			return opts, errors.New("--verifier benchmarks a verifier already running: it cannot be used with --in-process")
		case c.IsSet("verifier-pid") && c.Int("verifier-pid") < 1:
			return opts, errors.New("--verifier-pid must be a process ID")
		}
		for _, f := range []string{"verifier", "registrar"} {
			if pu, err := url.Parse(c.String(f)); err != nil || pu.Scheme != "https" || pu.Host == "" {
				return opts, fmt.Errorf("--%s %q: want https://HOST:PORT", f, c.String(f))
			}
		}
		opts.VerifierURL, opts.RegistrarURL, opts.TLSDir = u, c.String("registrar"), c.String("tls-dir")
		opts.EKCADir, opts.VerifierPID = c.String("ek-ca"), c.Int("verifier-pid")
		return opts, nil
	}
	for _, f := range []string{"registrar", "tls-dir", "ek-ca", "verifier-pid"} {
		if c.IsSet(f) {
			return opts, fmt.Errorf("--%s describes an external deployment: it needs --verifier URL", f)
		}
	}
	if !c.Bool("in-process") {
		opts.VerifierExe = c.String("vigil-binary")
		if opts.VerifierExe == "" {
			exe, err := os.Executable()
			if err != nil {
				return opts, fmt.Errorf("cannot find this executable to run the verifier from (use --in-process): %w", err)
			}
			opts.VerifierExe = exe
		}
	} else if opts.CPUProfile != "" {
		return opts, errors.New("--cpuprofile profiles the verifier process: it cannot be used with --in-process")
	}
	return opts, nil
}

// parseRates reads --rate: attestations a second, comma-separated.
func parseRates(s string) ([]float64, error) {
	var rates []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("--rate %q: want attestations a second, R[,R2,…], each a positive number", s)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// benchVerdict fails the command when the run was not clean, after the
// summary has been printed.
func benchVerdict(sum bench.Summary, asJSON bool) error {
	var errs uint64
	for _, n := range sum.Errors {
		errs += n
	}
	if errs == 0 && sum.Attesting == sum.Agents && sum.Verdicts > 0 {
		return nil
	}
	if asJSON {
		return silentFailure
	}
	return failed(fmt.Errorf("bench: %d errors, %d of %d agents attesting at the end, %d verdicts", errs, sum.Attesting, sum.Agents, sum.Verdicts))
}

func printBenchSummary(w io.Writer, s bench.Summary) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "agents             %d (%d attesting at the end)\n", s.Agents, s.Attesting)
	if s.Replicas > 1 {
		fmt.Fprintf(w, "verifier           %d replicas %s (%s, store %s); registrar %s\n", s.Replicas, strings.Join(s.VerifierURLs, ", "), s.VerifierMode, s.VerifierStore, s.RegistrarURL)
	} else {
		fmt.Fprintf(w, "verifier           %s (%s, store %s); registrar %s\n", s.VerifierURL, s.VerifierMode, s.VerifierStore, s.RegistrarURL)
	}
	fmt.Fprintf(w, "AK / EK            %s / %s\n", s.AKAlg, s.EKAlg)
	if len(s.Steps) > 0 {
		fmt.Fprintf(w, "load               %d new IMA entries per attestation; hosts admitted with a %s interval, paced per step (%s load generator)\n",
			s.IMAEntries, time.Duration(s.IntervalMS)*time.Millisecond, s.LoadGenerator)
	} else {
		fmt.Fprintf(w, "load               %d new IMA entries per attestation, every %s: %.0f verdicts/s offered (%s load generator)\n",
			s.IMAEntries, time.Duration(s.IntervalMS)*time.Millisecond, s.OfferedPerSec, s.LoadGenerator)
	}
	fmt.Fprintf(w, "policies           %s\n", s.Policies)
	fmt.Fprintf(w, "window             %.1f s (after %.1f s of setup and a warm-up)\n", s.WindowSeconds, s.SetupSeconds)
	fmt.Fprintf(w, "verdicts           %d (%.1f/s)\n", s.Verdicts, s.VerdictsPerSec)
	l := s.LatencyMS
	fmt.Fprintf(w, "verdict latency    p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (evidence POST round trip)\n", l.P50, l.P90, l.P99, l.Max)
	l = s.ServerLatencyMS
	fmt.Fprintf(w, "  in the verifier  p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (evidence received to verdict stored)\n", l.P50, l.P90, l.P99, l.Max)
	fmt.Fprintf(w, "                   (%s)\n", s.ServerLatencySource)
	if len(s.Errors) == 0 {
		fmt.Fprintf(w, "errors             none\n")
	} else {
		fmt.Fprintf(w, "errors\n")
		for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
			fmt.Fprintf(w, "  %-16s %d\n", k, s.Errors[k])
		}
	}
	if s.ReplicaKilledAtMS > 0 {
		fmt.Fprintf(w, "replica killed     %s at %.1f s into the window (SIGKILL)\n", s.VerifierURL, float64(s.ReplicaKilledAtMS)/1000)
		fmt.Fprintf(w, "  hosts failed     %d %v\n", s.Agents-s.Attesting, s.HostsFailed)
		fmt.Fprintf(w, "  longest gap      %.0f ms between two good verdicts of %s\n", s.LongestGapMS, s.LongestGapHost)
		fmt.Fprintf(w, "  failover errors  %v (hosts that recovered; not counted as errors)\n", s.FailoverErrors)
	}
	if s.Revocations != nil {
		fmt.Fprintf(w, "revocations        %d (%s)\n", *s.Revocations, s.RevocationsSource)
	}
	fmt.Fprintf(w, "verifier CPU       %.2f s, %.1f µs per verdict\n", s.CPUSeconds, s.CPUUSPerVerdict)
	fmt.Fprintf(w, "verifier peak RSS  %.1f MB (%s)\n", s.RSSMB, s.RSSSource)
	if s.LoadCPUSeconds > 0 {
		what := "soft TPMs, agents, registrar"
		if s.VerifierMode == "external" {
			what = "soft TPMs, agents"
		}
		if s.Presigned {
			what += "; the window's only, the signing was before it"
		}
		fmt.Fprintf(w, "load generator CPU %.2f s, %.1f µs per attestation (this process: %s)\n", s.LoadCPUSeconds, s.LoadCPUUSPerAttestation, what)
	}
	if s.Presigned {
		fmt.Fprintf(w, "presigned          %d requests (%.1f MB) made before the window in %.1f s (%.1f s of load generator CPU); hosts admitted every %s\n",
			s.PresignedRequests, s.PresignedMB, s.PresignSeconds, s.PresignCPUSeconds, time.Duration(s.PresignAdmissionIntervalMS)*time.Millisecond)
	}
	fmt.Fprintf(w, "limit              %s: %s\n", s.Limit, s.LimitReason)
	fmt.Fprintf(w, "CPU measured from  %s\n", s.CPUSource)
	if s.CPUProfile != "" {
		fmt.Fprintf(w, "CPU profile        %s (go tool pprof %s)\n", s.CPUProfile, s.CPUProfile)
	}
	if len(s.Steps) > 0 {
		printSteps(w, s)
	}
	fmt.Fprintf(w, "note               %s\n", strings.ReplaceAll(s.Note, ": ", ":\n                   "))
}

// printSteps prints a run's rate steps as a table, then its saturation.
func printSteps(w io.Writer, s bench.Summary) {
	fmt.Fprintf(w, "\nsteps (the lines above are the last step's)\n")
	fmt.Fprintf(w, "  %9s %9s %10s %8s %10s %8s %8s %8s %7s  %s\n",
		"offered/s", "verdicts/s", "verifier", "verifier", "generator", "p50", "p99", "errors", "late", "limit")
	fmt.Fprintf(w, "  %9s %9s %10s %8s %10s %8s %8s %8s %7s\n",
		"", "", "µs/verdict", "cores", "µs/attest", "ms", "ms", "", "starts")
	for _, st := range s.Steps {
		var errs uint64
		for _, n := range st.Errors {
			errs += n
		}
		fmt.Fprintf(w, "  %9.0f %9.1f %10.1f %8.2f %10.1f %8.1f %8.1f %8d %7d  %s\n",
			st.OfferedPerSec, st.VerdictsPerSec, st.VerifierCPUUSPerVerdict, st.VerifierCores, st.LoadCPUUSPerAttestation,
			st.LatencyMS.P50, st.LatencyMS.P99, errs, st.LateStarts, st.Limit)
	}
	for i, st := range s.Steps {
		if st.Presigned {
			fmt.Fprintf(w, "  step %d presigned %d requests (%.1f MB) in %.1f s (%.1f s of load generator CPU), before its window\n",
				i+1, st.PresignedRequests, st.PresignedMB, st.PresignSeconds, st.PresignCPUSeconds)
		}
	}
	if sat := s.Saturation; sat != nil {
		fmt.Fprintf(w, "saturation         at most %.1f verdicts/s (offered %.0f/s), limited by %s\n", sat.MaxVerdictsPerSec, sat.AtOfferedPerSec, sat.LimitedBy)
		if sat.VerifierLimitedAtPerSec > 0 {
			fmt.Fprintf(w, "                   the verifier's CPU was the limit from %.0f/s offered, at %.1f µs per verdict (all %d cores to the verifier: ~%.0f/s, an extrapolation)\n",
				sat.VerifierLimitedAtPerSec, sat.VerifierCPUUSPerVerdict, s.Steps[0].MachineCores, sat.VerifierAloneEstimatePerSec)
		} else {
			fmt.Fprintf(w, "                   the verifier's CPU was the limit at no step\n")
		}
	}
}

// benchEKCACommand makes the simulated TPM manufacturer an external
// registrar must trust for `vigil bench --verifier` to enroll its hosts.
func benchEKCACommand() *cli.Command {
	return &cli.Command{
		Name:      "ek-ca",
		Usage:     "create the simulated TPM manufacturer CA for benchmarking an external deployment",
		ArgsUsage: "DIR",
		Description: "Writes DIR/" + bench.EKCACert + " (the CA certificate: start the registrar with --ek-roots DIR) and\n" +
			"DIR/" + bench.EKCAKey + " (its key, which `vigil bench --ek-ca DIR` issues the soft TPMs' EK certificates\n" +
			"with; --ek-roots skips subdirectories, so the registrar never reads it). Refuses to overwrite. Soft TPMs\n" +
			"are a simulation: never give this CA to a registrar that enrolls real machines.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return badInputf("usage: vigil bench ek-ca DIR")
			}
			dir := c.Args().First()
			if err := bench.InitEKCA(dir); err != nil {
				return badInput(err)
			}
			cert, key := filepath.Join(dir, bench.EKCACert), filepath.Join(dir, bench.EKCAKey)
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"dir": dir, "certificate": cert, "key": key})
			}
			fmt.Fprintf(c.App.Writer, "created a simulated TPM manufacturer: %s (give the registrar --ek-roots %s), key %s\n", cert, dir, key)
			return nil
		},
	}
}

// benchVerifierProcessCommand is the verifier's side of `vigil bench`, run
// by the bench as a child process so that the verifier's CPU and memory can
// be read apart from the load generator's.
func benchVerifierProcessCommand() *cli.Command {
	return &cli.Command{
		Name:   "verifier-process",
		Hidden: true,
		Usage:  "(internal) the verifier under test, started by `vigil bench`",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Required: true},
			&cli.StringFlag{Name: "store"},
			&cli.StringFlag{Name: "tls-dir", Required: true},
			&cli.StringFlag{Name: "registrar", Required: true},
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second},
			&cli.StringFlag{Name: "listen", Usage: "`ADDR` to serve on (default: a free loopback port)"},
			&cli.StringFlag{Name: "advertise", Usage: "with --store: run as one replica of several, reachable at `URL` (verifier.Config.ReplicaURL)"},
			&cli.StringFlag{Name: "replica-id", Usage: "with --advertise: this replica's `ID`"},
		},
		Action: func(c *cli.Context) error {
			if c.String("advertise") != "" && c.String("store") == "" {
				return badInputf("--advertise runs a replica over a shared store: give --store postgres://… too")
			}
			return bench.ChildMain(c.Context, bench.VerifierConfig{
				DataDir: c.String("data"), Store: c.String("store"), TLSDir: c.String("tls-dir"),
				RegistrarURL: c.String("registrar"), Interval: c.Duration("interval"), Listen: c.String("listen"),
				ReplicaURL: c.String("advertise"), ReplicaID: c.String("replica-id"),
			}, c.App.Writer)
		},
	}
}
