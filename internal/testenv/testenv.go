package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Required reports whether tests must fail rather than skip when something
// they need is missing (VIGIL_REQUIRE_SWTPM=1, set by CI).
func Required() bool {
	return os.Getenv("VIGIL_REQUIRE_SWTPM") == "1"
}

// Missing skips the test, or fails it when Required, explaining what is
// missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	missingPart(t, "VIGIL_REQUIRE_SWTPM", what)
}

// RequirePostgres returns the directory of PostgreSQL's server programs
// (initdb, postgres), or skips the test, or fails it when
// VIGIL_REQUIRE_POSTGRES=1, which CI sets.
func RequirePostgres(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append([]string{filepath.Dir(real)}, dirs...)
		}
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "postgres")); err == nil && !st.IsDir() {
			return d
		}
	}
	missingPart(t, "VIGIL_REQUIRE_POSTGRES", "PostgreSQL's initdb and postgres not found; install Debian package postgresql (make test does this as root)")
	return ""
}

// missingPart skips the test for what is missing, or fails it when the
// environment variable env is 1 (CI sets it): there a skip would prove
// nothing.
func missingPart(t testing.TB, env, what string) {
	t.Helper()
	if os.Getenv(env) == "1" {
		t.Fatalf("%s (%s=1: tests may not skip)", what, env)
	}
	t.Skipf("skipping: %s", what)
}

// RequireSwtpm skips or fails the test when swtpm and swtpm_setup are not on
// PATH.
func RequireSwtpm(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			Missing(t, bin+" not found on PATH; install Debian packages swtpm and swtpm-tools (make test does this as root)")
		}
	}
}

// DataDir returns the shared real-world test data directory:
// $VIGIL_TESTDATA, else ../shared/testdata next to the repository root.
// It returns "" when neither exists.
func DataDir() string {
	if d := os.Getenv("VIGIL_TESTDATA"); d != "" {
		return d
	}
	root := RepoRoot()
	if root == "" {
		return ""
	}
	d := filepath.Join(root, "..", "shared", "testdata")
	if st, err := os.Stat(d); err == nil && st.IsDir() {
		return d
	}
	return ""
}

// Data returns the path of a file under the shared test data directory,
// skipping (or, in CI, failing) the test when it is absent.
func Data(t testing.TB, rel ...string) string {
	t.Helper()
	dir := DataDir()
	if dir == "" {
		Missing(t, "shared test data not found (set VIGIL_TESTDATA or place it at ../shared/testdata)")
	}
	p := filepath.Join(append([]string{dir}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "shared test data file missing: "+p)
	}
	return p
}

// RepoRoot returns the directory holding go.mod for this module, found from
// this source file's location, or "" if it cannot be found.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// RequireBrowser returns the path of a headless-capable Chromium, or skips
// the test, or fails it when VIGIL_REQUIRE_BROWSER=1, which CI sets.
func RequireBrowser(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	missingPart(t, "VIGIL_REQUIRE_BROWSER", "Chromium not found; install Debian package chromium (make test does this as root)")
	return ""
}
