package main

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs `go list` with args from the module root and returns its
// lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.Fields(string(out))
}

// The vigil binary links no test code: test helpers live in packages only
// tests import (tpmsim/tpmsimtest, agent/agenttest, internal/testenv).
func TestBinaryLinksNoTestCode(t *testing.T) {
	for _, dep := range goList(t, "-deps", "./cmd/vigil") {
		if dep == "testing" || strings.HasSuffix(dep, "/internal/testenv") || strings.HasSuffix(dep, "/tpmsimtest") || strings.HasSuffix(dep, "/agenttest") {
			t.Errorf("the vigil binary links %s", dep)
		}
	}
}

// internal/ holds leaves: a package there imports none of the services.
// Applications that do (the demo, the bench) live under cmd/vigil/internal.
func TestInternalHoldsOnlyLeaves(t *testing.T) {
	const mod = "github.com/vigil-attest/vigil/"
	services := []string{mod + "agent", mod + "registrar", mod + "verifier"}
	for _, pkg := range goList(t, "./internal/...") {
		for _, dep := range goList(t, "-deps", pkg) {
			for _, s := range services {
				if dep == s || strings.HasPrefix(dep, s+"/") {
					t.Errorf("%s is a leaf but imports %s", pkg, dep)
				}
			}
		}
	}
}

// The verifier talks to the registrar through its API package only: it
// does not link the registrar's service and store.
func TestVerifierDoesNotLinkTheRegistrar(t *testing.T) {
	for _, dep := range goList(t, "-deps", "./verifier/...") {
		if dep == "github.com/vigil-attest/vigil/registrar" {
			t.Errorf("the verifier links %s", dep)
		}
	}
}
