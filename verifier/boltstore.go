package verifier

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

const (
	agentsCollection   = "verifier.agents"
	policiesCollection = "verifier.policies"        // name → latest version
	versionsCollection = "verifier.policy_versions" // name@version → every version
	outboxCollection   = "verifier.outbox"          // event ID → event and its delivery status
	secretsCollection  = "verifier.secrets"         // name → key material (the nonce MAC key)
)

// outboxRecord is an event with its delivery status per sink.
type outboxRecord struct {
	Event  revocation.Event                 `cbor:"event"`
	Status map[string]revocation.SinkStatus `cbor:"status"`
	// Done is set once every configured sink accepted the event.
	Done bool `cbor:"done"`
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
func (s BoltStore) PendingEvents(ctx context.Context, sinks []string) ([]revocation.Pending, error) {
	var out []revocation.Pending
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(outboxCollection, func(id string, b []byte) error {
			var r outboxRecord
			if err := decode("outbox event", id, b, &r); err != nil {
				return err
			}
			if !r.Done || !deliveredToAll(r.Status, sinks) {
				out = append(out, revocation.Pending{Event: r.Event, Status: r.Status})
			}
			return nil
		})
	})
	return out, err
}

func deliveredToAll(st map[string]revocation.SinkStatus, sinks []string) bool {
	for _, s := range sinks {
		if !st[s].Delivered {
			return false
		}
	}
	return true
}

// RecordDelivery implements revocation.Outbox.
func (s BoltStore) RecordDelivery(ctx context.Context, eventID, sink string, st revocation.SinkStatus, sinks []string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		b := tx.Get(outboxCollection, eventID)
		if b == nil {
			return fmt.Errorf("outbox event %q: %w", eventID, ErrNotFound)
		}
		var r outboxRecord
		if err := decode("outbox event", eventID, b, &r); err != nil {
			return err
		}
		if r.Status == nil {
			r.Status = map[string]revocation.SinkStatus{}
		}
		r.Status[sink] = st
		r.Done = deliveredToAll(r.Status, sinks)
		nb, err := wire.Marshal(r)
		if err != nil {
			return err
		}
		return tx.Put(outboxCollection, eventID, nb)
	})
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
func (s BoltStore) CreateAgent(ctx context.Context, a Agent) error {
	return s.DB.Batch(ctx, func(tx store.Tx) error {
		if tx.Get(agentsCollection, a.ID) != nil {
			return fmt.Errorf("agent %q: %w", a.ID, ErrExists)
		}
		return putAgent(tx, a)
	})
}

func (s BoltStore) SaveAgent(ctx context.Context, a Agent, events ...revocation.Event) error {
	return s.DB.Batch(ctx, func(tx store.Tx) error {
		// A verdict must not resurrect an agent deleted meanwhile.
		if tx.Get(agentsCollection, a.ID) == nil {
			return fmt.Errorf("agent %q: %w", a.ID, ErrNotFound)
		}
		if err := putAgent(tx, a); err != nil {
			return err
		}
		return putEvents(tx, events)
	})
}

func (s BoltStore) Checkpoint(ctx context.Context, agents []Agent) error {
	if len(agents) == 0 {
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
		return nil
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

func (s BoltStore) DeleteAgent(ctx context.Context, id string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		ok, err := tx.Delete(agentsCollection, id)
		if err == nil && !ok {
			return fmt.Errorf("agent %q: %w", id, ErrNotFound)
		}
		return err
	})
}

func (s BoltStore) PutPolicy(ctx context.Context, p Policy) (Policy, error) {
	sum := sha256.Sum256(p.Body)
	p.SHA256 = hex.EncodeToString(sum[:])
	err := s.DB.Update(ctx, func(tx store.Tx) error {
		p.Version = 1
		if b := tx.Get(policiesCollection, p.Name); b != nil {
			var cur Policy
			if err := decode("policy", p.Name, b, &cur); err != nil {
				return err
			}
			if cur.Kind != p.Kind {
				return fmt.Errorf("policy %q is a %s policy, not %s: %w", p.Name, cur.Kind, p.Kind, ErrExists)
			}
			p.Version = cur.Version + 1
		}
		b, err := wire.Marshal(p)
		if err != nil {
			return err
		}
		if err := tx.Put(versionsCollection, fmt.Sprintf("%s@%d", p.Name, p.Version), b); err != nil {
			return err
		}
		return tx.Put(policiesCollection, p.Name, b)
	})
	return p, err
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

// DeletePolicy removes a policy and its versions; a policy an agent uses is
// kept (ErrExists), so no agent is left without one.
func (s BoltStore) DeletePolicy(ctx context.Context, name string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		var users []string
		err := tx.ForEach(agentsCollection, func(id string, b []byte) error {
			var a Agent
			if err := decode("agent", id, b, &a); err != nil {
				return err
			}
			if a.RuntimePolicy == name || a.BootPolicy == name {
				users = append(users, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("policy %q is used by agents %v: %w", name, users, ErrExists)
		}
		b := tx.Get(policiesCollection, name)
		if b == nil {
			return fmt.Errorf("policy %q: %w", name, ErrNotFound)
		}
		var p Policy
		if err := decode("policy", name, b, &p); err != nil {
			return err
		}
		for v := 1; v <= p.Version; v++ {
			if _, err := tx.Delete(versionsCollection, fmt.Sprintf("%s@%d", name, v)); err != nil {
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
