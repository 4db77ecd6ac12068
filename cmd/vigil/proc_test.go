package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/proctest"
)

// vigilBinary is the vigil binary the tests run services from: each
// service runs as a process of its own, as in production. (urfave/cli keeps
// its help flag in a package variable, so two command trees parsing flags
// concurrently in one process race; short commands run in-process, one at
// a time, and long-running services as processes.)
var vigilBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vigilBinary = filepath.Join(dir, "vigil")
	build := exec.Command("go", "build", "-o", vigilBinary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building vigil: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a vigil service running as a child process; it is stopped
// when the test ends (proctest).
type process struct {
	*proctest.Process
	t *testing.T
}

func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return &process{Process: proctest.Start(t, "vigil "+strings.Join(args, " "), vigilBinary, env, args...), t: t}
}

// waitOutput waits until the process's output holds every one of want,
// after the first `from` bytes, and returns the output.
func (p *process) waitOutput(from int, limit time.Duration, want ...string) string {
	p.t.Helper()
	return p.WaitOutput(p.t, from, limit, want...)
}
