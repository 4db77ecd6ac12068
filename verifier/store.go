package verifier

import (
	"context"
	"errors"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// ErrNotFound is returned for an unknown agent or policy.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating something that already exists.
var ErrExists = errors.New("already exists")

// PolicyKind tells runtime (IMA) policies from boot policies.
type PolicyKind string

// Policy kinds.
const (
	PolicyRuntime PolicyKind = "runtime"
	PolicyBoot    PolicyKind = "boot"
)

// Policy is a named, versioned reference policy. Adding a policy under an
// existing name makes a new version; agents always use the latest.
type Policy struct {
	Name      string     `cbor:"name" json:"name"`
	Kind      PolicyKind `cbor:"kind" json:"kind"`
	Version   int        `cbor:"version" json:"version"`
	SHA256    string     `cbor:"sha256" json:"sha256"`
	CreatedAt time.Time  `cbor:"created_at" json:"created_at"`
	Body      []byte     `cbor:"body" json:"body,omitempty"`
}

// Store keeps agents and policies. The verifier needs nothing else from a
// database: no ordering, no cursors, so PostgreSQL can implement it with two
// tables.
type Store interface {
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error)
	// CreateAgent stores a new agent; ErrExists if the ID is taken.
	CreateAgent(ctx context.Context, a Agent) error
	// SaveAgent stores an agent's new record after a verdict, and the
	// events the verdict raises, in one transaction: a failed agent never
	// exists without its revocation event. Many concurrent calls may share
	// one commit; it returns once durable.
	SaveAgent(ctx context.Context, a Agent, events ...revocation.Event) error
	// Checkpoint stores the records of many agents in one transaction: the
	// progress of agents that kept attesting (counters, clock, IMA offset)
	// since the last checkpoint. Records of agents no longer stored are
	// dropped, not recreated.
	Checkpoint(ctx context.Context, agents []Agent) error
	// UpdateAgent changes an agent atomically (operator actions, liveness)
	// and stores the events fn returns in the same transaction.
	UpdateAgent(ctx context.Context, id string, fn func(*Agent) ([]revocation.Event, error)) error
	DeleteAgent(ctx context.Context, id string) error

	// PutPolicy stores p as the next version of its name and returns it.
	PutPolicy(ctx context.Context, p Policy) (Policy, error)
	// GetPolicy returns the latest version.
	GetPolicy(ctx context.Context, name string) (Policy, error)
	ListPolicies(ctx context.Context) ([]Policy, error)
	DeletePolicy(ctx context.Context, name string) error

	// Secret returns the key material stored under name, making size
	// random bytes the first time. Verifiers sharing a store share it.
	Secret(ctx context.Context, name string, size int) ([]byte, error)
	// Ping writes to the store, to tell whether it can be written.
	Ping(ctx context.Context) error

	// The revocation outbox: events are added by SaveAgent and
	// UpdateAgent, and drained by a revocation.Dispatcher.
	revocation.Outbox
}
