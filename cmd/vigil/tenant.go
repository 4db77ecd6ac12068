package main

import (
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/registrar"
)

var validAgentID = tpmfacts.ValidAgentID

func tenantCommand() *cli.Command {
	flags, before := serviceFlags(
		&cli.StringFlag{Name: "tls-dir", Usage: "`DIR` holding ca.crt, admin.crt and admin.key"},
		&cli.StringFlag{Name: "registrar", Usage: "registrar `URL`"},
		&cli.StringFlag{Name: "verifier", Usage: "verifier `URL`"},
	)
	return &cli.Command{
		Name:   "tenant",
		Usage:  "operator commands against the registrar and verifier admin APIs",
		Flags:  flags,
		Before: before,
		Subcommands: []*cli.Command{tenantPolicyCommand(), tenantAgentCommand(), {
			Name:  "registrar",
			Usage: "registered agents",
			Subcommands: []*cli.Command{
				tenantCmd("list", "list registered agents", "", registrarAdmin, func(c *cli.Context, client *registrar.AdminClient, _ string) error {
					views, err := client.List(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, views)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "AGENT\tACTIVE\tAK\tEK TRUST\tREGISTERED")
					for _, v := range views {
						fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", v.AgentID, v.Active, v.AKAlg, v.EKTrust, v.RegisteredAt.Format(time.RFC3339))
					}
					return tw.Flush()
				}),
				tenantCmd("show", "show one registered agent", "ID", registrarAdmin, func(c *cli.Context, client *registrar.AdminClient, id string) error {
					v, err := client.Get(c.Context, id)
					if err != nil {
						return apiInputError(err)
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, v)
					}
					fmt.Fprintf(c.App.Writer, "agent_id:              %s\nactive:                %v\nek_sha256:             %s\nek_trust:              %s\nak_alg:                %s\nak_name:               %s\nregistered_at:         %s\nenrollments:           %d\npending_registrations: %d\n",
						v.AgentID, v.Active, v.EKSHA256, v.EKTrust, v.AKAlg, v.AKName, v.RegisteredAt.Format(time.RFC3339), v.Enrollments, v.PendingRegistrations)
					return nil
				}),
				tenantCmd("delete", "delete an agent's registration (it must enroll again)", "ID", registrarAdmin, func(c *cli.Context, client *registrar.AdminClient, id string) error {
					if err := client.Delete(c.Context, id); err != nil {
						return apiInputError(err)
					}
					return printDone(c, map[string]any{"agent_id": id, "deleted": true}, "deleted %s", id)
				}),
			},
		}},
	}
}

// tenantCmd is a tenant subcommand over an admin client: it checks its one
// argument (argsUsage "ID": an agent ID, "NAME": a policy name, "": none),
// connects, and runs do. Every such command takes --json, and flags more.
func tenantCmd[C any](name, usage, argsUsage string, connect func(*cli.Context) (C, error), do func(c *cli.Context, client C, arg string) error, flags ...cli.Flag) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: argsUsage,
		Flags:     append(flags, &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}),
		Action: func(c *cli.Context) error {
			var arg string
			var err error
			switch argsUsage {
			case "ID":
				arg, err = oneID(c)
			case "NAME":
				arg, err = oneName(c)
			}
			if err != nil {
				return err
			}
			client, err := connect(c)
			if err != nil {
				return err
			}
			return do(c, client, arg)
		},
	}
}

// printDone reports an action that returns nothing: v with --json, else
// the line format.
func printDone(c *cli.Context, v any, format string, args ...any) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	_, err := fmt.Fprintf(c.App.Writer, format+"\n", args...)
	return err
}

func oneName(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", badInputf("usage: %s NAME", c.Command.FullName())
	}
	return c.Args().First(), nil
}

func oneID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", badInputf("usage: %s ID", c.Command.FullName())
	}
	id := c.Args().First()
	if !validAgentID(id) {
		return "", badInputf("%q is not a valid agent ID", id)
	}
	return id, nil
}

// apiInputError makes an admin API's refusals of the request (4xx: an
// unknown agent, a bad policy, a conflict) exit 2: the operator asked for
// something invalid. The server's own trouble stays an error.
func apiInputError(err error) error {
	if apierr.ClientError(err) {
		return badInput(err)
	}
	return err
}

func registrarAdmin(c *cli.Context) (*registrar.AdminClient, error) {
	if err := required(c, "tls-dir", "registrar"); err != nil {
		return nil, err
	}
	cfg, err := tlsutil.AdminClientConfig(c.String("tls-dir"))
	if err != nil {
		return nil, badInputf("--tls-dir: %v", err)
	}
	return &registrar.AdminClient{
		BaseURL: c.String("registrar"),
		HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}},
	}, nil
}
