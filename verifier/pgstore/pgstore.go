package pgstore

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vigil-attest/vigil/internal/pgdb"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

//go:embed migrations/*.sql
var migrations embed.FS

// component names this schema in vigil_schema_migrations, apart from the
// registrar's in the same database.
const component = "verifier"

// recordFormat is the version of the encoded records this build writes and
// the only one it reads: a build meeting a row written by a newer one says
// so instead of misreading it.
const recordFormat = 1

// Store is verifier.Store on PostgreSQL. It is safe for concurrent use by
// many goroutines and by many processes on one database.
type Store struct {
	pool *pgxpool.Pool
}

var _ verifier.Store = (*Store)(nil)

// Open connects to the database at url, applies the verifier's migrations
// that it lacks, and returns the store. Close it when done.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url, pgdb.Options{})
	if err != nil {
		return nil, err
	}
	if err := pgdb.Migrate(ctx, pool, component, migrations, "migrations"); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the connection pool, waiting for connections in use.
func (s *Store) Close() { s.pool.Close() }

// retry runs op, and once more when it failed in a way that guarantees
// nothing was committed. A pooled connection the server dropped (restart,
// failover) is found dead only when used, and so is every other idle one
// then: the pool is emptied before the second try, so that it connects
// afresh instead of meeting the next dead connection.
func (s *Store) retry(ctx context.Context, op func() error) error {
	err := op()
	if err != nil && notCommitted(err) && ctx.Err() == nil {
		s.pool.Reset()
		err = op()
	}
	return err
}

// notCommitted tells errors after which the operation certainly did not
// take effect: nothing was sent, or the server ended the session before
// committing (it holds termination off while it commits). A connection that
// broke mid-flight may have committed, and is not retried.
func notCommitted(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return false
	}
	return pgconn.SafeToRetry(err)
}

// mapErr turns PostgreSQL's answers into the Store's errors.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, verifier.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%s: %w", what, verifier.ErrExists)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func decode(what, key string, format int16, b []byte, v any) error {
	if format != recordFormat {
		return fmt.Errorf("stored %s %q: record format %d, this build reads %d: run a newer vigil", what, key, format, recordFormat)
	}
	if err := wire.Unmarshal(b, v); err != nil {
		return fmt.Errorf("stored %s %q: %w", what, key, err)
	}
	return nil
}

// agentRow is an agent as written: its record and the columns beside it.
type agentRow struct {
	id, state, runtime, boot string
	record                   []byte
	fence                    verifier.Fence
}

func encodeAgent(a verifier.Agent) (agentRow, error) {
	b, err := wire.Marshal(a)
	if err != nil {
		return agentRow{}, fmt.Errorf("agent %q: %w", a.ID, err)
	}
	return agentRow{id: a.ID, state: string(a.State), runtime: a.RuntimePolicy, boot: a.BootPolicy, record: b, fence: a.Fence}, nil
}

// eventRows are events as written, as arrays for unnest: one statement
// stores any number of them.
type eventRows struct {
	ids, agents, types []string
	records            [][]byte
}

func encodeEvents(events []revocation.Event) (eventRows, error) {
	var r eventRows
	for _, e := range events {
		b, err := wire.Marshal(e)
		if err != nil {
			return r, fmt.Errorf("event %q: %w", e.ID, err)
		}
		r.ids = append(r.ids, e.ID)
		r.agents = append(r.agents, e.Data.AgentID)
		r.types = append(r.types, e.Type)
		r.records = append(r.records, b)
	}
	return r, nil
}

