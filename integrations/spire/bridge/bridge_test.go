package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// recorder stands in for the SPIRE server (the end-to-end test runs a real
// one): it records what it was asked and fails when told to.
type recorder struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (r *recorder) Ban(_ context.Context, path string) error   { return r.call("ban " + path) }
func (r *recorder) Unban(_ context.Context, path string) error { return r.call("unban " + path) }

func (r *recorder) call(c string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.calls = append(r.calls, c)
	return nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

var key = []byte("0123456789abcdef0123456789abcdef")

func deliver(t *testing.T, h http.Handler, e revocation.Event, signKey []byte, at time.Time) (int, Answer) {
	t.Helper()
	body, _ := json.Marshal(e.Cloud("https://verifier.test"))
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("webhook-id", e.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", revocation.Sign(signKey, e.ID, at.Unix(), body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var a Answer
	json.Unmarshal(w.Body.Bytes(), &a)
	return w.Code, a
}

func TestBridge(t *testing.T) {
	now := time.Now()
	spire := &recorder{}
	h := &Handler{Keys: [][]byte{[]byte("an older key, still accepted"), key}, SPIRE: spire}
	revoked := revocation.NewEvent(revocation.TypeRevoked, now.Add(-time.Minute), revocation.Data{AgentID: "host-1", State: "failed"})
	readmitted := revocation.NewEvent(revocation.TypeReadmitted, now, revocation.Data{AgentID: "host-1", State: "pending"})

	// Nothing unsigned, wrongly signed or stale reaches SPIRE.
	for name, tc := range map[string]struct {
		key []byte
		at  time.Time
	}{
		"wrong key": {[]byte("not the webhook secret at all!!"), now},
		"stale":     {key, now.Add(-time.Hour)},
	} {
		if code, _ := deliver(t, h, revoked, tc.key, tc.at); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader([]byte(`{}`)))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized {
		t.Errorf("no signature: %d", w.Code)
	}
	if c := spire.got(); len(c) != 0 {
		t.Fatalf("SPIRE was asked %v by unauthenticated requests", c)
	}

	// SPIRE down: 502, so the verifier's outbox retries.
	spire.fail = errors.New("connection refused")
	if code, a := deliver(t, h, revoked, key, now); code != http.StatusBadGateway || a.Applied {
		t.Fatalf("SPIRE down: %d %+v", code, a)
	}
	spire.fail = nil

	if code, a := deliver(t, h, revoked, key, now); code != http.StatusOK || !a.Applied || a.Action != "ban" {
		t.Fatalf("revoked: %d %+v", code, a)
	}
	if code, a := deliver(t, h, readmitted, key, now); code != http.StatusOK || a.Action != "unban" {
		t.Fatalf("readmitted: %d %+v", code, a)
	}
	// The revocation retried after the readmission is older: ignored.
	if code, a := deliver(t, h, revoked, key, now); code != http.StatusOK || a.Applied {
		t.Fatalf("stale revocation: %d %+v", code, a)
	}
	want := []string{"ban /spire/agent/vigil/host-1", "unban /spire/agent/vigil/host-1"}
	if c := spire.got(); len(c) != 2 || c[0] != want[0] || c[1] != want[1] {
		t.Fatalf("SPIRE calls %v, want %v", c, want)
	}

	// An agent ID that cannot be a SPIFFE path is refused, naming the field.
	bad := revocation.NewEvent(revocation.TypeRevoked, now, revocation.Data{AgentID: "a:b"})
	if code, a := deliver(t, h, bad, key, now); code != http.StatusBadRequest || a.Error == "" {
		t.Fatalf("agent ID with ':': %d %+v", code, a)
	}
	// Other event types are acknowledged and left alone.
	other := revocation.NewEvent("dev.vigil.something.else", now, revocation.Data{AgentID: "host-2"})
	if code, a := deliver(t, h, other, key, now); code != http.StatusOK || a.Applied {
		t.Fatalf("other type: %d %+v", code, a)
	}
	if len(spire.got()) != 2 {
		t.Fatalf("SPIRE calls %v", spire.got())
	}
}

// TestBridgeKeepsOrderAcrossRestarts: a revocation that failed to reach
// SPIRE is retried after the readmission that followed it, and after the
// bridge restarted. It must not ban the readmitted node.
func TestBridgeKeepsOrderAcrossRestarts(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	spire := &recorder{}
	revoked := revocation.NewEvent(revocation.TypeRevoked, now.Add(-time.Minute), revocation.Data{AgentID: "host-1", State: "failed"})
	readmitted := revocation.NewEvent(revocation.TypeReadmitted, now, revocation.Data{AgentID: "host-1", State: "pending"})

	db, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Keys: [][]byte{key}, SPIRE: spire, Applied: StoreApplied{DB: db}}
	if code, a := deliver(t, h, readmitted, key, now); code != http.StatusOK || a.Action != "unban" {
		t.Fatalf("readmitted: %d %+v", code, a)
	}
	db.Close()

	// A new bridge process on the same data directory.
	db, err = store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h = &Handler{Keys: [][]byte{key}, SPIRE: spire, Applied: StoreApplied{DB: db}}
	if code, a := deliver(t, h, revoked, key, now); code != http.StatusOK || a.Applied {
		t.Fatalf("stale revocation after a restart: %d %+v", code, a)
	}
	if c := spire.got(); len(c) != 1 || c[0] != "unban /spire/agent/vigil/host-1" {
		t.Fatalf("SPIRE calls %v, want only the unban", c)
	}
	// A newer revocation still bans.
	again := revocation.NewEvent(revocation.TypeRevoked, now.Add(time.Minute), revocation.Data{AgentID: "host-1", State: "failed"})
	if code, a := deliver(t, h, again, key, now); code != http.StatusOK || !a.Applied || a.Action != "ban" {
		t.Fatalf("newer revocation: %d %+v", code, a)
	}
}

// slowSPIRE holds each call until released, so that two events for one
// agent overlap at the bridge.
type slowSPIRE struct {
	recorder
	entered chan string
	release chan struct{}
}

func (s *slowSPIRE) Ban(ctx context.Context, path string) error {
	s.entered <- "ban"
	<-s.release
	return s.recorder.Ban(ctx, path)
}

func (s *slowSPIRE) Unban(ctx context.Context, path string) error {
	s.entered <- "unban"
	<-s.release
	return s.recorder.Unban(ctx, path)
}

// TestBridgeSerializesOneAgentsEvents: a stale revocation that arrives
// while the newer readmission is being applied must not act after it.
func TestBridgeSerializesOneAgentsEvents(t *testing.T) {
	now := time.Now()
	spire := &slowSPIRE{entered: make(chan string, 2), release: make(chan struct{})}
	h := &Handler{Keys: [][]byte{key}, SPIRE: spire}
	revoked := revocation.NewEvent(revocation.TypeRevoked, now.Add(-time.Minute), revocation.Data{AgentID: "host-1", State: "failed"})
	readmitted := revocation.NewEvent(revocation.TypeReadmitted, now, revocation.Data{AgentID: "host-1", State: "pending"})

	done := make(chan Answer, 2)
	go func() { _, a := deliver(t, h, readmitted, key, now); done <- a }()
	if got := <-spire.entered; got != "unban" {
		t.Fatalf("first call %q", got)
	}
	go func() { _, a := deliver(t, h, revoked, key, now); done <- a }()
	// The stale event waits for the readmission to be recorded, then is
	// ignored: it never reaches SPIRE.
	select {
	case got := <-spire.entered:
		t.Fatalf("SPIRE was asked to %s while the readmission was being applied", got)
	case <-time.After(200 * time.Millisecond):
	}
	close(spire.release)
	a1, a2 := <-done, <-done
	if a1.Applied == a2.Applied {
		t.Fatalf("answers %+v and %+v: want exactly one applied", a1, a2)
	}
	if c := spire.got(); len(c) != 1 || c[0] != "unban /spire/agent/vigil/host-1" {
		t.Fatalf("SPIRE calls %v, want only the unban", c)
	}
}
