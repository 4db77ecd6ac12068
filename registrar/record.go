package registrar

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/registrar/registrarapi"
)

// RecordVersion is the version of the stored record format this build
// writes. A record of a version this build does not read is refused, not
// guessed at, so a later release can change the format and promise to read
// this one. Version 2 added Pending.Uncounted, which version 1 records lack
// (read as counted until the Service next stores the record; the stores'
// pending index kept the right flag all along).
const RecordVersion = 2

// oldestRecordVersion is the oldest stored format this build reads.
const oldestRecordVersion = 1

// Record is everything the registrar knows about one agent.
//
// The active AK (the one verifiers are handed) and the pending registrations
// are kept apart because the EK public key and certificate are public:
// anyone can register them, and such a registration proves nothing until
// credential activation does. Only Activate moves a pending AK into the
// active fields.
type Record struct {
	V       int    `cbor:"v"`
	AgentID string `cbor:"agent_id"`
	// EKPublic is the marshalled TPMT_PUBLIC of the EK.
	EKPublic []byte `cbor:"ek_pub"`
	// EKSHA256 is the hex SHA-256 of the EK's PKIX public key, the value
	// EK allowlists hold.
	EKSHA256 string `cbor:"ek_sha256"`
	EKCert   []byte `cbor:"ek_cert,omitempty"`
	// EKTrust says which rule of the EK policy admitted the EK when the
	// active AK was registered (or, before any activation, the first time).
	EKTrust string `cbor:"ek_trust"`

	// The active AK; empty until the first activation.
	// AKPublic is the marshalled TPMT_PUBLIC of the AK.
	AKPublic    []byte    `cbor:"ak_pub,omitempty"`
	AKName      []byte    `cbor:"ak_name,omitempty"`
	AKAlg       string    `cbor:"ak_alg,omitempty"`
	Active      bool      `cbor:"active"`
	ActivatedAt time.Time `cbor:"activated_at,omitempty"`
	// ActiveProof is the proof that activated the active AK, kept so that an
	// agent that lost the answer can repeat its activation.
	ActiveProof []byte `cbor:"active_proof,omitempty"`

	// Pending are registrations awaiting activation, at most one per AK
	// name.
	Pending []Pending `cbor:"pending,omitempty"`

	// RegisteredAt is the first accepted registration under this agent ID.
	RegisteredAt time.Time `cbor:"registered_at"`
	// Enrollments counts completed activations of a new challenge (a
	// repeated answer to the same challenge is not counted). Registrations
	// are not counted: anyone can make those.
	Enrollments int `cbor:"enrollments"`
}

// Pending is a registration awaiting its activation proof.
type Pending struct {
	AKPublic []byte `cbor:"ak_pub"`
	AKName   []byte `cbor:"ak_name"`
	AKAlg    string `cbor:"ak_alg"`
	EKTrust  string `cbor:"ek_trust"`
	// Secret is the challenge secret. It is kept (rather than only the
	// proof it yields) so that the same AK registering again is sent the
	// same secret: a stranger re-registering a host's public EK and AK can
	// then never invalidate the challenge the genuine agent is answering.
	Secret       []byte    `cbor:"secret"`
	Deadline     time.Time `cbor:"deadline"`
	RegisteredAt time.Time `cbor:"registered_at"`
	// Uncounted marks a registration that does not count against the
	// bounds on pending registrations (see Record.counts). The Service sets
	// it on every record it stores; a Store only indexes it, so that which
	// registrations count is decided in one place.
	Uncounted bool `cbor:"uncounted,omitempty"`
}

// live reports whether the registration can still be activated at now.
func (p Pending) live(now time.Time) bool { return now.Before(p.Deadline) }

// pendingIndex returns the index of the pending registration of akName, or
// -1.
func (r *Record) pendingIndex(akName []byte) int {
	for i, p := range r.Pending {
		if bytes.Equal(p.AKName, akName) {
			return i
		}
	}
	return -1
}

// dropExpired removes the pending registrations past their deadline and
// reports whether it removed any.
func (r *Record) dropExpired(now time.Time) bool {
	kept := r.Pending[:0:0]
	for _, p := range r.Pending {
		if p.live(now) {
			kept = append(kept, p)
		}
	}
	if len(kept) == len(r.Pending) {
		return false
	}
	if len(kept) == 0 {
		kept = nil
	}
	r.Pending = kept
	return true
}

// counts reports whether p counts against the bounds on pending
// registrations. A registration of the record's own active AK (an agent
// restarting) does not: there is at most one per record, and a fleet
// restarting at once must not fill the bounds and keep new hosts out.
func (r *Record) counts(p Pending) bool { return !(r.Active && bytes.Equal(r.AKName, p.AKName)) }

