package simhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// PCRExtender extends PCRs. It is declared here, where it is used, so that
// tpmsim need not import the agent (which imports tpmsim); the agent's TPM
// has exactly this method.
type PCRExtender interface {
	PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error
}

// PCRReader reads PCRs, as the agent's TPM does.
type PCRReader interface {
	PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error)
}

// TPM is what a simulated boot needs: extend, and read back to check that
// the TPM started from reset and ends where the log replays to.
type TPM interface {
	PCRExtender
	PCRReader
}

// ErrPCRsExtended reports a TPM whose PCRs were extended since it last
// reset. A measured boot happens once per power cycle: a log written now
// could never replay to those PCRs. Restart the TPM first.
var ErrPCRsExtended = errors.New("PCRs already extended since the TPM started (a boot happens once per power cycle: restart the TPM)")

// ReadPCRs reads the given PCRs in every bank the simulated host uses.
func ReadPCRs(ctx context.Context, r PCRReader, pcrs ...int) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	bitmap := make([]byte, 3)
	for _, p := range pcrs {
		if p < 0 || p >= 24 {
			return nil, fmt.Errorf("simhost: PCR %d out of range", p)
		}
		bitmap[p/8] |= 1 << (p % 8)
	}
	var sel tpm2.TPMLPCRSelection
	for _, b := range banks {
		sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: b.Alg, PCRSelect: slices.Clone(bitmap)})
	}
	got, err := r.PCRRead(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("read PCRs %v: %w", pcrs, err)
	}
	for _, b := range banks {
		for _, p := range pcrs {
			if v := got[b.Alg][p]; len(v) != b.Hash.Size() {
				return nil, fmt.Errorf("read PCR %d: the TPM returned %d bytes for the %s bank, want %d (is the bank allocated?)", p, len(v), b.Name, b.Hash.Size())
			}
		}
	}
	return got, nil
}

// requireReset fails with ErrPCRsExtended unless every given PCR is at its
// reset value (all zero; the simulated platform starts TPM2_Startup from
// locality 0).
func requireReset(ctx context.Context, r PCRReader, pcrs ...int) error {
	got, err := ReadPCRs(ctx, r, pcrs...)
	if err != nil {
		return err
	}
	for _, b := range banks {
		for _, p := range pcrs {
			if v := got[b.Alg][p]; !bytes.Equal(v, make([]byte, len(v))) {
				return fmt.Errorf("PCR %d (%s bank) is %x: %w", p, b.Name, v, ErrPCRsExtended)
			}
		}
	}
	return nil
}

// extend is PCR ← H(PCR ‖ digest), what the TPM does.
func extend(b Bank, pcr, digest []byte) []byte {
	h := b.Hash.New()
	h.Write(pcr)
	h.Write(digest)
	return h.Sum(nil)
}
