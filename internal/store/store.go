package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DB is an open store.
type DB struct {
	bolt *bolt.DB
}

// FileName is the database file inside a data directory.
const FileName = "vigil.db"

// Open opens (creating if needed) the store in dataDir. It fails after a
// few seconds, instead of hanging, when another process holds the file.
func Open(dataDir string) (*DB, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: locked by another process (is another instance running with the same --data?)", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{bolt: db}, nil
}

// Close closes the store.
func (d *DB) Close() error { return d.bolt.Close() }

// Tx is a transaction. Values returned by Get are copies, safe to keep.
type Tx struct {
	tx *bolt.Tx
}

// View runs fn in a read-only transaction.
func (d *DB) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.bolt.View(func(tx *bolt.Tx) error { return fn(Tx{tx}) })
}

// Update runs fn in a read-write transaction, committed if fn returns nil
// and rolled back otherwise.
func (d *DB) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.bolt.Update(func(tx *bolt.Tx) error { return fn(Tx{tx}) })
}

// Batch is Update for many concurrent callers: their transactions are
// combined into one commit. fn may run more than once, so it must have no
// side effects outside the transaction.
func (d *DB) Batch(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.bolt.Batch(func(tx *bolt.Tx) error { return fn(Tx{tx}) })
}

// Get returns the value under key in collection, or nil if there is none.
func (t Tx) Get(collection, key string) []byte {
	b := t.tx.Bucket([]byte(collection))
	if b == nil {
		return nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

// Put stores value under key in collection.
func (t Tx) Put(collection, key string, value []byte) error {
	if key == "" {
		return errors.New("store: empty key")
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(collection))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), value)
}

// Delete removes key from collection; it reports whether it was there.
func (t Tx) Delete(collection, key string) (bool, error) {
	b := t.tx.Bucket([]byte(collection))
	if b == nil || b.Get([]byte(key)) == nil {
		return false, nil
	}
	return true, b.Delete([]byte(key))
}

// ForEach calls fn for every record of collection, in no promised order.
// The value is only valid during the call.
func (t Tx) ForEach(collection string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(collection))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
}

// NextSequence returns the next value of collection's sequence, which only
// ever grows: the number to give a record that must sort after every
// record given one before.
func (t Tx) NextSequence(collection string) (uint64, error) {
	b, err := t.tx.CreateBucketIfNotExists([]byte(collection))
	if err != nil {
		return 0, err
	}
	return b.NextSequence()
}

// ForEachPrefix calls fn for every record of collection whose key starts
// with prefix, in key order (bytewise), until fn returns an error.
func (t Tx) ForEachPrefix(collection, prefix string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(collection))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}
