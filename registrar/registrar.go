package registrar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/store"
)

// Config is everything a registrar is made of. Start from DefaultConfig,
// which holds every default; New refuses a Config that cannot work.
type Config struct {
	// DataDir is where the embedded store lives. New opens it, and Close
	// closes it. Ignored when Store is set.
	DataDir string
	// Store, if set, is used instead of one in DataDir; the caller owns it.
	Store Store
	// EKPolicy decides which EKs may enroll.
	EKPolicy EKPolicy
	Log      *slog.Logger
	// ChallengeTTL is how long a registration waits for its activation.
	ChallengeTTL time.Duration
	// MaxPendingPerEK and MaxPending bound the registrations waiting for
	// activation, per EK and in total.
	MaxPendingPerEK int
	MaxPending      int
	// SweepInterval is how often Run removes expired registrations.
	SweepInterval time.Duration
	// Rand and Now are crypto/rand and time.Now unless a test sets them.
	Rand io.Reader
	Now  func() time.Time
}

// DefaultConfig is a registrar's configuration with every default set. It
// names no store and accepts no EK until EKPolicy is set.
func DefaultConfig() Config {
	return Config{
		Log:             slog.Default(),
		ChallengeTTL:    DefaultChallengeTTL,
		MaxPendingPerEK: DefaultMaxPendingPerEK,
		MaxPending:      DefaultMaxPending,
		SweepInterval:   DefaultSweepInterval,
	}
}

// Registrar is an assembled registrar: the service, its store, metrics
// and HTTP API, made only by New.
type Registrar struct {
	svc     *Service
	metrics *Metrics
	handler http.Handler
	db      *store.DB // opened by New, closed by Close
}

// New assembles a registrar from cfg.
func New(cfg Config) (*Registrar, error) {
	switch {
	case cfg.Store == nil && cfg.DataDir == "":
		return nil, errors.New("registrar: a data directory or a store is required")
	case cfg.ChallengeTTL <= 0, cfg.MaxPendingPerEK <= 0, cfg.MaxPending <= 0, cfg.SweepInterval <= 0:
		return nil, fmt.Errorf("registrar: challenge TTL, pending bounds and sweep interval must be positive (%s, %d, %d, %s)",
			cfg.ChallengeTTL, cfg.MaxPendingPerEK, cfg.MaxPending, cfg.SweepInterval)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Registrar{}
	st := cfg.Store
	if st == nil {
		db, err := store.Open(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		r.db, st = db, BoltStore{DB: db}
	}
	r.metrics = NewMetrics(st)
	r.svc = &Service{
		Store:           st,
		EKPolicy:        cfg.EKPolicy,
		Log:             cfg.Log,
		ChallengeTTL:    cfg.ChallengeTTL,
		MaxPendingPerEK: cfg.MaxPendingPerEK,
		MaxPending:      cfg.MaxPending,
		SweepInterval:   cfg.SweepInterval,
		Rand:            cfg.Rand,
		Now:             cfg.Now,
		OnRegister:      r.metrics.ObserveRegistration,
		OnRefuse:        r.metrics.ObserveRefusal,
	}
	if cfg.EKPolicy.Mode == EKPolicyAny {
		cfg.Log.Warn("EK policy any: every EK is accepted without a check; use only for trials")
	}
	mux := http.NewServeMux()
	mux.Handle("/", Handler(r.svc))
	mux.Handle("GET /metrics", httpapi.Admin(r.MetricsHandler().ServeHTTP))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		if _, err := st.Generation(req.Context()); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	r.handler = mux
	return r, nil
}

// SetEKPolicy replaces the EK policy in force, for the registrations that
// start from now on, without a restart and without touching the store:
// this is what a SIGHUP reload of --ek-roots and --ek-allow calls. A
// policy that does not validate is refused and the old one stays.
func (r *Registrar) SetEKPolicy(p EKPolicy) error {
	if err := r.svc.SetEKPolicy(p); err != nil {
		return err
	}
	if p.Mode == EKPolicyAny {
		r.svc.log().Warn("EK policy any: every EK is accepted without a check; use only for trials")
	}
	return nil
}

// EKPolicy is the EK policy in force.
func (r *Registrar) EKPolicy() EKPolicy { return r.svc.CurrentEKPolicy() }

// Handler is the registrar's HTTP API: the agents' enrollment endpoints,
// the admin API, /metrics (admin certificate) and the health probes.
func (r *Registrar) Handler() http.Handler { return r.handler }

// MetricsHandler serves the metrics without a certificate check, for a
// listener the operator keeps private.
func (r *Registrar) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(r.metrics.Registry, promhttp.HandlerOpts{})
}

// Service is the registrar's logic, for callers in this process (tests,
// the loopback deployment) that enroll without HTTP.
func (r *Registrar) Service() *Service { return r.svc }

// Run does the registrar's background work (removing expired
// registrations) until ctx ends.
func (r *Registrar) Run(ctx context.Context) error { return r.svc.Run(ctx) }

// Close closes the store New opened.
func (r *Registrar) Close() error {
	if r.db != nil {
		return r.db.Close()
	}
	return nil
}
