package pgstore_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/registrar/pgstore"
)

// fleet is the number of active agents the feed benchmarks read.
const fleet = 10_000

// seedFleet stores fleet active agents through Modify, as activations
// would, and a pending registration for every tenth.
func seedFleet(b *testing.B, s *pgstore.Store) {
	b.Helper()
	var wg sync.WaitGroup
	ids := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range ids {
				id := fmt.Sprintf("host-%05d", i)
				r := registrar.Record{AgentID: id, EKPublic: []byte("ek"), EKSHA256: ekHash(i), EKTrust: "chain",
					AKPublic: []byte("pub"), AKName: fmt.Appendf(nil, "\x00\x0b%032x", i), AKAlg: "rsa-2048", Active: true,
					ActivatedAt: t0(), ActiveProof: []byte("proof"), RegisteredAt: t0(), Enrollments: 1}
				if i%10 == 0 {
					r.Pending = []registrar.Pending{registration("ak-next")}
				}
				if err := s.Modify(b.Context(), id, func(*registrar.Record, registrar.PendingCounts) (*registrar.Record, error) { return &r, nil }); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range fleet {
		ids <- i
	}
	close(ids)
	wg.Wait()
}

// The verifier polls Generation every interval, and reads ActiveAKs when
// it changed.
func BenchmarkFeed(b *testing.B) {
	srv := pgtest.Start(b)
	s, err := pgstore.Open(b.Context(), srv.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	seedFleet(b, s)
	b.Run("Generation", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Generation(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GenerationParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Generation(b.Context()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("ActiveAKs", func(b *testing.B) {
		for b.Loop() {
			_, aks, err := s.ActiveAKs(b.Context())
			if err != nil || len(aks) != fleet {
				b.Fatalf("%d AKs, %v", len(aks), err)
			}
		}
	})
}
