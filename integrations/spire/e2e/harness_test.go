package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// spireVersion is the SPIRE release go.mod pins (a test checks they agree).
const spireVersion = "v1.13.3"

// moduleDir is integrations/spire, repoRoot the vigil repository.
func moduleDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func repoRoot(t *testing.T) string { return filepath.Join(moduleDir(t), "..", "..") }

// goBuild runs the go command in dir and fails the test with its output.
func goBuild(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

// binaries are the programs the test runs.
type binaries struct {
	vigil, vigilSPIRE, spireServer, spireAgent string
}

var (
	// binDir holds the binaries built for this run; TestMain removes it.
	binDir    string
	buildOnce sync.Once
	built     binaries
	buildErr  string
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "vigil-spire-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// buildAll builds vigil and vigil-spire into a temporary directory and
// installs spire-server and spire-agent into the user cache (once per
// machine and version; the Go build cache makes later runs cheap).
func buildAll(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		ok := t.Run("build", func(t *testing.T) {
			bin := binDir
			cache, err := os.UserCacheDir()
			if err != nil {
				t.Fatal(err)
			}
			spireBin := filepath.Join(cache, "vigil", "spire-"+spireVersion)
			goBuild(t, moduleDir(t), []string{"GOBIN=" + spireBin}, "install",
				"github.com/spiffe/spire/cmd/spire-server", "github.com/spiffe/spire/cmd/spire-agent")
			goBuild(t, repoRoot(t), nil, "build", "-o", filepath.Join(bin, "vigil"), "./cmd/vigil")
			goBuild(t, moduleDir(t), nil, "build", "-o", filepath.Join(bin, "vigil-spire"), "./cmd/vigil-spire")
			built = binaries{
				vigil:       filepath.Join(bin, "vigil"),
				vigilSPIRE:  filepath.Join(bin, "vigil-spire"),
				spireServer: filepath.Join(spireBin, "spire-server"),
				spireAgent:  filepath.Join(spireBin, "spire-agent"),
			}
		})
		if !ok {
			buildErr = "building the binaries failed"
		}
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return built
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// run runs a program to completion and returns its output, failing the
// test on a non-zero exit.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor polls ok every 100 ms until it holds, or fails the test after
// limit, naming what it waited for.
func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Now()
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGoModPinsSPIRE(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(moduleDir(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "github.com/spiffe/spire "+spireVersion) {
		t.Fatalf("go.mod does not pin github.com/spiffe/spire %s", spireVersion)
	}
}

// succeeds runs a program and reports whether it exited 0.
func succeeds(bin string, args ...string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, bin, args...).Run() == nil
}
