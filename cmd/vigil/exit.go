package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Exit codes are part of the CLI contract that scripts rely on.
const (
	exitOK      = 0
	exitFailure = 1 // verification or policy failure
	exitUsage   = 2 // bad input or usage
)

// exitError carries the exit code an error should end the process with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// badInput marks err as bad input or usage (exit 2).
func badInput(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitUsage, err: err}
}

// badInputf is badInput with formatting.
func badInputf(format string, args ...any) error {
	return badInput(fmt.Errorf(format, args...))
}

// failed marks err as a verification or policy failure (exit 1).
func failed(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitFailure, err: err}
}

// silentFailure is returned when the command already printed its failure
// report (for example as JSON) and only the exit code is left to set.
var silentFailure = &exitError{code: exitFailure, err: errors.New("")}

// exitCode maps an error returned by a command to the process exit code.
// Errors that no command classified are runtime failures (a server that
// cannot be reached, a TPM that refuses a command): exit 1.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	// urfave/cli reports flags declared Required through an unexported
	// type that bypasses OnUsageError; it is a usage error all the same.
	if fmt.Sprintf("%T", err) == "*cli.errRequiredFlags" {
		return exitUsage
	}
	return exitFailure
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
