package verifier_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
	"github.com/vigil-attest/vigil/verifier/storetest"
)

func newBoltStore(t testing.TB) (verifier.BoltStore, *store.DB) {
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return verifier.BoltStore{DB: db}, db
}

func TestBoltStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verifier.Store {
		s, _ := newBoltStore(t)
		return s
	})
}

// sink accepts (or, when down, refuses) every event.
type sink struct {
	name      string
	down      bool
	delivered int
}

func (s *sink) Name() string { return s.name }

func (s *sink) Deliver(context.Context, revocation.Event) error {
	if s.down {
		return errors.New("receiver answered 503")
	}
	s.delivered++
	return nil
}

func count(t testing.TB, db *store.DB, collection string) int {
	n := 0
	if err := db.View(context.Background(), func(tx store.Tx) error {
		return tx.ForEach(collection, func(string, []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// raise stores n revocation events of one agent.
func raise(t testing.TB, s verifier.Store, id string, n int) {
	ctx := context.Background()
	a := verifier.Agent{ID: id, BootPolicy: "b", State: verifier.StateFailed}
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	var es []revocation.Event
	for i := range n {
		es = append(es, revocation.NewEvent(revocation.TypeRevoked, time.Now(), revocation.Data{AgentID: id, Attestations: uint64(i)}))
	}
	if err := s.SaveAgent(ctx, a, es); err != nil {
		t.Fatal(err)
	}
}

// TestDeliveredEventsLeaveThePendingScanAndArePruned: the dispatcher's
// rounds read only what is still to deliver, however much history there
// is, and the history goes after the retention, the undelivered never.
func TestDeliveredEventsLeaveThePendingScanAndArePruned(t *testing.T) {
	ctx := context.Background()
	s, db := newBoltStore(t)
	now := time.Now()
	up := &sink{name: "https://up/"}
	d := &revocation.Dispatcher{Outbox: s, Sinks: []revocation.Sink{up}, Now: func() time.Time { return now },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	raise(t, s, "web-1", 200)
	d.Once(ctx)
	if up.delivered != 200 {
		t.Fatalf("%d of 200 events delivered", up.delivered)
	}
	if n := count(t, db, verifier.OutboxCollection); n != 0 {
		t.Fatalf("the pending scan still reads %d records after every event was delivered", n)
	}
	if n := count(t, db, verifier.DeliveredCollection); n != 200 {
		t.Fatalf("%d delivered events kept, want 200 until the retention", n)
	}

	// An event no sink accepts, older than the retention.
	up.down = true
	raise(t, s, "web-2", 1)
	d.Once(ctx)
	if n := count(t, db, verifier.OutboxCollection); n != 1 {
		t.Fatalf("the pending scan reads %d records, want the 1 undelivered", n)
	}

	now = now.Add(revocation.DefaultRetention - time.Minute)
	if n, err := d.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("Prune within the retention = %d, %v", n, err)
	}
	now = now.Add(2 * time.Minute)
	if n, err := d.Prune(ctx); err != nil || n != 200 {
		t.Fatalf("Prune past the retention = %d, %v; want 200", n, err)
	}
	if n := count(t, db, verifier.DeliveredCollection); n != 0 {
		t.Fatalf("%d delivered events left after pruning", n)
	}
	p, err := s.PendingEvents(ctx)
	if err != nil || len(p) != 1 || p[0].Event.Subject != "web-2" {
		t.Fatalf("pending after pruning: %+v, %v; the undelivered event must stay", p, err)
	}
}

// legacyOutboxRecord is an outbox record as stores before the delivered
// collection wrote it.
type legacyOutboxRecord struct {
	Event  revocation.Event                 `cbor:"event"`
	Status map[string]revocation.SinkStatus `cbor:"status"`
	Done   bool                             `cbor:"done"`
}

// TestEventDoneInAnOlderStoreIsNotSentAgain: a store from before delivered
// events had their own collection keeps them among the pending ones; the
// first round moves them without a second delivery.
func TestEventDoneInAnOlderStoreIsNotSentAgain(t *testing.T) {
	ctx := context.Background()
	s, db := newBoltStore(t)
	e := revocation.NewEvent(revocation.TypeRevoked, time.Now(), revocation.Data{AgentID: "web-1"})
	b, err := wire.Marshal(legacyOutboxRecord{Event: e, Done: true, Status: map[string]revocation.SinkStatus{
		"https://up/": {Delivered: true, DeliveredAt: time.Now().UTC(), Attempts: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx store.Tx) error { return tx.Put(verifier.OutboxCollection, e.ID, b) }); err != nil {
		t.Fatal(err)
	}
	up := &sink{name: "https://up/"}
	d := &revocation.Dispatcher{Outbox: s, Sinks: []revocation.Sink{up}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.Once(ctx)
	if up.delivered != 0 {
		t.Fatal("an event delivered before the upgrade was sent again")
	}
	if p, _ := s.PendingEvents(ctx); len(p) != 0 {
		t.Fatalf("still pending: %+v", p)
	}
	if n := count(t, db, verifier.DeliveredCollection); n != 1 {
		t.Fatalf("%d delivered events, want the upgraded one", n)
	}
}

// BenchmarkPendingEvents reads the pending events with one undelivered
// event and a growing delivered history: the time must not grow with it.
func BenchmarkPendingEvents(b *testing.B) {
	for _, delivered := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("delivered=%d", delivered), func(b *testing.B) {
			ctx := context.Background()
			s, _ := newBoltStore(b)
			up := &sink{name: "https://up/"}
			d := &revocation.Dispatcher{Outbox: s, Sinks: []revocation.Sink{up}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			raise(b, s, "history", delivered)
			d.Once(ctx)
			raise(b, s, "pending", 1)
			b.ResetTimer()
			for b.Loop() {
				p, err := s.PendingEvents(ctx)
				if err != nil || len(p) != 1 {
					b.Fatalf("%d pending, %v", len(p), err)
				}
			}
		})
	}
}
