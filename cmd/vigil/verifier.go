package main

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/verifier"
)

func verifierCommand() *cli.Command {
	flags, before := serviceFlags(
		&cli.StringFlag{Name: "data", Usage: "data `DIR` (the embedded store lives here)"},
		&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init` (server cert; admin cert to reach the registrar)"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8891", Usage: "`ADDR` to serve on"},
		&cli.StringFlag{Name: "registrar", Usage: "registrar `URL`, where AKs are fetched"},
		&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "default attestation interval for agents admitted without one"},
		&cli.DurationFlag{Name: "liveness", Usage: "silence after which an agent fails (default: 3 of its intervals)"},
	)
	return &cli.Command{
		Name:   "verifier",
		Usage:  "run the verifier: attests admitted agents continuously",
		Flags:  flags,
		Before: before,
		Action: func(c *cli.Context) error {
			if err := required(c, "data", "tls-dir", "registrar"); err != nil {
				return err
			}
			log, err := newLogger(c, stderr(c))
			if err != nil {
				return err
			}
			log = log.With("service", "verifier")
			srvCfg, err := tlsutil.ServerConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			adminCfg, err := tlsutil.AdminClientConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			db, err := store.Open(c.String("data"))
			if err != nil {
				return err
			}
			defer db.Close()
			st := verifier.BoltStore{DB: db}
			metrics := verifier.NewMetrics(st)
			checks := &verifier.PolicyChecks{Store: st}
			svc := &verifier.Service{
				Store:          st,
				Engine:         &verifier.Engine{Boot: checks, Runtime: checks},
				OnPolicyChange: checks.Forget,
				AKs: verifier.RegistrarAKs{Client: &registrar.AdminClient{
					BaseURL: c.String("registrar"),
					HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: adminCfg}, Timeout: 10 * time.Second},
				}},
				Log:             log,
				DefaultInterval: c.Duration("interval"),
				Liveness:        c.Duration("liveness"),
				OnVerdict:       metrics.ObserveVerdict,
			}
			mux := http.NewServeMux()
			mux.Handle("/", verifier.Handler(svc, verifier.HandlerOptions{
				CheckPolicy:     verifier.CheckPolicy,
				OnEvidenceBytes: metrics.ObserveEvidenceBytes,
			}))
			mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
			go svc.RunLiveness(c.Context, time.Second)
			log.Info("starting", "data", c.String("data"), "registrar", c.String("registrar"))
			return serveTLS(c.Context, log, c.String("listen"), srvCfg, mux, nil)
		},
	}
}
