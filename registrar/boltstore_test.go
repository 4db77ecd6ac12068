package registrar_test

import (
	"context"
	"testing"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/registrar/storetest"
)

func TestBoltStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registrar.Store {
		db, err := store.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return registrar.BoltStore{DB: db}
	})
}

// The generation is kept in the database: a verifier polling across a
// registrar restart must not be told of a change that did not happen.
func TestBoltStoreGenerationSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := registrar.Record{AgentID: "web-1", EKSHA256: "ek", Active: true, AKName: []byte("ak")}
	if err := (registrar.BoltStore{DB: db}).Modify(ctx, "web-1", func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) {
		return &r, nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := registrar.BoltStore{DB: db}.Generation(ctx)
	db.Close()
	if db, err = store.Open(dir); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if after, _ := (registrar.BoltStore{DB: db}).Generation(ctx); after != before {
		t.Fatalf("generation %s after reopening, was %s", after, before)
	}
}
