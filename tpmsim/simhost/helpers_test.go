package simhost_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// backend is a real TPM implementation to run the simulated host on.
type backend struct {
	name string
	// open returns a freshly started TPM (PCRs at reset) for the test's
	// lifetime.
	open func(t testing.TB) simhost.TPM
}

// backends are swtpm (a process per test), go-tpm-tools' in-process
// simulator (one per process: the tests using it do not run in parallel),
// and Vigil's soft TPM, which must agree with both.
func backends() []backend {
	return []backend{
		{name: "swtpm", open: openSwtpm},
		{name: "simulator", open: openSimulator},
		{name: "soft", open: openSoft},
	}
}

func openSoft(t testing.TB) simhost.TPM {
	t.Helper()
	tpm, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	c := tpm.Conn()
	t.Cleanup(func() { c.Close() })
	return c
}

func openSwtpm(t testing.TB) simhost.TPM {
	t.Helper()
	s := tpmsimtest.NewTestSwtpm(t, "")
	conn, err := s.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tpm := agent.NewGoTPM(conn)
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func openSimulator(t testing.TB) simhost.TPM {
	t.Helper()
	sim, err := tpmsim.OpenSimulator()
	if err != nil {
		if strings.Contains(err.Error(), "cgo") {
			testenv.Missing(t, "in-process simulator: "+err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	tpm := agent.NewGoTPM(sim.Conn())
	t.Cleanup(func() { tpm.Close() })
	return tpm
}
