package verifier

import (
	"bytes"
	"context"
	"encoding/hex"
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
	v := newTestVerifier(t, BoltStore{DB: db}, noAKs{}, 0)
	return v.Service(), v.Handler()
}

// newTestVerifier assembles a verifier over st with AKs from aks, storing
// progress every checkpoint (0: every verdict at once), as New does for
// the CLI.
func newTestVerifier(t testing.TB, st Store, aks AKSource, checkpoint time.Duration, configure ...func(*Config)) *Verifier {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Store, cfg.AKs, cfg.CheckpointEvery = st, aks, checkpoint
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range configure {
		c(&cfg)
	}
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// postEvidence posts body as agent id's evidence with nonce in the header,
// as agent.PostEvidence does.
func postEvidence(h http.Handler, id string, nonce, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, wire.EvidencePath(id), bytes.NewReader(body))
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.NonceHeader, hex.EncodeToString(nonce))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// admitOne stores a runtime policy "rt" and admits agent "a" under it.
func admitOne(t testing.TB, svc *Service, interval time.Duration) {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, []byte(`{"meta":{"version":1},"digests":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "a", RuntimePolicy: "rt", Interval: interval}); err != nil {
		t.Fatal(err)
	}
}

func post(h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", wire.ContentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestOversizeEvidenceRefusedWith413BeforeReading(t *testing.T) {
	svc, h := newTestService(t)
	admitOne(t, svc, time.Second)
	ch, err := svc.Challenge(context.Background(), wire.ChallengeRequest{AgentID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// The declared length alone is refused: no byte of the body is read.
	body := &countingReader{}
	req := httptest.NewRequest(http.MethodPost, wire.EvidencePath("a"), body)
	req.ContentLength = wire.MaxEvidenceIMA + 1
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.NonceHeader, hex.EncodeToString(ch.Nonce))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || body.n != 0 {
		t.Fatalf("oversize evidence: %d after reading %d bytes, want 413 after none", rec.Code, body.n)
	}
	// A body without a length is cut at the cap.
	big, _ := wire.Marshal(wire.Evidence{AgentID: "a", Nonce: ch.Nonce, IMA: make([]byte, wire.MaxEvidenceIMA)})
	req = httptest.NewRequest(http.MethodPost, wire.EvidencePath("a"), io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.NonceHeader, hex.EncodeToString(ch.Nonce))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize evidence of unknown length: %d, want 413", rec.Code)
	}
}

// countingReader counts what is read of it.
type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) {
	c.n += len(p)
	return len(p), nil
}

func TestEvidenceRefusedBeforeItsBodyIsRead(t *testing.T) {
	svc, h := newTestService(t)
	admitOne(t, svc, time.Second)
	ch, err := svc.Challenge(context.Background(), wire.ChallengeRequest{AgentID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), ch.Nonce...)
	forged[20] ^= 1
	for _, tc := range []struct {
		name  string
		id    string
		nonce []byte
		want  int
	}{
		{"unknown agent", "stranger", ch.Nonce, http.StatusForbidden},
		{"no nonce", "a", nil, http.StatusBadRequest},
		{"forged nonce", "a", forged, http.StatusConflict},
		{"another agent's nonce", "a", mustNonce(t, svc, "b"), http.StatusConflict},
	} {
		body := &countingReader{}
		req := httptest.NewRequest(http.MethodPost, wire.EvidencePath(tc.id), io.LimitReader(body, 1<<20))
		req.Header.Set("Content-Type", wire.ContentType)
		if tc.nonce != nil {
			req.Header.Set(wire.NonceHeader, hex.EncodeToString(tc.nonce))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want || body.n != 0 {
			t.Errorf("%s: %d after reading %d bytes, want %d after none", tc.name, rec.Code, body.n, tc.want)
		}
	}
}

// mustNonce admits agent id under "rt" and returns a nonce issued to it.
func mustNonce(t *testing.T, svc *Service, id string) []byte {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: id, RuntimePolicy: "rt"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: id})
	if err != nil {
		t.Fatal(err)
	}
	return ch.Nonce
}

func TestEvidenceBytesInFlightBounded(t *testing.T) {
	svc, _ := newTestService(t)
	h := Handler(svc, HandlerOptions{CheckPolicy: CheckPolicy, InFlight: 1 << 20})
	admitOne(t, svc, time.Second)
	ch, err := svc.Challenge(context.Background(), wire.ChallengeRequest{AgentID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// A body of unknown length reserves the whole cap, more than this
	// verifier lets be in flight: refused at once with a Retry-After.
	req := httptest.NewRequest(http.MethodPost, wire.EvidencePath("a"), &countingReader{})
	req.ContentLength = -1
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.NonceHeader, hex.EncodeToString(ch.Nonce))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("evidence over the in-flight budget: %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
}

func TestEvidenceWithoutChallengeRefused(t *testing.T) {
	svc, h := newTestService(t)
	admitOne(t, svc, time.Second)
	nonce := []byte("never issued")
	ev, _ := wire.Marshal(wire.Evidence{AgentID: "a", Nonce: nonce})
	if rec := postEvidence(h, "a", nonce, ev); rec.Code != http.StatusConflict {
		t.Fatalf("evidence over a nonce never issued: %d, want 409", rec.Code)
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
		ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "a"})
		if err != nil {
			// The agent may have failed on an earlier input; readmit it.
			if _, err := svc.Readmit(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if ch, err = svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "a"}); err != nil {
				t.Fatal(err)
			}
		}
		// Evidence that decodes is made to answer the open challenge, so
		// that the checks behind the nonce see fuzzed quotes and logs.
		var ev wire.Evidence
		if wire.Unmarshal(body, &ev) == nil {
			ev.AgentID, ev.Nonce = "a", ch.Nonce
			body, _ = wire.Marshal(ev)
		}
		rec := postEvidence(h, "a", ch.Nonce, body)
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
	if rec := postEvidence(h, "a", ch.Nonce, ev); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("evidence while the registrar is unreachable: %d, want 503", rec.Code)
	}
	a, err := svc.Status(ctx, "a")
	if err != nil || a.State != StatePending {
		t.Fatalf("agent after a registrar outage: %s, %v; want still pending", a.State, err)
	}
}
