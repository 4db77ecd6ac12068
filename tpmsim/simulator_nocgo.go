//go:build !cgo

package tpmsim

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// Simulator is unavailable in binaries built without cgo.
type Simulator struct{}

// OpenSimulator reports that this binary has no simulator.
func OpenSimulator() (*Simulator, error) {
	return nil, errors.New("the in-process TPM simulator needs a binary built with cgo (CGO_ENABLED=1 and libssl-dev); use --tpm swtpm:HOST:PORT or a soft TPM")
}

// Conn is never reached: OpenSimulator fails.
func (s *Simulator) Conn() transport.TPMCloser { return nil }

// Reset is never reached: OpenSimulator fails.
func (s *Simulator) Reset() error { return errors.New("no simulator") }

// Close is never reached: OpenSimulator fails.
func (s *Simulator) Close() error { return nil }
