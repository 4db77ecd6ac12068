package verdict

import (
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
)

// Input is evidence as one judgment has it, every part past the quote
// optional.
type Input struct {
	AK    *evidence.AK
	Quote *evidence.Quote
	// Expect says which nonce and PCR values the quote must carry (or
	// that they are not checked).
	Expect evidence.Expect
	// Previous is the clock of an earlier accepted quote of the same TPM.
	Previous *evidence.ClockInfo
	// PCRPolicy, when set, holds the quoted PCR values to a static PCR
	// policy (Expect.PCRs must then hold them).
	PCRPolicy *pcrpolicy.Policy
	// BootLog, when set, is replayed against the quoted PCRs and held to
	// BootPolicy (when set).
	BootLog    []byte
	BootPolicy *bootpolicy.Policy
	// IMALog, when set, is the whole list, replayed from its first entry
	// against the quoted PCR 10 and held to RuntimePolicy (when set).
	IMALog        []byte
	RuntimePolicy *ima.Policy
	// MaxIMAFailures caps the IMA failures listed (0: ima's default).
	MaxIMAFailures int
}

// Report is a judgment.
type Report struct {
	// Verdict is nil when the evidence passed, else the first failure,
	// classified as the verifier classifies it.
	Verdict *Failure
	// Failures are all the failures of the stages that ran, in order. A
	// quote that fails stops everything: nothing else is trustworthy then.
	// The later stages run after any other failure.
	Failures []*evidence.Failure
	// Quote is the verified quote; nil when it failed.
	Quote       *evidence.Result
	ClockChange *evidence.ClockChange
	// Boot is set when a boot log was given and the quote verified.
	Boot *BootResult
	// IMA is set when the IMA list was read and replayed.
	IMA *ima.Result
}

func (r *Report) add(f finding) {
	if f.verdict == nil {
		return
	}
	if r.Verdict == nil {
		r.Verdict = f.verdict
	}
	r.Failures = append(r.Failures, f.items...)
}

// Judge runs every stage once, in the engine's order: quote, clock, PCR
// policy, boot, IMA from its first entry.
func Judge(in Input) Report {
	rep := Report{Failures: []*evidence.Failure{}}
	res, f := quote(in.AK, in.Quote, in.Expect)
	if f.verdict != nil {
		rep.add(f)
		return rep
	}
	rep.Quote = res
	if in.Previous != nil {
		change, f := clock(*in.Previous, res.Clock)
		if f.verdict == nil {
			rep.ClockChange = &change
		}
		rep.add(f)
	}
	if in.PCRPolicy != nil {
		rep.add(pcrs(res.PCRs, in.PCRPolicy))
	}
	if in.BootLog != nil {
		b, f := boot(in.BootLog, res.PCRs, in.BootPolicy)
		b.Failures = f.items
		rep.Boot = &b
		rep.add(f)
	}
	if in.IMALog != nil {
		r, replayed, f := runtime(ima.State{}, 0, in.IMALog, res.PCRs, in.RuntimePolicy, in.MaxIMAFailures)
		if replayed {
			rep.IMA = &r
		}
		rep.add(f)
	}
	return rep
}
