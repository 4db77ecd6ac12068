package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	vpgstore "github.com/vigil-attest/vigil/verifier/pgstore"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

func verifierCommand() *cli.Command {
	def := verifier.DefaultConfig()
	flags, before := serviceFlags(
		&cli.StringFlag{Name: "data", Usage: "data `DIR` (the embedded store lives here)"},
		&cli.StringFlag{Name: "store", Usage: "`postgres://…` URL of a PostgreSQL database, instead of the embedded store in --data"},
		&cli.StringFlag{Name: "advertise", Usage: "with --store: run as one replica of several sharing the hosts, reachable by agents and the other replicas at `URL` (https://HOST:PORT); hosts are spread over the live replicas and taken over when one dies"},
		&cli.StringFlag{Name: "replica-id", Usage: "with --advertise: this replica's name (default: a random one per start)"},
		&cli.DurationFlag{Name: "lease-ttl", Usage: "with --advertise: how long a replica's hold on a host lasts unrenewed, so how soon the others take over a dead one's hosts (default: half of --interval, at least 500ms)"},
		&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init` (server cert; admin cert to reach the registrar)"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8891", Usage: "`ADDR` to serve on"},
		&cli.StringFlag{Name: "registrar", Usage: "registrar `URL`, where AKs are fetched"},
		&cli.DurationFlag{Name: "interval", Value: def.Interval, Usage: "default attestation interval for agents admitted without one"},
		&cli.DurationFlag{Name: "liveness", Usage: "silence after which an agent fails (default: 3 of its intervals)"},
		&cli.DurationFlag{Name: "checkpoint", Value: def.CheckpointEvery, Usage: "how often attesting agents' progress is stored; failures and state changes are stored at once (0: every verdict at once)"},
		&cli.StringSliceFlag{Name: "webhook", Usage: "`URL` to post revocation events to (repeatable)"},
		&cli.StringSliceFlag{Name: "webhook-secret-file", Usage: "`FILE` holding the whsec_ secret of the webhook at the same position (repeatable)"},
		&cli.StringFlag{Name: "webhook-ca", Usage: "CA certificate `FILE` for webhook receivers with private certificates"},
		&cli.DurationFlag{Name: "webhook-max-backoff", Value: def.WebhookMaxBackoff, Usage: "longest wait between delivery attempts"},
		&cli.DurationFlag{Name: "outbox-retention", Value: def.OutboxRetention, Usage: "how long a revocation event delivered to every webhook is kept before it is pruned"},
		&cli.DurationFlag{Name: "history-retention", Value: def.HistoryRetention, Usage: "how long an agent's history entries are kept"},
		&cli.IntFlag{Name: "history-max-per-agent", Value: def.HistoryMaxPerAgent, Usage: "the most history entries kept for one agent (the newest)"},
		&cli.DurationFlag{Name: "history-period", Value: def.HistoryPeriod, Usage: "passing verdicts are counted into one history entry per `PERIOD` (and per policy version)"},
		&cli.BoolFlag{Name: "pprof", Usage: "serve Go's profiler under /debug/pprof/ to admin clients (client certificate), to see where the verifier's CPU and memory go"},
		&cli.StringFlag{Name: "source", Usage: "CloudEvents source `URI` of this verifier (default: urn:vigil:verifier:HOSTNAME)"},
		&cli.StringFlag{Name: "auto-recover", Value: string(def.AutoRecover), Usage: "which failures heal by themselves: silence (a host failed only for silence is attesting again once it sends complete fresh evidence that passes) or never"},
		&cli.StringFlag{Name: "metrics-listen", Usage: "also serve /metrics over plain HTTP on `ADDR`, for a Prometheus on a private interface (on the service port it needs an admin certificate)"},
		&cli.DurationFlag{Name: "registrar-poll", Usage: "how often to ask the registrar which hosts it still vouches for (default: --interval)"},
		&cli.DurationFlag{Name: "min-interval", Value: def.MinInterval, Hidden: true, Usage: "shortest interval an agent may be admitted with (tests and demos go lower)"},
		&cli.StringSliceFlag{Name: "policy-key", Usage: "public key or certificate `FILE` (PEM) a DSSE-signed policy upload must verify against (repeatable); unsigned policies are taken as well"},
	)
	return &cli.Command{
		Name:  "verifier",
		Usage: "run the verifier: attests admitted agents continuously",
		Description: "SIGHUP reloads, without a restart and without dropping connections or attestation state:\n" +
			"the webhook secrets (--webhook-secret-file; same webhooks, new keys), the TLS server\n" +
			"certificate and key (server.crt, server.key in --tls-dir) and the admin client certificate\n" +
			"used to reach the registrar (admin.crt, admin.key), and the list of revoked admin\n" +
			"certificates (admin.crl, `vigil ca revoke-admin`). A reload that fails keeps the old\n" +
			"configuration and logs what and where. Other flags, and ca.crt, need a restart.",
		Flags:  flags,
		Before: before,
		Action: func(c *cli.Context) error {
			if err := required(c, "tls-dir", "registrar"); err != nil {
				return err
			}
			if (c.String("data") == "") == (c.String("store") == "") {
				return badInputf("give --data DIR (the embedded store) or --store postgres://… (a shared database), not both")
			}
			policyKeys, err := dsse.LoadPublicKeys(c.StringSlice("policy-key")...)
			if err != nil {
				return badInputf("--policy-key: %v", err)
			}
			log, err := newLogger(c, stderr(c))
			if err != nil {
				return err
			}
			log = log.With("service", "verifier")
			srvCfg, srvPair, adminCRL, err := tlsutil.ReloadableServerConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			adminCfg, adminPair, err := tlsutil.ReloadableAdminClientConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			recover, err := verifier.ParseAutoRecover(c.String("auto-recover"))
			if err != nil {
				return badInputf("--auto-recover: %v", err)
			}
			if c.Duration("checkpoint") < 0 {
				return badInputf("--checkpoint %s: must not be negative", c.Duration("checkpoint"))
			}
			hooks, err := webhookSinks(c)
			if err != nil {
				return err
			}
			cfg := verifier.DefaultConfig()
			cfg.DataDir, cfg.Log = c.String("data"), log
			if url := c.String("store"); url != "" {
				st, err := vpgstore.Open(c.Context, url)
				if err != nil {
					return fmt.Errorf("--store: %w", err)
				}
				defer st.Close()
				cfg.Store = st
			}
			cfg.RegistrarURL, cfg.RegistrarTLS, cfg.FeedEvery = c.String("registrar"), adminCfg, c.Duration("registrar-poll")
			cfg.Interval, cfg.MinInterval, cfg.Liveness = c.Duration("interval"), c.Duration("min-interval"), c.Duration("liveness")
			cfg.CheckpointEvery, cfg.AutoRecover, cfg.PolicyKeys = c.Duration("checkpoint"), recover, policyKeys
			cfg.Sinks, cfg.WebhookMaxBackoff, cfg.OutboxRetention = asSinks(hooks), c.Duration("webhook-max-backoff"), c.Duration("outbox-retention")
			cfg.HistoryRetention, cfg.HistoryMaxPerAgent, cfg.HistoryPeriod = c.Duration("history-retention"), c.Int("history-max-per-agent"), c.Duration("history-period")
			if cfg.HistoryRetention <= 0 || cfg.HistoryMaxPerAgent <= 0 || cfg.HistoryPeriod <= 0 {
				return badInputf("--history-retention, --history-max-per-agent and --history-period must be positive")
			}
			cfg.PProf = c.Bool("pprof")
			if u := c.String("advertise"); u != "" {
				if c.String("store") == "" {
					return badInputf("--advertise runs a replica over a shared store: give --store postgres://… too")
				}
				if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
					return badInputf("--advertise %q: want https://HOST:PORT", u)
				}
				cfg.ReplicaURL, cfg.ReplicaID, cfg.LeaseTTL = u, c.String("replica-id"), c.Duration("lease-ttl")
			}
			ver, err := verifier.New(c.Context, cfg)
			if err != nil {
				return err
			}
			defer ver.Close()
			if addr := c.String("metrics-listen"); addr != "" {
				stop, err := serveMetrics(c.Context, log, addr, ver.MetricsHandler())
				if err != nil {
					return badInputf("--metrics-listen %s: %v", addr, err)
				}
				defer stop()
			}
			runCtx, stopRun := context.WithCancel(c.Context)
			defer stopRun()
			ran := make(chan error, 1)
			go func() { ran <- ver.Run(runCtx) }()
			reloadOnSIGHUP(runCtx, log, []reloadable{
				reloadKeyPair("tls server certificate", srvPair),
				reloadAdminCRL(adminCRL),
				reloadKeyPair("admin client certificate", adminPair),
				webhookSecrets(hooks, c.StringSlice("webhook-secret-file")),
			})
			log.Info("starting", "data", c.String("data"), "store", storeName(c.String("store")), "registrar", c.String("registrar"))
			err = serveTLS(c.Context, log, c.String("listen"), srvCfg, httpapi.RefuseRevoked(ver.Handler(), adminCRL.Revoked), nil)
			// Requests have stopped: the last checkpoint goes in before the
			// store closes.
			stopRun()
			if rerr := <-ran; rerr != nil && err == nil {
				err = rerr
			}
			return err
		},
	}
}

// webhookSinks builds the webhook sinks from --webhook and
// --webhook-secret-file, which pair up by position.
// The verifier signs with the keys of the secret files as they are at
// start, and again after each SIGHUP (webhookSecrets).
func webhookSinks(c *cli.Context) ([]*revocation.Webhook, error) {
	urls, secrets := c.StringSlice("webhook"), c.StringSlice("webhook-secret-file")
	if len(urls) != len(secrets) {
		return nil, badInputf("%d --webhook but %d --webhook-secret-file: give one secret file per webhook", len(urls), len(secrets))
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f := c.String("webhook-ca"); f != "" {
		pool, err := tlsutil.LoadCAPool(f)
		if err != nil {
			return nil, badInputf("--webhook-ca: %v", err)
		}
		tlsCfg.RootCAs = pool
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 15 * time.Second}
	source := c.String("source")
	if source == "" {
		host, _ := os.Hostname()
		source = "urn:vigil:verifier:" + host
	}
	var sinks []*revocation.Webhook
	for i, u := range urls {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			return nil, badInputf("--webhook %q: want an https URL (revocations travel over TLS)", u)
		}
		key, err := readWebhookSecret(secrets[i])
		if err != nil {
			return nil, badInput(err)
		}
		sinks = append(sinks, &revocation.Webhook{URL: u, Key: key, Source: source, Client: client})
	}
	return sinks, nil
}

// readWebhookSecret reads the whsec_ secret of a --webhook-secret-file.
func readWebhookSecret(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	key, err := revocation.ParseSecret(string(b))
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file %s: %w", file, err)
	}
	return key, nil
}

// asSinks is the revocation sinks of webhooks.
func asSinks(hooks []*revocation.Webhook) []revocation.Sink {
	var sinks []revocation.Sink
	for _, h := range hooks {
		sinks = append(sinks, h)
	}
	return sinks
}
