package verifier

import (
	"time"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// State is where an agent stands.
type State string

// The agent states. They are strings, not numbers, because they are shown
// to operators and stored.
const (
	StatePending   State = "pending"
	StateAttesting State = "attesting"
	StateFailed    State = "failed"
	StateDeleted   State = "deleted"
)

// Reason says why an agent failed. Evidence fails for the reasons of the
// verdict pipeline (package verdict, which `vigil quote verify` shares);
// the service adds those that need no evidence.
type Reason = verdict.Reason

// Failure reasons, a fixed vocabulary for operators, metrics and revocation
// events. The detail (which file, which PCR) goes with them as text.
const (
	// ReasonPolicyViolation: genuine evidence of something the policy does
	// not allow (a file not in the runtime policy, a disallowed bootloader).
	ReasonPolicyViolation = verdict.ReasonPolicyViolation
	// ReasonInvalidEvidence: evidence that does not hold together (bad
	// signature, wrong nonce, PCRs that do not match the quote, a log that
	// does not replay to the quoted PCRs, a counter rollback).
	ReasonInvalidEvidence = verdict.ReasonInvalidEvidence
	// ReasonLivenessTimeout: no good evidence within the liveness deadline.
	ReasonLivenessTimeout Reason = "liveness_timeout"
	// ReasonNotEnrolled: the registrar no longer vouches for the agent's AK.
	ReasonNotEnrolled Reason = "not_enrolled"
)

// Agent is the verifier's record of one admitted host: what it was admitted
// with and where its attestation stands. It is stored whole after every
// verdict.
type Agent struct {
	ID string `cbor:"id" json:"agent_id"`
	// RuntimePolicy, BootPolicy and PCRPolicy name stored policies; empty
	// means none of that kind applies.
	RuntimePolicy string `cbor:"runtime_policy,omitempty" json:"runtime_policy,omitempty"`
	BootPolicy    string `cbor:"boot_policy,omitempty" json:"boot_policy,omitempty"`
	PCRPolicy     string `cbor:"pcr_policy,omitempty" json:"pcr_policy,omitempty"`
	// RuntimePolicyVersion, BootPolicyVersion and PCRPolicyVersion pin the
	// agent to one stored version of its policy; 0 follows the latest
	// version.
	RuntimePolicyVersion int `cbor:"runtime_policy_version,omitempty" json:"runtime_policy_version,omitempty"`
	BootPolicyVersion    int `cbor:"boot_policy_version,omitempty" json:"boot_policy_version,omitempty"`
	PCRPolicyVersion     int `cbor:"pcr_policy_version,omitempty" json:"pcr_policy_version,omitempty"`
	// Identities are the workload identities to revoke when the agent fails.
	Identities []string      `cbor:"identities,omitempty" json:"identities,omitempty"`
	Interval   time.Duration `cbor:"interval" json:"interval"`

	State  State  `cbor:"state" json:"state"`
	Reason Reason `cbor:"reason,omitempty" json:"reason,omitempty"`
	Detail string `cbor:"detail,omitempty" json:"detail,omitempty"`

	AdmittedAt     time.Time `cbor:"admitted_at" json:"admitted_at"`
	LastAttestedAt time.Time `cbor:"last_attested_at,omitempty" json:"last_attested_at,omitempty"`
	FailedAt       time.Time `cbor:"failed_at,omitempty" json:"failed_at,omitempty"`
	Attestations   uint64    `cbor:"attestations" json:"attestations"`

	// Clock is the clock info of the last accepted quote.
	Clock *evidence.ClockInfo `cbor:"clock,omitempty" json:"clock,omitempty"`
	// BootChecked is set once the boot log of the current boot passed.
	BootChecked bool `cbor:"boot_checked,omitempty" json:"boot_checked"`
	// IMAEntries is the number of IMA entries verified in the current boot.
	IMAEntries uint64 `cbor:"ima_entries" json:"ima_entries"`
	// IMAState is the runtime checker's incremental state, opaque here.
	IMAState []byte `cbor:"ima_state,omitempty" json:"-"`
	// LastNonce is the issue time (Unix ns) of the nonce the last accepted
	// evidence answered: only newer nonces are accepted (single use).
	LastNonce int64 `cbor:"last_nonce,omitempty" json:"-"`

	// Fence is the lease this copy of the record is written under, when
	// replicas share the store (see LeaseStore); it is not stored.
	Fence Fence `cbor:"-" json:"-"`

	// Passing counts the passing verdicts since PassingFrom, under the
	// policy versions named, not yet written to the history (see tally).
	Passing               uint64    `cbor:"passing,omitempty" json:"-"`
	PassingFrom           time.Time `cbor:"passing_from,omitempty" json:"-"`
	PassingTo             time.Time `cbor:"passing_to,omitempty" json:"-"`
	PassingRuntimeVersion int       `cbor:"passing_runtime_version,omitempty" json:"-"`
	PassingBootVersion    int       `cbor:"passing_boot_version,omitempty" json:"-"`
	PassingPCRVersion     int       `cbor:"passing_pcr_version,omitempty" json:"-"`
}
