package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier"
)

// historyRows are history entries as written, as arrays for unnest: one
// statement stores any number of them, in their order.
type historyRows struct {
	agents  []string
	ats     []time.Time
	records [][]byte
	named   []bool // Checkpoint's: whether the entry's agent has a record in the statement
}

func (r *historyRows) add(h verifier.HistoryEntry) error {
	h.Version = verifier.HistoryVersion
	b, err := wire.Marshal(h)
	if err != nil {
		return fmt.Errorf("history entry of agent %q: %w", h.AgentID, err)
	}
	r.agents = append(r.agents, h.AgentID)
	r.ats = append(r.ats, h.At)
	r.records = append(r.records, b)
	return nil
}

func encodeHistory(history []verifier.HistoryEntry) (historyRows, error) {
	var r historyRows
	for _, h := range history {
		if err := r.add(h); err != nil {
			return r, err
		}
	}
	return r, nil
}

// historySQL reads the newest $3 (all, if NULL) of an agent's entries at
// or after $2, on the (agent_id, seq) index, and returns them oldest first.
const historySQL = `SELECT seq, format, entry FROM (
	SELECT seq, format, entry FROM verifier_history
	WHERE agent_id = $1 AND at >= $2
	ORDER BY seq DESC LIMIT $3
) h ORDER BY seq`

// History implements verifier.Store.
func (s *Store) History(ctx context.Context, id string, since time.Time, limit int) ([]verifier.HistoryEntry, error) {
	var newest *int64 // NULL: no limit
	if limit > 0 {
		n := int64(limit)
		newest = &n
	}
	var out []verifier.HistoryEntry
	err := s.retry(ctx, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, historySQL, id, since, newest)
		if err != nil {
			return err
		}
		var seq int64
		var format int16
		var b []byte
		_, err = pgx.ForEachRow(rows, []any{&seq, &format, &b}, func() error {
			key := fmt.Sprintf("%s #%d", id, seq)
			var h verifier.HistoryEntry
			if err := decode("history entry", key, format, b, &h); err != nil {
				return err
			}
			if h.Version != verifier.HistoryVersion {
				return fmt.Errorf("stored history entry %q: version %d, want %d", key, h.Version, verifier.HistoryVersion)
			}
			// The column keeps microseconds, the entry its nanoseconds:
			// an entry in since's microsecond but before it is not after.
			if h.At.Before(since) {
				return nil
			}
			h.Seq = uint64(seq)
			out = append(out, h)
			return nil
		})
		return err
	})
	return out, mapErr(err, fmt.Sprintf("history of agent %q", id))
}

// pruneHistorySQL removes the entries older than $1 and those beyond the
// newest $2 of each agent.
const pruneHistorySQL = `DELETE FROM verifier_history WHERE at < $1 OR seq IN (
	SELECT seq FROM (
		SELECT seq, row_number() OVER (PARTITION BY agent_id ORDER BY seq DESC) AS n FROM verifier_history
	) r WHERE n > $2
)`

// PruneHistory implements verifier.Store. Ages compare to the
// microsecond: an entry in cutoff's microsecond goes with a later prune.
func (s *Store) PruneHistory(ctx context.Context, cutoff time.Time, keepPerAgent int) (int, error) {
	query, args := pruneHistorySQL, []any{cutoff, keepPerAgent}
	if keepPerAgent <= 0 {
		query, args = `DELETE FROM verifier_history WHERE at < $1`, args[:1]
	}
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		tag, err = s.pool.Exec(ctx, query, args...)
		return err
	})
	if err != nil {
		return 0, mapErr(err, "pruning history")
	}
	return int(tag.RowsAffected()), nil
}
