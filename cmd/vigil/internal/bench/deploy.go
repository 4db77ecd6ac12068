package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-attest/vigil/cmd/vigil/internal/loopback"
	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier"
)

// UsageError is a run refused before any host was made because of what it
// was asked to do: files that are not there, a verifier that cannot be
// measured or profiled as asked. The CLI exits 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// deployment is the registrar and verifier a run's fleet enrolls at and
// attests to, and how the verifier's cost is read.
type deployment struct {
	// mode is "child", "in-process" or "external".
	mode string
	// remote says the verifier runs on another machine (external mode).
	remote       bool
	tlsDir       string
	mfr          *soft.Manufacturer
	registrarURL string
	verifierURL  string
	// verifierURLs are every replica's URL (verifierURL is the first);
	// replicaNames name them in progress lines.
	verifierURLs []string
	replicaNames map[string]string
	// killReplica SIGKILLs the first replica (replicas only), after taking
	// its last CPU reading and verdict times.
	killReplica func(context.Context) error
	// idPrefix starts the names of this run's agents and policy. An
	// external deployment outlives runs, so each run's names are its own.
	idPrefix string
	meter    meter
	// serverTimes is called at both ends of the window; the second call
	// returns the verifier's own verdict times in between.
	serverTimes  func(context.Context) (Latency, error)
	serverSource string
	// profile saves a CPU profile of the verifier over d; nil when the
	// verifier cannot be profiled.
	profile func(ctx context.Context, d time.Duration, path string) error
	// describe is the progress line that says what runs where.
	describe string
	note     string
	// enrollHint is added to an enrollment failure.
	enrollHint string
	close      func()
}

// meter reads the verifier's CPU time so far and its peak RSS.
type meter struct {
	cpuSource, rssSource string
	read                 func(context.Context) (cpuUsage, error)
	// sample, when not nil, is called during the window: a peak RSS that
	// is not kept by the kernel is the max of samples.
	sample func(context.Context)
}

// procMeter reads a process of this machine through /proc.
func procMeter(pid int, cpuSource string) meter {
	return meter{
		cpuSource: cpuSource,
		rssSource: fmt.Sprintf("VmHWM of process %d from /proc/PID/status (its peak over its whole life)", pid),
		read:      func(context.Context) (cpuUsage, error) { return procUsage(pid) },
	}
}

// startLocal builds the deployment in this machine: a registrar in this
// process, and the verifier as a child process (opts.VerifierExe) or in
// this process.
func startLocal(ctx context.Context, opts Options, dir string, log *slog.Logger) (*deployment, error) {
	lb, err := loopback.Start(dir, "Vigil Bench TPM Manufacturer", log)
	if err != nil {
		return nil, err
	}
	d := &deployment{tlsDir: lb.TLSDir, mfr: lb.Manufacturer, registrarURL: lb.RegistrarURL, idPrefix: "bench-", note: note,
		serverSource: "the verifier's own clock, evidence received to verdict stored, every verdict in the window"}
	vcfg := VerifierConfig{DataDir: filepath.Join(dir, "verifier"), Store: opts.Store, TLSDir: lb.TLSDir, RegistrarURL: lb.RegistrarURL, Interval: opts.Interval, Log: log}
	if opts.Replicas > 1 {
		if err := startReplicas(ctx, d, opts, vcfg); err != nil {
			lb.Close()
			return nil, err
		}
		stop := d.close
		d.close = func() {
			stop()
			lb.Close()
		}
		return d, nil
	}
	var ver *verifierHandle
	if opts.VerifierExe != "" {
		ver, err = startChildVerifier(ctx, opts.VerifierExe, vcfg)
	} else {
		ver, err = startInProcessVerifier(ctx, vcfg)
	}
	if err != nil {
		lb.Close()
		return nil, err
	}
	d.close = func() {
		ver.stop()
		lb.Close()
	}
	d.verifierURL = ver.URL
	d.verifierURLs = []string{ver.URL}
	d.serverTimes = ver.serverTimes
	if ver.pid != 0 {
		d.mode = "child"
		d.meter = procMeter(ver.pid, fmt.Sprintf("verifier child process (pid %d), utime+stime from /proc/PID/stat", ver.pid))
		d.describe = fmt.Sprintf("registrar %s (in this process), verifier %s (child process %d, pprof %s/debug/pprof/)", d.registrarURL, ver.URL, ver.pid, ver.PProf)
		d.profile = func(ctx context.Context, dur time.Duration, path string) error {
			return fetchProfile(ctx, http.DefaultClient, ver.PProf, dur, path)
		}
		return d, nil
	}
	d.mode = "in-process"
	d.meter = meter{
		cpuSource: "WHOLE bench process (getrusage): the verifier runs in-process with the load generator, so this overstates the verifier's CPU",
		rssSource: "peak RSS of the WHOLE bench process (getrusage ru_maxrss)",
		read:      func(context.Context) (cpuUsage, error) { return selfUsage() },
	}
	d.describe = fmt.Sprintf("registrar %s and verifier %s, both in this process", d.registrarURL, ver.URL)
	return d, nil
}

