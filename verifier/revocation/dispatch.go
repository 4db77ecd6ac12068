package revocation

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// SinkStatus is the delivery record of one event to one sink.
type SinkStatus struct {
	Delivered   bool      `json:"delivered" cbor:"delivered"`
	DeliveredAt time.Time `json:"delivered_at,omitempty" cbor:"delivered_at,omitempty"`
	Attempts    int       `json:"attempts" cbor:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitempty" cbor:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty" cbor:"last_error,omitempty"`
}

// Pending is an event not yet delivered to every sink.
type Pending struct {
	Event  Event                 `json:"event" cbor:"event"`
	Status map[string]SinkStatus `json:"status" cbor:"status"`
}

// Outbox is the durable store of events the Dispatcher drains. The
// verifier writes events into it in the same transaction as the verdicts
// that cause them.
//
// It is storage only: which sinks an event still needs, and when an event
// is done with, is the Dispatcher's to decide, so every backend keeps the
// same rules by keeping none.
type Outbox interface {
	// PendingEvents returns every event not yet marked delivered, with the
	// status recorded for each sink (a sink never tried is absent). Its
	// cost must not grow with the number of delivered events, which the
	// dispatcher reads on every round.
	PendingEvents(ctx context.Context) ([]Pending, error)
	// RecordDelivery replaces the status of pending event eventID at sink.
	// An event that is not pending is an error.
	RecordDelivery(ctx context.Context, eventID, sink string, st SinkStatus) error
	// MarkDelivered takes pending event eventID out of the pending events
	// and keeps it, with its statuses, as delivered at at. An event that is
	// not pending is an error.
	MarkDelivered(ctx context.Context, eventID string, at time.Time) error
	// PruneDelivered removes the events marked delivered at or before
	// cutoff and returns how many it removed. Pending events are never
	// removed.
	PruneDelivered(ctx context.Context, cutoff time.Time) (int, error)
}

// DefaultRetention is how long delivered events are kept, to answer an
// operator asking what was sent, before the dispatcher prunes them.
const DefaultRetention = 7 * 24 * time.Hour

// pruneEvery is how often Run prunes: pruning reads the delivered events,
// which the delivery rounds never do.
const pruneEvery = time.Hour

// Dispatcher delivers outbox events to sinks, at least once, retrying
// failures with capped, jittered exponential backoff.
type Dispatcher struct {
	Outbox Outbox
	Sinks  []Sink
	Log    *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts at one
	// sink (defaults 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration
	// Retention is how long an event delivered to every sink is kept
	// (default DefaultRetention).
	Retention time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// OnDelivered, if set, is told of each successful delivery.
	OnDelivered func(e Event, sink string)

	wake      chan struct{}
	lastPrune time.Time
}

