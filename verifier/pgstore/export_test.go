package pgstore

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vigil-attest/vigil/internal/pgdb"
)

// statementCounter counts the statements a pool sends, each a round trip.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// OpenCounting opens a store whose pool counts the statements it sends,
// BEGIN and COMMIT included, so that tests can hold a verdict's cost.
func OpenCounting(ctx context.Context, url string) (*Store, *atomic.Int64, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, nil, err
	}
	c := &statementCounter{}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := pgdb.Migrate(ctx, pool, component, migrations, "migrations"); err != nil {
		pool.Close()
		return nil, nil, err
	}
	c.n.Store(0)
	return &Store{pool: pool}, &c.n, nil
}