func (s *Store) GetAgent(ctx context.Context, id string) (verifier.Agent, error) {
	var a verifier.Agent
	var format int16
	var b []byte
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT format, record FROM verifier_agents WHERE id = $1`, id).Scan(&format, &b)
	})
	if err != nil {
		return a, mapErr(err, fmt.Sprintf("agent %q", id))
	}
	return a, decode("agent", id, format, b, &a)
}

func (s *Store) ListAgents(ctx context.Context) ([]verifier.Agent, error) {
	out, err := listRecords[verifier.Agent](ctx, s, "agent", `SELECT id, format, record FROM verifier_agents`)
	return out, mapErr(err, "agents")
}

// listRecords reads every (key, format, record) row the query returns,
// decoding each record as a T; the whole read is retried as one.
func listRecords[T any](ctx context.Context, s *Store, what, query string, args ...any) ([]T, error) {
	var out []T
	err := s.retry(ctx, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		var key string
		var format int16
		var b []byte
		_, err = pgx.ForEachRow(rows, []any{&key, &format, &b}, func() error {
			var v T
			if err := decode(what, key, format, b, &v); err != nil {
				return err
			}
			out = append(out, v)
			return nil
		})
		return err
	})
	return out, err
}

// createAgentSQL inserts an agent and its history in one statement: a
// taken ID fails the whole of it.
const createAgentSQL = `WITH a AS (
	INSERT INTO verifier_agents (id, state, runtime_policy, boot_policy, format, record)
	VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
)
INSERT INTO verifier_history (agent_id, at, format, entry)
SELECT h.agent_id, h.at, $5, h.entry
FROM a, unnest($7::text[], $8::timestamptz[], $9::bytea[]) WITH ORDINALITY AS h(agent_id, at, entry, n)
ORDER BY h.n`

func (s *Store) CreateAgent(ctx context.Context, a verifier.Agent, history ...verifier.HistoryEntry) error {
	r, err := encodeAgent(a)
	if err != nil {
		return err
	}
	h, err := encodeHistory(history)
	if err != nil {
		return err
	}
	err = s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, createAgentSQL, r.id, r.state, r.runtime, r.boot, recordFormat, r.record, h.agents, h.ats, h.records)
		return err
	})
	return mapErr(err, fmt.Sprintf("agent %q", a.ID))
}

// saveAgentSQL replaces an agent's record; an agent that is not stored
// matches no row, so a verdict never recreates one deleted meanwhile.
const saveAgentSQL = `UPDATE verifier_agents SET state = $2, runtime_policy = $3, boot_policy = $4, format = $5, record = $6
	WHERE id = $1 AND ` + fencedSQL7

// saveAgentEventsSQL is saveAgentSQL, the events' insert and the history's
// as one statement, hence one round trip and one commit: the inserts read
// the update's output, so they add nothing when the agent is gone or the
// write is fenced off.
const saveAgentEventsSQL = `WITH a AS (
	UPDATE verifier_agents SET state = $2, runtime_policy = $3, boot_policy = $4, format = $5, record = $6
	WHERE id = $1 AND ` + fencedSQL11 + ` RETURNING id
), e AS (
	INSERT INTO verifier_outbox (id, agent_id, type, format, event)
	SELECT u.id, u.agent_id, u.type, $5, u.event
	FROM a, unnest($7::text[], $8::text[], $9::text[], $10::bytea[]) AS u(id, agent_id, type, event)
), h AS (
	INSERT INTO verifier_history (agent_id, at, format, entry)
	SELECT h.agent_id, h.at, $5, h.entry
	FROM a, unnest($13::text[], $14::timestamptz[], $15::bytea[]) WITH ORDINALITY AS h(agent_id, at, entry, n)
	ORDER BY h.n
)
SELECT count(*) FROM a`

// execSave writes an agent, its events and its history through q (the
// pool or a transaction) and reports whether the agent was stored.
func execSave(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	QueryRow(context.Context, string, ...any) pgx.Row
}, r agentRow, ev eventRows, h historyRows) (bool, error) {
	if len(ev.ids) == 0 && len(h.agents) == 0 {
		tag, err := q.Exec(ctx, saveAgentSQL, r.id, r.state, r.runtime, r.boot, recordFormat, r.record, r.fence.Owner, r.fence.Epoch)
		return tag.RowsAffected() == 1, err
	}
	var n int
	err := q.QueryRow(ctx, saveAgentEventsSQL, r.id, r.state, r.runtime, r.boot, recordFormat, r.record,
		ev.ids, ev.agents, ev.types, ev.records, r.fence.Owner, r.fence.Epoch, h.agents, h.ats, h.records).Scan(&n)
	return n == 1, err
}

// fencedSQL7 and fencedSQL11 hold a write of agent $1 to the lease named
// by the owner and epoch in the parameters they are numbered after: a
// single verifier's writes name no owner and are never fenced.
const (
	fencedSQL7  = `($7 = '' OR EXISTS (SELECT 1 FROM verifier_leases l WHERE l.agent_id = $1 AND l.owner = $7 AND l.epoch = $8))`
	fencedSQL11 = `($11 = '' OR EXISTS (SELECT 1 FROM verifier_leases l WHERE l.agent_id = $1 AND l.owner = $11 AND l.epoch = $12))`
)

// missing tells why a write of agent id matched no row: the agent is gone
// (ErrNoRows), or it is there under another lease (verifier.ErrFenced).
func (s *Store) missing(ctx context.Context, id string, fence verifier.Fence) error {
	if fence.Owner == "" {
		return pgx.ErrNoRows
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM verifier_agents WHERE id = $1)`, id).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return verifier.ErrFenced
	}
	return pgx.ErrNoRows
}

