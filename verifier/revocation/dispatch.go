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
type Outbox interface {
	// PendingEvents returns every event not yet delivered to all of sinks.
	PendingEvents(ctx context.Context, sinks []string) ([]Pending, error)
	// RecordDelivery stores the status of one event at one sink.
	RecordDelivery(ctx context.Context, eventID, sink string, st SinkStatus, sinks []string) error
}

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
	// OnDelivered, if set, is told of each successful delivery.
	OnDelivered func(e Event, sink string)

	wake chan struct{}
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

func (d *Dispatcher) names() []string {
	out := make([]string, len(d.Sinks))
	for i, s := range d.Sinks {
		out[i] = s.Name()
	}
	return out
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

// Once attempts every due delivery and returns when the next one is due
// (zero when nothing is pending).
func (d *Dispatcher) Once(ctx context.Context) time.Time {
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	names := d.names()
	pending, err := d.Outbox.PendingEvents(ctx, names)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("revocation outbox", "err", err)
		}
		return time.Now().Add(time.Second)
	}
	var next time.Time
	for _, p := range pending {
		for _, sink := range d.Sinks {
			st := p.Status[sink.Name()]
			if st.Delivered {
				continue
			}
			if now := time.Now(); now.Before(st.NextAttempt) {
				if next.IsZero() || st.NextAttempt.Before(next) {
					next = st.NextAttempt
				}
				continue
			}
			st = d.attempt(ctx, log, sink, p.Event, st)
			if err := d.Outbox.RecordDelivery(ctx, p.Event.ID, sink.Name(), st, names); err != nil && ctx.Err() == nil {
				log.Error("record delivery", "event", p.Event.ID, "sink", sink.Name(), "err", err)
			}
			if !st.Delivered && (next.IsZero() || st.NextAttempt.Before(next)) {
				next = st.NextAttempt
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
	now := time.Now()
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
