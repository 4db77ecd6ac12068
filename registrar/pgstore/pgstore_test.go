package pgstore_test

import (
	"context"
	"testing"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/registrar/pgstore"
	"github.com/vigil-attest/vigil/registrar/storetest"
)

func TestContract(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) registrar.Store {
		return open(t, srv.NewDatabase(t))
	})
}

// open opens a Store on url for t, as one registrar replica would.
func open(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
