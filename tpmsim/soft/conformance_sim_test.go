//go:build cgo

package soft_test

import (
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// simConn is a connection to the in-process simulator that leaves it
// running when closed.
type simConn struct{ sim *simulator.Simulator }

func (c simConn) Send(cmd []byte) ([]byte, error) { return transport.FromReadWriter(c.sim).Send(cmd) }
func (c simConn) Close() error                    { return nil }

// TestConformanceSimulator holds the soft TPM against the Microsoft
// reference TPM (go-tpm-tools' in-process simulator). The simulator is a
// process-wide singleton with three transient object slots: the agent code
// used here flushes everything it loads, and the test does not run in
// parallel.
func TestConformanceSimulator(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	defer sim.Close()
	conform(t, realTPM{
		name: "simulator",
		conn: func(*testing.T) transport.TPMCloser { return simConn{sim} },
		reboot: func(t *testing.T) {
			if err := sim.Reset(); err != nil {
				t.Fatal(err)
			}
		},
	})
}
