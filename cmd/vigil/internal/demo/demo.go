package demo

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/cmd/vigil/internal/loopback"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// Options configure a demo run.
type Options struct {
	Hosts int
	// Interval between attestations of each host.
	Interval time.Duration
	// TamperAfter is when one host runs a file its policy does not allow.
	TamperAfter time.Duration
	// Duration is how long the demo runs.
	Duration time.Duration
	// Dir holds the stores, logs and TLS files; empty means a temporary
	// directory removed at the end.
	Dir string
	// Webhooks are extra revocation sinks, besides the receiver the demo
	// runs itself.
	Webhooks []revocation.Sink
	// Out receives the narrative.
	Out io.Writer
}

func (o *Options) defaults() {
	if o.Hosts <= 0 {
		o.Hosts = 5
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.TamperAfter <= 0 {
		o.TamperAfter = 10 * time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// Summary is the machine-readable outcome.
type Summary struct {
	Hosts        int    `json:"hosts"`
	Enrolled     int    `json:"enrolled"`
	Attestations uint64 `json:"attestations"`
	Failed       int    `json:"failed"`
	// TamperedHost is the host that ran an unknown file; FailedHosts lists
	// every host that ended failed, with the reason.
	TamperedHost string            `json:"tampered_host"`
	FailedHosts  map[string]string `json:"failed_hosts"`
	// DetectionLatencyMS is the time from the tampering measurement to
	// the verifier's failed verdict; -1 when it was not detected.
	DetectionLatencyMS int64 `json:"detection_latency_ms"`
	// RevocationsDelivered counts revocation events the demo's own
	// receiver accepted with a valid signature.
	RevocationsDelivered int `json:"revocations_delivered"`
	// RevocationLatencyMS is from tampering to the receiver accepting the
	// revocation; -1 when none arrived.
	RevocationLatencyMS int64 `json:"revocation_latency_ms"`
}

// host is one simulated machine.
type host struct {
	id     string
	tpm    *soft.TPM
	dir    string
	boot   string
	ima    simhost.IMALog
	runPol string
}

// Run runs the demo until it is done or ctx ends.
func Run(ctx context.Context, opts Options) (Summary, error) {
	opts.defaults()
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "vigil-demo-")
		if err != nil {
			return Summary{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	out := opts.Out
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sum := Summary{Hosts: opts.Hosts, DetectionLatencyMS: -1, RevocationLatencyMS: -1, FailedHosts: map[string]string{}}

	say("Vigil demo: %d simulated hosts, attesting every %s; one host runs an unknown program after %s.", opts.Hosts, opts.Interval, opts.TamperAfter)
	say("Everything runs in this process, on 127.0.0.1, over TLS 1.3, with a soft TPM per host.")
	say("")

	dep, err := loopback.Start(dir, "Vigil Demo TPM Manufacturer", quiet)
	if err != nil {
		return sum, err
	}
	defer dep.Close()
	tlsDir, mfr, regURL := dep.TLSDir, dep.Manufacturer, dep.RegistrarURL
	say("▶ created a private CA for the deployment (%s)", tlsDir)
	say("▶ registrar on %s: trusts only EKs certified by %q", regURL, "Vigil Demo TPM Manufacturer")

	// The identity issuer's side: a webhook receiver that checks the
	// Standard Webhooks signature before it acts.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return sum, err
	}
	rcv := &receiver{key: secret, say: say}
	rcvURL, stopRcv, err := loopback.Serve(tlsDir, rcv, quiet)
	if err != nil {
		return sum, err
	}
	defer stopRcv()
	say("▶ identity-issuer webhook receiver on %s (checks each event's HMAC signature)", rcvURL)

	adminTLS, err := tlsutil.AdminClientConfig(tlsDir)
	if err != nil {
		return sum, err
	}
	var verdicts atomic.Uint64
	failedAt := sync.Map{} // agent ID → time.Time
	caPool, err := tlsutil.LoadCAPool(filepath.Join(tlsDir, tlsutil.CACert))
	if err != nil {
		return sum, err
	}
	sinks := append([]revocation.Sink{&revocation.Webhook{
		URL: rcvURL + "/revocations", Key: secret, Source: "urn:vigil:verifier:demo",
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool, MinVersion: tls.VersionTLS13}}, Timeout: 10 * time.Second},
	}}, opts.Webhooks...)
	cfg := verifier.DefaultConfig()
	cfg.DataDir, cfg.Log = filepath.Join(dir, "verifier"), quiet
	cfg.RegistrarURL, cfg.RegistrarTLS = regURL, adminTLS
	// The demo runs faster than operators may admit hosts.
	cfg.Interval, cfg.MinInterval, cfg.LivenessEvery = opts.Interval, min(time.Second, opts.Interval), opts.Interval/2
	cfg.Sinks, cfg.WebhookMinBackoff, cfg.WebhookMaxBackoff = sinks, 200*time.Millisecond, 2*time.Second
	cfg.OnVerdict = func(a verifier.Agent, f *verifier.Failure, _ time.Duration) {
		if f == nil {
			verdicts.Add(1)
			return
		}
		if _, loaded := failedAt.LoadOrStore(a.ID, time.Now()); !loaded {
			say("✗ %s FAILED: %s — %s", a.ID, f.Reason, f.Detail)
		}
	}
	ver, err := verifier.New(ctx, cfg)
	if err != nil {
		return sum, err
	}
	defer ver.Close()
	verSvc := ver.Service()
	verURL, stopVer, err := loopback.Serve(tlsDir, ver.Handler(), quiet)
	if err != nil {
		return sum, err
	}
	defer stopVer()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ranDone := make(chan struct{})
	go func() { ver.Run(runCtx); close(ranDone) }()
	defer func() { cancel(); <-ranDone }() // the last checkpoint before the store closes
	say("▶ verifier on %s", verURL)

	clientTLS, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		return sum, err
	}
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 30 * time.Second}

	// Boot every host, enroll it, and admit it with policies made from its
	// own known-good state.
	say("")
	say("▶ booting, enrolling and admitting %d hosts:", opts.Hosts)
	hosts := make([]*host, 0, opts.Hosts)
	for i := range opts.Hosts {
		h, err := newHost(ctx, dir, i+1, mfr)
		if err != nil {
			return sum, err
		}
		e := &agent.Enroller{
			Open:         h.open,
			DataDir:      filepath.Join(h.dir, "agent"),
			RegistrarURL: regURL,
			HTTP:         httpClient,
			AgentID:      h.id,
			EKAlg:        tpm2.TPMAlgECC,
			AKAlg:        tpm2.TPMAlgECC,
			Log:          quiet,
		}
		if _, err := e.Enroll(ctx); err != nil {
			return sum, fmt.Errorf("enroll %s: %w", h.id, err)
		}
		sum.Enrolled++
		if err := admit(ctx, verSvc, h); err != nil {
			return sum, fmt.Errorf("admit %s: %w", h.id, err)
		}
		say("  ✓ %s: EK certificate verified, AK activated, admitted with a boot policy and a %s-file runtime policy",
			h.id, h.runPol)
		hosts = append(hosts, h)
	}

	// Attest.
	say("")
	say("▶ attesting (each host: challenge → quote + new log entries → verdict)")
	var wg sync.WaitGroup
	for _, h := range hosts {
		att := &agent.Attester{
			Open:         h.open,
			DataDir:      filepath.Join(h.dir, "agent"),
			VerifierURLs: []string{verURL},
			HTTP:         httpClient,
			BootLogPath:  h.boot,
			IMALogPath:   h.ima.Path,
			Log:          quiet,
			MaxBackoff:   opts.Interval,
		}
		if err := att.Prepare(); err != nil {
			return sum, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			att.Run(runCtx)
		}()
	}

	start := time.Now()
	tamperAt := time.After(opts.TamperAfter)
	end := time.After(opts.Duration)
	tick := time.NewTicker(max(opts.Interval*3, 2*time.Second))
	defer tick.Stop()
	var tampered time.Time
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case <-tick.C:
			say("  %5.1fs  %d good attestations so far", time.Since(start).Seconds(), verdicts.Load())
		case <-tamperAt:
			h := hosts[len(hosts)-1]
			path, err := h.tamper(ctx)
			if err != nil {
				return sum, err
			}
			tampered = time.Now()
			sum.TamperedHost = h.id
			say("")
			say("⚠ %s runs %s, a program its runtime policy does not list", h.id, path)
		}
	}
	cancel()
	wg.Wait()
	<-ranDone

	agents, err := verSvc.Agents(context.Background())
	if err != nil {
		return sum, err
	}
	for _, a := range agents {
		sum.Attestations += a.Attestations
		if a.State == verifier.StateFailed {
			sum.Failed++
			sum.FailedHosts[a.ID] = string(a.Reason)
		}
	}
	if v, ok := failedAt.Load(sum.TamperedHost); ok && !tampered.IsZero() {
		sum.DetectionLatencyMS = v.(time.Time).Sub(tampered).Milliseconds()
	}
	if at, n := rcv.revoked(sum.TamperedHost); n > 0 && !tampered.IsZero() {
		sum.RevocationsDelivered = n
		sum.RevocationLatencyMS = at.Sub(tampered).Milliseconds()
	}
	say("")
	say("Summary: %d hosts, %d good attestations, %d failed.", sum.Hosts, sum.Attestations, sum.Failed)
	if sum.DetectionLatencyMS >= 0 {
		say("The tampered host (%s) was caught %d ms after it ran the unknown program;", sum.TamperedHost, sum.DetectionLatencyMS)
		say("its revocation reached the identity issuer %d ms after it (%d event delivered).", sum.RevocationLatencyMS, sum.RevocationsDelivered)
	}
	switch {
	case sum.TamperedHost == "":
		return sum, nil
	case sum.DetectionLatencyMS < 0:
		return sum, errors.New("the tampered host was not detected")
	case sum.Failed != 1:
		return sum, fmt.Errorf("%d hosts failed, want only the tampered one", sum.Failed)
	case sum.RevocationsDelivered == 0:
		return sum, errors.New("the revocation of the tampered host was not delivered")
	}
	return sum, nil
}

