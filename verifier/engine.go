package verifier

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
	"github.com/vigil-attest/vigil/verifier/revocation"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// Failure is a verdict against an agent. It is the verdict pipeline's, so
// a failure reads the same online and in `vigil quote verify`.
type Failure = verdict.Failure

// Fail builds a Failure.
func Fail(r Reason, check, format string, args ...any) *Failure {
	return verdict.Fail(r, check, format, args...)
}

// Engine decides on evidence. It does no I/O: everything it needs is in its
// input — the agent's record, its AK, the challenge, the evidence, the
// compiled policies and the time — and its output is the agent's next
// record. The checks themselves are package verdict's.
type Engine struct{}

// Policies are the compiled policies an agent's evidence is held to, which
// the service resolves from the names in its record before the check.
type Policies struct {
	Boot    *bootpolicy.Policy
	Runtime *ima.Policy
	PCR     *pcrpolicy.Policy
	// BootErr, RuntimeErr and PCRErr say why a named policy could not be
	// had (not stored, or not compiling). Only a check that needs the
	// policy fails for it, and only after the quote proved where the
	// evidence came from, so they are inputs rather than the service's
	// early return.
	BootErr, RuntimeErr, PCRErr error
	// BootVersion, RuntimeVersion and PCRVersion are the stored versions
	// compiled, which the agent's history names.
	BootVersion, RuntimeVersion, PCRVersion int
}

// imaMaxFailures caps the IMA failures a verdict collects: the first names
// the verdict, the rest are only counted.
const imaMaxFailures = 5

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
	// Events are the events the transition raises (a failure's revocation).
	Events []revocation.Event
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

// Bank is the PCR bank the boot and runtime policies' PCRs are quoted in.
const Bank = tpm2.TPMAlgSHA256

// Selection is the PCR selection for an agent, in the SHA-256 bank: PCRs
// 0-9 when a boot or a runtime policy applies (the runtime policy's
// boot_aggregate is checked against them), PCR 14 with a boot policy,
// PCR 10 with a runtime policy; and
// every PCR of its PCR policy pcr (nil when it has none, or it could not
// be had) in each bank that names it. Banks are listed in the order of
// pcrpolicy.Banks (sha1, sha256, sha384, sha512), each with a 3-byte
// bitmap; a bank with no PCR is left out. It is empty only for an agent
// whose one policy is a PCR policy that could not be had, whose evidence
// then fails for it.
func Selection(a Agent, pcr *pcrpolicy.Policy) tpm2.TPMLPCRSelection {
	var bitmaps [4][3]byte
	set := func(bank tpm2.TPMAlgID, i int) {
		for b, alg := range pcrpolicy.Banks {
			if alg == bank && i >= 0 && i <= evidence.MaxPCR {
				bitmaps[b][i/8] |= 1 << (i % 8)
			}
		}
	}
	// PCRs 0-9 for a boot policy, and for a runtime policy too: IMA's
	// boot_aggregate (entry 0) is checked against them when the runtime
	// policy does not list it, so a policy made from a rootfs alone works.
	if a.BootPolicy != "" || a.RuntimePolicy != "" {
		for i := range 10 {
			set(Bank, i)
		}
	}
	// PCR 14: shim's MokList and MokListX, which a boot policy checks.
	if a.BootPolicy != "" {
		set(Bank, 14)
	}
	if a.RuntimePolicy != "" {
		set(Bank, 10)
	}
	if pcr != nil {
		for _, bank := range pcr.Banks() {
			for _, i := range pcr.PCRs(bank) {
				set(bank, i)
			}
		}
	}
	var sel tpm2.TPMLPCRSelection
	for b, alg := range pcrpolicy.Banks {
		if bitmaps[b] != [3]byte{} {
			sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: alg, PCRSelect: bitmaps[b][:]})
		}
	}
	return sel
}

