package main

import "github.com/urfave/cli/v2"

// policyCommand groups the offline policy tools. Runtime (IMA) policy
// generation lives with the IMA commands, boot policy generation with the
// event-log commands.
func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "create reference policies from known-good hosts",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "write a policy to standard output (or --out FILE)",
				Subcommands: []*cli.Command{
					policyCreateRuntimeCommand(),
					policyCreateBootCommand(),
					// policy kinds are registered here, one line each
				},
			},
		},
	}
}
