package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vigil-attest/vigil/internal/pgdb"
	"github.com/vigil-attest/vigil/registrar"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Component names the registrar's schema in vigil_schema_migrations.
const Component = "registrar"

// Store is registrar.Store on PostgreSQL. Any number of Stores, in any
// number of processes, may share one database.
type Store struct {
	pool *pgxpool.Pool
}

var _ registrar.Store = (*Store)(nil)

// Open connects to the database at url (internal/pgdb's pool and statement
// timeout), brings the registrar's schema up to this build's, and returns
// the store.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url, pgdb.Options{})
	if err != nil {
		return nil, err
	}
	if err := pgdb.Migrate(ctx, pool, Component, migrations, "migrations"); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool, waiting for the connections in use.
func (s *Store) Close() { s.pool.Close() }

const (
	// conflictAttempts bounds how often one call starts over after losing
	// a race it can win by trying again (another replica created the same
	// record first, or PostgreSQL broke a deadlock by aborting this one).
	// Each loss means another transaction committed, so a few suffice.
	conflictAttempts = 10
	// unreachableAttempts bounds the retries after a broken connection: one
	// retry on fresh connections survives a database restart between two
	// calls; more would only delay the error when the database is down.
	unreachableAttempts = 2
)

// errConflict is the race lost by creating a record another transaction
// created first: the next attempt reads it.
var errConflict = errors.New("the record was created concurrently")

// commitError is an error from COMMIT: whether the transaction committed
// is unknown, so it is returned, never retried.
type commitError struct{ err error }

func (e commitError) Error() string { return "commit: " + e.err.Error() }
func (e commitError) Unwrap() error { return e.err }

// retry runs op until it succeeds, fails for good, or its attempts run out.
// op must be safe to repeat: a read, or a transaction that did not commit.
func (s *Store) retry(ctx context.Context, op func() error) error {
	conflicts, unreachable := 0, 0
	for {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var ce commitError
		switch {
		case errors.As(err, &ce):
			return err
		case errors.Is(err, errConflict) || lostRace(err):
			if conflicts++; conflicts >= conflictAttempts {
				return fmt.Errorf("registrar store: gave up after %d conflicting attempts: %w", conflicts, err)
			}
		case pgdb.Unreachable(err):
			if unreachable++; unreachable >= unreachableAttempts {
				return err
			}
			// A connection found broken usually means the server went
			// away; its idle siblings are as stale, and one retry should
			// not meet them one by one.
			s.pool.Reset()
		default:
			return err
		}
	}
}

// lostRace tells the errors PostgreSQL ends a transaction with so that
// another may proceed: it can be run again.
func lostRace(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

func (s *Store) Get(ctx context.Context, id string) (registrar.Record, error) {
	var rec registrar.Record
	err := s.retry(ctx, func() error {
		var b []byte
		err := s.pool.QueryRow(ctx, `SELECT record FROM registrar_records WHERE agent_id = $1`, id).Scan(&b)
		if errors.Is(err, pgx.ErrNoRows) {
			return registrar.ErrNotFound
		}
		if err != nil {
			return err
		}
		rec, err = registrar.DecodeRecord(id, b)
		return err
	})
	return rec, err
}

func (s *Store) List(ctx context.Context) ([]registrar.Record, error) {
	var out []registrar.Record
	err := s.retry(ctx, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, `SELECT agent_id, record FROM registrar_records`)
		if err != nil {
			return err
		}
		var id string
		var b []byte
		_, err = pgx.ForEachRow(rows, []any{&id, &b}, func() error {
			r, err := registrar.DecodeRecord(id, b)
			out = append(out, r)
			return err
		})
		return err
	})
	return out, err
}

func (s *Store) Modify(ctx context.Context, id string, fn func(cur *registrar.Record, counts registrar.PendingCounts) (*registrar.Record, error)) error {
	return s.retry(ctx, func() error { return s.modifyOnce(ctx, id, fn) })
}

