package main

import (
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/cmd/vigil/internal/demo"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run Vigil end to end on simulated hosts, on loopback, with nothing but Go",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "hosts", Value: 5, Usage: "number of simulated hosts"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "attestation interval"},
			&cli.DurationFlag{Name: "tamper-after", Value: 10 * time.Second, Usage: "when one host runs a program its policy does not allow"},
			&cli.DurationFlag{Name: "duration", Value: 20 * time.Second, Usage: "how long the demo runs"},
			&cli.StringFlag{Name: "dir", Usage: "keep the demo's stores and certificates in `DIR` (default: a temporary directory, removed afterwards)"},
			&cli.StringSliceFlag{Name: "webhook", Usage: "also post revocation events to `URL` (repeatable)"},
			&cli.StringSliceFlag{Name: "webhook-secret-file", Usage: "`FILE` holding the whsec_ secret of the webhook at the same position"},
			&cli.StringFlag{Name: "webhook-ca", Usage: "CA certificate `FILE` for webhook receivers with private certificates"},
			&cli.BoolFlag{Name: "json", Usage: "print a machine-readable summary at the end"},
		},
		Action: func(c *cli.Context) error {
			if c.Int("hosts") < 1 {
				return badInputf("--hosts must be at least 1")
			}
			if c.Duration("interval") < 100*time.Millisecond || c.Duration("duration") <= 0 || c.Duration("tamper-after") <= 0 {
				return badInputf("--interval must be at least 100ms, --duration and --tamper-after positive")
			}
			sinks, err := webhookSinks(c)
			if err != nil {
				return err
			}
			opts := demo.Options{
				Webhooks:    asSinks(sinks),
				Hosts:       c.Int("hosts"),
				Interval:    c.Duration("interval"),
				TamperAfter: c.Duration("tamper-after"),
				Duration:    c.Duration("duration"),
				Dir:         c.String("dir"),
				Out:         c.App.Writer,
			}
			if c.Bool("json") {
				opts.Out = c.App.ErrWriter
			}
			sum, err := demo.Run(c.Context, opts)
			if c.Bool("json") {
				if perr := printJSON(c.App.Writer, sum); perr != nil {
					return perr
				}
			}
			return err
		},
	}
}
