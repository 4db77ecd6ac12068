//go:build cgo

package tpmsim

import (
	"errors"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// Simulator is go-tpm-tools' in-process build of the Microsoft reference
// TPM. The library allows one per process and manufactures a fresh TPM (new
// seeds, new EK) every time it is opened, so one Simulator is opened for as
// long as the caller needs that TPM, and Conn hands out connections that
// leave it open when closed.
type Simulator struct {
	mu  sync.Mutex
	sim *simulator.Simulator
}

// OpenSimulator starts the in-process simulator. It blocks while another
// Simulator is open in this process.
func OpenSimulator() (*Simulator, error) {
	sim, err := simulator.Get()
	if err != nil {
		return nil, err
	}
	return &Simulator{sim: sim}, nil
}

// Conn returns a connection to the simulator. Closing it does not stop the
// simulator.
func (s *Simulator) Conn() transport.TPMCloser {
	return &simConn{s: s}
}

// Reset simulates a host reboot: PCRs return to their initial values and
// the TPM's resetCount moves on.
func (s *Simulator) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sim.Reset()
}

// Close stops the simulator, letting another be opened.
func (s *Simulator) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return nil
	}
	err := s.sim.Close()
	s.sim = nil
	return err
}

type simConn struct {
	s      *Simulator
	closed bool
}

func (c *simConn) Send(cmd []byte) ([]byte, error) {
	if c.closed {
		return nil, errors.New("simulator connection closed")
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.sim == nil {
		return nil, errors.New("simulator stopped")
	}
	return transport.FromReadWriter(c.s.sim).Send(cmd)
}

func (c *simConn) Close() error {
	c.closed = true
	return nil
}
