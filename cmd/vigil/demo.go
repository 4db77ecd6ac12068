package main

import (
	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/demo"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run Vigil end to end on simulated hosts, on loopback, with nothing but Go",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "hosts", Value: 5, Usage: "number of simulated hosts"},
			&cli.StringFlag{Name: "dir", Usage: "keep the demo's stores and certificates in `DIR` (default: a temporary directory, removed afterwards)"},
			&cli.BoolFlag{Name: "json", Usage: "print a machine-readable summary at the end"},
		},
		Action: func(c *cli.Context) error {
			if c.Int("hosts") < 1 {
				return badInputf("--hosts must be at least 1")
			}
			opts := demo.Options{Hosts: c.Int("hosts"), Dir: c.String("dir"), Out: c.App.Writer}
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
