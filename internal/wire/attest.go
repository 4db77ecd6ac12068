package wire

import "net/url"

// Verifier paths agents call.
const (
	PathChallenge = "/v1/attest/challenge"
	PathEvidence  = "/v1/attest/evidence"
)

// Evidence is posted to PathEvidence/<agent ID> with the challenge's nonce
// in the NonceHeader (hex), so that the verifier knows whose evidence it is
// and what was asked before it reads the body.
const NonceHeader = "Vigil-Nonce"

// EvidencePath is where an agent posts its evidence.
func EvidencePath(agentID string) string { return PathEvidence + "/" + url.PathEscape(agentID) }

// Evidence body caps: the quote and the IMA entries from the asked offset
// (a first full list of a busy host included), plus room for the boot log
// only when the challenge asked for it.
const (
	MaxEvidenceIMA = 16 << 20
	MaxBootLog     = 4 << 20
	// MaxEvidence is the largest evidence body of all.
	MaxEvidence = MaxEvidenceIMA + MaxBootLog
)

// ChallengeRequest asks the verifier what to prove next.
type ChallengeRequest struct {
	AgentID string `cbor:"agent_id"`
	// Started is set on the first request after the agent process started:
	// the agent no longer knows where it left off, so the verifier asks for
	// everything again (boot log, IMA from entry 0).
	Started bool `cbor:"started,omitempty"`
}

// Challenge tells the agent what to quote and send.
type Challenge struct {
	AgentID string `cbor:"agent_id"`
	// Nonce is the quote's qualifyingData: random, single use, expiring.
	Nonce []byte `cbor:"nonce"`
	// PCRSelection is a marshalled TPML_PCR_SELECTION.
	PCRSelection []byte `cbor:"pcr_selection"`
	// IMAOffset is the number of the first IMA entry to send (0-based).
	IMAOffset uint64 `cbor:"ima_offset"`
	// WantIMA is set when a runtime policy applies.
	WantIMA     bool `cbor:"want_ima"`
	WantBootLog bool `cbor:"want_boot_log"`
	// IntervalMS is how long the agent waits before its next attestation.
	IntervalMS int64 `cbor:"interval_ms"`
	// ExpiresInMS is how long the nonce stays valid.
	ExpiresInMS int64 `cbor:"expires_in_ms"`
}

// Evidence answers a challenge.
type Evidence struct {
	AgentID string `cbor:"agent_id"`
	Nonce   []byte `cbor:"nonce"`
	// Quote is the marshalled TPMS_ATTEST, Signature the TPMT_SIGNATURE.
	Quote     []byte `cbor:"quote"`
	Signature []byte `cbor:"signature"`
	// PCRs holds the values of the quoted PCRs: bank (TPM_ALG_ID) → PCR
	// index → digest.
	PCRs map[uint16]map[int][]byte `cbor:"pcrs"`
	// BootLog is the raw UEFI event log, when asked for.
	BootLog []byte `cbor:"boot_log,omitempty"`
	// IMA holds the measurement-list entries from IMAOffset on, in the form
	// the kernel writes them (binary or ASCII).
	IMA       []byte `cbor:"ima,omitempty"`
	IMAOffset uint64 `cbor:"ima_offset"`
}

// Verdict is the verifier's answer to evidence, with the next challenge
// when the agent is to keep attesting.
type Verdict struct {
	AgentID string `cbor:"agent_id"`
	// State is the agent's state after this evidence: attesting or failed.
	State string `cbor:"state"`
	// Reason and Detail explain a failure.
	Reason string     `cbor:"reason,omitempty"`
	Detail string     `cbor:"detail,omitempty"`
	Next   *Challenge `cbor:"next,omitempty"`
}
