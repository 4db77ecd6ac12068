package main

import (
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"time"

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
		}, caIssueAdminCommand(), caRevokeAdminCommand()},
	}
}

// caIssueAdminCommand is `vigil ca issue-admin NAME`: an admin client
// certificate of its own for one operator, whose name the services record
// behind the operator's actions.
func caIssueAdminCommand() *cli.Command {
	return &cli.Command{
		Name:  "issue-admin",
		Usage: "issue an admin client certificate for the operator NAME (its subject CN) from the CA in --tls-dir",
		Description: "Writes NAME.crt and NAME.key (mode 0600) into --out (default: --tls-dir), refusing to overwrite\n" +
			"either. The services record NAME as the operator behind the actions taken with the certificate.\n" +
			"NAME is 1 to 64 ASCII letters, digits, '.', '_', '-' and '@'. Revoke it with `vigil ca revoke-admin`.",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init` (ca.crt, ca.key)"},
			&cli.StringFlag{Name: "out", Usage: "`DIR` to write NAME.crt and NAME.key into (default: --tls-dir)"},
			&cli.DurationFlag{Name: "validity", Usage: "lifetime of the certificate (default: two years, never past the CA's)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return badInputf("usage: vigil ca issue-admin NAME --tls-dir DIR [--out DIR] [--validity D]")
			}
			name := c.Args().First()
			if err := tlsutil.CheckOperatorName(name); err != nil {
				return badInput(err)
			}
			if err := required(c, "tls-dir"); err != nil {
				return err
			}
			if c.Duration("validity") < 0 {
				return badInputf("--validity %s: must not be negative", c.Duration("validity"))
			}
			issued, err := tlsutil.IssueAdminCert(c.String("tls-dir"), c.String("out"), name, c.Duration("validity"))
			if err != nil {
				return badInput(err)
			}
			serial := tlsutil.SerialHex(issued.Cert)
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"name": name, "cert": issued.CertFile, "key": issued.KeyFile,
					"serial": serial, "not_after": issued.Cert.NotAfter.UTC()})
			}
			fmt.Fprintf(c.App.Writer, "issued an admin certificate for %s\ncert:      %s\nkey:       %s\nserial:    %s\nnot_after: %s\n",
				name, issued.CertFile, issued.KeyFile, serial, issued.Cert.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
}

// caRevokeAdminCommand is `vigil ca revoke-admin`: an admin client
// certificate onto the deployment's admin CRL.
func caRevokeAdminCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke-admin",
		Usage: "revoke an admin client certificate: the operator NAME's (NAME.crt) or the one of --serial",
		Description: "Adds the certificate's serial to DIR/admin.crl, signed by the CA in --tls-dir (the file is\n" +
			"created if need be; a serial already on it is not added again). Running registrars and\n" +
			"verifiers refuse the certificate on new connections after SIGHUP, and at their next start.",
		ArgsUsage: "NAME | --serial HEX",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` made by `vigil ca init` (ca.crt, ca.key; the list is admin.crl here)"},
			&cli.StringFlag{Name: "serial", Usage: "serial of the certificate to revoke, in `HEX` (as issue-admin prints it)"},
			&cli.StringFlag{Name: "out", Usage: "`DIR` where NAME.crt is (default: --tls-dir)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			const usage = "usage: vigil ca revoke-admin --tls-dir DIR (NAME | --serial HEX)"
			if c.NArg() > 1 || (c.NArg() == 1) == c.IsSet("serial") {
				return badInputf("%s: give either NAME or --serial", usage)
			}
			if err := required(c, "tls-dir"); err != nil {
				return err
			}
			dir, name := c.String("tls-dir"), c.Args().First()
			var serial *big.Int
			if name != "" {
				if err := tlsutil.CheckOperatorName(name); err != nil {
					return badInput(err)
				}
				certDir := c.String("out")
				if certDir == "" {
					certDir = dir
				}
				cert, err := tlsutil.ReadAdminCert(dir, filepath.Join(certDir, name+".crt"))
				if err != nil {
					return badInput(err)
				}
				serial = cert.SerialNumber
			} else {
				h := strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(c.String("serial"), ":", "")), "0x")
				var ok bool
				if serial, ok = new(big.Int).SetString(h, 16); !ok || serial.Sign() <= 0 {
					return badInputf("--serial %q: want a positive hexadecimal number", c.String("serial"))
				}
			}
			rev, err := tlsutil.RevokeAdminCert(dir, serial)
			if err != nil {
				return badInput(err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"crl": rev.File, "name": name, "serial": serial.Text(16),
					"already_revoked": rev.Already, "crl_number": rev.Number.String(), "revoked": rev.Entries})
			}
			who := "serial " + serial.Text(16)
			if name != "" {
				who = fmt.Sprintf("%s (serial %s)", name, serial.Text(16))
			}
			if rev.Already {
				fmt.Fprintf(c.App.Writer, "%s was already revoked in %s\n", who, rev.File)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "revoked %s in %s (CRL number %s, %d revoked); send SIGHUP to the running services\n",
				who, rev.File, rev.Number, rev.Entries)
			return nil
		},
	}
}
