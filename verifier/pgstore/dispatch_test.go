package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver stands for an identity issuer: it verifies every request's
// signature and counts the events it accepted by webhook-id.
type receiver struct {
	t     *testing.T
	key   []byte
	mu    sync.Mutex
	got   map[string]int
	first time.Time // of the first accepted delivery
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	if err := revocation.Verify(r.key, id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, time.Now(), 5*time.Minute); err != nil {
		r.t.Errorf("delivery of %s: %v", id, err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	// Deliveries take a while, so that both dispatchers are at work at once.
	time.Sleep(2 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first.IsZero() {
		r.first = time.Now()
	}
	r.got[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) counts() (map[string]int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.got))
	for id, n := range r.got {
		out[id] = n
	}
	return out, r.first
}

func newReceiver(t *testing.T) (*receiver, revocation.Sink) {
	key, err := revocation.ParseSecret(webhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, key: key, got: map[string]int{}}
	srv := httptest.NewTLSServer(r)
	t.Cleanup(srv.Close)
	return r, &revocation.Webhook{URL: srv.URL, Key: key, Source: "urn:vigil:verifier:test", Client: srv.Client()}
}

// raise stores n revocation events, as verdicts on agents would.
func raise(t *testing.T, s verifier.Store, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		a := agent(fmt.Sprintf("%s-%d", prefix, i))
		if err := s.CreateAgent(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		a.State = verifier.StateFailed
		e := revoked(a)
		if err := s.SaveAgent(t.Context(), a, []revocation.Event{e}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runDispatcher runs d until the returned stop is called, which waits for
// it to return.
func runDispatcher(ctx context.Context, d *revocation.Dispatcher) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// waitDelivered waits until every event in ids was received and none is
// pending, then a little longer for a wrong duplicate to show.
func waitDelivered(t *testing.T, s verifier.Store, r *receiver, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, _ := r.counts()
		ps, err := s.PendingEvents(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, id := range ids {
			if got[id] > 0 {
				n++
			}
		}
		if n == len(ids) && len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d of %d events received, %d pending", within, n, len(ids), len(ps))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

func receivedOnce(t *testing.T, r *receiver, ids []string) {
	t.Helper()
	got, _ := r.counts()
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s received %d times, want once", id, got[id])
		}
	}
	if len(got) != len(ids) {
		t.Errorf("received %d distinct webhook-ids, want %d", len(got), len(ids))
	}
}

// twoDispatchers: two replicas, each with its own connections, drain one
// outbox, and the receiver gets every event exactly once.
func twoDispatchers(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s1, s2 := open(t, url), open(t, url)
	r, sink := newReceiver(t)
	ids := raise(t, s1, "web", 25)
	var delivered [2]atomic.Int64
	var stops []func()
	for i, s := range []verifier.Store{s1, s2} {
		d := &revocation.Dispatcher{Outbox: s, Sinks: []revocation.Sink{sink}, Log: quiet(), Owner: fmt.Sprintf("replica-%d", i),
			// Small rounds, so that the replicas take turns.
			ClaimMax:    5,
			OnDelivered: func(revocation.Event, string) { delivered[i].Add(1) }}
		stops = append(stops, runDispatcher(t.Context(), d))
	}
	// And more while they run, raised on either replica.
	ids = append(ids, raise(t, s2, "db", 25)...)
	waitDelivered(t, s1, r, ids, 20*time.Second)
	for _, stop := range stops {
		stop()
	}
	receivedOnce(t, r, ids)
	if delivered[0].Load() == 0 || delivered[1].Load() == 0 {
		t.Errorf("deliveries by replica: %d and %d; want both at work", delivered[0].Load(), delivered[1].Load())
	}
}

// dyingSink fails, and kills its dispatcher, after `after` deliveries: the
// dispatcher stops holding claims it never finishes.
type dyingSink struct {
	revocation.Sink
	after int
	n     int
	die   func()
}

func (s *dyingSink) Deliver(ctx context.Context, e revocation.Event) error {
	if s.n == s.after {
		s.die()
		return errors.New("replica died")
	}
	s.n++
	return s.Sink.Deliver(ctx, e)
}

// deadReplica: a replica dies holding claims; the other delivers those
// events once the claims lapse, not before, and none twice.
func deadReplica(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s1, s2 := open(t, url), open(t, url)
	r, sink := newReceiver(t)
	ids := raise(t, s1, "web", 20)
	const claimFor = 2 * time.Second

	ctx, die := context.WithCancel(t.Context())
	start := time.Now()
	d1 := &revocation.Dispatcher{Outbox: s1, Sinks: []revocation.Sink{&dyingSink{Sink: sink, after: 5, die: die}},
		Log: quiet(), Owner: "replica-1", ClaimFor: claimFor}
	stop1 := runDispatcher(ctx, d1)
	<-ctx.Done()
	stop1()
	s1.Close()
	got, _ := r.counts()
	if len(got) != 5 {
		t.Fatalf("the dying replica delivered %d events, want 5", len(got))
	}
	ps, err := s2.PendingEvents(t.Context())
	if err != nil || len(ps) != 15 {
		t.Fatalf("pending after the replica died: %d, %v; want the 15 it claimed", len(ps), err)
	}

	r.mu.Lock()
	r.first = time.Time{}
	r.mu.Unlock()
	d2 := &revocation.Dispatcher{Outbox: s2, Sinks: []revocation.Sink{sink}, Log: quiet(), Owner: "replica-2", ClaimFor: claimFor}
	stop2 := runDispatcher(t.Context(), d2)
	waitDelivered(t, s2, r, ids, claimFor+10*time.Second)
	stop2()
	receivedOnce(t, r, ids)
	if _, first := r.counts(); first.Before(start.Add(claimFor)) {
		t.Errorf("the live replica delivered a dead one's event %s after it started, before its claim (%s) lapsed", first.Sub(start), claimFor)
	}
}
