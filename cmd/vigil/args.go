package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// hoistFlags reorders args so that the flags of the command being run come
// before its positional arguments: `vigil tenant registrar show ID --json`
// becomes `... show --json ID`. urfave/cli v2 stops reading flags at the
// first positional argument, and operators put flags at the end. Arguments
// after "--" are left alone.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmds, flags := app.Commands, app.Flags
	i := 1
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return args
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			if takesValue(flags, a) {
				i++
			}
			i++
			continue
		}
		if sub := findCommand(cmds, a); sub != nil {
			if sub.SkipFlagParsing {
				// Its arguments are another program's (vigil spire).
				return args
			}
			cmds, flags = sub.Subcommands, sub.Flags
			i++
			continue
		}
		break // first positional argument of the leaf command
	}
	if i >= len(args) {
		return args
	}
	out := append([]string(nil), args[:i]...)
	var positional []string
	rest := args[i:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			positional = append(positional, rest[j:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			out = append(out, a)
			if takesValue(flags, a) && j+1 < len(rest) {
				j++
				out = append(out, rest[j])
			}
			continue
		}
		positional = append(positional, a)
	}
	return append(out, positional...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag token needs the next argument as its
// value: it is a known non-boolean flag written without "=value".
func takesValue(flags []cli.Flag, token string) bool {
	name := strings.TrimLeft(token, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if df, ok := f.(cli.DocGenerationFlag); ok {
				return df.TakesValue()
			}
			return true
		}
	}
	return false
}
