package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestHoistFlags(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{
			[]string{"vigil", "tenant", "--tls-dir", "d", "registrar", "show", "ID", "--json"},
			[]string{"vigil", "tenant", "--tls-dir", "d", "registrar", "show", "--json", "ID"},
		},
		{
			[]string{"vigil", "ca", "init", "DIR", "--san", "h.example", "--json"},
			[]string{"vigil", "ca", "init", "--san", "h.example", "--json", "DIR"},
		},
		{
			[]string{"vigil", "ca", "init", "--san=x", "DIR"},
			[]string{"vigil", "ca", "init", "--san=x", "DIR"},
		},
		{
			[]string{"vigil", "ca", "init", "DIR", "--", "--json"},
			[]string{"vigil", "ca", "init", "DIR", "--", "--json"},
		},
		{[]string{"vigil"}, []string{"vigil"}},
	} {
		if got := hoistFlags(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("hoistFlags(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestRequiredFlagErrorsExitTwo(t *testing.T) {
	app := newApp()
	app.Commands = append(app.Commands, &cli.Command{
		Name:   "needs-x",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "x", Required: true}},
		Action: func(*cli.Context) error { return nil },
	})
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	if code := exitCode(app.Run([]string{"vigil", "needs-x"})); code != exitUsage {
		t.Fatalf("missing required flag: exit %d, want 2", code)
	}
}

// `vigil spire` passes its arguments to vigil-spire as they are.
func TestHoistFlagsLeavesPassThroughAlone(t *testing.T) {
	args := []string{"vigil", "spire", "bridge", "--listen", "127.0.0.1:1", "--trust-domain", "example.org"}
	if got := hoistFlags(newApp(), args); strings.Join(got, " ") != strings.Join(args, " ") {
		t.Fatalf("hoistFlags = %v", got)
	}
}

// Without vigil-spire installed, `vigil spire` says where to get it (exit 2).
func TestSpireWithoutTheIntegration(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, code := run(t, context.Background(), "spire", "bridge", "--help"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
}
