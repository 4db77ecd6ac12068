package revocation

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// memOutbox is an in-memory Outbox for the dispatcher's own tests; the
// verifier's store implements the real one and is tested with it.
type memOutbox struct {
	mu        sync.Mutex
	events    []Event
	status    map[string]map[string]SinkStatus
	delivered map[string]time.Time
	claims    map[string]memClaim
}

type memClaim struct {
	owner string
	until time.Time
}

func (o *memOutbox) ClaimEvents(ctx context.Context, owner string, now time.Time, claimFor time.Duration, max int) ([]Pending, error) {
	all, _ := o.PendingEvents(ctx)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.claims == nil {
		o.claims = map[string]memClaim{}
	}
	var out []Pending
	for _, p := range all {
		if c, ok := o.claims[p.Event.ID]; ok && c.owner != owner && now.Before(c.until) {
			continue
		}
		if len(out) == max {
			break
		}
		o.claims[p.Event.ID] = memClaim{owner, now.Add(claimFor)}
		out = append(out, p)
	}
	return out, nil
}

func (o *memOutbox) holds(owner, id string) error {
	if c := o.claims[id]; c.owner != owner {
		return ErrClaimLost
	}
	return nil
}

func (o *memOutbox) PendingEvents(context.Context) ([]Pending, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Pending
	for _, e := range o.events {
		if _, done := o.delivered[e.ID]; done {
			continue
		}
		st := map[string]SinkStatus{}
		for s, v := range o.status[e.ID] {
			st[s] = v
		}
		out = append(out, Pending{Event: e, Status: st})
	}
	return out, nil
}

func (o *memOutbox) RecordDelivery(_ context.Context, owner, id, sink string, st SinkStatus) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.holds(owner, id); err != nil {
		return err
	}
	if o.status == nil {
		o.status = map[string]map[string]SinkStatus{}
	}
	if o.status[id] == nil {
		o.status[id] = map[string]SinkStatus{}
	}
	o.status[id][sink] = st
	return nil
}

func (o *memOutbox) MarkDelivered(_ context.Context, owner, id string, at time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.holds(owner, id); err != nil {
		return err
	}
	if o.delivered == nil {
		o.delivered = map[string]time.Time{}
	}
	o.delivered[id] = at
	return nil
}

func (o *memOutbox) PruneDelivered(_ context.Context, cutoff time.Time) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	o.events = slices.DeleteFunc(o.events, func(e Event) bool {
		at, done := o.delivered[e.ID]
		if done && !at.After(cutoff) {
			n++
			return true
		}
		return false
	})
	return n, nil
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a webhook receiver as an identity issuer would run it: it
// checks the signature and the CloudEvents fields, and fails the first
// `failures` deliveries.
type receiver struct {
	t        *testing.T
	key      []byte
	mu       sync.Mutex
	failures int
	ids      []string // webhook-id of every request
	accepted []CloudEvent
	badSig   int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, req.Header.Get("webhook-id"))
	if err := Verify(r.key, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, time.Now(), 5*time.Minute); err != nil {
		r.badSig++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.failures > 0 {
		r.failures--
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var ce CloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		r.t.Errorf("body is not a CloudEvent: %v", err)
	}
	if ce.SpecVersion != "1.0" || ce.ID != req.Header.Get("webhook-id") || ce.Source == "" || ce.Type != TypeRevoked ||
		ce.Subject != ce.Data.AgentID || ce.Time.IsZero() || len(ce.Data.Identities) == 0 || ce.Data.Reason == "" {
		r.t.Errorf("CloudEvent fields: %+v", ce)
	}
	r.accepted = append(r.accepted, ce)
	w.WriteHeader(http.StatusNoContent)
}

func newSink(t *testing.T, srv *httptest.Server, secret string) *Webhook {
	key, err := ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return &Webhook{URL: srv.URL, Key: key, Source: "urn:vigil:verifier:test", Client: srv.Client()}
}

