package verifier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Failure is a verdict against an agent.
type Failure struct {
	Reason Reason
	// Check names the check that failed (bad_signature, pcr_digest_mismatch,
	// ima_not_in_policy, ...), Detail says where (which file, which PCR).
	Check  string
	Detail string
}

func (f *Failure) Error() string {
	if f.Check != "" {
		return fmt.Sprintf("%s: %s: %s", f.Reason, f.Check, f.Detail)
	}
	return fmt.Sprintf("%s: %s", f.Reason, f.Detail)
}

// Fail builds a Failure.
func Fail(r Reason, check, format string, args ...any) *Failure {
	return &Failure{Reason: r, Check: check, Detail: fmt.Sprintf(format, args...)}
}

// BootVerifier checks a UEFI boot log: it must replay to the quoted PCRs
// and meet the named boot policy. Errors are *Failure.
type BootVerifier interface {
	VerifyBoot(log []byte, quoted evidence.PCRValues, policy string) error
}

// RuntimeVerifier checks new IMA entries incrementally: from the stored
// state, the entries (starting at entry number offset) must replay to the
// quoted PCR 10 and meet the named runtime policy. It returns the new state
// and the number of entries verified so far. Errors are *Failure.
type RuntimeVerifier interface {
	VerifyRuntime(state []byte, offset uint64, entries []byte, quoted evidence.PCRValues, policy string) (newState []byte, total uint64, err error)
}

// Engine decides on evidence. It does no I/O: everything it needs is in its
// input, and its output is the agent's next record.
type Engine struct {
	Boot    BootVerifier
	Runtime RuntimeVerifier
}

// Asked is what a challenge asked for, remembered by the verifier until
// the evidence comes back.
type Asked struct {
	Nonce       []byte
	Selection   tpm2.TPMLPCRSelection
	IMAOffset   uint64
	WantIMA     bool
	WantBootLog bool
}

// Outcome is the engine's decision.
type Outcome struct {
	// Agent is the record to store.
	Agent Agent
	// Failure is nil when the evidence was good.
	Failure *Failure
	// Refused is set when the evidence does not prove that it is the
	// agent's TPM answering this challenge (a nonce that is not the one
	// asked, a malformed quote, a signature by another key): such evidence
	// says nothing about the host, so it changes nothing. Agent is then
	// the record unchanged.
	Refused *Failure
	// Reboot is set when the quote shows a reboot the evidence did not
	// cover (no boot log, IMA not from entry 0): nothing failed, but the
	// next challenge must ask for everything.
	Reboot bool
}

// Bank is the PCR bank quotes use.
const Bank = tpm2.TPMAlgSHA256

