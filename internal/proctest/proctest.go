package proctest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a stopped process has to exit after SIGTERM before
// its group is killed.
const stopGrace = 10 * time.Second

// Process is a program a test started.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  buffer
	done chan struct{}
}

// buffer is a process's output, readable while it runs.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs bin with args, with env added to this process's environment,
// and its standard output and error captured. name labels its output in
// the test's log.
func Start(t testing.TB, name, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, Tail(p.out.String(), 80))
		}
	})
	return p
}

// Pid is the process's ID (and its group's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process alone.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process's group and waits for the process,
// killing the group after 10 s; whatever is left of the group is killed
// then too.
func (p *Process) Stop() {
	pgid := p.cmd.Process.Pid
	if !p.Exited() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// Kill ends the process's group at once, as a crash would.
func (p *Process) Kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// WaitOutput waits until the process's output after its first from bytes
// holds every one of want, and returns the whole output; it fails t after
// limit.
func (p *Process) WaitOutput(t testing.TB, from int, limit time.Duration, want ...string) string {
	t.Helper()
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
			t.Fatalf("%s's output has not %q within %s:\n%s", p.name, want, limit, out[from:])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Tail is the last lines of s.
func Tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
