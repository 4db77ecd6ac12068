package main

import (
	"context"
	"fmt"

	rpgstore "github.com/vigil-attest/vigil/registrar/pgstore"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar"
)

func registrarCommand() *cli.Command {
	flags, before := serviceFlags(
		&cli.StringFlag{Name: "data", Usage: "data `DIR` (the embedded store lives here)"},
		&cli.StringFlag{Name: "store", Usage: "`postgres://…` URL of a PostgreSQL database shared by registrar replicas, instead of the embedded store in --data"},
		&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init`"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8890", Usage: "`ADDR` to serve on"},
		&cli.StringFlag{Name: "ek-roots", Usage: "`DIR` of EK manufacturer root and intermediate certificates (PEM or DER)"},
		&cli.StringFlag{Name: "ek-allow", Usage: "`FILE` of allowed EK SHA-256 hashes, one per line"},
		&cli.StringFlag{Name: "ek-policy", Usage: "chain, allowlist, chain-or-allowlist or any (default: chain with --ek-roots, allowlist with --ek-allow, both if both)"},
		&cli.DurationFlag{Name: "challenge-ttl", Value: registrar.DefaultChallengeTTL, Usage: "time an agent has to answer its activation challenge; unanswered registrations are removed after it"},
		&cli.IntFlag{Name: "max-pending-per-ek", Value: registrar.DefaultMaxPendingPerEK, Usage: "pending registrations one EK may have (under all agent IDs); more are refused with 429"},
		&cli.IntFlag{Name: "max-pending", Value: registrar.DefaultMaxPending, Usage: "pending registrations in total; more are refused with 429"},
		&cli.StringFlag{Name: "metrics-listen", Usage: "`ADDR` to also serve /metrics on, in plain HTTP without a client certificate (for a private interface)"},
	)
	return &cli.Command{
		Name:   "registrar",
		Usage:  "run the registrar: enrolls hosts' EK/AK pairs",
		Flags:  flags,
		Before: before,
		Action: func(c *cli.Context) error {
			if err := required(c, "tls-dir"); err != nil {
				return err
			}
			if (c.String("data") == "") == (c.String("store") == "") {
				return badInputf("give --data DIR (the embedded store) or --store postgres://… (a shared database), not both")
			}
			if c.Duration("challenge-ttl") <= 0 || c.Int("max-pending-per-ek") <= 0 || c.Int("max-pending") <= 0 {
				return badInputf("--challenge-ttl, --max-pending-per-ek and --max-pending must be positive")
			}
			log, err := newLogger(c, stderr(c))
			if err != nil {
				return err
			}
			policy, err := ekPolicyFromFlags(c)
			if err != nil {
				return err
			}
			tlsCfg, err := tlsutil.ServerConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			log = log.With("service", "registrar")
			cfg := registrar.DefaultConfig()
			cfg.DataDir, cfg.EKPolicy, cfg.Log = c.String("data"), policy, log
			if url := c.String("store"); url != "" {
				st, err := rpgstore.Open(c.Context, url)
				if err != nil {
					return fmt.Errorf("--store: %w", err)
				}
				defer st.Close()
				cfg.Store = st
			}
			cfg.ChallengeTTL, cfg.MaxPendingPerEK, cfg.MaxPending = c.Duration("challenge-ttl"), c.Int("max-pending-per-ek"), c.Int("max-pending")
			reg, err := registrar.New(cfg)
			if err != nil {
				return err
			}
			defer reg.Close()
			log.Info("starting", "ek_policy", policy.Mode, "data", c.String("data"), "store", storeName(c.String("store")))
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			go reg.Run(ctx)
			if addr := c.String("metrics-listen"); addr != "" {
				stop, err := serveMetrics(ctx, log, addr, reg.MetricsHandler())
				if err != nil {
					return badInputf("--metrics-listen %s: %v", addr, err)
				}
				defer stop()
			}
			return serveTLS(ctx, log, c.String("listen"), tlsCfg, reg.Handler(), nil)
		},
	}
}

func ekPolicyFromFlags(c *cli.Context) (registrar.EKPolicy, error) {
	var p registrar.EKPolicy
	if dir := c.String("ek-roots"); dir != "" {
		roots, inter, err := registrar.LoadEKRoots(dir)
		if err != nil {
			return p, badInput(err)
		}
		p.Roots, p.Intermediates = roots, inter
	}
	if file := c.String("ek-allow"); file != "" {
		allow, err := registrar.LoadEKAllowlist(file)
		if err != nil {
			return p, badInput(err)
		}
		p.Allow = allow
	}
	p.Mode = c.String("ek-policy")
	if p.Mode == "" {
		switch {
		case p.Roots != nil && p.Allow != nil:
			p.Mode = registrar.EKPolicyChainOrAllowlist
		case p.Allow != nil:
			p.Mode = registrar.EKPolicyAllowlist
		default:
			p.Mode = registrar.EKPolicyChain
		}
	}
	if err := p.Validate(); err != nil {
		return p, badInput(err)
	}
	return p, nil
}
