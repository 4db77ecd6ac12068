package pgdb_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vigil-attest/vigil/internal/pgdb"
	"github.com/vigil-attest/vigil/internal/pgtest"
)

func TestMigrateOnceInOrderAndRefuseANewerSchema(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	pool, err := pgdb.Open(ctx, url, pgdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	v1 := fstest.MapFS{
		"m/001_create.sql": {Data: []byte(`CREATE TABLE things (id text PRIMARY KEY)`)},
		"m/002_add.sql":    {Data: []byte(`ALTER TABLE things ADD COLUMN n int NOT NULL DEFAULT 0`)},
	}
	// Replicas starting at once: each migration runs exactly once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- pgdb.Migrate(ctx, pool, "test", v1, "m") }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM vigil_schema_migrations WHERE component = 'test'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("applied %d migrations, %v; want 2", n, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO things (id, n) VALUES ('a', 1)`); err != nil {
		t.Fatalf("the migrated schema: %v", err)
	}
	// An older build meets the newer schema: refused, nothing changed.
	old := fstest.MapFS{"m/001_create.sql": v1["m/001_create.sql"]}
	if err := pgdb.Migrate(ctx, pool, "test", old, "m"); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("an older build on a newer schema: %v", err)
	}
	// A failing migration leaves no record and no half-applied change.
	bad := fstest.MapFS{
		"m/001_create.sql": v1["m/001_create.sql"], "m/002_add.sql": v1["m/002_add.sql"],
		"m/003_broken.sql": {Data: []byte(`ALTER TABLE things ADD COLUMN x int; SELECT no_such_function()`)},
	}
	if err := pgdb.Migrate(ctx, pool, "test", bad, "m"); err == nil || !strings.Contains(err.Error(), "003_broken.sql") {
		t.Fatalf("a broken migration: %v", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'x'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a failed migration left column x behind (%d, %v)", n, err)
	}
	for _, name := range []string{"m/1_x.sql", "m/001_Upper.sql"} {
		if err := pgdb.Migrate(ctx, pool, "names", fstest.MapFS{name: {Data: []byte(`SELECT 1`)}}, "m"); err == nil {
			t.Errorf("migration named %s accepted", name)
		}
	}
}

func TestOpenSaysWhatIsUnreachable(t *testing.T) {
	ctx := context.Background()
	_, err := pgdb.Open(ctx, "postgres://vigil@127.0.0.1:1/nowhere?sslmode=disable", pgdb.Options{ConnectTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "cannot be reached") || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("unreachable database: %v", err)
	}
	if _, err := pgdb.Open(ctx, "postgres://%zz", pgdb.Options{}); err == nil || !strings.Contains(err.Error(), "store URL") {
		t.Fatalf("bad URL: %v", err)
	}
}
