package main

import (
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/cmd/vigil/internal/dashboard"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
)

func dashboardCommand() *cli.Command {
	flags, before := serviceFlags(
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", Usage: "`ADDR` to serve the dashboard on (HTTPS); keep it local, or put it behind your own proxy"},
		&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init`: the server certificate it serves with, and an admin certificate to read the verifier with"},
		&cli.StringSliceFlag{Name: "verifier", Usage: "verifier `URL` (repeat it for the replicas of one deployment, asked in turn)"},
		&cli.DurationFlag{Name: "refresh", Value: 2 * time.Second, Usage: "how often open pages update"},
	)
	return &cli.Command{
		Name:   "dashboard",
		Usage:  "serve a read-only web view of the fleet: hosts by state, failures first, each host's timeline, policies",
		Flags:  flags,
		Before: before,
		Action: func(c *cli.Context) error {
			log, err := newLogger(c, os.Stderr)
			if err != nil {
				return err
			}
			urls := c.StringSlice("verifier")
			if len(urls) == 0 {
				return badInputf("missing required flag --verifier")
			}
			if c.String("tls-dir") == "" {
				return badInputf("missing required flag --tls-dir")
			}
			srvCfg, err := tlsutil.ServerConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			adminCfg, err := tlsutil.AdminClientConfig(c.String("tls-dir"))
			if err != nil {
				return badInput(err)
			}
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: adminCfg, MaxIdleConnsPerHost: 4}}
			var vs []dashboard.Verifier
			for _, u := range urls {
				if !strings.HasPrefix(u, "https://") {
					return badInputf("--verifier %q: want https://HOST:PORT", u)
				}
				vs = append(vs, &verifier.AdminClient{BaseURL: strings.TrimRight(u, "/"), HTTP: hc})
			}
			d, err := dashboard.New(dashboard.Options{Verifiers: vs, Refresh: c.Duration("refresh"), Log: log})
			if err != nil {
				return err
			}
			return serveTLS(c.Context, log.With("service", "dashboard"), c.String("listen"), srvCfg, d, func(a net.Addr) {
				log.Info("dashboard", "url", "https://"+a.String()+"/")
			})
		},
	}
}
