package verdict

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
)

// Reason says why evidence failed: a fixed vocabulary for operators,
// metrics and revocation events.
type Reason string

// The reasons evidence fails for.
const (
	// ReasonPolicyViolation: genuine evidence of something the policy does
	// not allow (a file not in the runtime policy, a disallowed bootloader).
	ReasonPolicyViolation Reason = "policy_violation"
	// ReasonInvalidEvidence: evidence that does not hold together (bad
	// signature, wrong nonce, PCRs that do not match the quote, a log that
	// does not replay to the quoted PCRs, a counter rollback).
	ReasonInvalidEvidence Reason = "invalid_evidence"
)

// Checks named here because callers act on them.
const (
	// CheckBootLogMalformed: the boot log does not parse.
	CheckBootLogMalformed = "boot_log_malformed"
	// CheckIMAMalformed: the IMA list does not parse.
	CheckIMAMalformed = "ima_malformed"
)

// Failure is a verdict against evidence.
type Failure struct {
	Reason Reason
	// Check names the check that failed (bad_signature, pcr_digest_mismatch,
	// ima_not-in-policy, ...), Detail says where (which file, which PCR).
	Check  string
	Detail string
	// IMA is the first failing IMA entry, for failures of the IMA check.
	IMA *ima.Failure
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

// finding is a stage's failure twice over: the verdict, and the itemised
// failures a report lists (a boot policy or an IMA list can fail in many
// places; the verdict names the first and counts the rest).
type finding struct {
	verdict *Failure
	items   []*evidence.Failure
}

// fromErr classifies err as r: an *evidence.Failure keeps its reason as the
// check, anything else has no check.
func fromErr(r Reason, err error) finding {
	var f *evidence.Failure
	if errors.As(err, &f) {
		return finding{&Failure{Reason: r, Check: string(f.Reason), Detail: err.Error()}, []*evidence.Failure{f}}
	}
	return finding{&Failure{Reason: r, Detail: err.Error()}, []*evidence.Failure{evidence.Fail("error", "%v", err)}}
}

// single is a failure with one item of the same name.
func single(r Reason, check, format string, args ...any) finding {
	f := Fail(r, check, format, args...)
	return finding{f, []*evidence.Failure{{Reason: evidence.Reason(check), Detail: f.Detail}}}
}

// ParseQuote reads a marshalled TPMS_ATTEST and TPMT_SIGNATURE. Its
// failures are always Unproven.
func ParseQuote(attest, sig []byte) (*evidence.Quote, *Failure) {
	q, err := evidence.ParseQuote(attest, sig)
	if err != nil {
		return nil, quoteFinding(err).verdict
	}
	return q, nil
}

// Quote verifies a quote with the AK that should have made it: signature,
// then nonce, then the PCR values against the quoted digest.
func Quote(ak *evidence.AK, q *evidence.Quote, want evidence.Expect) (*evidence.Result, *Failure) {
	res, f := quote(ak, q, want)
	return res, f.verdict
}

func quote(ak *evidence.AK, q *evidence.Quote, want evidence.Expect) (*evidence.Result, finding) {
	res, err := ak.VerifyQuote(q, want)
	if err != nil {
		return nil, quoteFinding(err)
	}
	return res, finding{}
}

func quoteFinding(err error) finding {
	var f *evidence.Failure
	if errors.As(err, &f) {
		return fromErr(ReasonInvalidEvidence, err)
	}
	return single(ReasonInvalidEvidence, string(evidence.ReasonMalformedQuote), "%v", err)
}

// Unproven tells the quote failures that leave open who made the quote:
// anyone can send those, so they say nothing about the host. The verifier
// refuses such evidence rather than failing the host on it.
func Unproven(f *Failure) bool {
	switch evidence.Reason(f.Check) {
	case evidence.ReasonMalformedQuote, evidence.ReasonMalformedSignature, evidence.ReasonBadMagic,
		evidence.ReasonBadType, evidence.ReasonBadSignature, evidence.ReasonUnsupportedSignature,
		evidence.ReasonNonceMismatch:
		return true
	}
	return false
}

// Clock checks that the TPM's clock and counters did not go back since an
// earlier quote of the same TPM, and says whether it rebooted.
func Clock(prev, cur evidence.ClockInfo) (evidence.ClockChange, *Failure) {
	change, f := clock(prev, cur)
	return change, f.verdict
}

func clock(prev, cur evidence.ClockInfo) (evidence.ClockChange, finding) {
	change, err := evidence.CheckClock(prev, cur)
	if err != nil {
		return change, quoteFinding(err)
	}
	return change, finding{}
}

// PCRs holds the quoted PCR values to a static PCR policy: each PCR it
// names, in each bank it names, must have one of its allowed values. A
// value not allowed is a policy violation (check pcr_not_allowed, the
// detail naming the PCR, its bank and value); a PCR the policy names that
// the quote does not cover is evidence that does not hold together (check
// pcr_not_quoted). quoted must come from a verified quote.
func PCRs(quoted evidence.PCRValues, pol *pcrpolicy.Policy) *Failure {
	return pcrs(quoted, pol).verdict
}

func pcrs(quoted evidence.PCRValues, pol *pcrpolicy.Policy) finding {
	fs := pol.Check(quoted)
	if len(fs) == 0 {
		return finding{}
	}
	reason := ReasonPolicyViolation
	if fs[0].Reason == pcrpolicy.ReasonNotQuoted {
		reason = ReasonInvalidEvidence
	}
	detail := fs[0].Detail
	if len(fs) > 1 {
		detail = fmt.Sprintf("%s (and %d more)", detail, len(fs)-1)
	}
	return finding{&Failure{Reason: reason, Check: string(fs[0].Reason), Detail: detail}, fs}
}

// BootResult is what the boot stage found.
type BootResult struct {
	// Replayed are the quoted PCR values the log replays to; nil when it
	// does not.
	Replayed evidence.PCRValues
	// State is the boot state, in the policy's bank (without a policy, or
	// when that bank was not verified, in the strongest bank verified).
	State *bootlog.BootState
	// Failures are all the failures, in order; the verdict names the first.
	Failures []*evidence.Failure
}

// Boot replays a UEFI event log against the quoted PCRs (0-9, and 14 when
// quoted, in every bank both carry) and holds the boot state it shows to
// pol. A nil pol checks the replay alone. quoted must come from a verified
// quote.
func Boot(log []byte, quoted evidence.PCRValues, pol *bootpolicy.Policy) (BootResult, *Failure) {
	r, f := boot(log, quoted, pol)
	r.Failures = f.items
	return r, f.verdict
}

func boot(log []byte, quoted evidence.PCRValues, pol *bootpolicy.Policy) (BootResult, finding) {
	var r BootResult
	l, err := bootlog.Parse(log)
	if err != nil {
		return r, single(ReasonInvalidEvidence, CheckBootLogMalformed, "%v", err)
	}
	v, err := l.Verify(quoted)
	if err != nil {
		return r, fromErr(ReasonInvalidEvidence, err)
	}
	r.Replayed = v.PCRs
	if pol == nil {
		if r.State, err = v.State(0); err != nil {
			return r, fromErr(ReasonInvalidEvidence, err)
		}
		return r, finding{}
	}
	bank, _ := evidence.ParseBank(pol.Bank)
	if r.State, err = v.State(bank); err != nil {
		f := single(ReasonPolicyViolation, string(bootpolicy.ReasonStateMissing), "%v", err)
		// What did boot is still worth showing, in a bank the log has.
		if r.State, err = v.State(0); err != nil {
			f.items = append(f.items, fromErr(ReasonInvalidEvidence, err).items...)
		}
		return r, f
	}
	fs := pol.Evaluate(r.State)
	if len(fs) == 0 {
		return r, finding{}
	}
	detail := fs[0].Error()
	if len(fs) > 1 {
		detail = fmt.Sprintf("%s (and %d more)", detail, len(fs)-1)
	}
	return r, finding{&Failure{Reason: ReasonPolicyViolation, Check: string(fs[0].Reason), Detail: detail}, fs}
}

// IMABank maps a TPM bank to IMA's name for it; false for a bank IMA
// cannot replay.
func IMABank(bank tpm2.TPMAlgID) (ima.Algorithm, bool) {
	a, ok := ima.ParseAlgorithm(evidence.BankName(bank))
	return a, ok && a.Computable()
}

// Runtime verifies IMA entries incrementally: from st (the zero State to
// start a list), the entries, which start at entry number offset, must
// replay to the quoted PCR 10 and each must meet pol. A nil pol checks the
// replay alone. When the list starts at its first entry, the banks that
// quote PCR 0 are the boot PCRs its boot_aggregate must match. At most
// maxFailures failures are listed (all are counted).
//
// The result's State is the state to keep when there is no failure.
func Runtime(st ima.State, offset uint64, entries []byte, quoted evidence.PCRValues, pol *ima.Policy, maxFailures int) (ima.Result, *Failure) {
	res, _, f := runtime(st, offset, entries, quoted, pol, maxFailures)
	return res, f.verdict
}

// bootAggregatePCRs says whether values hold every PCR IMA's boot_aggregate
// in bank alg is computed from (0-7 for SHA-1, 0-9 otherwise). A bank
// quoted only in part (a PCR policy naming a few of those PCRs) is not one
// the boot_aggregate can be checked in.
func bootAggregatePCRs(alg ima.Algorithm, values map[int][]byte) bool {
	last := 9
	if alg == ima.SHA1 {
		last = 7
	}
	for i := 0; i <= last; i++ {
		if _, ok := values[i]; !ok {
			return false
		}
	}
	return true
}

// runtime also says whether the entries were replayed. (The result is a
// value, not a pointer: it would escape, one allocation per verdict.)
func runtime(st ima.State, offset uint64, entries []byte, quoted evidence.PCRValues, pol *ima.Policy, maxFailures int) (ima.Result, bool, finding) {
	pcr10 := make(map[ima.Algorithm][]byte, 2)
	var boot map[ima.Algorithm]map[int][]byte
	for bank, values := range quoted {
		alg, ok := IMABank(bank)
		if !ok {
			continue
		}
		if _, tracked := st.PCR10[alg.String()]; st.PCR10 != nil && !tracked {
			// A bank quoted for another reason (a PCR policy) that the
			// list was not verified in from its start cannot join now.
			continue
		}
		if v, ok := values[10]; ok {
			pcr10[alg] = v
		}
		if offset == 0 && bootAggregatePCRs(alg, values) {
			if boot == nil {
				boot = make(map[ima.Algorithm]map[int][]byte, 2)
			}
			boot[alg] = values
		}
	}
	if len(pcr10) == 0 {
		return ima.Result{}, false, single(ReasonInvalidEvidence, string(evidence.ReasonPCRMissing), "the IMA list is checked but PCR 10 was not quoted in a bank IMA replays")
	}
	if st.PCR10 == nil {
		algs := make([]ima.Algorithm, 0, len(pcr10))
		for a := range pcr10 {
			algs = append(algs, a)
		}
		st = ima.NewState(algs...)
	}
	if st.Entries != offset {
		return ima.Result{}, false, single(ReasonInvalidEvidence, "ima_offset_mismatch", "entries start at %d, %d are verified", offset, st.Entries)
	}
	res, err := ima.Verify(st, entries, pcr10, pol, ima.VerifyOptions{MaxFailures: maxFailures, BootPCRs: boot})
	if err != nil {
		var pe *ima.ParseError
		if errors.As(err, &pe) {
			return ima.Result{}, false, single(ReasonInvalidEvidence, CheckIMAMalformed, "%v", err)
		}
		return ima.Result{}, false, single(ReasonInvalidEvidence, "ima_unusable", "%v", err)
	}
	if res.OK() {
		return res, true, finding{}
	}
	items := make([]*evidence.Failure, 0, len(res.Failures)+1)
	for _, f := range res.Failures {
		items = append(items, evidence.Fail(evidence.Reason("ima_"+string(f.Rule)), "%s", f.Error()))
	}
	if res.FailureCount > len(res.Failures) {
		items = append(items, evidence.Fail("ima_more_failures", "%d more IMA failures not listed", res.FailureCount-len(res.Failures)))
	}
	f := res.Failures[0]
	reason := ReasonInvalidEvidence
	switch f.Rule {
	case ima.RuleNotInPolicy, ima.RuleDigestMismatch, ima.RuleKeyring, ima.RuleViolation, ima.RuleUnknownTemplate, ima.RuleBootAggregate:
		reason = ReasonPolicyViolation
	}
	detail := f.Error()
	if res.FailureCount > 1 {
		detail = fmt.Sprintf("%s (and %d more)", detail, res.FailureCount-1)
	}
	return res, true, finding{&Failure{Reason: reason, Check: "ima_" + string(f.Rule), Detail: detail, IMA: &f}, items}
}
