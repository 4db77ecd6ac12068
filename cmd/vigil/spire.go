package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// spireProgram is the SPIRE integration's binary, built from
// integrations/spire, a module of its own so that SPIRE's dependencies stay
// out of vigil.
const spireProgram = "vigil-spire"

// spireCommand runs vigil-spire, found beside the vigil binary or in PATH,
// so `vigil spire bridge …` works wherever the integration is installed.
func spireCommand() *cli.Command {
	return &cli.Command{
		Name:      "spire",
		Usage:     "the SPIRE integration: `vigil spire bridge` (revocations → SPIRE bans) and the vigil NodeAttestor plugins; runs " + spireProgram,
		ArgsUsage: "bridge|nodeattestor [ARGS…]",
		// Everything after `spire` is vigil-spire's to parse.
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			bin, err := findSpireProgram()
			if err != nil {
				return badInput(err)
			}
			cmd := exec.CommandContext(c.Context, bin, c.Args().Slice()...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.App.Writer, c.App.ErrWriter
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			cmd.WaitDelay = 10 * time.Second
			err = cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &exitError{code: ee.ExitCode(), err: errors.New("")}
			}
			return err
		},
	}
}

func findSpireProgram() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), spireProgram)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(spireProgram)
	if err != nil {
		return "", fmt.Errorf("%s is not installed beside vigil or in PATH: build it from integrations/spire (go build ./cmd/%s there)", spireProgram, spireProgram)
	}
	return p, nil
}