func (s *Store) Delete(ctx context.Context, id string) error {
	return s.Modify(ctx, id, func(cur *registrar.Record, _ registrar.PendingCounts) (*registrar.Record, error) {
		if cur == nil {
			return nil, registrar.ErrNotFound
		}
		return nil, nil
	})
}

// modifyOnce is one attempt of Modify, in one READ COMMITTED transaction.
// It is atomic across replicas by row locks taken in one order (the
// record, then the rows of the EKs it counts or changes, then
// registrar_state), so that concurrent transactions wait for each other
// rather than retry; a transaction that takes them in another order (a fn
// asking for the total before an EK's count) may deadlock, which
// PostgreSQL breaks and retry repeats.
func (s *Store) modifyOnce(ctx context.Context, id string, fn func(cur *registrar.Record, counts registrar.PendingCounts) (*registrar.Record, error)) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return err
	}
	// With ctx done, pgx closes the connection instead, which ends the
	// transaction as surely and cannot hang on a dead network.
	defer tx.Rollback(ctx)
	var old, cur *registrar.Record
	var b []byte
	switch err := tx.QueryRow(ctx, `SELECT record FROM registrar_records WHERE agent_id = $1 FOR UPDATE`, id).Scan(&b); {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	default:
		// Decoded twice so that nothing fn does to its copy reaches the
		// old record the indexes are corrected from.
		o, err := registrar.DecodeRecord(id, b)
		if err != nil {
			return err
		}
		c, _ := registrar.DecodeRecord(id, b)
		old, cur = &o, &c
	}
	counts := &pgCounts{ctx: ctx, tx: tx, locked: map[string]bool{}}
	next, err := fn(cur, counts)
	if err != nil {
		return err
	}
	switch {
	case next == nil && old == nil:
		return nil
	case next == nil:
		if err := updateDerived(ctx, counts, id, old, nil); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM registrar_records WHERE agent_id = $1`, id); err != nil {
			return err
		}
	default:
		if next.AgentID != id {
			return fmt.Errorf("registrar store: record of %q stored under %q", next.AgentID, id)
		}
		enc, err := registrar.EncodeRecord(*next)
		if err != nil {
			return err
		}
		// A record stored must be one Get can read back.
		if _, err := registrar.DecodeRecord(id, enc); err != nil {
			return fmt.Errorf("registrar store: refusing to store %w", err)
		}
		var ak []byte
		if next.Active {
			ak = next.AKName
		}
		if old == nil {
			// Absent rows cannot be locked: a replica creating the same
			// record at once makes this insert wait for its commit and do
			// nothing, and the next attempt starts from its record.
			tag, err := tx.Exec(ctx, `INSERT INTO registrar_records (agent_id, record, ek_sha256, active_ak) VALUES ($1, $2, $3, $4)
				ON CONFLICT (agent_id) DO NOTHING`, id, enc, next.EKSHA256, ak)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return errConflict
			}
		} else if _, err := tx.Exec(ctx, `UPDATE registrar_records SET record = $2, ek_sha256 = $3, active_ak = $4 WHERE agent_id = $1`,
			id, enc, next.EKSHA256, ak); err != nil {
			return err
		}
		if err := updateDerived(ctx, counts, id, old, next); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return commitError{err}
	}
	return nil
}

// ref is one row of registrar_pending.
type ref struct {
	ek       string
	akName   []byte
	deadline int64
	counted  bool
}

func refsOf(r *registrar.Record) []ref {
	if r == nil {
		return nil
	}
	refs := make([]ref, 0, len(r.Pending))
	for _, p := range r.Pending {
		refs = append(refs, ref{ek: r.EKSHA256, akName: p.AKName, deadline: unixNano(p.Deadline), counted: !p.Uncounted})
	}
	return refs
}

func sameRef(a, b ref) bool {
	return a.ek == b.ek && string(a.akName) == string(b.akName) && a.deadline == b.deadline && a.counted == b.counted
}

// unixNano is t in Unix nanoseconds, saturated at the ends of int64 (years
// 1678 and 2262) rather than wrapped: a zero deadline stays in the past.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// updateDerived brings registrar_pending, registrar_pending_by_ek and
// registrar_state in line with the change of id's record from old to next
// (either nil for none). The caller has locked and written the record.
func updateDerived(ctx context.Context, c *pgCounts, id string, old, next *registrar.Record) error {
	tx := c.tx
	oldRefs, nextRefs := refsOf(old), refsOf(next)
	var totalDelta int64
	if !slices.EqualFunc(oldRefs, nextRefs, sameRef) {
		var eks []string
		for _, r := range slices.Concat(oldRefs, nextRefs) {
			eks = append(eks, r.ek)
		}
		slices.Sort(eks)
		for _, ek := range slices.Compact(eks) {
			if err := c.lock(ek); err != nil {
				return err
			}
		}
		type delta struct{ pending, counted int }
		deltas := map[string]*delta{}
		add := func(ek string, counted bool, n int) {
			d := deltas[ek]
			if d == nil {
				d = &delta{}
				deltas[ek] = d
			}
			d.pending += n
			if counted {
				d.counted += n
				totalDelta += int64(n)
			}
		}
		// The counts move by what the index held, not by what the old
		// record says: records stored before Uncounted existed read as
		// all counted.
		rows, err := tx.Query(ctx, `DELETE FROM registrar_pending WHERE agent_id = $1 RETURNING ek_sha256, counted`, id)
		if err != nil {
			return err
		}
		var ek string
		var counted bool
		if _, err := pgx.ForEachRow(rows, []any{&ek, &counted}, func() error { add(ek, counted, -1); return nil }); err != nil {
			return err
		}
		if len(nextRefs) > 0 {
			seqs, names, deadlines, flags := make([]int32, len(nextRefs)), make([][]byte, len(nextRefs)), make([]int64, len(nextRefs)), make([]bool, len(nextRefs))
			for i, r := range nextRefs {
				seqs[i], names[i], deadlines[i], flags[i] = int32(i), r.akName, r.deadline, r.counted
				add(r.ek, r.counted, 1)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO registrar_pending (agent_id, seq, ek_sha256, ak_name, deadline, counted)
				SELECT $1, s, $2, a, d, c FROM unnest($3::int[], $4::bytea[], $5::bigint[], $6::boolean[]) AS u(s, a, d, c)`,
				id, next.EKSHA256, seqs, names, deadlines, flags); err != nil {
				return err
			}
		}
		for _, ek := range slices.Sorted(maps.Keys(deltas)) {
			d := deltas[ek]
			// Index rows under an EK this transaction did not foresee (an
			// index out of step with its record) are locked late; a
			// deadlock that causes is broken and retried.
			if err := c.lock(ek); err != nil {
				return err
			}
			if d.pending == 0 && d.counted == 0 {
				continue
			}
			if _, err := tx.Exec(ctx, `UPDATE registrar_pending_by_ek SET pending = pending + $2, counted = counted + $3 WHERE ek_sha256 = $1`,
				ek, d.pending, d.counted); err != nil {
				return err
			}
		}
	}
	if len(c.locked) > 0 {
		// Rows of EKs left without registrations go, including those
		// ForEK created only to lock.
		if _, err := tx.Exec(ctx, `DELETE FROM registrar_pending_by_ek WHERE ek_sha256 = ANY($1) AND pending = 0`, slices.Collect(maps.Keys(c.locked))); err != nil {
			return err
		}
	}
	var genDelta int64
	if registrar.ActiveAKChanged(old, next) {
		genDelta = 1
	}
	if totalDelta != 0 || genDelta != 0 {
		if _, err := tx.Exec(ctx, `UPDATE registrar_state SET pending_total = pending_total + $1, generation = generation + $2`, totalDelta, genDelta); err != nil {
			return err
		}
	}
	return nil
}