// Check verifies evidence for agent a against what was asked, holding it
// to the compiled policies pol.
func (e *Engine) Check(a Agent, ak *evidence.AK, asked Asked, ev wire.Evidence, pol Policies, now time.Time) Outcome {
	fail := func(f *Failure) Outcome {
		next, events := a.failed(f, now)
		return Outcome{Agent: next, Failure: f, Events: events}
	}
	refuse := func(f *Failure) Outcome { return Outcome{Agent: a, Refused: f} }
	if !bytes.Equal(ev.Nonce, asked.Nonce) {
		return refuse(Fail(ReasonInvalidEvidence, string(evidence.ReasonNonceMismatch), "evidence answers another challenge"))
	}
	q, f := verdict.ParseQuote(ev.Quote, ev.Signature)
	if f != nil {
		return refuse(f)
	}
	pcrs := make(evidence.PCRValues, len(ev.PCRs))
	for bank, values := range ev.PCRs {
		pcrs[tpm2.TPMAlgID(bank)] = values
	}
	// The quote check verifies the signature and the nonce before the PCR
	// values: a failure of the first kind is a refusal, of the second a
	// verdict on evidence the agent's TPM signed.
	res, f := verdict.Quote(ak, q, evidence.Expect{Nonce: asked.Nonce, PCRs: pcrs})
	if f != nil {
		if verdict.Unproven(f) {
			return refuse(f)
		}
		return fail(f)
	}
	if !sameSelection(res.Selection, asked.Selection) {
		return fail(Fail(ReasonInvalidEvidence, "pcr_selection_mismatch", "the quote covers other PCRs than the challenge asked for: %s", selectionDiff(asked.Selection, res.Selection)))
	}

	next := a
	freshBoot := a.Clock == nil
	if a.Clock != nil {
		change, f := verdict.Clock(*a.Clock, res.Clock)
		if f != nil {
			return fail(f)
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

	if a.PCRPolicy != "" {
		if pol.PCR == nil {
			return fail(unavailable("pcr", a.PCRPolicy, pol.PCRErr))
		}
		if f := verdict.PCRs(res.PCRs, pol.PCR); f != nil {
			return fail(f)
		}
	}

	if a.BootPolicy != "" && (len(ev.BootLog) > 0 || !next.BootChecked) {
		if len(ev.BootLog) == 0 {
			return fail(Fail(ReasonInvalidEvidence, "boot_log_missing", "a boot policy applies and no boot log of the current boot was verified"))
		}
		if pol.Boot == nil {
			return fail(unavailable("boot", a.BootPolicy, pol.BootErr))
		}
		if _, f := verdict.Boot(ev.BootLog, res.PCRs, pol.Boot); f != nil {
			return fail(f)
		}
		next.BootChecked = true
	}

	if a.RuntimePolicy != "" {
		if ev.IMAOffset != asked.IMAOffset || ev.IMAOffset != next.IMAEntries {
			return fail(Fail(ReasonInvalidEvidence, "ima_offset_mismatch", "IMA entries start at %d, the challenge asked for %d", ev.IMAOffset, asked.IMAOffset))
		}
		if pol.Runtime == nil {
			return fail(unavailable("runtime", a.RuntimePolicy, pol.RuntimeErr))
		}
		var st ima.State
		if len(next.IMAState) > 0 {
			var err error
			if err = st.UnmarshalBinary(next.IMAState); err != nil {
				return fail(Fail(ReasonInvalidEvidence, "", "stored IMA state: %v", err))
			}
		}
		r, f := verdict.Runtime(st, ev.IMAOffset, ev.IMA, res.PCRs, pol.Runtime, imaMaxFailures)
		if f != nil {
			return fail(f)
		}
		state, err := r.State.MarshalBinary()
		if err != nil {
			return fail(Fail(ReasonInvalidEvidence, "", "%v", err))
		}
		next.IMAState, next.IMAEntries = state, r.State.Entries
	}

	clock := res.Clock
	next.Clock = &clock
	return Outcome{Agent: next.passed(now)}
}

// unavailable is the verdict when the agent's named policy could not be
// compiled or read: the host cannot be judged, so it is not trusted.
func unavailable(kind, name string, err error) *Failure {
	if err == nil {
		err = fmt.Errorf("no compiled %s policy %q was given", kind, name)
	}
	return Fail(ReasonPolicyViolation, kind+"_policy_unavailable", "%v", err)
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

// selectionDiff says how a quoted selection differs from the one asked
// for, bank by bank: the PCRs missing from the quote, and those it has
// that were not asked for.
func selectionDiff(asked, quoted tpm2.TPMLPCRSelection) string {
	pcrs := func(sel tpm2.TPMLPCRSelection) map[tpm2.TPMAlgID][]int {
		out := map[tpm2.TPMAlgID][]int{}
		for _, s := range sel.PCRSelections {
			out[s.Hash] = append(out[s.Hash], evidence.SelectedPCRs(s)...)
		}
		return out
	}
	want, got := pcrs(asked), pcrs(quoted)
	var banks []tpm2.TPMAlgID
	for _, sel := range []tpm2.TPMLPCRSelection{asked, quoted} {
		for _, s := range sel.PCRSelections {
			if !slices.Contains(banks, s.Hash) {
				banks = append(banks, s.Hash)
			}
		}
	}
	var parts []string
	for _, bank := range banks {
		var missing, extra []int
		for _, i := range want[bank] {
			if !slices.Contains(got[bank], i) {
				missing = append(missing, i)
			}
		}
		for _, i := range got[bank] {
			if !slices.Contains(want[bank], i) {
				extra = append(extra, i)
			}
		}
		name := evidence.BankName(bank)
		switch {
		case len(missing) > 0 && len(got[bank]) == 0:
			parts = append(parts, fmt.Sprintf("%s PCRs %v asked for, the quote has none of that bank (is the %s bank allocated on the host's TPM?)", name, missing, name))
		case len(missing) > 0:
			parts = append(parts, fmt.Sprintf("%s PCRs %v asked for, not quoted", name, missing))
		}
		if len(extra) > 0 {
			parts = append(parts, fmt.Sprintf("%s PCRs %v quoted, not asked for", name, extra))
		}
	}
	if len(parts) == 0 {
		return "the same PCRs, selected otherwise"
	}
	return strings.Join(parts, "; ")
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
