package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
)

func verifierAdmin(c *cli.Context) (*verifier.AdminClient, error) {
	if err := required(c, "tls-dir", "verifier"); err != nil {
		return nil, err
	}
	cfg, err := tlsutil.AdminClientConfig(c.String("tls-dir"))
	if err != nil {
		return nil, badInputf("--tls-dir: %v", err)
	}
	return &verifier.AdminClient{
		BaseURL: c.String("verifier"),
		HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 2 * time.Minute},
	}, nil
}

// apiInputError makes the verifier's 4xx answers (bad policy, unknown
// agent, conflicts) exit 2: the operator asked for something invalid.
func apiInputError(err error) error {
	var api *verifier.APIError
	if errors.As(err, &api) && api.Status/100 == 4 {
		return badInput(err)
	}
	return err
}

func oneName(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", badInputf("usage: %s NAME", c.Command.FullName())
	}
	return c.Args().First(), nil
}

func tenantPolicyCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}
	return &cli.Command{
		Name:  "policy",
		Usage: "reference policies on the verifier",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a policy, or a new version of it",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "runtime", Usage: "runtime (IMA) policy `FILE`, Keylime format"},
					&cli.StringFlag{Name: "boot", Usage: "boot policy `FILE`"},
					jsonFlag,
				},
				Action: func(c *cli.Context) error {
					name, err := oneName(c)
					if err != nil {
						return err
					}
					kind, file := verifier.PolicyRuntime, c.String("runtime")
					if c.String("boot") != "" {
						if file != "" {
							return badInputf("give --runtime FILE or --boot FILE, not both")
						}
						kind, file = verifier.PolicyBoot, c.String("boot")
					}
					if file == "" {
						return badInputf("give --runtime FILE or --boot FILE")
					}
					body, err := os.ReadFile(file)
					if err != nil {
						return badInput(err)
					}
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					p, err := client.AddPolicy(c.Context, name, kind, body)
					if err != nil {
						return apiInputError(err)
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, p)
					}
					fmt.Fprintf(c.App.Writer, "%s policy %s version %d (sha256 %s)\n", p.Kind, p.Name, p.Version, p.SHA256)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list policies",
				Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					ps, err := client.ListPolicies(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, ps)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tSHA256\tCREATED")
					for _, p := range ps {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%.16s\t%s\n", p.Name, p.Kind, p.Version, p.SHA256, p.CreatedAt.Format(time.RFC3339))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "show",
				Usage:     "print a policy (its latest version)",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					name, err := oneName(c)
					if err != nil {
						return err
					}
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					p, err := client.GetPolicy(c.Context, name)
					if err != nil {
						return apiInputError(err)
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, p)
					}
					_, err = c.App.Writer.Write(p.Body)
					return err
				},
			},
			{
				Name:      "delete",
				Usage:     "delete a policy no agent uses",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					name, err := oneName(c)
					if err != nil {
						return err
					}
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					if err := client.DeletePolicy(c.Context, name); err != nil {
						return apiInputError(err)
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, map[string]any{"name": name, "deleted": true})
					}
					fmt.Fprintf(c.App.Writer, "deleted policy %s\n", name)
					return nil
				},
			},
		},
	}
}

func tenantAgentCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}
	printAgent := func(c *cli.Context, a verifier.AgentView) error {
		if c.Bool("json") {
			return printJSON(c.App.Writer, a)
		}
		fmt.Fprintf(c.App.Writer, "agent_id:         %s\nstate:            %s\n", a.ID, a.State)
		if a.Reason != "" {
			fmt.Fprintf(c.App.Writer, "reason:           %s\ndetail:           %s\nfailed_at:        %s\n", a.Reason, a.Detail, a.FailedAt.Format(time.RFC3339))
		}
		fmt.Fprintf(c.App.Writer, "attestations:     %d\nlast_attested_at: %s\nima_entries:      %d\nruntime_policy:   %s\nboot_policy:      %s\ninterval:         %s\n",
			a.Attestations, a.LastAttestedAt.Format(time.RFC3339), a.IMAEntries, a.RuntimePolicy, a.BootPolicy, a.Interval)
		for _, id := range a.Identities {
			fmt.Fprintf(c.App.Writer, "identity:         %s\n", id)
		}
		return nil
	}
	withID := func(name, usage string, do func(c *cli.Context, client *verifier.AdminClient, id string) error) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "ID",
			Flags:     []cli.Flag{jsonFlag},
			Action: func(c *cli.Context) error {
				id, err := oneID(c)
				if err != nil {
					return err
				}
				client, err := verifierAdmin(c)
				if err != nil {
					return err
				}
				return do(c, client, id)
			},
		}
	}
	return &cli.Command{
		Name:  "agent",
		Usage: "agents admitted to the verifier",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "admit an agent for continuous attestation",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "runtime-policy", Usage: "runtime policy `NAME`"},
					&cli.StringFlag{Name: "boot-policy", Usage: "boot policy `NAME`"},
					&cli.StringSliceFlag{Name: "identity", Usage: "workload identity `URI` to revoke on failure (repeatable)"},
					&cli.DurationFlag{Name: "interval", Usage: "attestation interval (default: the verifier's)"},
					jsonFlag,
				},
				Action: func(c *cli.Context) error {
					id, err := oneID(c)
					if err != nil {
						return err
					}
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					a, err := client.Admit(c.Context, verifier.AdmitRequest{
						AgentID:       id,
						RuntimePolicy: c.String("runtime-policy"),
						BootPolicy:    c.String("boot-policy"),
						Identities:    c.StringSlice("identity"),
						Interval:      c.Duration("interval"),
					})
					if err != nil {
						return apiInputError(err)
					}
					return printAgent(c, a)
				},
			},
			withID("status", "show an agent's attestation state", func(c *cli.Context, client *verifier.AdminClient, id string) error {
				a, err := client.Status(c.Context, id)
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}),
			{
				Name:  "list",
				Usage: "list admitted agents",
				Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					client, err := verifierAdmin(c)
					if err != nil {
						return err
					}
					as, err := client.List(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, as)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "AGENT\tSTATE\tREASON\tATTESTATIONS\tLAST ATTESTED")
					for _, a := range as {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", a.ID, a.State, a.Reason, a.Attestations, a.LastAttestedAt.Format(time.RFC3339))
					}
					return tw.Flush()
				},
			},
			withID("delete", "remove an agent from the verifier", func(c *cli.Context, client *verifier.AdminClient, id string) error {
				if err := client.Delete(c.Context, id); err != nil {
					return apiInputError(err)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, map[string]any{"agent_id": id, "state": "deleted"})
				}
				fmt.Fprintf(c.App.Writer, "deleted %s\n", id)
				return nil
			}),
			withID("readmit", "put a failed agent back into attestation", func(c *cli.Context, client *verifier.AdminClient, id string) error {
				a, err := client.Readmit(c.Context, id)
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}),
		},
	}
}