// pgCounts answers PendingCounts inside a Modify's transaction, locking
// what it counts so that the answer stays true until the commit: two
// replicas registering under one EK, or anywhere near the total bound,
// take turns rather than both fit under the bound.
type pgCounts struct {
	ctx context.Context
	tx  pgx.Tx
	// locked holds the EKs whose registrar_pending_by_ek row this
	// transaction has locked (and maybe created).
	locked map[string]bool
}

// maxLockAttempts bounds the turns of lock's loop; each turn means another
// transaction created or deleted the row meanwhile.
const maxLockAttempts = 10

// lock locks the registrar_pending_by_ek row of ek, creating it if there is
// none: an absent row cannot be locked, and an EK's first registrations
// must take turns like its later ones.
func (c *pgCounts) lock(ek string) error {
	if c.locked[ek] {
		return nil
	}
	for range maxLockAttempts {
		var one int
		err := c.tx.QueryRow(c.ctx, `SELECT 1 FROM registrar_pending_by_ek WHERE ek_sha256 = $1 FOR UPDATE`, ek).Scan(&one)
		if err == nil {
			c.locked[ek] = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Waits for a replica inserting the same row; does nothing if it
		// committed, and the next SELECT locks its row.
		tag, err := c.tx.Exec(c.ctx, `INSERT INTO registrar_pending_by_ek (ek_sha256, pending, counted) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING`, ek)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			c.locked[ek] = true
			return nil
		}
	}
	return errConflict
}

