package pgstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// The Service's own bound on one EK's pending registrations, enforced by
// two registrars on two replicas of the store at once: exactly the bound
// is admitted, whichever replica each request reached.
func TestServicesOnReplicasBoundOneEK(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	const perEK, tries = 4, 16
	svcs := make([]*registrar.Service, 2)
	for i := range svcs {
		cfg := registrar.DefaultConfig()
		cfg.Store, cfg.EKPolicy, cfg.MaxPendingPerEK = open(t, url), registrar.EKPolicy{Mode: registrar.EKPolicyAny}, perEK
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		r, err := registrar.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		svcs[i] = r.Service()
	}
	ctx := context.Background()
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgRSA}})
	if err != nil {
		t.Fatal(err)
	}
	tpm := agent.NewSoftTPM(st)
	ek, err := tpm.EKPublic(ctx, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	aks := make([][]byte, tries)
	for i := range aks {
		ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgECC)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ak.Public.Contents()
		if err != nil {
			t.Fatal(err)
		}
		aks[i] = tpm2.Marshal(pub)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range tries {
		wg.Go(func() {
			_, err := svcs[i%2].Register(ctx, wire.RegisterRequest{AgentID: fmt.Sprint("host-", i), EKPublic: tpm2.Marshal(ek), AKPublic: aks[i]})
			switch {
			case err == nil:
				admitted.Add(1)
			case !strings.Contains(err.Error(), "pending registrations"):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != perEK {
		t.Fatalf("%d registrations of one EK admitted by two registrars, the bound is %d", n, perEK)
	}
	checkIndexes(t, url)
}
