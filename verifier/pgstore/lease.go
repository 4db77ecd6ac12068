package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vigil-attest/vigil/verifier"
)

var _ verifier.LeaseStore = (*Store)(nil)

// replicasKeptFor is how long a replica that stopped beating stays listed
// (as not live) before its row is removed, in lease lifetimes.
const replicasKeptFor = 100

func (s *Store) Heartbeat(ctx context.Context, id, url string, now time.Time, ttl time.Duration) ([]verifier.Replica, error) {
	var out []verifier.Replica
	err := s.retry(ctx, func() error {
		out = out[:0]
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO verifier_replicas (id, url, seen_ns) VALUES ($1, $2, $3)
				ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen_ns = greatest(verifier_replicas.seen_ns, EXCLUDED.seen_ns)`,
				id, url, now.UnixNano()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM verifier_replicas WHERE seen_ns < $1`, now.Add(-replicasKeptFor*ttl).UnixNano()); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT id, url, seen_ns FROM verifier_replicas WHERE seen_ns > $1 ORDER BY id`, now.Add(-ttl).UnixNano())
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var r verifier.Replica
				var seen int64
				if err := rows.Scan(&r.ID, &r.URL, &seen); err != nil {
					return err
				}
				r.Seen = time.Unix(0, seen)
				out = append(out, r)
			}
			return rows.Err()
		})
	})
	return out, mapErr(err, "heartbeat of replica "+id)
}

func scanLeases(rows pgx.Rows) ([]verifier.Lease, error) {
	defer rows.Close()
	var out []verifier.Lease
	for rows.Next() {
		var l verifier.Lease
		var exp int64
		if err := rows.Scan(&l.AgentID, &l.Owner, &l.Epoch, &exp); err != nil {
			return nil, err
		}
		if exp != 0 {
			l.Expires = time.Unix(0, exp)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// acquireSQL takes free or expired leases, and renews owner's own, in one
// statement: the row lock of each lease orders replicas racing for it.
const acquireSQL = `INSERT INTO verifier_leases AS l (agent_id, owner, epoch, expires_ns)
	SELECT a.id, $1, nextval('verifier_lease_epoch'), $4
	FROM unnest($2::text[]) AS x(id) JOIN verifier_agents a ON a.id = x.id
	ON CONFLICT (agent_id) DO UPDATE SET
		owner = EXCLUDED.owner,
		epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE EXCLUDED.epoch END,
		expires_ns = EXCLUDED.expires_ns
	WHERE l.owner = EXCLUDED.owner OR l.expires_ns <= $3
	RETURNING agent_id, owner, epoch, expires_ns`

func (s *Store) AcquireLeases(ctx context.Context, owner string, ids []string, now, until time.Time) ([]verifier.Lease, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []verifier.Lease
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, acquireSQL, owner, ids, now.UnixNano(), until.UnixNano())
		if err != nil {
			return err
		}
		out, err = scanLeases(rows)
		return err
	})
	return out, mapErr(err, fmt.Sprintf("acquiring %d leases for %s", len(ids), owner))
}

func (s *Store) RenewLeases(ctx context.Context, owner string, now, until time.Time) ([]verifier.Lease, error) {
	var out []verifier.Lease
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, `UPDATE verifier_leases SET expires_ns = $3 WHERE owner = $1 AND expires_ns > $2
			RETURNING agent_id, owner, epoch, expires_ns`, owner, now.UnixNano(), until.UnixNano())
		if err != nil {
			return err
		}
		out, err = scanLeases(rows)
		return err
	})
	return out, mapErr(err, "renewing the leases of "+owner)
}

func (s *Store) ReleaseLeases(ctx context.Context, owner string, ids []string) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `DELETE FROM verifier_leases WHERE owner = $1 AND agent_id = ANY($2)`, owner, ids)
		return err
	})
	return mapErr(err, "releasing leases of "+owner)
}

func (s *Store) Leases(ctx context.Context) ([]verifier.Lease, error) {
	var out []verifier.Lease
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT a.id, coalesce(l.owner, ''), coalesce(l.epoch, 0), coalesce(l.expires_ns, 0)
			FROM verifier_agents a LEFT JOIN verifier_leases l ON l.agent_id = a.id`)
		if err != nil {
			return err
		}
		out, err = scanLeases(rows)
		return err
	})
	return out, mapErr(err, "listing leases")
}
