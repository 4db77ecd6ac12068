package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// PendingEvents implements revocation.Outbox: one query over the pending
// events and their statuses, which never touches the delivered ones.
func (s *Store) PendingEvents(ctx context.Context) ([]revocation.Pending, error) {
	var out []revocation.Pending
	err := s.retry(ctx, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, `SELECT o.id, o.format, o.event, s.sink, s.format, s.status
			FROM verifier_outbox o LEFT JOIN verifier_outbox_status s ON s.event_id = o.id`)
		if err != nil {
			return err
		}
		out, err = collectPending(rows)
		return err
	})
	return out, mapErr(err, "pending outbox events")
}

// claimSQL claims and reads in one statement. SKIP LOCKED passes over the
// rows another replica is claiming or writing at this moment rather than
// waiting for them; a row whose claim another replica committed since
// this statement's snapshot is read again as it is now (READ COMMITTED),
// and no longer matches.
const claimSQL = `WITH c AS (
	SELECT id FROM verifier_outbox
	WHERE claimed_by = $1 OR claimed_until_ns <= $2
	ORDER BY added_at, id
	LIMIT $4
	FOR UPDATE SKIP LOCKED
), u AS (
	UPDATE verifier_outbox o SET claimed_by = $1, claimed_until_ns = $3
	FROM c WHERE o.id = c.id
	RETURNING o.id, o.format, o.event, o.added_at
)
SELECT u.id, u.format, u.event, s.sink, s.format, s.status
FROM u LEFT JOIN verifier_outbox_status s ON s.event_id = u.id
ORDER BY u.added_at, u.id`

// ClaimEvents implements revocation.Outbox: one statement over the pending
// events, which never touches the delivered ones.
func (s *Store) ClaimEvents(ctx context.Context, owner string, now time.Time, claimFor time.Duration, max int) ([]revocation.Pending, error) {
	var out []revocation.Pending
	err := s.retry(ctx, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, claimSQL, owner, now.UnixNano(), now.Add(claimFor).UnixNano(), max)
		if err != nil {
			return err
		}
		out, err = collectPending(rows)
		return err
	})
	return out, mapErr(err, "claiming outbox events")
}

// collectPending reads rows of (event id, format, event, sink, status
// format, status), an event's rows together, one row per status or one
// with a NULL sink.
func collectPending(rows pgx.Rows) ([]revocation.Pending, error) {
	var out []revocation.Pending
	index := map[string]int{}
	var id string
	var sink *string
	var format int16
	var statusFormat *int16
	var event, status []byte
	_, err := pgx.ForEachRow(rows, []any{&id, &format, &event, &sink, &statusFormat, &status}, func() error {
		i, ok := index[id]
		if !ok {
			var e revocation.Event
			if err := decode("outbox event", id, format, event, &e); err != nil {
				return err
			}
			i = len(out)
			index[id] = i
			out = append(out, revocation.Pending{Event: e, Status: map[string]revocation.SinkStatus{}})
		}
		if sink == nil {
			return nil // an event no sink has tried yet
		}
		var st revocation.SinkStatus
		if err := decode("outbox status", id+" "+*sink, *statusFormat, status, &st); err != nil {
			return err
		}
		out[i].Status[*sink] = st
		return nil
	})
	return out, err
}

// recordSQL writes a status only while owner holds the event. FOR SHARE
// waits out a claim being taken at this moment and reads the row as it
// then is, so a replica past its claim cannot slip a write in after the
// new owner's. held is NULL for an event no longer pending.
const recordSQL = `WITH o AS (
	SELECT id, claimed_by FROM verifier_outbox WHERE id = $1 FOR SHARE
), ins AS (
	INSERT INTO verifier_outbox_status (event_id, sink, format, status)
	SELECT id, $3, $4, $5 FROM o WHERE claimed_by = $2
	ON CONFLICT (event_id, sink) DO UPDATE SET format = excluded.format, status = excluded.status
	RETURNING 1
)
SELECT (SELECT claimed_by FROM o), (SELECT count(*) FROM ins)`

// RecordDelivery implements revocation.Outbox.
func (s *Store) RecordDelivery(ctx context.Context, owner, eventID, sink string, st revocation.SinkStatus) error {
	b, err := wire.Marshal(st)
	if err != nil {
		return fmt.Errorf("outbox event %q status at %s: %w", eventID, sink, err)
	}
	var held *string
	var n int64
	err = s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, recordSQL, eventID, owner, sink, recordFormat, b).Scan(&held, &n)
	})
	return claimErr(err, held, n, owner, eventID)
}