// externalNote is said with every result of an external run.
const externalNote = "the load generator (soft TPMs, agents) runs on this machine and the verifier and registrar where they were started: " +
	"verdicts/s and latency are those of this set-up (shared cores, network); CPU per verdict is the figure that transfers"

// startExternal checks the deployment the operator started (opts.VerifierURL,
// opts.RegistrarURL, opts.TLSDir) before any host is made: both services up,
// the admin certificate accepted, the verifier's CPU readable, a profile
// obtainable if asked for.
func startExternal(ctx context.Context, opts Options, say func(string, ...any)) (*deployment, error) {
	d := &deployment{mode: "external", tlsDir: opts.TLSDir, note: externalNote, close: func() {},
		registrarURL: strings.TrimRight(opts.RegistrarURL, "/"), verifierURL: strings.TrimRight(opts.VerifierURL, "/")}
	d.verifierURLs = []string{d.verifierURL}
	vu, err := serviceURL("--verifier", d.verifierURL)
	if err != nil {
		return nil, err
	}
	if _, err := serviceURL("--registrar", d.registrarURL); err != nil {
		return nil, err
	}
	caTLS, err := tlsutil.ClientConfig(filepath.Join(opts.TLSDir, tlsutil.CACert), "", "")
	if err != nil {
		return nil, usageErrorf("--tls-dir: %w", err)
	}
	adminTLS, err := tlsutil.AdminClientConfig(opts.TLSDir)
	if err != nil {
		return nil, usageErrorf("--tls-dir: %w", err)
	}
	if opts.EKCADir != "" {
		if d.mfr, err = LoadEKCA(opts.EKCADir); err != nil {
			return nil, usageErrorf("--ek-ca: %w", err)
		}
	} else {
		// A manufacturer no registrar knows: only one that accepts any EK
		// (--ek-policy any) enrolls these hosts.
		if d.mfr, err = soft.NewManufacturer(ekCAName); err != nil {
			return nil, err
		}
		d.enrollHint = "the registrar does not know this run's simulated TPM manufacturer: create one with `vigil bench ek-ca DIR`, " +
			"start the registrar with --ek-roots DIR and give the bench --ek-ca DIR (or, for a trial, start the registrar with --ek-policy any)"
	}
	var run [4]byte
	if _, err := rand.Read(run[:]); err != nil {
		return nil, err
	}
	d.idPrefix = "bench-" + hex.EncodeToString(run[:]) + "-"

	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: caTLS}, Timeout: 30 * time.Second}
	admin := &http.Client{Transport: &http.Transport{TLSClientConfig: adminTLS}, Timeout: 2 * time.Minute}
	for _, u := range []string{d.registrarURL, d.verifierURL} {
		if err := healthy(ctx, plain, u); err != nil {
			return nil, err
		}
	}
	if _, err := (&verifier.AdminClient{BaseURL: d.verifierURL, HTTP: admin}).ListPolicies(ctx); err != nil {
		return nil, fmt.Errorf("verifier %s refuses the admin certificate of %s: %w", d.verifierURL, opts.TLSDir, err)
	}

	// The verifier's CPU: from /proc when its PID is given; else its own
	// account on /metrics, which holds wherever it runs (another machine, a
	// container); else, for a verifier that exports none, from /proc for
	// the process found listening on its port when it runs here.
	first, scrapeErr := scrapeMetrics(ctx, admin, d.verifierURL)
	port := vu.Port()
	if port == "" {
		port = "443"
	}
	portN, _ := strconv.Atoi(port)
	local := isThisMachine(vu.Hostname())
	d.remote = !local
	noCPU := "exports no " + metricCPU + " on /metrics"
	if scrapeErr != nil {
		noCPU = fmt.Sprintf("has no readable /metrics (%v)", scrapeErr)
	}
	switch pid := opts.VerifierPID; {
	case pid != 0:
		if local {
			if found, err := findListener(portN); err == nil && found != pid {
				return nil, usageErrorf("--verifier-pid %d, but port %d is held by process %d (%s)", pid, portN, found, processCommand(found))
			}
		}
		if _, err := procUsage(pid); err != nil {
			return nil, usageErrorf("--verifier-pid %d: %w", pid, err)
		}
		d.meter = procMeter(pid, fmt.Sprintf("external verifier process %d (given by --verifier-pid; %s), utime+stime from /proc/PID/stat", pid, processCommand(pid)))
	case scrapeErr == nil && first.HasCPU:
		d.meter = metricsMeter(admin, d.verifierURL, first.HasRSS)
	case local:
		found, err := findListener(portN)
		if err != nil {
			return nil, usageErrorf("the verifier at %s %s, and its process cannot be found here (%v): give --verifier-pid PID", d.verifierURL, noCPU, err)
		}
		if _, err := procUsage(found); err != nil {
			return nil, err
		}
		say("  the verifier %s: reading the CPU of process %d, found listening on port %d", noCPU, found, portN)
		d.meter = procMeter(found, fmt.Sprintf("external verifier process %d (found listening on port %d; %s), utime+stime from /proc/PID/stat", found, portN, processCommand(found)))
	default:
		return nil, usageErrorf("the verifier at %s %s, so its CPU cannot be read from this machine: "+
			"run the bench on the verifier's machine and give --verifier-pid PID", d.verifierURL, noCPU)
	}

	// The verifier's own verdict times: its latency histogram, read at
	// both ends of the window.
	if scrapeErr == nil && first.Verdicts != nil {
		d.serverSource = "estimated from the verifier's " + metricVerdictTS + " histogram between the two ends of the window " +
			"(interpolated within buckets as histogram_quantile does; max is a bucket bound; every agent of the verifier counts, not only the bench's)"
		var before []bucket
		started := false
		d.serverTimes = func(ctx context.Context) (Latency, error) {
			m, err := scrapeMetrics(ctx, admin, d.verifierURL)
			if err != nil {
				return Latency{}, err
			}
			if !started {
				before, started = m.Verdicts, true
				return Latency{}, nil
			}
			l, _, err := histogramLatency(before, m.Verdicts)
			return l, err
		}
	} else {
		d.serverSource = "not available: the verifier exports no " + metricVerdictTS + " histogram"
		d.serverTimes = func(context.Context) (Latency, error) { return Latency{}, nil }
	}

	if opts.CPUProfile != "" {
		status, err := probe(ctx, admin, d.verifierURL+"/debug/pprof/")
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, usageErrorf("--cpuprofile: the verifier at %s does not serve /debug/pprof/ (%d %s), so the bench cannot profile it; "+
				"start it with --pprof, or let the bench run the verifier itself (leave out --verifier)", d.verifierURL, status, http.StatusText(status))
		}
		d.profile = func(ctx context.Context, dur time.Duration, path string) error {
			// No client timeout: the profile takes dur to come.
			return fetchProfile(ctx, &http.Client{Transport: admin.Transport}, d.verifierURL, dur, path)
		}
	}
	d.describe = fmt.Sprintf("external registrar %s and verifier %s; this run's agents are %s*", d.registrarURL, d.verifierURL, d.idPrefix)
	return d, nil
}

