package bench

import (
	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// The lean load generator writes evidence and reads verdicts with
// internal/wire's hand-written codec, in reused buffers and without a
// per-attestation allocation: wire.EvidenceEncoder writes the bytes
// wire.Marshal writes for the agent's wire.Evidence, from the PCR values
// as the soft TPM quoted them and the IMA entries appended straight from
// the host's list; wire.ReadVerdictView and wire.ReadChallengeView read
// the verifier's answers in place. What follows adapts them to the
// generator's own types; the bench has no CBOR of its own.

// evidence is what the lean generator sends, in the form it has it: the
// fields of wire.Evidence, with the PCR values as the soft TPM quoted them
// and the IMA entries still in the host's list.
type evidence struct {
	agentID   string
	nonce     []byte
	quote     []byte
	signature []byte
	// sel is the quote's PCR selection: every bank it names is in the
	// evidence's PCR map, as the agent's PCRRead returns it.
	sel  tpm2.TPMLPCRSelection
	pcrs []soft.PCRValue
	// pcrsNil stands for a nil map (the agent always sends one, possibly
	// empty; tests use it to hold the encoder to Marshal's null).
	pcrsNil bool
	bootLog []byte
	// imaSize is the length of the IMA bytes, and appendIMA appends them;
	// imaSize 0 leaves the field out, as omitempty does.
	imaSize   int
	appendIMA func(dst []byte) []byte
	imaOffset uint64
}

// evidenceEncoder writes evidence; its scratch space is reused.
type evidenceEncoder struct {
	enc   wire.EvidenceEncoder
	pcrs  []wire.PCRValue
	banks []uint16
}

// append appends ev as wire.Marshal(wire.Evidence{…}) writes it.
func (e *evidenceEncoder) append(dst []byte, ev *evidence) []byte {
	e.pcrs = e.pcrs[:0]
	for _, v := range ev.pcrs {
		e.pcrs = append(e.pcrs, wire.PCRValue{Bank: uint16(v.Bank), Index: v.Index, Value: v.Value})
	}
	e.banks = e.banks[:0]
	for _, s := range ev.sel.PCRSelections {
		e.banks = append(e.banks, uint16(s.Hash))
	}
	p := wire.EvidenceParts{AgentID: ev.agentID, Nonce: ev.nonce, Quote: ev.quote, Signature: ev.signature,
		PCRs: e.pcrs, Banks: e.banks, NilPCRs: ev.pcrsNil, BootLog: ev.bootLog,
		IMALen: ev.imaSize, AppendIMA: ev.appendIMA, IMAOffset: ev.imaOffset}
	dst = e.enc.Append(dst, &p)
	// The values are the quote's buffer: drop the references.
	clear(e.pcrs)
	return dst
}

// challengeView is a challenge as read from a response body: its byte
// fields share the body, so they are copied before the body is reused.
type challengeView struct {
	nonce, pcrSelection []byte
	imaOffset           uint64
	wantIMA, wantBoot   bool
	intervalMS          int64
	expiresInMS         int64
}

// verdictView is a verdict read from a response body.
type verdictView struct {
	state, reason, detail []byte
	hasNext               bool
	next                  challengeView
}

// readVerdict reads a verdict (with its next challenge) as the verifier
// writes it, into v. It reports false for anything else (an unknown
// field, a type other than the declared one, trailing bytes), and the
// caller then decodes the body with wire.Unmarshal, which decides.
func readVerdict(body []byte, v *verdictView) bool {
	var w wire.VerdictView
	ok := wire.ReadVerdictView(body, &w)
	*v = verdictView{state: w.State, reason: w.Reason, detail: w.Detail, hasNext: w.HasNext, next: challengeOf(&w.Next)}
	return ok
}

// readChallenge reads a challenge body, as readVerdict reads a verdict.
func readChallenge(body []byte, c *challengeView) bool {
	var w wire.ChallengeView
	ok := wire.ReadChallengeView(body, &w)
	*c = challengeOf(&w)
	return ok
}

func challengeOf(c *wire.ChallengeView) challengeView {
	return challengeView{nonce: c.Nonce, pcrSelection: c.PCRSelection, imaOffset: c.IMAOffset, wantIMA: c.WantIMA,
		wantBoot: c.WantBootLog, intervalMS: c.IntervalMS, expiresInMS: c.ExpiresInMS}
}

// viewOf is the view of a challenge decoded by wire.Unmarshal.
func viewOf(ch *wire.Challenge) challengeView {
	return challengeView{nonce: ch.Nonce, pcrSelection: ch.PCRSelection, imaOffset: ch.IMAOffset, wantIMA: ch.WantIMA,
		wantBoot: ch.WantBootLog, intervalMS: ch.IntervalMS, expiresInMS: ch.ExpiresInMS}
}
