package registrar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
)

const (
	agentsCollection = "registrar.agents"
	// pendingCollection maps an EK hash to the pending registrations made
	// with that EK (under any agent ID): Register counts them and the sweep
	// finds expired ones without decoding every record.
	pendingCollection = "registrar.pending_by_ek"
	// activeCollection maps an agent ID to the name of its active AK, the
	// change feed's list, small enough to read whole at fleet size.
	activeCollection = "registrar.active_aks"
	metaCollection   = "registrar.meta"

	metaGeneration = "generation"
	metaEpoch      = "epoch"
	metaPending    = "pending_total"
)

// BoltStore is the Store on the embedded database.
//
// Its generation is a counter kept in the database and bumped in the
// transaction that changes the set of active AKs, so it survives restarts;
// it is prefixed by a random epoch chosen when the database first records
// one, so that a rebuilt database does not repeat an old generation.
type BoltStore struct {
	DB *store.DB
}

// pendingRef is one entry of pendingCollection.
type pendingRef struct {
	AgentID  string    `cbor:"agent_id"`
	AKName   []byte    `cbor:"ak_name"`
	Deadline time.Time `cbor:"deadline"`
	// Uncounted marks the registration of the record's own active AK,
	// kept here only for the sweep.
	Uncounted bool `cbor:"uncounted,omitempty"`
}

func (s BoltStore) Get(ctx context.Context, id string) (Record, error) {
	var rec Record
	err := s.DB.View(ctx, func(tx store.Tx) error {
		v := tx.Get(agentsCollection, id)
		if v == nil {
			return ErrNotFound
		}
		var err error
		rec, err = DecodeRecord(id, v)
		return err
	})
	return rec, err
}

func (s BoltStore) List(ctx context.Context) ([]Record, error) {
	var out []Record
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(agentsCollection, func(id string, v []byte) error {
			rec, err := DecodeRecord(id, v)
			if err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

func (s BoltStore) Modify(ctx context.Context, id string, fn func(cur *Record, counts PendingCounts) (*Record, error)) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		var old, cur *Record
		if v := tx.Get(agentsCollection, id); v != nil {
			r, err := DecodeRecord(id, v)
			if err != nil {
				return err
			}
			old = &r
			c := r
			c.Pending = slices.Clone(r.Pending)
			cur = &c
		}
		next, err := fn(cur, boltCounts{tx})
		if err != nil {
			return err
		}
		if next == nil {
			if old == nil {
				return nil
			}
			if _, err := tx.Delete(agentsCollection, id); err != nil {
				return err
			}
		} else {
			if next.AgentID != id {
				return fmt.Errorf("store: record of %q stored under %q", next.AgentID, id)
			}
			b, err := EncodeRecord(*next)
			if err != nil {
				return err
			}
			if err := tx.Put(agentsCollection, id, b); err != nil {
				return err
			}
		}
		return updateDerived(tx, id, old, next)
	})
}

func (s BoltStore) Delete(ctx context.Context, id string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		v := tx.Get(agentsCollection, id)
		if v == nil {
			return ErrNotFound
		}
		old, err := DecodeRecord(id, v)
		if err != nil {
			return err
		}
		if _, err := tx.Delete(agentsCollection, id); err != nil {
			return err
		}
		return updateDerived(tx, id, &old, nil)
	})
}

func (s BoltStore) Expired(ctx context.Context, t time.Time) ([]string, error) {
	var ids []string
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(pendingCollection, func(ek string, v []byte) error {
			refs, err := decodeRefs(ek, v)
			if err != nil {
				return err
			}
			for _, r := range refs {
				if !t.Before(r.Deadline) && !slices.Contains(ids, r.AgentID) {
					ids = append(ids, r.AgentID)
				}
			}
			return nil
		})
	})
	return ids, err
}

func (s BoltStore) Generation(ctx context.Context) (string, error) {
	var gen string
	err := s.DB.View(ctx, func(tx store.Tx) error {
		gen = generation(tx)
		return nil
	})
	return gen, err
}

func (s BoltStore) ActiveAKs(ctx context.Context) (string, []ActiveAK, error) {
	var gen string
	var aks []ActiveAK
	err := s.DB.View(ctx, func(tx store.Tx) error {
		gen = generation(tx)
		return tx.ForEach(activeCollection, func(id string, v []byte) error {
			aks = append(aks, ActiveAK{AgentID: id, AKName: bytes.Clone(v)})
			return nil
		})
	})
	return gen, aks, err
}

