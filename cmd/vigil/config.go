package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// serviceFlags gives a service's flags their other two sources: a
// VIGIL_<FLAG> environment variable (e.g. --tls-dir from VIGIL_TLS_DIR) and
// a YAML file named by --config whose keys are the flag names. A flag on the
// command line wins over the environment, which wins over the file.
func serviceFlags(flags ...cli.Flag) ([]cli.Flag, cli.BeforeFunc) {
	out := []cli.Flag{&cli.StringFlag{
		Name:    "config",
		Usage:   "YAML `FILE` of flag values (keys are the flag names)",
		EnvVars: []string{"VIGIL_CONFIG"},
	}}
	for _, f := range flags {
		out = append(out, withSources(f))
	}
	out = append(out, logFlags()...)
	before := altsrc.InitInputSourceWithContext(out, altsrc.NewYamlSourceFromFlagFunc("config"))
	return out, func(c *cli.Context) error {
		if err := before(c); err != nil {
			return badInputf("--config %s: %v", c.String("config"), err)
		}
		return nil
	}
}

func envName(flag string) string {
	return "VIGIL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func withSources(f cli.Flag) cli.Flag {
	switch f := f.(type) {
	case *cli.StringFlag:
		if f.EnvVars == nil {
			f.EnvVars = []string{envName(f.Name)}
		}
		return altsrc.NewStringFlag(f)
	case *cli.StringSliceFlag:
		if f.EnvVars == nil {
			f.EnvVars = []string{envName(f.Name)}
		}
		return altsrc.NewStringSliceFlag(f)
	case *cli.DurationFlag:
		if f.EnvVars == nil {
			f.EnvVars = []string{envName(f.Name)}
		}
		return altsrc.NewDurationFlag(f)
	case *cli.BoolFlag:
		if f.EnvVars == nil {
			f.EnvVars = []string{envName(f.Name)}
		}
		return altsrc.NewBoolFlag(f)
	case *cli.IntFlag:
		if f.EnvVars == nil {
			f.EnvVars = []string{envName(f.Name)}
		}
		return altsrc.NewIntFlag(f)
	}
	panic(fmt.Sprintf("serviceFlags: unsupported flag type %T", f))
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{
			Name:    "log-level",
			Value:   "info",
			Usage:   "debug, info, warn or error",
			EnvVars: []string{"VIGIL_LOG_LEVEL"},
		}),
		altsrc.NewStringFlag(&cli.StringFlag{
			Name:    "log-format",
			Value:   "json",
			Usage:   "json or text",
			EnvVars: []string{"VIGIL_LOG_FORMAT"},
		}),
	}
}

// newLogger builds the service logger from --log-level and --log-format.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, badInputf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, badInputf("--log-format %q: want json or text", c.String("log-format"))
}

// stderr is where service logs go; a variable of the command, not the
// package, so tests can capture it.
func stderr(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return os.Stderr
}

// required returns badInput errors for flags that must be set.
func required(c *cli.Context, names ...string) error {
	var missing []string
	for _, n := range names {
		if c.String(n) == "" {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return badInputf("missing required flag(s) %s", strings.Join(missing, ", "))
	}
	return nil
}