// claimErr tells, after a write that stored n rows, why it stored none:
// the event is not pending (held is NULL), or owner does not hold it.
func claimErr(err error, held *string, n int64, owner, eventID string) error {
	switch {
	case err != nil:
	case n > 0:
		return nil
	case held == nil:
		err = pgx.ErrNoRows
	default:
		return fmt.Errorf("outbox event %q for %s: %w", eventID, owner, revocation.ErrClaimLost)
	}
	return mapErr(err, fmt.Sprintf("pending outbox event %q", eventID))
}

// markDeliveredSQL moves an event, with its statuses as arrays, from the
// pending table to the delivered one in one statement, if owner holds it.
// The status rows go by cascade after the statement, which has read them
// already. held reads the statement's snapshot, from before the delete:
// it tells an event not pending (NULL) from one held by another.
const markDeliveredSQL = `WITH o AS (
	DELETE FROM verifier_outbox WHERE id = $1 AND claimed_by = $2 RETURNING id, agent_id, type, format, event
), ins AS (
	INSERT INTO verifier_outbox_delivered (id, agent_id, type, delivered_at_ns, format, event, sinks, statuses)
	SELECT o.id, o.agent_id, o.type, $3, o.format, o.event,
		coalesce((SELECT array_agg(sink ORDER BY sink) FROM verifier_outbox_status WHERE event_id = o.id), '{}'),
		coalesce((SELECT array_agg(status ORDER BY sink) FROM verifier_outbox_status WHERE event_id = o.id), '{}')
	FROM o
	RETURNING 1
)
SELECT (SELECT claimed_by FROM verifier_outbox WHERE id = $1), (SELECT count(*) FROM ins)`

// MarkDelivered implements revocation.Outbox.
func (s *Store) MarkDelivered(ctx context.Context, owner, eventID string, at time.Time) error {
	var held *string
	var n int64
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, markDeliveredSQL, eventID, owner, at.UnixNano()).Scan(&held, &n)
	})
	return claimErr(err, held, n, owner, eventID)
}

// PruneDelivered implements revocation.Outbox, on the delivered_at index.
func (s *Store) PruneDelivered(ctx context.Context, cutoff time.Time) (int, error) {
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		tag, err = s.pool.Exec(ctx, `DELETE FROM verifier_outbox_delivered WHERE delivered_at_ns <= $1`, cutoff.UnixNano())
		return err
	})
	if err != nil {
		return 0, mapErr(err, "pruning delivered outbox events")
	}
	return int(tag.RowsAffected()), nil
}

// eventStatusSQL reads the statuses of the events named, pending or
// delivered, in one statement, hence one snapshot: an event being marked
// delivered meanwhile is read in one table or the other. An event no sink
// has tried is one row with a NULL sink.
const eventStatusSQL = `SELECT o.id, s.sink, s.format, s.status
FROM verifier_outbox o LEFT JOIN verifier_outbox_status s ON s.event_id = o.id
WHERE o.id = ANY($1)
UNION ALL
SELECT d.id, u.sink, d.format, u.status
FROM verifier_outbox_delivered d LEFT JOIN LATERAL unnest(d.sinks, d.statuses) AS u(sink, status) ON true
WHERE d.id = ANY($1)`

// EventStatus implements verifier.Store.
func (s *Store) EventStatus(ctx context.Context, ids []string) (map[string]map[string]revocation.SinkStatus, error) {
	var out map[string]map[string]revocation.SinkStatus
	err := s.retry(ctx, func() error {
		out = make(map[string]map[string]revocation.SinkStatus, len(ids))
		if len(ids) == 0 {
			return nil
		}
		rows, err := s.pool.Query(ctx, eventStatusSQL, ids)
		if err != nil {
			return err
		}
		var id string
		var sink *string
		var format *int16
		var status []byte
		_, err = pgx.ForEachRow(rows, []any{&id, &sink, &format, &status}, func() error {
			st, ok := out[id]
			if !ok {
				st = map[string]revocation.SinkStatus{}
				out[id] = st
			}
			if sink == nil {
				return nil // an event no sink has tried yet
			}
			var v revocation.SinkStatus
			if err := decode("outbox status", id+" "+*sink, *format, status, &v); err != nil {
				return err
			}
			st[*sink] = v
			return nil
		})
		return err
	})
	return out, mapErr(err, "outbox event statuses")
}