// receiver is the demo's identity issuer: it accepts revocation events
// whose Standard Webhooks signature verifies.
type receiver struct {
	key []byte
	say func(string, ...any)
	mu  sync.Mutex
	got map[string][]time.Time // agent ID → arrival of each revocation
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := revocation.Verify(r.key, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"),
		req.Header.Get("webhook-signature"), body, time.Now(), 5*time.Minute); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ce revocation.CloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ce.Type == revocation.TypeRevoked {
		if r.got == nil {
			r.got = map[string][]time.Time{}
		}
		r.got[ce.Subject] = append(r.got[ce.Subject], time.Now())
		r.say("⇒ identity issuer received %s for %s (event %s, signature verified): revoking %v",
			ce.Type, ce.Subject, ce.ID, ce.Data.Identities)
	}
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) revoked(agentID string) (time.Time, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.got[agentID]
	if len(ts) == 0 {
		return time.Time{}, 0
	}
	return ts[0], len(ts)
}

func newHost(ctx context.Context, dir string, n int, mfr *soft.Manufacturer) (*host, error) {
	t, err := soft.New(soft.Options{Manufacturer: mfr, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		return nil, err
	}
	h := &host{id: fmt.Sprintf("host-%d", n), tpm: t}
	h.dir = filepath.Join(dir, "hosts", h.id)
	bins := filepath.Join(h.dir, "usr", "bin")
	if err := os.MkdirAll(bins, 0o700); err != nil {
		return nil, err
	}
	h.boot = filepath.Join(h.dir, "binary_bios_measurements")
	h.ima = simhost.IMALog{Path: filepath.Join(h.dir, "binary_runtime_measurements")}
	conn := agent.NewSoftTPM(t)
	defer conn.Close()
	bl, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		return nil, err
	}
	if _, err := bl.Boot(ctx, conn); err != nil {
		return nil, err
	}
	if err := os.WriteFile(h.boot, bl.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if _, err := h.ima.Init(ctx, conn); err != nil {
		return nil, err
	}
	for _, name := range []string{"sh", "ls", "cat", "sshd", "nginx"} {
		if _, err := h.run(ctx, conn, filepath.Join(bins, name), "#!/bin/true "+name); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *host) open(context.Context) (agent.TPM, error) { return agent.NewSoftTPM(h.tpm), nil }

// run writes an executable and measures it, as IMA does when it runs.
func (h *host) run(ctx context.Context, t agent.TPM, path, content string) (string, error) {
	if err := os.WriteFile(path, []byte(content), 0o700); err != nil {
		return "", err
	}
	e, err := simhost.MeasureFile(path)
	if err != nil {
		return "", err
	}
	return path, h.ima.Append(ctx, t, e)
}

func (h *host) tamper(ctx context.Context) (string, error) {
	conn := agent.NewSoftTPM(h.tpm)
	defer conn.Close()
	return h.run(ctx, conn, filepath.Join(h.dir, "tmp-cryptominer"), "#!/bin/sh\n# not in any policy\n")
}

// admit makes policies from the host's known-good logs and admits it.
func admit(ctx context.Context, svc *verifier.Service, h *host) error {
	logBytes, err := os.ReadFile(h.ima.Path)
	if err != nil {
		return err
	}
	rp, err := ima.PolicyFromLog(logBytes, ima.ParseOptions{})
	if err != nil {
		return err
	}
	rpJSON, err := rp.JSON()
	if err != nil {
		return err
	}
	h.runPol = fmt.Sprint(len(rp.Digests))
	bootBytes, err := os.ReadFile(h.boot)
	if err != nil {
		return err
	}
	pol, err := bootpolicy.FromLog(bootBytes, bootpolicy.LogOptions{})
	if err != nil {
		return err
	}
	bp, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return err
	}
	if _, err := svc.AddPolicy(ctx, verifier.CheckPolicy, h.id+"-runtime", verifier.PolicyRuntime, rpJSON); err != nil {
		return err
	}
	if _, err := svc.AddPolicy(ctx, verifier.CheckPolicy, h.id+"-boot", verifier.PolicyBoot, bp); err != nil {
		return err
	}
	_, err = svc.Admit(ctx, verifier.AdmitRequest{
		AgentID:       h.id,
		RuntimePolicy: h.id + "-runtime",
		BootPolicy:    h.id + "-boot",
		Identities:    []string{"spiffe://demo.vigil.example/node/" + h.id},
	})
	return err
}
