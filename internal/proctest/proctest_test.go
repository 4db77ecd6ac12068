package proctest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopEndsTheGroup starts a shell that starts a child of its own:
// Stop must leave neither behind.
func TestStopEndsTheGroup(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", nil, "-c", `sleep 300 & echo child $!; echo ready; wait`)
	out := p.WaitOutput(t, 0, 10*time.Second, "ready")
	var child int
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "child" {
			child, _ = strconv.Atoi(f[1])
		}
	}
	if child == 0 {
		t.Fatalf("no child pid in %q", out)
	}
	p.Stop()
	if !p.Exited() {
		t.Fatal("the process has not exited after Stop")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived Stop", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKillAndOutput(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", []string{"PROCTEST_WORD=hello"}, "-c", `echo "$PROCTEST_WORD"; exec sleep 300`)
	if out := p.WaitOutput(t, 0, 10*time.Second, "hello"); !strings.HasPrefix(out, "hello") {
		t.Fatalf("output %q", out)
	}
	if p.Exited() {
		t.Fatal("exited before Kill")
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc", 2); got != "b\nc" {
		t.Fatalf("Tail = %q", got)
	}
	if got := Tail("a", 5); got != "a" {
		t.Fatalf("Tail = %q", got)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