// metricsMeter reads a verifier's CPU from its /metrics; its peak RSS is the
// largest resident set seen in any scrape.
func metricsMeter(client *http.Client, base string, hasRSS bool) meter {
	var mu sync.Mutex
	var peak float64
	seen := func(m verifierMetrics) int64 {
		mu.Lock()
		defer mu.Unlock()
		if m.HasRSS {
			peak = max(peak, m.RSSBytes)
		}
		return int64(peak)
	}
	rss := "not available: the verifier exports no " + metricRSS
	if hasRSS {
		rss = "max of the verifier's " + metricRSS + " sampled from /metrics at both ends of the window and at every progress line " +
			"(a peak between samples is missed)"
	}
	return meter{
		cpuSource: "external verifier's " + metricCPU + " from its /metrics at both ends of the window (each scrape's own cost included)",
		rssSource: rss,
		read: func(ctx context.Context) (cpuUsage, error) {
			m, err := scrapeMetrics(ctx, client, base)
			if err != nil {
				return cpuUsage{}, err
			}
			if !m.HasCPU {
				return cpuUsage{}, fmt.Errorf("%s/metrics: no %s", base, metricCPU)
			}
			return cpuUsage{CPU: time.Duration(m.CPUSeconds * float64(time.Second)), PeakRSS: seen(m)}, nil
		},
		sample: func(ctx context.Context) {
			if m, err := scrapeMetrics(ctx, client, base); err == nil {
				seen(m)
			}
		},
	}
}

// serviceURL checks a service URL given on the command line.
func serviceURL(flag, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, usageErrorf("%s %q: want https://HOST:PORT", flag, s)
	}
	return u, nil
}

// healthy checks that a Vigil service answers at base over TLS with the
// deployment's CA.
func healthy(ctx context.Context, client *http.Client, base string) error {
	status, err := probe(ctx, client, base+"/healthz")
	if err != nil {
		return fmt.Errorf("%s is not reachable: %w", base, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s/healthz: %d %s", base, status, http.StatusText(status))
	}
	return nil
}

// probe returns the status of a GET of u.
func probe(ctx context.Context, client *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	rsp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
	rsp.Body.Close()
	return rsp.StatusCode, nil
}

// isNotFound reports whether a delete failed only because the agent was
// not there (it never got that far).
func isNotFound(err error) bool {
	var api *apierr.Error
	return errors.As(err, &api) && api.Kind == apierr.NotFound
}