func generation(tx store.Tx) string {
	epoch := tx.Get(metaCollection, metaEpoch)
	if epoch == nil {
		return "0"
	}
	return hex.EncodeToString(epoch) + "." + strconv.FormatUint(getUint(tx, metaGeneration), 10)
}

// updateDerived brings the pending index, the pending total, the active
// AKs and the generation in line with the change of id's record from old
// to next (either nil for none).
func updateDerived(tx store.Tx, id string, old, next *Record) error {
	var oldRefs, nextRefs []pendingRef
	if old != nil {
		oldRefs = refsOf(old)
	}
	if next != nil {
		nextRefs = refsOf(next)
	}
	if !slices.EqualFunc(oldRefs, nextRefs, sameRef) {
		// The total moves by what the index held, not by what the old
		// record says: records stored before Uncounted existed read as
		// all counted.
		removed := 0
		if len(oldRefs) > 0 {
			n, err := setRefs(tx, old.EKSHA256, id, nil)
			if err != nil {
				return err
			}
			removed = n
		}
		if len(nextRefs) > 0 {
			if _, err := setRefs(tx, next.EKSHA256, id, nextRefs); err != nil {
				return err
			}
		}
		total := int64(getUint(tx, metaPending)) + int64(counted(nextRefs)) - int64(removed)
		if err := putUint(tx, metaPending, uint64(max(total, 0))); err != nil {
			return err
		}
	}
	if !ActiveAKChanged(old, next) {
		return nil
	}
	if next != nil && next.Active {
		if err := tx.Put(activeCollection, id, next.AKName); err != nil {
			return err
		}
	} else if _, err := tx.Delete(activeCollection, id); err != nil {
		return err
	}
	if tx.Get(metaCollection, metaEpoch) == nil {
		epoch := make([]byte, 8)
		if _, err := rand.Read(epoch); err != nil {
			return err
		}
		if err := tx.Put(metaCollection, metaEpoch, epoch); err != nil {
			return err
		}
	}
	return putUint(tx, metaGeneration, getUint(tx, metaGeneration)+1)
}

func refsOf(r *Record) []pendingRef {
	refs := make([]pendingRef, 0, len(r.Pending))
	for _, p := range r.Pending {
		refs = append(refs, pendingRef{AgentID: r.AgentID, AKName: p.AKName, Deadline: p.Deadline, Uncounted: p.Uncounted})
	}
	return refs
}

func sameRef(a, b pendingRef) bool {
	return a.AgentID == b.AgentID && bytes.Equal(a.AKName, b.AKName) && a.Deadline.Equal(b.Deadline) && a.Uncounted == b.Uncounted
}

func counted(refs []pendingRef) int {
	n := 0
	for _, r := range refs {
		if !r.Uncounted {
			n++
		}
	}
	return n
}

// setRefs replaces the references of agent id under ek by add, and
// returns how many counted references of id it removed.
func setRefs(tx store.Tx, ek, id string, add []pendingRef) (int, error) {
	var refs []pendingRef
	if v := tx.Get(pendingCollection, ek); v != nil {
		var err error
		if refs, err = decodeRefs(ek, v); err != nil {
			return 0, err
		}
	}
	removed := 0
	refs = slices.DeleteFunc(refs, func(r pendingRef) bool {
		if r.AgentID == id && !r.Uncounted {
			removed++
		}
		return r.AgentID == id
	})
	refs = append(refs, add...)
	if len(refs) == 0 {
		_, err := tx.Delete(pendingCollection, ek)
		return removed, err
	}
	b, err := wire.Marshal(refs)
	if err != nil {
		return 0, err
	}
	return removed, tx.Put(pendingCollection, ek, b)
}

func decodeRefs(ek string, v []byte) ([]pendingRef, error) {
	var refs []pendingRef
	if err := wire.Unmarshal(v, &refs); err != nil {
		return nil, fmt.Errorf("stored pending registrations of EK %s: %w", ek, err)
	}
	return refs, nil
}

type boltCounts struct{ tx store.Tx }

func (c boltCounts) ForEK(ek string, now time.Time) (int, error) {
	v := c.tx.Get(pendingCollection, ek)
	if v == nil {
		return 0, nil
	}
	refs, err := decodeRefs(ek, v)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range refs {
		if !r.Uncounted && now.Before(r.Deadline) {
			n++
		}
	}
	return n, nil
}

func (c boltCounts) Total() (int, error) { return int(getUint(c.tx, metaPending)), nil }

func getUint(tx store.Tx, key string) uint64 {
	v := tx.Get(metaCollection, key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(tx store.Tx, key string, n uint64) error {
	return tx.Put(metaCollection, key, binary.BigEndian.AppendUint64(nil, n))
}
