package main

import (
	"context"
	"fmt"

	rpgstore "github.com/vigil-attest/vigil/registrar/pgstore"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/httpapi"
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
		Name:  "registrar",
		Usage: "run the registrar: enrolls hosts' EK/AK pairs",
		Description: "SIGHUP reloads, without a restart and without dropping connections or registrations:\n" +
			"the EK roots and intermediates (--ek-roots), the EK allowlist (--ek-allow) and the TLS\n" +
			"server certificate and key (server.crt, server.key in --tls-dir) and the list of revoked\n" +
			"admin certificates (admin.crl, `vigil ca revoke-admin`). A reload that fails keeps the old\n" +
			"configuration and logs what and where. Other flags, and ca.crt, need a restart.",
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
			policy, ekSrc, err := ekPolicyFromFlags(c)
			if err != nil {
				return err
			}
			tlsCfg, srvPair, adminCRL, err := tlsutil.ReloadableServerConfig(c.String("tls-dir"))
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
			reloads := []reloadable{reloadKeyPair("tls server certificate", srvPair), reloadAdminCRL(adminCRL)}
			if c.String("ek-roots") != "" || c.String("ek-allow") != "" {
				reloads = append(reloads, reloadable{what: "ek policy", reload: func() ([]any, error) {
					p, src, err := loadEKPolicy(c.String("ek-policy"), c.String("ek-roots"), c.String("ek-allow"))
					if err != nil {
						return nil, err
					}
					if err := reg.SetEKPolicy(p); err != nil {
						return nil, err
					}
					changes := ekSrc.changes(src)
					ekSrc = src
					return changes, nil
				}})
			}
			reloadOnSIGHUP(ctx, log, reloads)
			if addr := c.String("metrics-listen"); addr != "" {
				stop, err := serveMetrics(ctx, log, addr, reg.MetricsHandler())
				if err != nil {
					return badInputf("--metrics-listen %s: %v", addr, err)
				}
				defer stop()
			}
			return serveTLS(ctx, log, c.String("listen"), tlsCfg, httpapi.RefuseRevoked(reg.Handler(), adminCRL.Revoked), nil)
		},
	}
}

func ekPolicyFromFlags(c *cli.Context) (registrar.EKPolicy, ekSources, error) {
	p, src, err := loadEKPolicy(c.String("ek-policy"), c.String("ek-roots"), c.String("ek-allow"))
	if err != nil {
		return p, src, badInput(err)
	}
	return p, src, nil
}
