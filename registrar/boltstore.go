package registrar

import (
	"context"
	"fmt"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
)

const agentsCollection = "registrar.agents"

// BoltStore is the Store on the embedded database.
type BoltStore struct {
	DB *store.DB
}

func (s BoltStore) Get(ctx context.Context, id string) (Record, error) {
	var rec Record
	err := s.DB.View(ctx, func(tx store.Tx) error {
		v := tx.Get(agentsCollection, id)
		if v == nil {
			return ErrNotFound
		}
		return decodeRecord(id, v, &rec)
	})
	return rec, err
}

func (s BoltStore) List(ctx context.Context) ([]Record, error) {
	var out []Record
	err := s.DB.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(agentsCollection, func(id string, v []byte) error {
			var rec Record
			if err := decodeRecord(id, v, &rec); err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

func (s BoltStore) Modify(ctx context.Context, id string, fn func(cur *Record) (Record, error)) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		var cur *Record
		if v := tx.Get(agentsCollection, id); v != nil {
			cur = new(Record)
			if err := decodeRecord(id, v, cur); err != nil {
				return err
			}
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		b, err := wire.Marshal(next)
		if err != nil {
			return err
		}
		return tx.Put(agentsCollection, id, b)
	})
}

func (s BoltStore) Delete(ctx context.Context, id string) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		ok, err := tx.Delete(agentsCollection, id)
		if err == nil && !ok {
			return ErrNotFound
		}
		return err
	})
}

func decodeRecord(id string, v []byte, rec *Record) error {
	if err := wire.Unmarshal(v, rec); err != nil {
		return fmt.Errorf("stored record of agent %q: %w", id, err)
	}
	return nil
}