func (s *Store) SaveAgent(ctx context.Context, a verifier.Agent, events []revocation.Event, history ...verifier.HistoryEntry) error {
	r, err := encodeAgent(a)
	if err != nil {
		return err
	}
	ev, err := encodeEvents(events)
	if err != nil {
		return err
	}
	h, err := encodeHistory(history)
	if err != nil {
		return err
	}
	var found bool
	err = s.retry(ctx, func() (err error) {
		found, err = execSave(ctx, s.pool, r, ev, h)
		return err
	})
	if err == nil && !found {
		if err = s.missing(ctx, a.ID, a.Fence); errors.Is(err, verifier.ErrFenced) {
			return fmt.Errorf("agent %q: %w", a.ID, err)
		}
	}
	return mapErr(err, fmt.Sprintf("agent %q", a.ID))
}

// checkpointChunk bounds the agents one statement carries, so that a large
// fleet's checkpoint is a few statements, each well inside the statement
// timeout, in one transaction.
const checkpointChunk = 5000

// checkpointSQL replaces many records and adds history entries in one
// statement; a record whose agent is gone joins no row and is dropped, and
// so is one fenced off. An entry of an agent whose record the statement
// carries (named) is kept if that record was written; one of any other
// agent if the agent is stored, held there (KEY SHARE) until commit, so
// that a delete cannot slip in between.
const checkpointSQL = `WITH a AS (
	UPDATE verifier_agents AS a
	SET state = u.state, runtime_policy = u.runtime_policy, boot_policy = u.boot_policy, format = $6, record = u.record
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $7::text[], $8::bigint[])
		AS u(id, state, runtime_policy, boot_policy, record, owner, epoch)
	WHERE a.id = u.id AND (u.owner = '' OR EXISTS (
		SELECT 1 FROM verifier_leases l WHERE l.agent_id = u.id AND l.owner = u.owner AND l.epoch = u.epoch))
	RETURNING a.id
)
INSERT INTO verifier_history (agent_id, at, format, entry)
SELECT h.agent_id, h.at, $6, h.entry
FROM unnest($9::text[], $10::timestamptz[], $11::bytea[], $12::bool[]) WITH ORDINALITY AS h(agent_id, at, entry, named, n)
WHERE CASE WHEN h.named THEN h.agent_id IN (SELECT id FROM a)
	ELSE EXISTS (SELECT 1 FROM verifier_agents g WHERE g.id = h.agent_id FOR KEY SHARE) END
ORDER BY h.n`

