package pgstore

import (
	"context"
	"errors"
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
		index := map[string]int{}
		var id string
		var sink *string
		var format int16
		var statusFormat *int16
		var event, status []byte
		_, err = pgx.ForEachRow(rows, []any{&id, &format, &event, &sink, &statusFormat, &status}, func() error {
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
		return err
	})
	return out, mapErr(err, "pending outbox events")
}

// RecordDelivery implements revocation.Outbox. The status row's foreign key
// is what tells an event that is not pending: one statement, no read first.
func (s *Store) RecordDelivery(ctx context.Context, eventID, sink string, st revocation.SinkStatus) error {
	b, err := wire.Marshal(st)
	if err != nil {
		return fmt.Errorf("outbox event %q status at %s: %w", eventID, sink, err)
	}
	err = s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `INSERT INTO verifier_outbox_status (event_id, sink, format, status) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id, sink) DO UPDATE SET format = excluded.format, status = excluded.status`,
			eventID, sink, recordFormat, b)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		err = pgx.ErrNoRows
	}
	return mapErr(err, fmt.Sprintf("pending outbox event %q", eventID))
}

// markDeliveredSQL moves an event, with its statuses as arrays, from the
// pending table to the delivered one in one statement. The status rows go
// by cascade after the statement, which has read them already.
const markDeliveredSQL = `WITH o AS (
	DELETE FROM verifier_outbox WHERE id = $1 RETURNING id, agent_id, type, format, event
)
INSERT INTO verifier_outbox_delivered (id, agent_id, type, delivered_at_ns, format, event, sinks, statuses)
SELECT o.id, o.agent_id, o.type, $2, o.format, o.event,
	coalesce((SELECT array_agg(sink ORDER BY sink) FROM verifier_outbox_status WHERE event_id = o.id), '{}'),
	coalesce((SELECT array_agg(status ORDER BY sink) FROM verifier_outbox_status WHERE event_id = o.id), '{}')
FROM o`

// MarkDelivered implements revocation.Outbox.
func (s *Store) MarkDelivered(ctx context.Context, eventID string, at time.Time) error {
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		tag, err = s.pool.Exec(ctx, markDeliveredSQL, eventID, at.UnixNano())
		return err
	})
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr(err, fmt.Sprintf("pending outbox event %q", eventID))
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