// Wake makes the dispatcher look at the outbox now (new events).
func (d *Dispatcher) Wake() {
	if d.wake == nil {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Init prepares the dispatcher; Run calls it.
func (d *Dispatcher) Init() {
	if d.wake == nil {
		d.wake = make(chan struct{}, 1)
	}
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	d.Init()
	if len(d.Sinks) == 0 {
		return
	}
	for ctx.Err() == nil {
		if now := d.now(); d.lastPrune.IsZero() || now.Sub(d.lastPrune) >= pruneEvery {
			d.lastPrune = now
			if _, err := d.Prune(ctx); err != nil && ctx.Err() == nil {
				d.log().Error("pruning delivered revocation events", "err", err)
			}
		}
		next := d.Once(ctx)
		wait := time.Until(next)
		if next.IsZero() || wait > time.Second {
			wait = time.Second
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Dispatcher) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.Default()
}

func (d *Dispatcher) retention() time.Duration {
	if d.Retention > 0 {
		return d.Retention
	}
	return DefaultRetention
}

// Prune removes the events delivered more than Retention ago and returns
// how many it removed; Run calls it every hour.
func (d *Dispatcher) Prune(ctx context.Context) (int, error) {
	n, err := d.Outbox.PruneDelivered(ctx, d.now().Add(-d.retention()))
	if n > 0 {
		d.log().Info("delivered revocation events pruned", "count", n, "retention", d.retention())
	}
	return n, err
}

// deliveredToAll reports whether st records a delivery to every sink.
func (d *Dispatcher) deliveredToAll(st map[string]SinkStatus) bool {
	for _, s := range d.Sinks {
		if !st[s.Name()].Delivered {
			return false
		}
	}
	return true
}

// Once attempts every due delivery and returns when the next one is due
// (zero when nothing is pending).
func (d *Dispatcher) Once(ctx context.Context) time.Time {
	if len(d.Sinks) == 0 {
		// Every event would count as delivered to all of no sinks, and be
		// lost to the webhooks configured later.
		return time.Time{}
	}
	log := d.log()
	pending, err := d.Outbox.PendingEvents(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("revocation outbox", "err", err)
		}
		return d.now().Add(time.Second)
	}
	var next time.Time
	for _, p := range pending {
		if p.Status == nil {
			p.Status = map[string]SinkStatus{}
		}
		for _, sink := range d.Sinks {
			st := p.Status[sink.Name()]
			if st.Delivered {
				continue
			}
			if now := d.now(); now.Before(st.NextAttempt) {
				if next.IsZero() || st.NextAttempt.Before(next) {
					next = st.NextAttempt
				}
				continue
			}
			st = d.attempt(ctx, log, sink, p.Event, st)
			if err := d.Outbox.RecordDelivery(ctx, p.Event.ID, sink.Name(), st); err != nil {
				if ctx.Err() == nil {
					log.Error("record delivery", "event", p.Event.ID, "sink", sink.Name(), "err", err)
				}
				continue
			}
			p.Status[sink.Name()] = st
			if !st.Delivered && (next.IsZero() || st.NextAttempt.Before(next)) {
				next = st.NextAttempt
			}
		}
		// Also reached by an event that was done before a restart (or a
		// sink was dropped from the configuration): it leaves the pending
		// events now, and is not sent again.
		if d.deliveredToAll(p.Status) {
			if err := d.Outbox.MarkDelivered(ctx, p.Event.ID, d.now().UTC()); err != nil && ctx.Err() == nil {
				log.Error("mark event delivered", "event", p.Event.ID, "err", err)
			}
		}
	}
	return next
}

func (d *Dispatcher) attempt(ctx context.Context, log *slog.Logger, sink Sink, e Event, st SinkStatus) SinkStatus {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	err := sink.Deliver(actx, e)
	cancel()
	st.Attempts++
	now := d.now()
	if err == nil {
		st.Delivered, st.DeliveredAt, st.LastError, st.NextAttempt = true, now.UTC(), "", time.Time{}
		log.Info("revocation event delivered", "event", e.ID, "type", e.Type, "agent_id", e.Subject, "sink", sink.Name(), "attempts", st.Attempts)
		if d.OnDelivered != nil {
			d.OnDelivered(e, sink.Name())
		}
		return st
	}
	st.LastError = err.Error()
	st.NextAttempt = now.Add(d.backoff(st.Attempts))
	log.Warn("revocation event not delivered; will retry", "event", e.ID, "agent_id", e.Subject, "sink", sink.Name(),
		"attempts", st.Attempts, "err", err, "retry_at", st.NextAttempt.UTC().Format(time.RFC3339Nano))
	return st
}

// backoff is min(MaxBackoff, MinBackoff·2^(n-1)), jittered to [½, 1].
func (d *Dispatcher) backoff(attempts int) time.Duration {
	lo, hi := d.MinBackoff, d.MaxBackoff
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Minute
	}
	b := lo
	for i := 1; i < attempts && b < hi; i++ {
		b *= 2
	}
	b = min(b, hi)
	return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
}
