package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/tlsutil"
)

func caCommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "the deployment's private CA",
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "create a CA, a server certificate and an admin client certificate in DIR",
			ArgsUsage: "DIR",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "san", Usage: "extra DNS name or IP `ADDR` for the server certificate (repeatable)"},
				&cli.DurationFlag{Name: "validity", Usage: "lifetime of the server and admin certificates (the CA lives twice as long)"},
				&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return badInputf("usage: vigil ca init DIR")
				}
				dir := c.Args().First()
				if err := tlsutil.InitDir(dir, tlsutil.InitOptions{SANs: c.StringSlice("san"), Validity: c.Duration("validity")}); err != nil {
					return badInput(err)
				}
				files := map[string]string{}
				for _, f := range []string{tlsutil.CACert, tlsutil.CAKey, tlsutil.ServerCert, tlsutil.ServerKey, tlsutil.AdminCert, tlsutil.AdminKey} {
					files[f] = filepath.Join(dir, f)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, map[string]any{"dir": dir, "files": files})
				}
				fmt.Fprintf(c.App.Writer, "created CA, server and admin certificates in %s\n", dir)
				return nil
			},
		}, {
			Name:  "renew",
			Usage: "issue new server and admin certificates from the CA in DIR (the CA is kept); running services pick them up on SIGHUP",
			Description: "Each certificate and key is written aside and renamed into place, so a service reading\n" +
				"the directory sees the old pair or the new one. With neither --server nor --admin, both are renewed.",
			ArgsUsage: "DIR",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "server", Usage: "renew the server certificate (server.crt, server.key)"},
				&cli.BoolFlag{Name: "admin", Usage: "renew the admin client certificate (admin.crt, admin.key)"},
				&cli.StringSliceFlag{Name: "san", Usage: "extra DNS name or IP `ADDR` for the server certificate (repeatable)"},
				&cli.DurationFlag{Name: "validity", Usage: "lifetime of the new certificates"},
				&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return badInputf("usage: vigil ca renew DIR [--server] [--admin]")
				}
				dir := c.Args().First()
				server, admin := c.Bool("server"), c.Bool("admin")
				if !server && !admin {
					server, admin = true, true
				}
				opts := tlsutil.InitOptions{SANs: c.StringSlice("san"), Validity: c.Duration("validity")}
				var renewed []string
				if server {
					if err := tlsutil.RenewServerCert(dir, opts); err != nil {
						return badInput(err)
					}
					renewed = append(renewed, filepath.Join(dir, tlsutil.ServerCert))
				}
				if admin {
					if err := tlsutil.RenewAdminCert(dir, opts); err != nil {
						return badInput(err)
					}
					renewed = append(renewed, filepath.Join(dir, tlsutil.AdminCert))
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, map[string]any{"dir": dir, "renewed": renewed})
				}
				for _, f := range renewed {
					fmt.Fprintf(c.App.Writer, "renewed %s\n", f)
				}
				return nil
			},
		}},
	}
}
