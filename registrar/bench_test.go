package registrar

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/store"
)

// BenchmarkActiveAKs10k measures the change feed with 10,000 active agents:
// the full list built from the store (after a change), the full list
// served again for the same generation, and the 304 a verifier gets when
// nothing changed.
func BenchmarkActiveAKs10k(b *testing.B) {
	const agents = 10000
	db, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	ak := seedAK(b)
	// One transaction for the whole fleet: the benchmark is the feed, not
	// 10,000 commits.
	err = db.Update(context.Background(), func(tx store.Tx) error {
		for i := range agents {
			name := make([]byte, 34)
			name[1] = 0x0b
			copy(name[2:], fmt.Sprintf("%032d", i))
			r := Record{AgentID: fmt.Sprintf("host-%05d", i), EKPublic: ak, EKSHA256: fmt.Sprintf("%064x", i), EKTrust: "any",
				AKPublic: ak, AKName: name, AKAlg: "rsa", Active: true, ActivatedAt: now, ActiveProof: make([]byte, 32), RegisteredAt: now, Enrollments: 1}
			v, err := EncodeRecord(r)
			if err != nil {
				return err
			}
			if err := tx.Put(agentsCollection, r.AgentID, v); err != nil {
				return err
			}
			if err := updateDerived(tx, r.AgentID, nil, &r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	svc := anyEKRegistrar(b, BoltStore{DB: db}).Service()
	answer := httpapi.Answers{Status: status, Log: svc.log()}
	serve := func(h *aksHandler, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, PathAKs, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	warm := &aksHandler{svc: svc, answer: answer}
	first := serve(warm, "")
	if first.Code != http.StatusOK {
		b.Fatalf("list: %d", first.Code)
	}
	etag := first.Header().Get("ETag")

	b.Run("full-after-change", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(first.Body.Len()))
		for b.Loop() {
			if rec := serve(&aksHandler{svc: svc, answer: answer}, ""); rec.Code != http.StatusOK {
				b.Fatal(rec.Code)
			}
		}
	})
	b.Run("full-same-generation", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(first.Body.Len()))
		for b.Loop() {
			if rec := serve(warm, ""); rec.Code != http.StatusOK {
				b.Fatal(rec.Code)
			}
		}
	})
	b.Run("not-modified", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rec := serve(warm, etag); rec.Code != http.StatusNotModified {
				b.Fatal(rec.Code)
			}
		}
	})
}
