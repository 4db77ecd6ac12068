package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestUpdateCommitsOrRollsBackWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx Tx) error { return tx.Put("a", "k", []byte("v1")) }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = db.Update(ctx, func(tx Tx) error {
		if err := tx.Put("a", "k", []byte("v2")); err != nil {
			return err
		}
		if err := tx.Put("b", "x", []byte("y")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update error = %v", err)
	}
	db.Close()

	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(ctx, func(tx Tx) error {
		if got := string(tx.Get("a", "k")); got != "v1" {
			t.Errorf("a/k = %q after rolled-back update, want v1", got)
		}
		if tx.Get("b", "x") != nil {
			t.Error("b/x written by a rolled-back update")
		}
		return nil
	})
}

func TestSecondOpenOfSameDirFailsClearly(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("second Open succeeded while the first holds the lock")
	}
}

func TestBatchFromManyGoroutines(t *testing.T) {
	ctx := context.Background()
	db, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Batch(ctx, func(tx Tx) error {
				return tx.Put("c", fmt.Sprint(i), []byte{byte(i)})
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n := 0
	_ = db.View(ctx, func(tx Tx) error {
		return tx.ForEach("c", func(string, []byte) error { n++; return nil })
	})
	if n != 50 {
		t.Errorf("%d records after 50 batched puts", n)
	}
	var deleted bool
	_ = db.Update(ctx, func(tx Tx) error { deleted, err = tx.Delete("c", "7"); return err })
	if !deleted {
		t.Error("Delete of an existing key reported false")
	}
	_ = db.Update(ctx, func(tx Tx) error { deleted, err = tx.Delete("c", "7"); return err })
	if deleted {
		t.Error("Delete of a missing key reported true")
	}
}
