package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"
)

// Verifier replicas on one store share the fleet: each admitted agent is
// owned by exactly one live replica at a time, through a lease (owner,
// expiry, fencing epoch) kept in the store. The owner holds the agent's
// record in memory as a single verifier does, and every write of that
// record names the lease it was made under (Fence): a replica that lost
// the lease — it paused past the expiry, or the lease moved — can never
// overwrite the new owner's state, because the store refuses a write under
// an old epoch.
//
// Who should own an agent is decided without a coordinator, by rendezvous
// hashing over the live replicas (Owner): every replica computes the same
// answer from the same list, and when a replica joins or leaves only the
// agents it gains or loses move.

// ErrFenced is returned for a write made under a lease that is no longer
// the agent's: the writer must drop the agent.
var ErrFenced = errors.New("the agent's lease has moved to another replica")

// Fence names the lease a write is made under. The zero Fence is a single
// verifier's, which owns every agent and is never fenced.
type Fence struct {
	Owner string
	Epoch int64
}

// Replica is a verifier replica sharing the store.
type Replica struct {
	ID string `json:"id"`
	// URL is where agents and operators reach it.
	URL string `json:"url"`
	// Seen is its last heartbeat.
	Seen time.Time `json:"seen"`
}

// Lease is an agent's owner until Expires. Epoch grows every time the
// lease changes hands, never when it is renewed.
type Lease struct {
	AgentID string    `json:"agent_id"`
	Owner   string    `json:"owner"`
	Epoch   int64     `json:"epoch"`
	Expires time.Time `json:"expires"`
}

// LeaseStore is the part of a shared store that leases live in. A store
// that only one verifier uses (the embedded one) does not implement it.
type LeaseStore interface {
	// Heartbeat records replica id (at url) alive at now, and returns the
	// replicas seen within ttl of now, this one included.
	Heartbeat(ctx context.Context, id, url string, now time.Time, ttl time.Duration) ([]Replica, error)
	// AcquireLeases gives owner, until until, the leases of the agents
	// among ids that have none, whose lease expired at or before now, or
	// that owner holds already; it returns owner's leases among ids.
	// A lease that changes hands gets a new epoch; a renewed one keeps
	// its epoch.
	AcquireLeases(ctx context.Context, owner string, ids []string, now, until time.Time) ([]Lease, error)
	// RenewLeases extends to until every lease owner holds that has not
	// expired at now, and returns them: what owner still owns.
	RenewLeases(ctx context.Context, owner string, now, until time.Time) ([]Lease, error)
	// ReleaseLeases ends owner's leases of ids, so that another replica
	// may take them at once.
	ReleaseLeases(ctx context.Context, owner string, ids []string) error
	// Leases returns every lease, expired ones included.
	Leases(ctx context.Context) ([]Lease, error)
}

// Owner is the replica among ids that should own agentID: the one whose
// hash with the agent's ID is highest (rendezvous hashing). It is "" when
// ids is empty.
func Owner(agentID string, ids []string) string {
	best, bestScore := "", uint64(0)
	for _, id := range ids {
		if s := rendezvousScore(id, agentID); best == "" || s > bestScore || (s == bestScore && id < best) {
			best, bestScore = id, s
		}
	}
	return best
}

func rendezvousScore(replica, agent string) uint64 {
	h := sha256.New()
	h.Write([]byte(replica))
	h.Write([]byte{0})
	h.Write([]byte(agent))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