func (s *Store) Checkpoint(ctx context.Context, agents []verifier.Agent, history ...verifier.HistoryEntry) error {
	if len(agents) == 0 && len(history) == 0 {
		return nil
	}
	// The last record of an agent named twice wins, as if written in turn;
	// an UPDATE joining two rows to one would pick either.
	last := make(map[string]int, len(agents))
	for i, a := range agents {
		last[a.ID] = i
	}
	var ids, states, runtimes, boots, owners []string
	var records [][]byte
	var epochs []int64
	chunkOf := make(map[string]int, len(last)) // the statement carrying the agent's record
	for i, a := range agents {
		if last[a.ID] != i {
			continue
		}
		r, err := encodeAgent(a)
		if err != nil {
			return err
		}
		chunkOf[a.ID] = len(ids) / checkpointChunk
		ids, states, runtimes, boots = append(ids, r.id), append(states, r.state), append(runtimes, r.runtime), append(boots, r.boot)
		records = append(records, r.record)
		owners, epochs = append(owners, r.fence.Owner), append(epochs, r.fence.Epoch)
	}
	// An agent's history entries go with the statement that carries its
	// record, in their order; those of agents not named, with the first.
	chunks := max(1, (len(ids)+checkpointChunk-1)/checkpointChunk)
	hs := make([]historyRows, chunks)
	for _, h := range history {
		c, named := chunkOf[h.AgentID]
		if err := hs[c].add(h); err != nil {
			return err
		}
		hs[c].named = append(hs[c].named, named)
	}
	exec := func(ctx context.Context, q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}) error {
		for c := range chunks {
			lo, hi := c*checkpointChunk, min((c+1)*checkpointChunk, len(ids))
			if _, err := q.Exec(ctx, checkpointSQL, ids[lo:hi], states[lo:hi], runtimes[lo:hi], boots[lo:hi], records[lo:hi], recordFormat, owners[lo:hi], epochs[lo:hi],
				hs[c].agents, hs[c].ats, hs[c].records, hs[c].named); err != nil {
				return err
			}
		}
		return nil
	}
	err := s.retry(ctx, func() error {
		if chunks == 1 {
			return exec(ctx, s.pool) // one statement is its own transaction
		}
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return exec(ctx, tx) })
	})
	return mapErr(err, fmt.Sprintf("checkpoint of %d agents", len(ids)))
}

func (s *Store) UpdateAgent(ctx context.Context, id string, fn func(*verifier.Agent) ([]revocation.Event, error)) error {
	called := false
	var fnErr error
	update := func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var format int16
			var b []byte
			// The row stays locked until commit: no verdict or other update
			// of this agent lands between this read and the write.
			if err := tx.QueryRow(ctx, `SELECT format, record FROM verifier_agents WHERE id = $1 FOR UPDATE`, id).Scan(&format, &b); err != nil {
				return err
			}
			var a verifier.Agent
			if err := decode("agent", id, format, b, &a); err != nil {
				return err
			}
			called = true
			events, err := fn(&a)
			if err != nil {
				fnErr = err
				return err
			}
			r, err := encodeAgent(a)
			if err != nil {
				return err
			}
			ev, err := encodeEvents(events)
			if err != nil {
				return err
			}
			_, err = execSave(ctx, tx, r, ev, historyRows{})
			return err
		})
	}
	err := update()
	// Once fn has run, what it did outside the store must not happen twice.
	if err != nil && !called && notCommitted(err) && ctx.Err() == nil {
		s.pool.Reset()
		err = update()
	}
	if fnErr != nil {
		return fnErr
	}
	return mapErr(err, fmt.Sprintf("agent %q", id))
}

// deleteAgentSQL deletes an agent and adds its history entries, if it
// was stored, in one statement.
const deleteAgentSQL = `WITH a AS (
	DELETE FROM verifier_agents WHERE id = $1 RETURNING id
)
INSERT INTO verifier_history (agent_id, at, format, entry)
SELECT h.agent_id, h.at, $2, h.entry
FROM a, unnest($3::text[], $4::timestamptz[], $5::bytea[]) WITH ORDINALITY AS h(agent_id, at, entry, n)
ORDER BY h.n`

func (s *Store) DeleteAgent(ctx context.Context, id string, history ...verifier.HistoryEntry) error {
	what := fmt.Sprintf("agent %q", id)
	if len(history) == 0 {
		return s.deleteRows(ctx, what, `DELETE FROM verifier_agents WHERE id = $1`, id)
	}
	h, err := encodeHistory(history)
	if err != nil {
		return err
	}
	// The statement's rows are the entries it inserts: all of them if the
	// agent was deleted, none if it was not stored.
	return s.deleteRows(ctx, what, deleteAgentSQL, id, recordFormat, h.agents, h.ats, h.records)
}

// deleteRows runs a statement that deletes (and returns as its rows what
// it deleted); deleting nothing is ErrNotFound for what.
func (s *Store) deleteRows(ctx context.Context, what, query string, args ...any) error {
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		tag, err = s.pool.Exec(ctx, query, args...)
		return err
	})
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr(err, what)
}

