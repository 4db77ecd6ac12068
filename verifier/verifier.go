package verifier

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// Config is everything a verifier is made of. Start from DefaultConfig,
// which holds every default; New refuses a Config that cannot work.
type Config struct {
	// DataDir is where the embedded store lives; New opens it and Close
	// closes it. Ignored when Store is set.
	DataDir string
	// Store, if set, is used instead of one in DataDir; the caller owns it.
	Store Store

	// RegistrarURL is where activated AKs come from, reached with the
	// deployment's admin certificate (RegistrarTLS).
	RegistrarURL string
	RegistrarTLS *tls.Config
	// AKs and Feed, if set, replace the registrar at RegistrarURL (tests).
	AKs  AKSource
	Feed AKFeed

	Log *slog.Logger
	// Interval is the attestation interval of agents admitted without one.
	Interval time.Duration
	// MinInterval and MaxInterval bound the interval an agent may be
	// admitted with.
	MinInterval, MaxInterval time.Duration
	// Liveness is how long an agent may stay silent; zero means
	// LivenessIntervals of its interval.
	Liveness          time.Duration
	LivenessIntervals int
	// NonceTTL is how long a challenge can be answered; zero means twice
	// the agent's interval, at least 30 s.
	NonceTTL time.Duration
	// CheckpointEvery is how often attesting agents' progress is stored;
	// zero stores every verdict before it is answered.
	CheckpointEvery time.Duration
	// LivenessEvery is how often silent agents are looked for.
	LivenessEvery time.Duration
	// FeedEvery is how often the registrar is asked which hosts it still
	// vouches for; zero means Interval.
	FeedEvery time.Duration
	// AKFetches bounds the AK fetches in flight to the registrar.
	AKFetches int
	// AutoRecover says which failures heal by themselves.
	AutoRecover AutoRecover
	// PolicyKeys are the keys a signed (DSSE) policy upload must verify
	// against.
	PolicyKeys []dsse.PublicKey
	// InFlight bounds the bytes of evidence bodies being read at once.
	InFlight int64

	// Sinks receive the revocation events (webhooks).
	Sinks []revocation.Sink
	// WebhookMinBackoff and WebhookMaxBackoff bound the wait between
	// delivery attempts; OutboxRetention is how long a delivered event is
	// kept.
	WebhookMinBackoff, WebhookMaxBackoff, OutboxRetention time.Duration
	// HistoryRetention and HistoryMaxPerAgent bound each agent's history
	// (by age, and by count); HistoryPeriod is how long passing verdicts
	// are counted into one history entry.
	HistoryRetention, HistoryPeriod time.Duration
	HistoryMaxPerAgent              int
	// ReplicaID names this verifier in its claims on revocation events,
	// apart from the other replicas on a shared store. Default: random,
	// made at New, on a store other than the embedded one; on the embedded
	// one, which one process opens at a time, a fixed one, so that a
	// restarted verifier resumes its own claims at once instead of
	// waiting for them to lapse.
	ReplicaID string

	// ReplicaURL, when set, makes this verifier one replica of several
	// sharing Store, which must keep leases (LeaseStore): the URL agents
	// and the other replicas reach it at; ReplicaID names it in its
	// leases too. LeaseTTL is how long its leases last unrenewed, so a replica that dies loses its agents to the
	// others within about that long (default: half of Interval).
	ReplicaURL string
	LeaseTTL   time.Duration

	// PProf serves Go's profiler under /debug/pprof/ to admin clients.
	PProf bool
	// Now is time.Now unless a test sets it.
	Now func() time.Time
	// OnVerdict, if set, also sees every verdict (the demo narrates them,
	// the bench times them).
	OnVerdict func(a Agent, f *Failure, took time.Duration)
}

