package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// Options configure a demo run.
type Options struct {
	Hosts int
	// Dir holds the stores and TLS files; empty means a temporary directory
	// removed at the end.
	Dir string
	// Out receives the narrative.
	Out io.Writer
}

// Summary is the machine-readable outcome.
type Summary struct {
	Hosts    int      `json:"hosts"`
	Enrolled int      `json:"enrolled"`
	AgentIDs []string `json:"agent_ids"`
}

// Run runs the demo until it is done or ctx ends.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if opts.Hosts <= 0 {
		opts.Hosts = 5
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "vigil-demo-")
		if err != nil {
			return Summary{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	tlsDir := filepath.Join(dir, "tls")
	if err := tlsutil.InitDir(tlsDir, tlsutil.InitOptions{}); err != nil {
		return Summary{}, err
	}
	say("▶ created a private CA for this deployment in %s", tlsDir)

	mfr, err := soft.NewManufacturer("Vigil Demo TPM Manufacturer")
	if err != nil {
		return Summary{}, err
	}
	rootsDir := filepath.Join(dir, "ek-roots")
	if err := os.MkdirAll(rootsDir, 0o700); err != nil {
		return Summary{}, err
	}
	if err := os.WriteFile(filepath.Join(rootsDir, "manufacturer.pem"), mfr.CertPEM(), 0o600); err != nil {
		return Summary{}, err
	}
	roots, inter, err := registrar.LoadEKRoots(rootsDir)
	if err != nil {
		return Summary{}, err
	}

	regURL, stopReg, err := startRegistrar(ctx, filepath.Join(dir, "registrar"), tlsDir,
		registrar.EKPolicy{Mode: registrar.EKPolicyChain, Roots: roots, Intermediates: inter}, quiet)
	if err != nil {
		return Summary{}, err
	}
	defer stopReg()
	say("▶ registrar listening on %s; it trusts only EKs certified by %q", regURL, "Vigil Demo TPM Manufacturer")

	clientTLS, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		return Summary{}, err
	}
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 30 * time.Second}

	sum := Summary{Hosts: opts.Hosts}
	say("▶ %d simulated hosts, each with its own soft TPM, enroll:", opts.Hosts)
	for i := range opts.Hosts {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		tpm, err := soft.New(soft.Options{Manufacturer: mfr, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
		if err != nil {
			return sum, err
		}
		id := fmt.Sprintf("host-%d", i+1)
		e := &agent.Enroller{
			Open:         func(context.Context) (agent.TPM, error) { return agent.NewSoftTPM(tpm), nil },
			DataDir:      filepath.Join(dir, "hosts", id),
			RegistrarURL: regURL,
			HTTP:         httpClient,
			AgentID:      id,
			EKAlg:        tpm2.TPMAlgECC,
			AKAlg:        tpm2.TPMAlgECC,
			Log:          quiet,
		}
		start := time.Now()
		res, err := e.Enroll(ctx)
		if err != nil {
			say("  ✗ %s: %v", id, err)
			continue
		}
		sum.Enrolled++
		sum.AgentIDs = append(sum.AgentIDs, res.AgentID)
		say("  ✓ %s: EK certificate checked, AK (%s) activated by credential challenge, active=%v (%s)",
			res.AgentID, res.AKAlg, res.Active, time.Since(start).Round(time.Millisecond))
	}
	say("▶ %d of %d hosts enrolled", sum.Enrolled, sum.Hosts)
	if sum.Enrolled != sum.Hosts {
		return sum, fmt.Errorf("%d hosts failed to enroll", sum.Hosts-sum.Enrolled)
	}
	return sum, nil
}

func startRegistrar(ctx context.Context, data, tlsDir string, policy registrar.EKPolicy, log *slog.Logger) (string, func(), error) {
	db, err := store.Open(data)
	if err != nil {
		return "", nil, err
	}
	cfg, err := tlsutil.ServerConfig(tlsDir)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		return "", nil, err
	}
	svc := &registrar.Service{Store: registrar.BoltStore{DB: db}, EKPolicy: policy, Log: log}
	srv := &http.Server{Handler: registrar.Handler(svc), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(ln, "", "")
	stop := func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		db.Close()
	}
	return "https://" + ln.Addr().String(), stop, nil
}