// markUncounted sets Uncounted on every pending registration from counts,
// which can change when the active AK does.
func (r *Record) markUncounted() {
	for i := range r.Pending {
		r.Pending[i].Uncounted = !r.counts(r.Pending[i])
	}
}

// countedPending is the number of pending registrations that count against
// the bounds.
func (r *Record) countedPending() int {
	n := 0
	for _, p := range r.Pending {
		if r.counts(p) {
			n++
		}
	}
	return n
}

// empty reports whether the record holds nothing worth keeping: no active
// AK and no pending registration.
func (r *Record) empty() bool { return !r.Active && len(r.Pending) == 0 }

// ActiveAKChanged reports whether going from old to next (either nil for
// no record) changes the agent's entry in the set of active AKs. A Store
// bumps its generation when it does.
func ActiveAKChanged(old, next *Record) bool {
	oldActive, nextActive := old != nil && old.Active, next != nil && next.Active
	if oldActive != nextActive {
		return true
	}
	return oldActive && !bytes.Equal(old.AKName, next.AKName)
}

// EncodeRecord is the stored form of a record.
func EncodeRecord(r Record) ([]byte, error) {
	r.V = RecordVersion
	return wire.Marshal(r)
}

// DecodeRecord reads a stored record of agent id, refusing other versions
// and records that do not hold together.
func DecodeRecord(id string, b []byte) (Record, error) {
	var r Record
	if err := wire.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("stored record of agent %q: %w", id, err)
	}
	if r.V < oldestRecordVersion || r.V > RecordVersion {
		return Record{}, fmt.Errorf("stored record of agent %q: format version %d, this build reads %d to %d", id, r.V, oldestRecordVersion, RecordVersion)
	}
	if r.AgentID != id {
		return Record{}, fmt.Errorf("stored record of agent %q names agent %q", id, r.AgentID)
	}
	if r.Active && len(r.AKName) == 0 {
		return Record{}, fmt.Errorf("stored record of agent %q: active without an AK name", id)
	}
	for i, p := range r.Pending {
		if len(p.AKName) == 0 || len(p.Secret) == 0 {
			return Record{}, fmt.Errorf("stored record of agent %q: pending registration %d lacks its AK name or secret", id, i)
		}
	}
	return r, nil
}

// ErrNotFound is returned for an unknown agent ID.
var ErrNotFound = registrarapi.ErrNotFound

// ActiveAK is one entry of the set of active AKs.
type ActiveAK struct {
	AgentID string
	AKName  []byte
}

// PendingCounts answers, inside a Modify, how many pending registrations
// exist, for the bounds Register enforces. Both answers leave out the
// registrations marked Uncounted, and both see the transaction's own state
// (the stored records, before fn's result).
type PendingCounts interface {
	// ForEK counts the pending registrations of the EK with this hash, under
	// every agent ID, whose deadline is after now.
	ForEK(ekSHA256 string, now time.Time) (int, error)
	// Total counts all pending registrations, including expired ones not
	// yet removed.
	Total() (int, error)
}

// Store keeps records.
//
// Besides the records a Store keeps three things derived from them, updated
// in the same transaction as the record that changes them, so that the
// questions asked on every request are cheap at any fleet size: the pending
// registrations by EK (for PendingCounts and Expired), the set of active
// AKs (agent ID → AK name of every record with Active set), and a
// generation of that set. These are indexes, not rules: which registration
// counts, what expires, what is active is decided by the Service and
// written into the records. storetest.Run states this contract as tests;
// every backend passes it.
type Store interface {
	// Get returns the record of id, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// List returns every record, in no promised order.
	List(ctx context.Context) ([]Record, error)
	// Modify reads the record of id (nil if absent), calls fn with a copy
	// it may change, and stores what fn returns, in one transaction with
	// the indexes; a nil result deletes the record (and is no error if
	// there was none). An error from fn is returned and nothing is stored.
	// fn may run more than once. A result naming another agent ID is an
	// error.
	Modify(ctx context.Context, id string, fn func(cur *Record, counts PendingCounts) (*Record, error)) error
	// Delete removes the record; it returns ErrNotFound if there was none.
	Delete(ctx context.Context, id string) error
	// Expired returns, once each, the IDs of agents with a pending
	// registration whose deadline is not after t.
	Expired(ctx context.Context, t time.Time) ([]string, error)
	// Generation is an opaque token that differs after every change of the
	// set of active AKs (ActiveAKChanged) and stays the same otherwise,
	// across restarts too. It must be cheap: it is read on every poll.
	Generation(ctx context.Context) (string, error)
	// ActiveAKs returns the set of active AKs, in no promised order, and
	// the generation it is the set of, read together.
	ActiveAKs(ctx context.Context) (gen string, aks []ActiveAK, err error)
}