func testEvent() Event {
	return NewEvent(TypeRevoked, time.Now(), Data{
		AgentID: "web-1", State: "failed", Reason: "policy_violation", Check: "ima_not-in-policy",
		Detail: "entry 6 /tmp/evil", Identities: []string{"spiffe://example.org/node/web-1"}, Attestations: 42,
	})
}

func TestRetriedUntilAcceptedOnceWithTheSameID(t *testing.T) {
	key, _ := ParseSecret(testSecret)
	rcv := &receiver{t: t, key: key, failures: 2}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	ob := &memOutbox{events: []Event{testEvent()}}
	d := &Dispatcher{Outbox: ob, Sinks: []Sink{newSink(t, srv, testSecret)}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	for {
		rcv.mu.Lock()
		n := len(rcv.accepted)
		rcv.mu.Unlock()
		if n > 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a wrong duplicate
	cancel()
	<-done
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.accepted) != 1 {
		t.Fatalf("accepted %d times, want exactly once", len(rcv.accepted))
	}
	if len(rcv.ids) != 3 {
		t.Fatalf("%d requests, want 3 (two refused, one accepted)", len(rcv.ids))
	}
	for _, id := range rcv.ids {
		if id != ob.events[0].ID {
			t.Errorf("retry carried webhook-id %q, want %q", id, ob.events[0].ID)
		}
	}
	st := ob.status[ob.events[0].ID][srv.URL]
	if !st.Delivered || st.Attempts != 3 {
		t.Errorf("delivery status %+v", st)
	}
}

func TestWrongSecretIsDetectedByTheReceiver(t *testing.T) {
	key, _ := ParseSecret(testSecret)
	rcv := &receiver{t: t, key: key}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of enough length"))
	ob := &memOutbox{events: []Event{testEvent()}}
	d := &Dispatcher{Outbox: ob, Sinks: []Sink{newSink(t, srv, other)}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.Once(context.Background())
	if rcv.badSig != 1 || len(rcv.accepted) != 0 {
		t.Fatalf("bad signatures %d, accepted %d", rcv.badSig, len(rcv.accepted))
	}
	if st := ob.status[ob.events[0].ID][srv.URL]; st.Delivered || st.LastError == "" || st.NextAttempt.IsZero() {
		t.Errorf("a refused delivery recorded as %+v", st)
	}
}

func TestSignatureIsStandardWebhooks(t *testing.T) {
	// The Standard Webhooks reference example: secret, id, timestamp and
	// payload from the specification's test vector.
	key, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	now := time.Unix(1614265330, 0)
	if err := Verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,bogus "+got, []byte(`{"test": 2432232314}`), now, time.Minute); err != nil {
		t.Errorf("rotation list with the right signature refused: %v", err)
	}
	if err := Verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", got, []byte(`{"test": 2432232315}`), now, time.Minute); err == nil {
		t.Error("altered body accepted")
	}
	if err := Verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", got, []byte(`{"test": 2432232314}`), now.Add(time.Hour), time.Minute); err == nil {
		t.Error("stale timestamp accepted")
	}
}

func TestParseSecretRefusesBadSecrets(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="} {
		if _, err := ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) accepted", s)
		}
	}
}

func TestDoneOnceEverySinkHasIt(t *testing.T) {
	key, _ := ParseSecret(testSecret)
	rcv := &receiver{t: t, key: key}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	ob := &memOutbox{events: []Event{testEvent()}}
	id := ob.events[0].ID
	// A sink that delivered before a restart and has since been dropped
	// from the configuration is not waited for.
	d := &Dispatcher{Outbox: ob, Sinks: []Sink{newSink(t, srv, testSecret)}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Owner: "test"}
	ob.claims = map[string]memClaim{id: {owner: "test"}}
	ob.RecordDelivery(context.Background(), "test", id, "https://gone.example/", SinkStatus{Attempts: 3, LastError: "refused"})
	d.Once(context.Background())
	if _, done := ob.delivered[id]; !done || len(rcv.accepted) != 1 {
		t.Fatalf("after one delivery to the only sink: marked delivered %v, accepted %d", done, len(rcv.accepted))
	}
	d.Once(context.Background())
	if len(rcv.accepted) != 1 {
		t.Fatalf("a delivered event was sent again (%d times)", len(rcv.accepted))
	}
}