// DefaultConfig is a verifier's configuration with every default set. It
// names no store and no registrar.
func DefaultConfig() Config {
	return Config{
		Log:                slog.Default(),
		Interval:           2 * time.Second,
		MinInterval:        time.Second,
		MaxInterval:        24 * time.Hour,
		LivenessIntervals:  3,
		CheckpointEvery:    time.Second,
		LivenessEvery:      time.Second,
		AKFetches:          16,
		AutoRecover:        RecoverSilence,
		InFlight:           DefaultInFlight,
		WebhookMinBackoff:  time.Second,
		WebhookMaxBackoff:  5 * time.Minute,
		OutboxRetention:    revocation.DefaultRetention,
		HistoryRetention:   DefaultHistoryRetention,
		HistoryPeriod:      DefaultHistoryPeriod,
		HistoryMaxPerAgent: DefaultHistoryMaxPerAgent,
	}
}

// Verifier is an assembled verifier: the service, its store, metrics,
// revocation dispatcher and HTTP API, made only by New.
type Verifier struct {
	svc     *Service
	metrics *Metrics
	disp    *revocation.Dispatcher
	handler http.Handler
	db      *store.DB // opened by New, closed by Close
}

// New assembles a verifier from cfg and loads every stored agent, so that
// a store that cannot be read stops the verifier before it serves.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	v := &Verifier{}
	st := cfg.Store
	if st == nil {
		db, err := store.Open(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		v.db, st = db, BoltStore{DB: db}
	}
	aks, feed := cfg.AKs, cfg.Feed
	if aks == nil {
		reg := NewRegistrarAKs(cfg.RegistrarURL, cfg.RegistrarTLS)
		aks = reg
		if feed == nil {
			feed = reg
		}
	}
	feedEvery := cfg.FeedEvery
	if feedEvery <= 0 {
		feedEvery = cfg.Interval
	}
	v.svc = &Service{
		Store:              st,
		AKs:                aks,
		Feed:               feed,
		Log:                cfg.Log,
		DefaultInterval:    cfg.Interval,
		NonceTTL:           cfg.NonceTTL,
		Liveness:           cfg.Liveness,
		LivenessIntervals:  cfg.LivenessIntervals,
		Now:                cfg.Now,
		CheckpointEvery:    cfg.CheckpointEvery,
		LivenessEvery:      cfg.LivenessEvery,
		AKFetches:          cfg.AKFetches,
		FeedEvery:          feedEvery,
		AutoRecover:        cfg.AutoRecover,
		MinInterval:        cfg.MinInterval,
		MaxInterval:        cfg.MaxInterval,
		HistoryRetention:   cfg.HistoryRetention,
		HistoryPeriod:      cfg.HistoryPeriod,
		HistoryMaxPerAgent: cfg.HistoryMaxPerAgent,
	}
	replica := cfg.ReplicaID
	if replica == "" {
		if _, embedded := st.(BoltStore); embedded {
			replica = "embedded"
		} else {
			replica = revocation.NewOwner()
		}
	}
	if cfg.ReplicaURL != "" {
		leases, ok := st.(LeaseStore)
		if !ok {
			v.Close()
			return nil, errors.New("verifier: replicas need a shared store that keeps leases (--store postgres://…)")
		}
		v.svc.Leases, v.svc.ReplicaURL, v.svc.ReplicaID = leases, cfg.ReplicaURL, replica
		v.svc.LeaseTTL = cfg.LeaseTTL
		if v.svc.LeaseTTL <= 0 {
			// Half an interval: a dead replica's hosts are taken over
			// before their next attestation is a whole interval late.
			v.svc.LeaseTTL = max(cfg.Interval/2, 500*time.Millisecond)
		}
	}
	v.metrics = NewMetrics(v.svc)
	v.svc.OnLeaseMoves = v.metrics.ObserveLeaseMoves
	v.svc.OnCheckpoint, v.svc.OnRefused = v.metrics.ObserveCheckpoint, v.metrics.ObserveRefused
	v.svc.OnVerdict = v.metrics.ObserveVerdict
	if also := cfg.OnVerdict; also != nil {
		v.svc.OnVerdict = func(a Agent, f *Failure, took time.Duration) {
			v.metrics.ObserveVerdict(a, f, took)
			also(a, f, took)
		}
	}
	v.disp = &revocation.Dispatcher{Outbox: st, Sinks: cfg.Sinks, Log: cfg.Log, Now: cfg.Now, Owner: replica,
		MinBackoff: cfg.WebhookMinBackoff, MaxBackoff: cfg.WebhookMaxBackoff, Retention: cfg.OutboxRetention}
	v.disp.OnDone = v.svc.recordDelivered
	v.disp.Init()
	v.svc.OnEvents = v.disp.Wake

	mux := http.NewServeMux()
	mux.Handle("/", Handler(v.svc, HandlerOptions{
		CheckPolicy:     NewPolicyCheck(cfg.PolicyKeys),
		InFlight:        cfg.InFlight,
		OnEvidenceBytes: v.metrics.ObserveEvidenceBytes,
	}))
	mux.Handle("GET /metrics", httpapi.Admin(v.MetricsHandler().ServeHTTP))
	if cfg.PProf {
		// Behind the admin certificate: a profile shows code paths and heap
		// contents, and costs CPU while it runs.
		mux.Handle("GET /debug/pprof/", httpapi.Admin(pprof.Index))
		mux.Handle("GET /debug/pprof/profile", httpapi.Admin(pprof.Profile))
		mux.Handle("GET /debug/pprof/trace", httpapi.Admin(pprof.Trace))
		mux.Handle("GET /debug/pprof/symbol", httpapi.Admin(pprof.Symbol))
		mux.Handle("GET /debug/pprof/cmdline", httpapi.Admin(pprof.Cmdline))
	}
	v.handler = mux
	if err := v.svc.Load(ctx); err != nil {
		v.Close()
		return nil, fmt.Errorf("load agents: %w", err)
	}
	return v, nil
}

