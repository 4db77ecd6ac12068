package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp()
	err := app.RunContext(ctx, hoistFlags(app, os.Args))
	stop()
	if err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "vigil:", msg)
		}
		os.Exit(exitCode(err))
	}
}

// newApp builds the command tree. Each command lives in its own file; this
// list is the only place that names them all.
func newApp() *cli.App {
	app := &cli.App{
		Name:                 "vigil",
		Usage:                "TPM 2.0 remote attestation for Linux fleets",
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			caCommand(),
			registrarCommand(),
			verifierCommand(),
			agentCommand(),
			tenantCommand(),
			policyCommand(),
			demoCommand(),
			imaCommand(),
			quoteCommand(),
			eventlogCommand(),
			simCommand(),
			benchCommand(),
			spireCommand(),
			dashboardCommand(),
			// commands are registered here, one line each
		},
		OnUsageError: onUsageError,
	}
	setUsageErrors(app.Commands)
	return app
}

// onUsageError turns flag-parsing errors into exit code 2.
func onUsageError(_ *cli.Context, err error, _ bool) error {
	return badInput(err)
}

// setUsageErrors makes every command report flag errors as bad input.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
		setUsageErrors(c.Subcommands)
	}
}