func (s *Store) CreatePolicy(ctx context.Context, p verifier.Policy) error {
	body := p.Body
	if body == nil {
		body = []byte{}
	}
	p.Body = nil
	b, err := wire.Marshal(p)
	if err != nil {
		return fmt.Errorf("policy %q: %w", p.Name, err)
	}
	err = s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `INSERT INTO verifier_policy_versions (name, version, kind, sha256, format, record, body)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, p.Name, p.Version, string(p.Kind), p.SHA256, recordFormat, b, body)
		return err
	})
	return mapErr(err, fmt.Sprintf("policy %q version %d", p.Name, p.Version))
}

func (s *Store) GetPolicy(ctx context.Context, name string) (verifier.Policy, error) {
	var p verifier.Policy
	var format int16
	var b, body []byte
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT format, record, body FROM verifier_policy_versions
			WHERE name = $1 ORDER BY version DESC LIMIT 1`, name).Scan(&format, &b, &body)
	})
	if err != nil {
		return p, mapErr(err, fmt.Sprintf("policy %q", name))
	}
	if err := decode("policy", name, format, b, &p); err != nil {
		return p, err
	}
	p.Body = body
	return p, nil
}

// GetPolicyVersion implements verifier.Store.
func (s *Store) GetPolicyVersion(ctx context.Context, name string, version int) (verifier.Policy, error) {
	var p verifier.Policy
	var format int16
	var b, body []byte
	what := fmt.Sprintf("policy %q version %d", name, version)
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT format, record, body FROM verifier_policy_versions
			WHERE name = $1 AND version = $2`, name, version).Scan(&format, &b, &body)
	})
	if err != nil {
		return p, mapErr(err, what)
	}
	if err := decode("policy", fmt.Sprintf("%s@%d", name, version), format, b, &p); err != nil {
		return p, err
	}
	p.Body = body
	return p, nil
}

// PolicyVersions implements verifier.Store: the primary key's order, no
// bodies read.
func (s *Store) PolicyVersions(ctx context.Context, name string) ([]verifier.Policy, error) {
	out, err := listRecords[verifier.Policy](ctx, s, "policy", `SELECT name || '@' || version, format, record FROM verifier_policy_versions
		WHERE name = $1 ORDER BY version`, name)
	if err == nil && len(out) == 0 {
		err = pgx.ErrNoRows
	}
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("policy %q", name))
	}
	return out, nil
}

func (s *Store) ListPolicies(ctx context.Context) ([]verifier.Policy, error) {
	out, err := listRecords[verifier.Policy](ctx, s, "policy", `SELECT DISTINCT ON (name) name, format, record FROM verifier_policy_versions
		ORDER BY name, version DESC`)
	return out, mapErr(err, "policies")
}

func (s *Store) DeletePolicy(ctx context.Context, name string) error {
	return s.deleteRows(ctx, fmt.Sprintf("policy %q", name), `DELETE FROM verifier_policy_versions WHERE name = $1`, name)
}

// Secret implements verifier.Store. Replicas starting at once may each
// make bytes; the insert that commits first wins and every caller reads
// the winner's.
func (s *Store) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	var out []byte
	err := s.retry(ctx, func() error {
		err := s.pool.QueryRow(ctx, `SELECT value FROM verifier_secrets WHERE name = $1`, name).Scan(&out)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		fresh := make([]byte, size)
		if _, err := rand.Read(fresh); err != nil {
			return err
		}
		// ON CONFLICT waits for a racing insert to commit; the SELECT,
		// a statement of its own, then sees whichever row won.
		if _, err := s.pool.Exec(ctx, `INSERT INTO verifier_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
			return err
		}
		return s.pool.QueryRow(ctx, `SELECT value FROM verifier_secrets WHERE name = $1`, name).Scan(&out)
	})
	return out, mapErr(err, fmt.Sprintf("secret %q", name))
}

// Ping implements verifier.Store with a write, so that a read-only
// database (a standby after failover, a full disk) shows.
func (s *Store) Ping(ctx context.Context) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `INSERT INTO verifier_ping (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = excluded.at`)
		return err
	})
	return mapErr(err, "ping")
}