func TestPruneKeepsRecentAndPending(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	old, recent, pending := testEvent(), testEvent(), testEvent()
	ob := &memOutbox{events: []Event{old, recent, pending}}
	ob.claims = map[string]memClaim{old.ID: {owner: "test"}, recent.ID: {owner: "test"}}
	ob.MarkDelivered(ctx, "test", old.ID, now.Add(-DefaultRetention-time.Minute))
	ob.MarkDelivered(ctx, "test", recent.ID, now.Add(-DefaultRetention+time.Minute))
	d := &Dispatcher{Outbox: ob, Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if n, err := d.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want the one event delivered past the retention", n, err)
	}
	if len(ob.events) != 2 || ob.events[0].ID != recent.ID || ob.events[1].ID != pending.ID {
		t.Fatalf("left %v", ob.events)
	}
}

func TestNoSinksMarksNothingDelivered(t *testing.T) {
	ob := &memOutbox{events: []Event{testEvent()}}
	d := &Dispatcher{Outbox: ob, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.Once(context.Background())
	if len(ob.delivered) != 0 {
		t.Fatal("with no sinks configured, an event was marked delivered")
	}
}

// stealingSink delivers, and meanwhile another replica takes the event
// over, as if this dispatcher had paused past its claim.
type stealingSink struct {
	Sink
	ob *memOutbox
}

func (s stealingSink) Deliver(ctx context.Context, e Event) error {
	s.ob.mu.Lock()
	s.ob.claims[e.ID] = memClaim{owner: "other", until: time.Now().Add(time.Hour)}
	s.ob.mu.Unlock()
	return s.Sink.Deliver(ctx, e)
}

func TestTakenOverEventIsLeftToItsNewOwner(t *testing.T) {
	key, _ := ParseSecret(testSecret)
	rcv := &receiver{t: t, key: key}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	ob := &memOutbox{events: []Event{testEvent()}}
	d := &Dispatcher{Outbox: ob, Sinks: []Sink{stealingSink{newSink(t, srv, testSecret), ob}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.Once(context.Background())
	id := ob.events[0].ID
	if _, done := ob.delivered[id]; done || len(ob.status[id]) != 0 {
		t.Fatalf("the former owner marked delivered %v, recorded %+v; the new owner's record must stand", done, ob.status[id])
	}
	if d.Once(context.Background()); len(rcv.accepted) != 1 {
		t.Fatalf("sent %d times; the event is the new owner's now", len(rcv.accepted))
	}
}

// TestWebhookSetKeyRotates: a receiver that moved to a new secret refuses
// deliveries signed with the old key until SetKey, then accepts them.
func TestWebhookSetKeyRotates(t *testing.T) {
	const newSecret = "whsec_bmV3IHNlY3JldCBvZiAzMiBieXRlcyBhdCBsZWFzdA=="
	newKey, err := ParseSecret(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	rcv := &receiver{t: t, key: newKey}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	w := newSink(t, srv, testSecret)
	ctx := context.Background()
	if err := w.Deliver(ctx, testEvent()); err == nil {
		t.Fatal("delivery signed with the old key was accepted")
	}
	w.SetKey(newKey)
	if err := w.Deliver(ctx, testEvent()); err != nil {
		t.Fatalf("delivery after SetKey: %v", err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.badSig != 1 || len(rcv.accepted) != 1 {
		t.Errorf("bad signatures %d, accepted %d; want 1 and 1", rcv.badSig, len(rcv.accepted))
	}
	if w.Name() != srv.URL {
		t.Errorf("name changed to %q", w.Name())
	}
}
