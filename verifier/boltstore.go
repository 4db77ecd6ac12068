package verifier

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

const (
	agentsCollection   = "verifier.agents"
	policiesCollection = "verifier.policies"        // name → highest version
	versionsCollection = "verifier.policy_versions" // name@version → every version
	// The outbox is two collections so that the dispatcher's rounds read
	// only what is still to deliver, however much has been delivered.
	outboxCollection    = "verifier.outbox"           // event ID → pending event and its status per sink
	deliveredCollection = "verifier.outbox_delivered" // event ID → delivered event, until pruned
	secretsCollection   = "verifier.secrets"          // name → key material (the nonce MAC key)
	// historyCollection keys are agent ID, NUL, and an 8-byte big-endian
	// sequence number, so one agent's entries are one key range, in order.
	historyCollection = "verifier.history"
)

// outboxRecord is a pending event with its delivery status per sink.
type outboxRecord struct {
	Event  revocation.Event                 `cbor:"event"`
	Status map[string]revocation.SinkStatus `cbor:"status"`
	// Done is only ever read: stores written before delivered events moved
	// to their own collection set it here, and the dispatcher moves such
	// an event on its first round.
	Done bool `cbor:"done"`
	// ClaimedBy holds the event until ClaimedUntil (revocation.Outbox).
	ClaimedBy    string    `cbor:"claimed_by,omitempty"`
	ClaimedUntil time.Time `cbor:"claimed_until,omitempty"`
}

// deliveredRecord is an event every sink has, kept until pruned.
type deliveredRecord struct {
	Event       revocation.Event                 `cbor:"event"`
	Status      map[string]revocation.SinkStatus `cbor:"status"`
	DeliveredAt time.Time                        `cbor:"delivered_at"`
}

func putEvents(tx store.Tx, events []revocation.Event) error {
	for _, e := range events {
		b, err := wire.Marshal(outboxRecord{Event: e, Status: map[string]revocation.SinkStatus{}})
		if err != nil {
			return err
		}
		if err := tx.Put(outboxCollection, e.ID, b); err != nil {
			return err
		}
	}
	return nil
}

// PendingEvents implements revocation.Outbox.
func (s BoltStore) PendingEvents(ctx context.Context) ([]revocation.Pending, error) {
	var out []revocation.Pending
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(outboxCollection, func(id string, b []byte) error {
			var r outboxRecord
			if err := decode("outbox event", id, b, &r); err != nil {
				return err
			}
			out = append(out, revocation.Pending{Event: r.Event, Status: r.Status})
			return nil
		})
	})
	return out, err
}

// ClaimEvents implements revocation.Outbox. One process at a time opens a
// bbolt file, and its writes are serialized: the claim matters when that
// process runs several dispatchers, and keeps the backends' rules one.
func (s BoltStore) ClaimEvents(ctx context.Context, owner string, now time.Time, claimFor time.Duration, max int) ([]revocation.Pending, error) {
	var out []revocation.Pending
	err := s.DB.Update(ctx, func(tx store.Tx) error {
		out = nil
		var claimable []outboxRecord
		err := tx.ForEach(outboxCollection, func(id string, b []byte) error {
			var r outboxRecord
			if err := decode("outbox event", id, b, &r); err != nil {
				return err
			}
			if r.ClaimedBy == "" || r.ClaimedBy == owner || !r.ClaimedUntil.After(now) {
				claimable = append(claimable, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Oldest first, as PostgreSQL does: keys are random event IDs.
		slices.SortFunc(claimable, func(a, b outboxRecord) int {
			return cmp.Or(a.Event.Time.Compare(b.Event.Time), strings.Compare(a.Event.ID, b.Event.ID))
		})
		// Written after ForEach, which a write would disturb.
		for _, r := range claimable[:min(max, len(claimable))] {
			r.ClaimedBy, r.ClaimedUntil = owner, now.Add(claimFor).UTC()
			b, err := wire.Marshal(r)
			if err != nil {
				return err
			}
			if err := tx.Put(outboxCollection, r.Event.ID, b); err != nil {
				return err
			}
			if r.Status == nil {
				r.Status = map[string]revocation.SinkStatus{}
			}
			out = append(out, revocation.Pending{Event: r.Event, Status: r.Status})
		}
		return nil
	})
	return out, err
}

// getClaimed reads pending event eventID for a write by owner.
func getClaimed(tx store.Tx, owner, eventID string) (outboxRecord, error) {
	var r outboxRecord
	b := tx.Get(outboxCollection, eventID)
	if b == nil {
		return r, fmt.Errorf("pending outbox event %q: %w", eventID, ErrNotFound)
	}
	if err := decode("outbox event", eventID, b, &r); err != nil {
		return r, err
	}
	if r.ClaimedBy != owner {
		return r, fmt.Errorf("outbox event %q for %s: %w", eventID, owner, revocation.ErrClaimLost)
	}
	if r.Status == nil {
		r.Status = map[string]revocation.SinkStatus{}
	}
	return r, nil
}

// RecordDelivery implements revocation.Outbox.
func (s BoltStore) RecordDelivery(ctx context.Context, owner, eventID, sink string, st revocation.SinkStatus) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		r, err := getClaimed(tx, owner, eventID)
		if err != nil {
			return err
		}
		r.Status[sink] = st
		b, err := wire.Marshal(r)
		if err != nil {
			return err
		}
		return tx.Put(outboxCollection, eventID, b)
	})
}

// MarkDelivered implements revocation.Outbox.
func (s BoltStore) MarkDelivered(ctx context.Context, owner, eventID string, at time.Time) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		r, err := getClaimed(tx, owner, eventID)
		if err != nil {
			return err
		}
		b, err := wire.Marshal(deliveredRecord{Event: r.Event, Status: r.Status, DeliveredAt: at.UTC()})
		if err != nil {
			return err
		}
		if err := tx.Put(deliveredCollection, eventID, b); err != nil {
			return err
		}
		_, err = tx.Delete(outboxCollection, eventID)
		return err
	})
}

