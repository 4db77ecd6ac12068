package verifier

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// noAKs is an AKSource for tests that never reach the AK check.
type noAKs struct{}

func (noAKs) AK(context.Context, string) (*evidence.AK, error) { return nil, ErrNotEnrolled }

func newTestService(t testing.TB) (*Service, http.Handler) {
	t.Helper()
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := BoltStore{DB: db}
	checks := &PolicyChecks{Store: st}
	svc := &Service{
		Store:  st,
		Engine: &Engine{Boot: checks, Runtime: checks},
		AKs:    noAKs{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return svc, Handler(svc, HandlerOptions{CheckPolicy: CheckPolicy, MaxEvidence: 64 << 10})
}

func post(h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", wire.ContentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestOversizeEvidenceRefusedWith413(t *testing.T) {
	_, h := newTestService(t)
	big, _ := wire.Marshal(wire.Evidence{AgentID: "a", IMA: make([]byte, 100<<10)})
	if rec := post(h, wire.PathEvidence, big); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize evidence: %d, want 413", rec.Code)
	}
}

func TestEvidenceWithoutChallengeRefused(t *testing.T) {
	svc, h := newTestService(t)
	if _, err := svc.AddPolicy(context.Background(), CheckPolicy, "rt", PolicyRuntime, []byte(`{"meta":{"version":1},"digests":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Admit(context.Background(), AdmitRequest{AgentID: "a", RuntimePolicy: "rt", Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	ev, _ := wire.Marshal(wire.Evidence{AgentID: "a", Nonce: []byte("never issued")})
	if rec := post(h, wire.PathEvidence, ev); rec.Code != http.StatusConflict {
		t.Fatalf("evidence with no open challenge: %d, want 409", rec.Code)
	}
	unknown, _ := wire.Marshal(wire.ChallengeRequest{AgentID: "stranger"})
	if rec := post(h, wire.PathChallenge, unknown); rec.Code != http.StatusForbidden {
		t.Fatalf("challenge for an unknown agent: %d, want 403", rec.Code)
	}
}

func TestAdmitRequiresAPolicy(t *testing.T) {
	svc, _ := newTestService(t)
	_, err := svc.Admit(context.Background(), AdmitRequest{AgentID: "a"})
	var ref *Refusal
	if !asRefusal(err, &ref) || ref.Kind != RefusedInvalid {
		t.Fatalf("admission without a policy: %v, want refused", err)
	}
}

func asRefusal(err error, r **Refusal) bool {
	ref, ok := err.(*Refusal)
	*r = ref
	return ok
}

// FuzzEvidence feeds arbitrary bodies to the evidence endpoint of a
// verifier with one admitted agent that has an open challenge: the answer
// is a 4xx or a verdict, never a crash or a 500, and the stored record
// stays decodable.
func FuzzEvidence(f *testing.F) {
	good, _ := wire.Marshal(wire.Evidence{AgentID: "a", Nonce: make([]byte, 32), Quote: []byte{0xff, 0x54, 0x43, 0x47}, PCRs: map[uint16]map[int][]byte{11: {10: make([]byte, 32)}}})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0xa1, 0x68, 'a', 'g', 'e', 'n', 't', '_', 'i', 'd', 0x61, 'a'})
	f.Add([]byte{})
	svc, h := newTestService(f)
	ctx := context.Background()
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, []byte(`{"meta":{"version":1},"digests":{}}`)); err != nil {
		f.Fatal(err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "a", RuntimePolicy: "rt", Interval: time.Hour}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "a"}); err != nil {
			// The agent may have failed on an earlier input; readmit it.
			if _, err := svc.Readmit(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "a"}); err != nil {
				t.Fatal(err)
			}
		}
		rec := post(h, wire.PathEvidence, body)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
		if _, err := svc.Store.GetAgent(ctx, "a"); err != nil {
			t.Fatalf("stored agent unreadable: %v", err)
		}
	})
}

// unreachableAKs is a registrar that cannot be reached.
type unreachableAKs struct{}

func (unreachableAKs) AK(context.Context, string) (*evidence.AK, error) {
	return nil, context.DeadlineExceeded
}

func TestRegistrarOutageIs503NotAFailure(t *testing.T) {
	svc, h := newTestService(t)
	svc.AKs = unreachableAKs{}
	ctx := context.Background()
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, []byte(`{"meta":{"version":1},"digests":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "a", RuntimePolicy: "rt", Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := wire.Marshal(wire.Evidence{AgentID: "a", Nonce: ch.Nonce})
	if rec := post(h, wire.PathEvidence, ev); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("evidence while the registrar is unreachable: %d, want 503", rec.Code)
	}
	a, err := svc.Status(ctx, "a")
	if err != nil || a.State != StatePending {
		t.Fatalf("agent after a registrar outage: %s, %v; want still pending", a.State, err)
	}
}
