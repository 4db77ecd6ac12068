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

// PolicyKind tells runtime (IMA) policies from boot policies and static
// PCR policies.
type PolicyKind string

// Policy kinds.
const (
	PolicyRuntime PolicyKind = "runtime"
	PolicyBoot    PolicyKind = "boot"
	// PolicyPCR is a static PCR policy (package pcrpolicy): allowed values
	// of any PCR in any bank, Keylime's tpm_policy or Vigil's format.
	PolicyPCR PolicyKind = "pcr"
)

// Policy is a named, versioned reference policy. Adding a policy under an
// existing name makes a new version; an agent uses the latest unless it is
// pinned to one version (Agent.RuntimePolicyVersion, BootPolicyVersion,
// PCRPolicyVersion).
type Policy struct {
	Name      string     `cbor:"name" json:"name"`
	Kind      PolicyKind `cbor:"kind" json:"kind"`
	Version   int        `cbor:"version" json:"version"`
	SHA256    string     `cbor:"sha256" json:"sha256"`
	CreatedAt time.Time  `cbor:"created_at" json:"created_at"`
	Body      []byte     `cbor:"body" json:"body,omitempty"`
}

// Store keeps agents, policies, secrets and the revocation outbox. The
// verifier needs nothing else from a database: no ordering, no cursors, so
// PostgreSQL can implement it with a table per kind of thing.
//
// A Store is storage only. The rules — what a policy's next version is, that
// a policy in use cannot be deleted, when an event is done with — are the
// Service's and the revocation.Dispatcher's, so that a second backend
// repeats none of them. storetest.Run states this contract as tests; every
// backend passes it.
//
// Errors: ErrNotFound and ErrExists (matched with errors.Is) where a method
// says so; any other error means nothing was stored.
type Store interface {
	// GetAgent returns the agent stored under id, or ErrNotFound.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns every stored agent, in no promised order.
	ListAgents(ctx context.Context) ([]Agent, error)
	// CreateAgent stores a new agent, with its first history entries;
	// ErrExists, and nothing stored, if the ID is taken.
	CreateAgent(ctx context.Context, a Agent, history ...HistoryEntry) error
	// SaveAgent replaces an agent's record after a verdict, and adds the
	// events the verdict raises to the outbox and its history entries, in
	// one transaction: a failed agent never exists without its revocation
	// event. It never creates an agent: ErrNotFound, and nothing stored,
	// if a.ID is not stored (deleted meanwhile). Many concurrent calls may
	// share one commit; it returns once durable.
	SaveAgent(ctx context.Context, a Agent, events []revocation.Event, history ...HistoryEntry) error
	// Checkpoint replaces the records of many agents in one transaction:
	// the progress of agents that kept attesting (counters, clock, IMA
	// offset) since the last checkpoint, with history entries raised
	// meanwhile. Records of agents no longer stored are dropped, not
	// recreated, and are no error; so are their history entries.
	Checkpoint(ctx context.Context, agents []Agent, history ...HistoryEntry) error
	// UpdateAgent reads agent id, lets fn change it, and stores the result
	// with the events fn returns, in one transaction; ErrNotFound if id is
	// not stored. An error from fn is returned and nothing is stored.
	UpdateAgent(ctx context.Context, id string, fn func(*Agent) ([]revocation.Event, error)) error
	// DeleteAgent removes an agent and adds history entries (who removed
	// it) in one transaction; ErrNotFound, and nothing stored, if it was
	// not stored. Its outbox events and its history stay.
	DeleteAgent(ctx context.Context, id string, history ...HistoryEntry) error

	// History returns agent id's history entries at or after since,
	// oldest first, with Seq set: the newest limit of them when limit > 0.
	// It answers for deleted agents too, and an unknown ID has none.
	History(ctx context.Context, id string, since time.Time, limit int) ([]HistoryEntry, error)
	// PruneHistory removes the history entries older than cutoff and, when
	// keepPerAgent > 0, all but the newest keepPerAgent of each agent, and
	// returns how many it removed.
	PruneHistory(ctx context.Context, cutoff time.Time, keepPerAgent int) (int, error)
	// EventStatus returns the delivery status per sink of each outbox
	// event named, pending or delivered; an event pruned or never stored
	// is absent.
	EventStatus(ctx context.Context, ids []string) (map[string]map[string]revocation.SinkStatus, error)

	// CreatePolicy stores p as version p.Version of the policy p.Name, as
	// given (SHA256 and CreatedAt included); ErrExists, and nothing stored,
	// if that version of that name is stored already. Versions are rows:
	// the caller chooses the number, and two callers racing for the same
	// one are told apart by ErrExists.
	CreatePolicy(ctx context.Context, p Policy) error
	// GetPolicy returns the highest stored version of a policy, or
	// ErrNotFound.
	GetPolicy(ctx context.Context, name string) (Policy, error)
	// GetPolicyVersion returns one stored version of a policy, with its
	// body, or ErrNotFound.
	GetPolicyVersion(ctx context.Context, name string, version int) (Policy, error)
	// PolicyVersions returns every stored version of a policy, oldest
	// first, without bodies; ErrNotFound if there is none.
	PolicyVersions(ctx context.Context, name string) ([]Policy, error)
	// ListPolicies returns the highest version of every policy, without
	// bodies, in no promised order.
	ListPolicies(ctx context.Context) ([]Policy, error)
	// DeletePolicy removes every version of a policy; ErrNotFound if there
	// was none.
	DeletePolicy(ctx context.Context, name string) error

	// Secret returns the key material stored under name, making size
	// random bytes the first time. Every later call, from this process or
	// another on the same store, returns the same bytes.
	Secret(ctx context.Context, name string, size int) ([]byte, error)
	// Ping writes to the store, to tell whether it can be written.
	Ping(ctx context.Context) error

	// The revocation outbox: events are added by SaveAgent and
	// UpdateAgent, and drained by a revocation.Dispatcher.
	revocation.Outbox
}
