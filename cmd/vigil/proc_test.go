package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// process is a vigil service running as a child process.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(vigilBinary, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("vigil %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

// stop ends the process gracefully (SIGTERM), or kills it after 10s.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once, as a crash would.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}