// PruneDelivered implements revocation.Outbox.
func (s BoltStore) PruneDelivered(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	err := s.DB.Update(ctx, func(tx store.Tx) error {
		n = 0
		var old []string
		err := tx.ForEach(deliveredCollection, func(id string, b []byte) error {
			var r deliveredRecord
			if err := decode("delivered outbox event", id, b, &r); err != nil {
				return err
			}
			if !r.DeliveredAt.After(cutoff) {
				old = append(old, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Deleting inside ForEach would disturb bbolt's cursor.
		for _, id := range old {
			if _, err := tx.Delete(deliveredCollection, id); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// BoltStore is the Store on the embedded database.
type BoltStore struct {
	DB *store.DB
}

func decode(what, key string, b []byte, v any) error {
	if err := wire.Unmarshal(b, v); err != nil {
		return fmt.Errorf("stored %s %q: %w", what, key, err)
	}
	return nil
}

func (s BoltStore) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	err := s.DB.View(ctx, func(tx store.Tx) error {
		b := tx.Get(agentsCollection, id)
		if b == nil {
			return fmt.Errorf("agent %q: %w", id, ErrNotFound)
		}
		return decode("agent", id, b, &a)
	})
	return a, err
}

func (s BoltStore) ListAgents(ctx context.Context) ([]Agent, error) {
	var out []Agent
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(agentsCollection, func(id string, b []byte) error {
			var a Agent
			if err := decode("agent", id, b, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

func putAgent(tx store.Tx, a Agent) error {
	b, err := wire.Marshal(a)
	if err != nil {
		return err
	}
	return tx.Put(agentsCollection, a.ID, b)
}

// CreateAgent is a group commit too: admitting a fleet is thousands of
// concurrent creates, each otherwise an fsync of its own.
func (s BoltStore) CreateAgent(ctx context.Context, a Agent, history ...HistoryEntry) error {
	return s.DB.Batch(ctx, func(tx store.Tx) error {
		if tx.Get(agentsCollection, a.ID) != nil {
			return fmt.Errorf("agent %q: %w", a.ID, ErrExists)
		}
		if err := putAgent(tx, a); err != nil {
			return err
		}
		return putHistory(tx, history)
	})
}

func (s BoltStore) SaveAgent(ctx context.Context, a Agent, events []revocation.Event, history ...HistoryEntry) error {
	return s.DB.Batch(ctx, func(tx store.Tx) error {
		// A verdict must not resurrect an agent deleted meanwhile.
		if tx.Get(agentsCollection, a.ID) == nil {
			return fmt.Errorf("agent %q: %w", a.ID, ErrNotFound)
		}
		if err := putAgent(tx, a); err != nil {
			return err
		}
		if err := putEvents(tx, events); err != nil {
			return err
		}
		return putHistory(tx, history)
	})
}

func (s BoltStore) Checkpoint(ctx context.Context, agents []Agent, history ...HistoryEntry) error {
	if len(agents) == 0 && len(history) == 0 {
		return nil
	}
	return s.DB.Update(ctx, func(tx store.Tx) error {
		for _, a := range agents {
			if tx.Get(agentsCollection, a.ID) == nil {
				continue // deleted meanwhile
			}
			if err := putAgent(tx, a); err != nil {
				return err
			}
		}
		kept := history[:0:0]
		for _, h := range history {
			if tx.Get(agentsCollection, h.AgentID) != nil {
				kept = append(kept, h)
			}
		}
		return putHistory(tx, kept)
	})
}

func (s BoltStore) UpdateAgent(ctx context.Context, id string, fn func(*Agent) ([]revocation.Event, error)) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		b := tx.Get(agentsCollection, id)
		if b == nil {
			return fmt.Errorf("agent %q: %w", id, ErrNotFound)
		}
		var a Agent
		if err := decode("agent", id, b, &a); err != nil {
			return err
		}
		events, err := fn(&a)
		if err != nil {
			return err
		}
		if err := putAgent(tx, a); err != nil {
			return err
		}
		return putEvents(tx, events)
	})
}

func (s BoltStore) DeleteAgent(ctx context.Context, id string, history ...HistoryEntry) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		ok, err := tx.Delete(agentsCollection, id)
		if err == nil && !ok {
			return fmt.Errorf("agent %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		return putHistory(tx, history)
	})
}

func historyPrefix(agentID string) string { return agentID + "\x00" }

func putHistory(tx store.Tx, history []HistoryEntry) error {
	for _, h := range history {
		seq, err := tx.NextSequence(historyCollection)
		if err != nil {
			return err
		}
		h.Version = HistoryVersion
		b, err := wire.Marshal(h)
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		if err := tx.Put(historyCollection, historyPrefix(h.AgentID)+string(k[:]), b); err != nil {
			return err
		}
	}
	return nil
}

func decodeHistory(key string, b []byte) (HistoryEntry, error) {
	var h HistoryEntry
	if err := decode("history entry", fmt.Sprintf("%q", key), b, &h); err != nil {
		return h, err
	}
	if h.Version != HistoryVersion {
		return h, fmt.Errorf("history entry %q: version %d, want %d", key, h.Version, HistoryVersion)
	}
	if len(key) >= 8 {
		h.Seq = binary.BigEndian.Uint64([]byte(key[len(key)-8:]))
	}
	return h, nil
}

// History implements Store.
func (s BoltStore) History(ctx context.Context, agentID string, since time.Time, limit int) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEachPrefix(historyCollection, historyPrefix(agentID), func(k string, b []byte) error {
			h, err := decodeHistory(k, b)
			if err != nil {
				return err
			}
			if !h.At.Before(since) {
				out = append(out, h)
			}
			return nil
		})
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// PruneHistory implements Store.
func (s BoltStore) PruneHistory(ctx context.Context, cutoff time.Time, keepPerAgent int) (int, error) {
	n := 0
	err := s.DB.Update(ctx, func(tx store.Tx) error {
		// Keys sort by agent, then by sequence: each agent's entries come
		// together, oldest first.
		type entry struct {
			key string
			at  time.Time
		}
		var doomed []string
		var group []entry
		agent := ""
		flush := func() {
			for i, e := range group {
				if e.at.Before(cutoff) || (keepPerAgent > 0 && i < len(group)-keepPerAgent) {
					doomed = append(doomed, e.key)
				}
			}
			group = group[:0]
		}
		err := tx.ForEach(historyCollection, func(k string, b []byte) error {
			id, _, _ := strings.Cut(k, "\x00")
			if id != agent {
				flush()
				agent = id
			}
			h, err := decodeHistory(k, b)
			if err != nil {
				return err
			}
			group = append(group, entry{k, h.At})
			return nil
		})
		if err != nil {
			return err
		}
		flush()
		for _, k := range doomed {
			if _, err := tx.Delete(historyCollection, k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	return n, err
}

// EventStatus implements Store.
func (s BoltStore) EventStatus(ctx context.Context, ids []string) (map[string]map[string]revocation.SinkStatus, error) {
	out := make(map[string]map[string]revocation.SinkStatus, len(ids))
	err := s.DB.View(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			if b := tx.Get(outboxCollection, id); b != nil {
				var r outboxRecord
				if err := decode("outbox event", id, b, &r); err != nil {
					return err
				}
				out[id] = r.Status
			} else if b := tx.Get(deliveredCollection, id); b != nil {
				var r deliveredRecord
				if err := decode("outbox event", id, b, &r); err != nil {
					return err
				}
				out[id] = r.Status
			}
		}
		return nil
	})
	return out, err
}

func versionKey(name string, version int) string { return fmt.Sprintf("%s@%d", name, version) }

func (s BoltStore) CreatePolicy(ctx context.Context, p Policy) error {
	b, err := wire.Marshal(p)
	if err != nil {
		return err
	}
	return s.DB.Update(ctx, func(tx store.Tx) error {
		key := versionKey(p.Name, p.Version)
		if tx.Get(versionsCollection, key) != nil {
			return fmt.Errorf("policy %q version %d: %w", p.Name, p.Version, ErrExists)
		}
		if err := tx.Put(versionsCollection, key, b); err != nil {
			return err
		}
		// policiesCollection is an index of the highest version, so that
		// GetPolicy, on every verdict's cache miss, is one read.
		if cur := tx.Get(policiesCollection, p.Name); cur != nil {
			var c Policy
			if err := decode("policy", p.Name, cur, &c); err != nil {
				return err
			}
			if c.Version > p.Version {
				return nil
			}
		}
		return tx.Put(policiesCollection, p.Name, b)
	})
}

func (s BoltStore) GetPolicy(ctx context.Context, name string) (Policy, error) {
	var p Policy
	err := s.DB.View(ctx, func(tx store.Tx) error {
		b := tx.Get(policiesCollection, name)
		if b == nil {
			return fmt.Errorf("policy %q: %w", name, ErrNotFound)
		}
		return decode("policy", name, b, &p)
	})
	return p, err
}

// GetPolicyVersion implements Store.
func (s BoltStore) GetPolicyVersion(ctx context.Context, name string, version int) (Policy, error) {
	var p Policy
	err := s.DB.View(ctx, func(tx store.Tx) error {
		key := versionKey(name, version)
		b := tx.Get(versionsCollection, key)
		if b == nil {
			return fmt.Errorf("policy %q version %d: %w", name, version, ErrNotFound)
		}
		return decode("policy", key, b, &p)
	})
	return p, err
}

// PolicyVersions implements Store. Names hold no "@", so the prefix is
// this name's versions alone; keys sort as text ("rt@10" before "rt@2"),
// hence the sort.
func (s BoltStore) PolicyVersions(ctx context.Context, name string) ([]Policy, error) {
	var out []Policy
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEachPrefix(versionsCollection, name+"@", func(k string, b []byte) error {
			var p Policy
			if err := decode("policy", k, b, &p); err != nil {
				return err
			}
			p.Body = nil
			out = append(out, p)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("policy %q: %w", name, ErrNotFound)
	}
	slices.SortFunc(out, func(a, b Policy) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

func (s BoltStore) ListPolicies(ctx context.Context) ([]Policy, error) {
	var out []Policy
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(policiesCollection, func(name string, b []byte) error {
			var p Policy
			if err := decode("policy", name, b, &p); err != nil {
				return err
			}
			p.Body = nil
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

func (s BoltStore) DeletePolicy(ctx context.Context, name string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		b := tx.Get(policiesCollection, name)
		if b == nil {
			return fmt.Errorf("policy %q: %w", name, ErrNotFound)
		}
		var p Policy
		if err := decode("policy", name, b, &p); err != nil {
			return err
		}
		// Every key, not 1…p.Version: version numbers are the caller's and
		// may have gaps. Names hold no "@", so the prefix is this name's.
		var keys []string
		err := tx.ForEach(versionsCollection, func(k string, _ []byte) error {
			if strings.HasPrefix(k, name+"@") {
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.Delete(versionsCollection, k); err != nil {
				return err
			}
		}
		_, err = tx.Delete(policiesCollection, name)
		return err
	})
}

// Secret implements Store: the first call under a name makes size random
// bytes and stores them; every later call, in this process or another one
// on the same store, returns those.
func (s BoltStore) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	var out []byte
	err := s.DB.View(ctx, func(tx store.Tx) error {
		out = append([]byte(nil), tx.Get(secretsCollection, name)...)
		return nil
	})
	if err != nil || len(out) > 0 {
		return out, err
	}
	err = s.DB.Update(ctx, func(tx store.Tx) error {
		if b := tx.Get(secretsCollection, name); b != nil {
			out = append([]byte(nil), b...)
			return nil
		}
		out = make([]byte, size)
		if _, err := rand.Read(out); err != nil {
			return err
		}
		return tx.Put(secretsCollection, name, out)
	})
	return out, err
}

// Ping implements Store with a write, so that a full disk shows.
func (s BoltStore) Ping(ctx context.Context) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		return tx.Put(secretsCollection, "ping", []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
}
