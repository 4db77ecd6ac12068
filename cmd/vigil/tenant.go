package main

import (
	"errors"
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
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
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}
	return &cli.Command{
		Name:   "tenant",
		Usage:  "operator commands against the registrar and verifier admin APIs",
		Flags:  flags,
		Before: before,
		Subcommands: []*cli.Command{tenantPolicyCommand(), tenantAgentCommand(), {
			Name:  "registrar",
			Usage: "registered agents",
			Subcommands: []*cli.Command{
				{
					Name:  "list",
					Usage: "list registered agents",
					Flags: []cli.Flag{jsonFlag},
					Action: func(c *cli.Context) error {
						client, err := registrarAdmin(c)
						if err != nil {
							return err
						}
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
							fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", v.AgentID, v.Active, v.AKAlg, v.EKTrust, v.RegisteredAt.Format("2006-01-02T15:04:05Z07:00"))
						}
						return tw.Flush()
					},
				},
				{
					Name:      "show",
					Usage:     "show one registered agent",
					ArgsUsage: "ID",
					Flags:     []cli.Flag{jsonFlag},
					Action: func(c *cli.Context) error {
						id, err := oneID(c)
						if err != nil {
							return err
						}
						client, err := registrarAdmin(c)
						if err != nil {
							return err
						}
						v, err := client.Get(c.Context, id)
						if err != nil {
							return notFoundIsBadInput(err)
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, v)
						}
						fmt.Fprintf(c.App.Writer, "agent_id:              %s\nactive:                %v\nek_sha256:             %s\nek_trust:              %s\nak_alg:                %s\nak_name:               %s\nregistered_at:         %s\nenrollments:           %d\npending_registrations: %d\n",
							v.AgentID, v.Active, v.EKSHA256, v.EKTrust, v.AKAlg, v.AKName, v.RegisteredAt.Format("2006-01-02T15:04:05Z07:00"), v.Enrollments, v.PendingRegistrations)
						return nil
					},
				},
				{
					Name:      "delete",
					Usage:     "delete an agent's registration (it must enroll again)",
					ArgsUsage: "ID",
					Flags:     []cli.Flag{jsonFlag},
					Action: func(c *cli.Context) error {
						id, err := oneID(c)
						if err != nil {
							return err
						}
						client, err := registrarAdmin(c)
						if err != nil {
							return err
						}
						if err := client.Delete(c.Context, id); err != nil {
							return notFoundIsBadInput(err)
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, map[string]any{"agent_id": id, "deleted": true})
						}
						fmt.Fprintf(c.App.Writer, "deleted %s\n", id)
						return nil
					},
				},
			},
		}},
	}
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

// notFoundIsBadInput makes an unknown agent ID an exit-2 error: the
// operator named something that does not exist.
func notFoundIsBadInput(err error) error {
	if errors.Is(err, registrar.ErrNotFound) {
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
