package tpmsimtest

import (
	"context"
	"testing"

	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim"
)

// NewTestSwtpm starts an swtpm for the test and stops it when the test ends,
// whether it passes or not. Without swtpm installed the test is skipped, or
// fails when VIGIL_REQUIRE_SWTPM=1. caDir may be "" for a CA of its own, or a
// directory shared by several instances so their EK certificates chain to
// one root.
func NewTestSwtpm(t testing.TB, caDir string) *tpmsim.Swtpm {
	t.Helper()
	testenv.RequireSwtpm(t)
	s, err := tpmsim.StartSwtpm(context.Background(), tpmsim.SwtpmConfig{Dir: t.TempDir(), CADir: caDir})
	if err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("swtpm log:%s", s.Log())
		}
		_ = s.Stop()
	})
	return s
}
