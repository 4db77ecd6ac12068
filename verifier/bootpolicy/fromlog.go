package bootpolicy

import (
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// mokPCR is where shim measures its MOK state.
const mokPCR = 14

// LogOptions tune FromLog.
type LogOptions struct {
	// Bank is the PCR bank of the policy's digests; zero picks sha256 when
	// the log has it, else its strongest bank.
	Bank tpm2.TPMAlgID
	// PCRs, when set, are the host's PCR values, which the log must replay
	// to first. Without them the log is taken at its word: it is the
	// known-good host's.
	PCRs evidence.PCRValues
}

// FromLog makes the policy a known-good host's UEFI event log (raw or
// base64) implies: the log is verified as the verifier verifies one, its
// boot state extracted in the policy's bank and turned into a policy by
// FromState. It is the only way Vigil makes a boot policy from a log.
//
// Without opts.PCRs the log is replayed against itself over PCRs 0-9, the
// PCRs the verifier quotes for a boot policy, and PCR 14 when the log has
// shim's MOK measurements there, so the state is extracted from the very
// events the verifier will judge. The policy then checks the MOK state
// (mok, mokx), which needs PCR 14 in the quote; a log without PCR 14
// events gives a policy that skips those checks, and so does a
// known-good host's log given with opts.PCRs that lack PCR 14.
//
// An error that is an *evidence.Failure says the log does not hold
// together (it does not replay to opts.PCRs, or no boot state can be had
// from it); any other error is unusable input.
func FromLog(log []byte, opts LogOptions) (*Policy, error) {
	l, err := bootlog.Parse(log)
	if err != nil {
		return nil, err
	}
	bank := opts.Bank
	switch {
	case bank == 0 && l.HasBank(tpm2.TPMAlgSHA256):
		bank = tpm2.TPMAlgSHA256
	case bank == 0:
		bank = l.Banks[0]
	case !l.HasBank(bank):
		return nil, fmt.Errorf("the log has no %s digests", evidence.BankName(bank))
	}
	pcrs := opts.PCRs
	if pcrs == nil {
		if pcrs, err = LogPCRs(l, bank); err != nil {
			return nil, err
		}
	}
	v, err := l.Verify(pcrs)
	if err != nil {
		return nil, err
	}
	st, err := v.State(bank)
	if err != nil {
		if evidence.ReasonOf(err) == "" {
			err = evidence.Fail(ReasonStateMissing, "%v", err)
		}
		return nil, err
	}
	return FromState(st), nil
}

// LogPCRs are the values a log replays to in one bank over the PCRs the
// verifier quotes for a boot policy: PCRs 0-9, and PCR 14 when the log has
// shim's MOK measurements there. They are what a TPM that measured exactly
// this log would quote: the log taken at its word, for a known-good host.
func LogPCRs(l *bootlog.Log, bank tpm2.TPMAlgID) (evidence.PCRValues, error) {
	replayed, err := l.Replay(bank)
	if err != nil {
		return nil, err
	}
	h, _ := evidence.HashOf(bank)
	pcrs := evidence.PCRValues{}
	self := bootlog.BootPCRs
	if _, ok := replayed[mokPCR]; ok {
		self = append(slices.Clone(self), mokPCR)
	}
	for _, i := range self {
		v, ok := replayed[i]
		if !ok {
			v = make([]byte, h.Size())
		}
		pcrs.Set(bank, i, v)
	}
	return pcrs, nil
}