func (c *pgCounts) ForEK(ek string, now time.Time) (int, error) {
	if err := c.lock(ek); err != nil {
		return 0, err
	}
	var n int
	err := c.tx.QueryRow(c.ctx, `SELECT count(*) FROM registrar_pending WHERE ek_sha256 = $1 AND counted AND deadline > $2`, ek, unixNano(now)).Scan(&n)
	return n, err
}

func (c *pgCounts) Total() (int, error) {
	var n int64
	err := c.tx.QueryRow(c.ctx, `SELECT pending_total FROM registrar_state FOR UPDATE`).Scan(&n)
	return int(n), err
}

func (s *Store) Expired(ctx context.Context, t time.Time) ([]string, error) {
	var ids []string
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT DISTINCT agent_id FROM registrar_pending WHERE deadline <= $1`, unixNano(t))
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return ids, err
}

func (s *Store) Generation(ctx context.Context) (string, error) {
	var gen string
	err := s.retry(ctx, func() error {
		var epoch string
		var n int64
		if err := s.pool.QueryRow(ctx, `SELECT epoch, generation FROM registrar_state`).Scan(&epoch, &n); err != nil {
			return err
		}
		gen = generation(epoch, n)
		return nil
	})
	return gen, err
}

// generation keeps the bbolt store's shape, <epoch>.<counter>.
func generation(epoch string, n int64) string { return epoch + "." + strconv.FormatInt(n, 10) }

func (s *Store) ActiveAKs(ctx context.Context) (string, []registrar.ActiveAK, error) {
	var gen string
	var aks []registrar.ActiveAK
	err := s.retry(ctx, func() error {
		// One statement, so one snapshot: the set is the generation's.
		// Both arrays aggregate the same rows in the same order. (A join
		// of registrar_state to the records would do as well, but its
		// estimate crosses jit_above_cost, and compiling it costs twenty
		// times the query.)
		var epoch string
		var n int64
		var ids []string
		var names [][]byte
		err := s.pool.QueryRow(ctx, `SELECT s.epoch, s.generation, a.ids, a.names FROM registrar_state s,
			LATERAL (SELECT array_agg(agent_id) AS ids, array_agg(active_ak) AS names FROM registrar_records WHERE active_ak IS NOT NULL) a`,
		).Scan(&epoch, &n, &ids, &names)
		if err != nil {
			return err
		}
		if len(ids) != len(names) {
			return fmt.Errorf("registrar store: %d active agents with %d AK names", len(ids), len(names))
		}
		gen, aks = generation(epoch, n), make([]registrar.ActiveAK, len(ids))
		for i := range ids {
			aks[i] = registrar.ActiveAK{AgentID: ids[i], AKName: names[i]}
		}
		return nil
	})
	return gen, aks, err
}
