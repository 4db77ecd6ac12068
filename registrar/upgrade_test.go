package registrar

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
)

// A version 1 record lacks Pending.Uncounted; the pending index written
// with it has the right flags. The first change after an upgrade must keep
// the pending total, not count the record's uncounted registration as
// leaving it.
func TestVersion1RecordKeepsThePendingTotal(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(time.Hour).UTC()
	own := Pending{AKName: []byte("own"), Secret: []byte("s1"), Deadline: deadline}
	other := Pending{AKName: []byte("other"), Secret: []byte("s2"), Deadline: deadline}
	old := Record{V: 1, AgentID: "web-1", EKSHA256: "ek", Active: true, AKName: []byte("own"), Pending: []Pending{own, other}}
	b, err := wire.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := wire.Marshal([]pendingRef{
		{AgentID: "web-1", AKName: []byte("own"), Deadline: deadline, Uncounted: true},
		{AgentID: "web-1", AKName: []byte("other"), Deadline: deadline},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put(agentsCollection, "web-1", b); err != nil {
			return err
		}
		if err := tx.Put(pendingCollection, "ek", refs); err != nil {
			return err
		}
		return putUint(tx, metaPending, 1)
	}); err != nil {
		t.Fatal(err)
	}

	st := BoltStore{DB: db}
	svc := anyEKRegistrar(t, st).Service()
	if err := svc.modify(ctx, "web-1", func(cur *Record, _ PendingCounts) (*Record, error) {
		cur.Enrollments++
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	var total int
	if err := db.View(ctx, func(tx store.Tx) error {
		total, _ = boltCounts{tx}.Total()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if total != 1 {
		t.Fatalf("pending total %d after the first change, want 1", total)
	}
	r, err := st.Get(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if r.V != RecordVersion || !r.Pending[0].Uncounted || r.Pending[1].Uncounted {
		t.Fatalf("rewritten record: version %d, pending %+v", r.V, r.Pending)
	}
}
