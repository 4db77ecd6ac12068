package pgstore_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pgstore"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// benchAgent is an attesting agent with a record the size of a real one:
// both policies, an identity, clock info and the IMA checker's state.
func benchAgent(i int) verifier.Agent {
	a := agent(fmt.Sprintf("host-%06d.example.org", i))
	a.RuntimePolicy = "runtime-1"
	a.Identities = []string{"spiffe://example.org/node/" + a.ID}
	a.Clock = &evidence.ClockInfo{Clock: 1234567, ResetCount: 3, RestartCount: 1, Safe: true}
	a.BootChecked, a.IMAEntries = true, 1500
	a.IMAState = make([]byte, 96)
	a.LastNonce = a.LastAttestedAt.UnixNano()
	return a
}

// benchFleet makes a store holding n agents. pgtest runs PostgreSQL with
// fsync off (on its command line, which ALTER SYSTEM cannot override), so
// these figures leave out the WAL flush each commit costs on a real disk.
func benchFleet(b *testing.B, srv *pgtest.Server, n int) (*pgstore.Store, []verifier.Agent) {
	b.Helper()
	s := open(b, srv.NewDatabase(b))
	fleet := make([]verifier.Agent, n)
	for i := range fleet {
		fleet[i] = benchAgent(i)
		if err := s.CreateAgent(b.Context(), fleet[i]); err != nil {
			b.Fatal(err)
		}
	}
	return s, fleet
}

// BenchmarkSaveAgent is a verdict that changes an agent's state: one
// statement, one commit, with or without a revocation event, alone and
// from many goroutines at once (as many agents report at once).
func BenchmarkSaveAgent(b *testing.B) {
	srv := pgtest.Start(b)
	s, fleet := benchFleet(b, srv, 1000)
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			a := fleet[i%len(fleet)]
			a.Attestations++
			if err := s.SaveAgent(b.Context(), a, nil); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("serial-with-event", func(b *testing.B) {
		i := 0
		for b.Loop() {
			a := fleet[i%len(fleet)]
			a.State = verifier.StateFailed
			if err := s.SaveAgent(b.Context(), a, []revocation.Event{revoked(a)}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run(fmt.Sprintf("parallel-%d", 16*runtime.GOMAXPROCS(0)), func(b *testing.B) {
		b.SetParallelism(16)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a := fleet[int(next.Add(1))%len(fleet)]
				a.Attestations++
				if err := s.SaveAgent(b.Context(), a, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkCheckpoint1000 writes the progress of 1,000 agents that kept
// attesting: one statement.
func BenchmarkCheckpoint1000(b *testing.B) {
	srv := pgtest.Start(b)
	s, fleet := benchFleet(b, srv, 1000)
	for b.Loop() {
		for i := range fleet {
			fleet[i].Attestations++
		}
		if err := s.Checkpoint(b.Context(), fleet); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(fleet)), "ns/agent")
}

// BenchmarkRenewLeases10k is one lease round's renewal by a replica that
// holds 10,000 agents: the statement every replica sends three times per
// lease lifetime.
func BenchmarkRenewLeases10k(b *testing.B) {
	srv := pgtest.Start(b)
	s, fleet := benchFleet(b, srv, 10000)
	ids := make([]string, len(fleet))
	for i, a := range fleet {
		ids[i] = a.ID
	}
	now := time.Now()
	if got, err := s.AcquireLeases(b.Context(), "r1", ids, now, now.Add(time.Hour)); err != nil || len(got) != len(ids) {
		b.Fatalf("acquire: %d, %v", len(got), err)
	}
	for b.Loop() {
		if _, err := s.RenewLeases(b.Context(), "r1", now, now.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}
