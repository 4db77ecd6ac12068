package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// DefaultTPM is the kernel's resource-managed TPM device.
const DefaultTPM = "/dev/tpmrm0"

// OpenerFromSpec turns a --tpm value into an Opener:
//
//	/dev/tpmrm0 (or any device path)  the host's TPM
//	swtpm:HOST:PORT                   swtpm's TCP command channel
//	sim                               the in-process simulator (cgo builds only)
//	soft:FILE                         a pure-Go soft TPM whose state is FILE
//	                                  (a simulation, created on first use)
//
// The returned close function releases what the opener holds between
// operations (the simulator); call it when the agent stops.
func OpenerFromSpec(spec string) (Opener, func() error, error) {
	noop := func() error { return nil }
	switch {
	case spec == "":
		return nil, nil, errors.New("--tpm: empty")
	case strings.HasPrefix(spec, "/"):
		// The device is opened once and kept: an agent that dropped its
		// privileges (Attester.Hold) could not open it again, and the
		// kernel's resource manager serves many holders at once.
		var mu sync.Mutex
		var held transport.TPMCloser
		return func(ctx context.Context) (TPM, error) {
				mu.Lock()
				defer mu.Unlock()
				if held == nil {
					t, err := linuxtpm.Open(spec)
					if err != nil {
						return nil, fmt.Errorf("open %s: %w", spec, err)
					}
					held = t
				}
				return NewGoTPM(keptOpen{held}), nil
			}, func() error {
				mu.Lock()
				defer mu.Unlock()
				if held == nil {
					return nil
				}
				return held.Close()
			}, nil
	case strings.HasPrefix(spec, "swtpm:"):
		addr := strings.TrimPrefix(spec, "swtpm:")
		if !strings.Contains(addr, ":") {
			return nil, nil, fmt.Errorf("--tpm %s: want swtpm:HOST:PORT", spec)
		}
		return func(ctx context.Context) (TPM, error) {
			t, err := tpmsim.DialSwtpm(ctx, addr)
			if err != nil {
				return nil, err
			}
			return NewGoTPM(t), nil
		}, noop, nil
	case strings.HasPrefix(spec, "soft:"):
		path := strings.TrimPrefix(spec, "soft:")
		if path == "" {
			return nil, nil, fmt.Errorf("--tpm %s: want soft:FILE", spec)
		}
		t, err := soft.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--tpm %s: %w", spec, err)
		}
		return func(ctx context.Context) (TPM, error) { return NewSoftTPM(t), nil }, noop, nil
	case spec == "sim":
		sim, err := tpmsim.OpenSimulator()
		if err != nil {
			return nil, nil, fmt.Errorf("--tpm sim: %w", err)
		}
		return func(ctx context.Context) (TPM, error) {
			return NewGoTPM(sim.Conn()), nil
		}, sim.Close, nil
	}
	return nil, nil, fmt.Errorf("--tpm %q: want a device path (e.g. %s), swtpm:HOST:PORT, sim or soft:FILE", spec, DefaultTPM)
}

// keptOpen is a device connection whose Close leaves it open for the next
// use; the opener's close function ends it.
type keptOpen struct{ transport.TPMCloser }

func (keptOpen) Close() error { return nil }
