package registrar

import (
	"context"
	"errors"
	"time"
)

// Record is everything the registrar knows about one agent.
type Record struct {
	AgentID string `cbor:"agent_id"`
	// EKPublic is the marshalled TPMT_PUBLIC of the EK.
	EKPublic []byte `cbor:"ek_pub"`
	// EKSHA256 is the hex SHA-256 of the EK's PKIX public key, the value
	// EK allowlists hold.
	EKSHA256 string `cbor:"ek_sha256"`
	EKCert   []byte `cbor:"ek_cert,omitempty"`
	// EKTrust says which rule of the EK policy admitted the EK.
	EKTrust string `cbor:"ek_trust"`
	// AKPublic is the marshalled TPMT_PUBLIC of the AK.
	AKPublic []byte `cbor:"ak_pub"`
	AKName   []byte `cbor:"ak_name"`
	AKAlg    string `cbor:"ak_alg"`
	Active   bool   `cbor:"active"`
	// ExpectedProof is the activation proof a genuine TPM will produce; it
	// is cleared once used.
	ExpectedProof    []byte    `cbor:"expected_proof,omitempty"`
	ChallengeExpires time.Time `cbor:"challenge_expires,omitempty"`
	RegisteredAt     time.Time `cbor:"registered_at"`
	ActivatedAt      time.Time `cbor:"activated_at,omitempty"`
	// Registrations counts Register calls accepted for this agent.
	Registrations int `cbor:"registrations"`
}

// ErrNotFound is returned for an unknown agent ID.
var ErrNotFound = errors.New("agent not registered")

// Store keeps records. Implementations must make Modify atomic: fn sees the
// current record and its result is stored, or nothing is.
type Store interface {
	// Get returns the record of id, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// List returns every record.
	List(ctx context.Context) ([]Record, error)
	// Modify reads the record of id (nil if absent), calls fn, and stores
	// what fn returns. An error from fn aborts without storing anything.
	Modify(ctx context.Context, id string, fn func(cur *Record) (Record, error)) error
	// Delete removes the record; it returns ErrNotFound if there was none.
	Delete(ctx context.Context, id string) error
}
