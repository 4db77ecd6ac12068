package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	out  lockedBuffer
	done chan struct{}
}

// lockedBuffer is the process's output, readable while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitOutput waits until the process's output holds every one of want,
// after the first `from` bytes, and returns the output.
func (p *process) waitOutput(from int, limit time.Duration, want ...string) string {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out := p.out.String()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(out[from:], w)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("process output has not %q within %s:\n%s", want, limit, out[from:])
		}
		time.Sleep(50 * time.Millisecond)
	}
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