// Selection is the PCR selection for an agent: PCRs 0-9 when a boot policy
// applies, PCR 10 when a runtime policy does, in the SHA-256 bank. An agent
// with neither is not admitted (deny by default), so it is never empty.
func Selection(a Agent) tpm2.TPMLPCRSelection {
	var pcrs []int
	if a.BootPolicy != "" {
		pcrs = append(pcrs, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	}
	if a.RuntimePolicy != "" {
		pcrs = append(pcrs, 10)
	}
	return evidence.Selection(pcrs, Bank)
}

// Check verifies evidence for agent a against what was asked.
func (e *Engine) Check(a Agent, ak *evidence.AK, asked Asked, ev wire.Evidence, now time.Time) Outcome {
	fail := func(f *Failure) Outcome {
		next := a
		next.State, next.Reason, next.Detail, next.FailedAt = StateFailed, f.Reason, f.Error(), now
		return Outcome{Agent: next, Failure: f}
	}
	refuse := func(f *Failure) Outcome { return Outcome{Agent: a, Refused: f} }
	if !bytes.Equal(ev.Nonce, asked.Nonce) {
		return refuse(Fail(ReasonInvalidEvidence, string(evidence.ReasonNonceMismatch), "evidence answers another challenge"))
	}
	q, err := evidence.ParseQuote(ev.Quote, ev.Signature)
	if err != nil {
		return refuse(quoteFailure(err))
	}
	pcrs := make(evidence.PCRValues, len(ev.PCRs))
	for bank, values := range ev.PCRs {
		pcrs[tpm2.TPMAlgID(bank)] = values
	}
	// VerifyQuote checks the signature and the nonce before the PCR values:
	// a failure of the first kind is a refusal, of the second a verdict on
	// evidence the agent's TPM signed.
	res, err := ak.VerifyQuote(q, evidence.Expect{Nonce: asked.Nonce, PCRs: pcrs})
	if err != nil {
		if unproven(evidence.ReasonOf(err)) {
			return refuse(quoteFailure(err))
		}
		return fail(quoteFailure(err))
	}
	if !sameSelection(res.Selection, asked.Selection) {
		return fail(Fail(ReasonInvalidEvidence, "pcr_selection_mismatch", "the quote covers other PCRs than the challenge asked for"))
	}

	next := a
	freshBoot := a.Clock == nil
	if a.Clock != nil {
		change, err := evidence.CheckClock(*a.Clock, res.Clock)
		if err != nil {
			return fail(quoteFailure(err))
		}
		if change.Reboot() {
			covered := (a.BootPolicy == "" || len(ev.BootLog) > 0) && (a.RuntimePolicy == "" || ev.IMAOffset == 0)
			if !covered {
				return Outcome{Agent: a, Reboot: true}
			}
			freshBoot = true
		}
	}
	if freshBoot {
		next.BootChecked = false
	}
	if freshBoot || asked.IMAOffset == 0 {
		// The IMA list is replayed from its first entry: after a reboot,
		// or when the agent restarted and no longer knows where it was.
		next.IMAEntries = 0
		next.IMAState = nil
	}

	if a.BootPolicy != "" && (len(ev.BootLog) > 0 || !next.BootChecked) {
		if len(ev.BootLog) == 0 {
			return fail(Fail(ReasonInvalidEvidence, "boot_log_missing", "a boot policy applies and no boot log of the current boot was verified"))
		}
		if e.Boot == nil {
			return fail(Fail(ReasonPolicyViolation, "boot_check_unavailable", "this verifier cannot check boot logs"))
		}
		if err := e.Boot.VerifyBoot(ev.BootLog, res.PCRs, a.BootPolicy); err != nil {
			return fail(asFailure(err))
		}
		next.BootChecked = true
	}

	if a.RuntimePolicy != "" {
		if ev.IMAOffset != asked.IMAOffset || ev.IMAOffset != next.IMAEntries {
			return fail(Fail(ReasonInvalidEvidence, "ima_offset_mismatch", "IMA entries start at %d, the challenge asked for %d", ev.IMAOffset, asked.IMAOffset))
		}
		if e.Runtime == nil {
			return fail(Fail(ReasonPolicyViolation, "runtime_check_unavailable", "this verifier cannot check IMA logs"))
		}
		state, total, err := e.Runtime.VerifyRuntime(next.IMAState, ev.IMAOffset, ev.IMA, res.PCRs, a.RuntimePolicy)
		if err != nil {
			return fail(asFailure(err))
		}
		next.IMAState, next.IMAEntries = state, total
	}

	clock := res.Clock
	next.Clock = &clock
	next.State, next.Reason, next.Detail = StateAttesting, "", ""
	next.LastAttestedAt = now
	next.Attestations++
	return Outcome{Agent: next}
}

// unproven tells the quote-check failures that leave open who made the
// quote: anyone can send those, so they say nothing about the host.
func unproven(r evidence.Reason) bool {
	switch r {
	case evidence.ReasonMalformedQuote, evidence.ReasonMalformedSignature, evidence.ReasonBadMagic,
		evidence.ReasonBadType, evidence.ReasonBadSignature, evidence.ReasonUnsupportedSignature,
		evidence.ReasonNonceMismatch:
		return true
	}
	return false
}

func quoteFailure(err error) *Failure {
	var f *evidence.Failure
	if errors.As(err, &f) {
		return &Failure{Reason: ReasonInvalidEvidence, Check: string(f.Reason), Detail: err.Error()}
	}
	return Fail(ReasonInvalidEvidence, "malformed_quote", "%v", err)
}

func asFailure(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return Fail(ReasonInvalidEvidence, "", "%v", err)
}

// sameSelection compares two selections field by field (marshalling them
// costs more than the rest of the quote check).
func sameSelection(a, b tpm2.TPMLPCRSelection) bool {
	if len(a.PCRSelections) != len(b.PCRSelections) {
		return false
	}
	for i := range a.PCRSelections {
		x, y := a.PCRSelections[i], b.PCRSelections[i]
		if x.Hash != y.Hash || !bytes.Equal(x.PCRSelect, y.PCRSelect) {
			return false
		}
	}
	return true
}

// marshalSelection encodes a TPML_PCR_SELECTION: count, then per bank the
// hash algorithm, sizeofSelect and the bitmap (TPM 2.0 Part 2, 10.9.7).
// By hand, because go-tpm's reflective Marshal showed in the verdict
// profile; a test pins it to tpm2.Marshal.
func marshalSelection(sel tpm2.TPMLPCRSelection) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(sel.PCRSelections)))
	for _, s := range sel.PCRSelections {
		out = binary.BigEndian.AppendUint16(out, uint16(s.Hash))
		out = append(out, byte(len(s.PCRSelect)))
		out = append(out, s.PCRSelect...)
	}
	return out
}
