// Package pgdb is what the PostgreSQL stores of the registrar and the
// verifier share: opening a connection pool with a statement timeout and an
// error that says what is wrong when the database cannot be reached, and
// applying a component's embedded schema migrations, once, in order, under
// a lock, recorded in a version table. Each store keeps its own SQL; this
// package knows none of it.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tune Open. Zero fields take the defaults of DefaultOptions.
type Options struct {
	// MaxConns bounds the pool.
	MaxConns int32
	// StatementTimeout bounds each statement on the server, so a stuck
	// query fails instead of holding a connection and a verdict.
	StatementTimeout time.Duration
	// ConnectTimeout bounds reaching the server.
	ConnectTimeout time.Duration
}

// DefaultOptions are the pool's defaults.
func DefaultOptions() Options {
	return Options{MaxConns: 32, StatementTimeout: 10 * time.Second, ConnectTimeout: 5 * time.Second}
}

// Open connects to the database at url and checks that it answers.
func Open(ctx context.Context, url string, o Options) (*pgxpool.Pool, error) {
	d := DefaultOptions()
	if o.MaxConns <= 0 {
		o.MaxConns = d.MaxConns
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = d.StatementTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = d.ConnectTimeout
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store URL: %w", err)
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["application_name"] = "vigil"
	// Vigil's queries are short and planned the same way every time; JIT
	// compiling them cost more than running them (the AK feed: 114 ms of
	// JIT for a 3 ms query once the fleet crossed jit_above_cost).
	cfg.ConnConfig.RuntimeParams["jit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w", cfg.ConnConfig.Host, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s:%d (database %q) cannot be reached: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// migrationName is NNN_what.sql: the version, then what it does.
var migrationName = regexp.MustCompile(`^(\d{3})_[a-z0-9_]+\.sql$`)

// migrationLock is the advisory lock key that orders migrations of every
// component: replicas starting at once apply each migration exactly once.
const migrationLock = 0x7669_6769_6c00 // "vigil\0"

// Migrate applies the migrations in dir of fsys that component has not
// applied yet, each in its own transaction with its record in
// vigil_schema_migrations. It refuses a database whose schema is newer
// than these migrations: an older binary must not write a newer schema.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, fsys fs.FS, dir string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return err
	}
	type migration struct {
		version int
		name    string
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return fmt.Errorf("migration %s: name is not NNN_what.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{v, e.Name()})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return fmt.Errorf("migrations of %s: %s, want version %d", component, m.name, i+1)
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS vigil_schema_migrations (
		component text NOT NULL, version int NOT NULL, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migration table: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM vigil_schema_migrations WHERE component = $1`, component).Scan(&have); err != nil {
		return err
	}
	if have > len(ms) {
		return fmt.Errorf("the %s schema is at version %d, newer than this build's %d: run a newer vigil", component, have, len(ms))
	}
	for _, m := range ms[have:] {
		sql, err := fs.ReadFile(fsys, path.Join(dir, m.name))
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn.Conn(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO vigil_schema_migrations (component, version, name) VALUES ($1, $2, $3)`, component, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s of %s: %w", m.name, component, err)
		}
	}
	return nil
}

// Unreachable tells errors that mean the database could not be reached or
// went away, as opposed to a query it refused: callers answer those 503.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P: operator intervention
		// (the server is shutting down or restarting).
		return len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:3] == "57P")
	}
	return pgconn.SafeToRetry(err) || errors.Is(err, context.DeadlineExceeded) || isConnectErr(err)
}

func isConnectErr(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}