func (cfg Config) check() error {
	switch {
	case cfg.Store == nil && cfg.DataDir == "":
		return errors.New("verifier: a data directory or a store is required")
	case cfg.AKs == nil && cfg.RegistrarURL == "":
		return errors.New("verifier: a registrar URL is required")
	case cfg.Interval <= 0 || cfg.MinInterval <= 0 || cfg.MaxInterval < cfg.MinInterval:
		return fmt.Errorf("verifier: intervals must be positive, the bounds in order (interval %s, between %s and %s)", cfg.Interval, cfg.MinInterval, cfg.MaxInterval)
	case cfg.CheckpointEvery < 0:
		return fmt.Errorf("verifier: checkpoint interval %s must not be negative", cfg.CheckpointEvery)
	case cfg.Liveness < 0 || cfg.NonceTTL < 0 || cfg.FeedEvery < 0:
		return errors.New("verifier: liveness, nonce lifetime and registrar poll must not be negative")
	case cfg.LivenessIntervals <= 0 || cfg.LivenessEvery <= 0 || cfg.AKFetches <= 0 || cfg.InFlight <= 0:
		return errors.New("verifier: liveness intervals, liveness sweep, AK fetches and in-flight bytes must be positive")
	}
	if _, err := ParseAutoRecover(string(cfg.AutoRecover)); err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	return nil
}

// Handler is the verifier's HTTP API: the agents' attestation endpoints,
// the admin API, /metrics (admin certificate), the profiler when enabled,
// and the health probes.
func (v *Verifier) Handler() http.Handler { return v.handler }

// MetricsHandler serves the metrics without a certificate check, for a
// listener the operator keeps private.
func (v *Verifier) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(v.metrics.Registry, promhttp.HandlerOpts{})
}

// Service is the verifier's logic, for callers in this process (tests,
// the demo) that admit agents or attest without HTTP.
func (v *Verifier) Service() *Service { return v.svc }

// Run does the verifier's background work until ctx ends: liveness,
// checkpoints, following the registrar, and delivering revocations. Stop
// serving requests before ctx ends: Run writes a last checkpoint and
// returns, and Close may then close the store.
func (v *Verifier) Run(ctx context.Context) error {
	delivered := make(chan struct{})
	go func() { v.disp.Run(ctx); close(delivered) }()
	err := v.svc.Run(ctx)
	<-delivered
	return err
}

// Close closes the store New opened.
func (v *Verifier) Close() error {
	if v.db != nil {
		return v.db.Close()
	}
	return nil
}
