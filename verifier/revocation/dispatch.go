package revocation

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
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
//
// Several dispatchers (one per verifier replica) may drain one outbox. Each
// works only on the events it has claimed, so that an event is delivered
// by one of them at a time; a claim lapses unless renewed, so that the
// events of a replica that died are taken over by the others.
type Outbox interface {
	// PendingEvents returns every event not yet marked delivered, with the
	// status recorded for each sink (a sink never tried is absent), whoever
	// has claimed it. It is for looking, not for delivering: a dispatcher
	// claims instead.
	PendingEvents(ctx context.Context) ([]Pending, error)
	// ClaimEvents claims for owner, until now+claimFor, at most max pending
	// events that are unclaimed, claimed by owner already (the claim is
	// renewed), or whose claim lapsed at or before now, and returns them
	// with their statuses. The claim and the read are one transaction:
	// owners claiming at once never get the same event. Its cost must not
	// grow with the number of delivered events, as every dispatcher calls
	// it every round.
	ClaimEvents(ctx context.Context, owner string, now time.Time, claimFor time.Duration, max int) ([]Pending, error)
	// RecordDelivery replaces the status of pending event eventID at sink.
	// An event that is not pending is an error; an event owner has not
	// claimed, or whose claim another owner has taken since, is
	// ErrClaimLost; either way nothing is stored. A lapsed claim no other
	// owner has taken is still owner's.
	RecordDelivery(ctx context.Context, owner, eventID, sink string, st SinkStatus) error
	// MarkDelivered takes pending event eventID out of the pending events
	// and keeps it, with its statuses, as delivered at at. An event that is
	// not pending is an error, and one owner does not hold is ErrClaimLost,
	// as for RecordDelivery.
	MarkDelivered(ctx context.Context, owner, eventID string, at time.Time) error
	// PruneDelivered removes the events marked delivered at or before
	// cutoff and returns how many it removed. Pending events are never
	// removed.
	PruneDelivered(ctx context.Context, cutoff time.Time) (int, error)
}

// ErrClaimLost is returned (matched with errors.Is) for a write to an event
// the writer does not hold: another owner took it over, so this one must
// leave its status alone.
var ErrClaimLost = errors.New("claimed by another owner")

// DefaultRetention is how long delivered events are kept, to answer an
// operator asking what was sent, before the dispatcher prunes them.
const DefaultRetention = 7 * 24 * time.Hour

// pruneEvery is how often Run prunes: pruning reads the delivered events,
// which the delivery rounds never do.
const pruneEvery = time.Hour

// Defaults of the Dispatcher's settings.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultTimeout    = 10 * time.Second
	// DefaultClaimFor is how long a claim holds without renewal: the time
	// a dead replica's events wait for another. A live dispatcher renews
	// its claims every round (at most a second apart).
	DefaultClaimFor = time.Minute
	// DefaultClaimMax bounds the events one round claims, and so one
	// round's work.
	DefaultClaimMax = 1000
)

// Dispatcher delivers outbox events to sinks, at least once, retrying
// failures with capped, jittered exponential backoff. Several dispatchers
// may share an outbox: each delivers the events it claims.
type Dispatcher struct {
	Outbox Outbox
	Sinks  []Sink
	Log    *slog.Logger
	// Owner names this dispatcher in its claims; two dispatchers on one
	// outbox must have different owners. Default: a random ID made by Init.
	Owner string
	// ClaimFor is how long an event stays claimed without renewal
	// (default DefaultClaimFor); ClaimMax bounds the events one round
	// claims (default DefaultClaimMax).
	ClaimFor time.Duration
	ClaimMax int
	// MinBackoff and MaxBackoff bound the wait between attempts at one
	// sink (defaults DefaultMinBackoff and DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one delivery attempt (default DefaultTimeout).
	Timeout time.Duration
	// Retention is how long an event delivered to every sink is kept
	// (default DefaultRetention).
	Retention time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// OnDelivered, if set, is told of each successful delivery.
	OnDelivered func(e Event, sink string)
	// OnDone, if set, sees each event once every sink has it, with its
	// final status per sink: the verifier records it in the agent's
	// history, which outlives the outbox's retention.
	OnDone func(ctx context.Context, p Pending, at time.Time)

	initOnce  sync.Once
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

// Init sets every setting left zero to its default; Run, Once and Prune
// call it. Call it first where Wake may be called concurrently with them.
func (d *Dispatcher) Init() {
	d.initOnce.Do(func() {
		d.wake = make(chan struct{}, 1)
		if d.Owner == "" {
			d.Owner = NewOwner()
		}
		if d.ClaimFor <= 0 {
			d.ClaimFor = DefaultClaimFor
		}
		if d.ClaimMax <= 0 {
			d.ClaimMax = DefaultClaimMax
		}
		if d.MinBackoff <= 0 {
			d.MinBackoff = DefaultMinBackoff
		}
		if d.MaxBackoff <= 0 {
			d.MaxBackoff = DefaultMaxBackoff
		}
		if d.Timeout <= 0 {
			d.Timeout = DefaultTimeout
		}
		if d.Retention <= 0 {
			d.Retention = DefaultRetention
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Log == nil {
			d.Log = slog.Default()
		}
	})
}

// NewOwner returns a random owner identity, unlikely ever to be made twice.
func NewOwner() string {
	return "vigil-" + rand.Text()[:16]
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	d.Init()
	if len(d.Sinks) == 0 {
		return
	}
	for ctx.Err() == nil {
		if now := d.Now(); d.lastPrune.IsZero() || now.Sub(d.lastPrune) >= pruneEvery {
			d.lastPrune = now
			if _, err := d.Prune(ctx); err != nil && ctx.Err() == nil {
				d.Log.Error("pruning delivered revocation events", "err", err)
			}
		}
		next := d.Once(ctx)
		// At most a second apart: the round renews this dispatcher's
		// claims, and finds the events other replicas raised, which no
		// Wake tells of.
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

// Prune removes the events delivered more than Retention ago and returns
// how many it removed; Run calls it every hour.
func (d *Dispatcher) Prune(ctx context.Context) (int, error) {
	d.Init()
	n, err := d.Outbox.PruneDelivered(ctx, d.Now().Add(-d.Retention))
	if n > 0 {
		d.Log.Info("delivered revocation events pruned", "count", n, "retention", d.Retention)
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

// Once claims the pending events, attempts every due delivery among them,
// and returns when the next one is due (zero when it claimed nothing).
//
// Claiming an event whose next attempt is in the future is harmless: the
// claim keeps it with this dispatcher, which retries it when due, and
// lapses only if this dispatcher stops renewing it.
func (d *Dispatcher) Once(ctx context.Context) time.Time {
	d.Init()
	if len(d.Sinks) == 0 {
		// Every event would count as delivered to all of no sinks, and be
		// lost to the webhooks configured later.
		return time.Time{}
	}
	log := d.Log
	claimed := d.Now()
	pending, err := d.Outbox.ClaimEvents(ctx, d.Owner, claimed, d.ClaimFor, d.ClaimMax)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("revocation outbox", "err", err)
		}
		return d.Now().Add(time.Second)
	}
	// An attempt started after this may outlast the claim, and another
	// replica may send the same event meanwhile: the rest waits for the
	// next round's renewed claim.
	startBy := claimed.Add(d.ClaimFor - min(d.Timeout, d.ClaimFor/2))
	var next time.Time
	for _, p := range pending {
		if p.Status == nil {
			p.Status = map[string]SinkStatus{}
		}
		lost := false
		for _, sink := range d.Sinks {
			st := p.Status[sink.Name()]
			if st.Delivered {
				continue
			}
			now := d.Now()
			if now.Before(st.NextAttempt) {
				if next.IsZero() || st.NextAttempt.Before(next) {
					next = st.NextAttempt
				}
				continue
			}
			if now.After(startBy) {
				return now
			}
			st = d.attempt(ctx, log, sink, p.Event, st)
			if err := d.Outbox.RecordDelivery(ctx, d.Owner, p.Event.ID, sink.Name(), st); err != nil {
				if errors.Is(err, ErrClaimLost) {
					// This dispatcher paused past its claim; the new
					// owner's record stands, and it delivers the rest.
					log.Warn("revocation event taken over by another replica", "event", p.Event.ID, "owner", d.Owner)
					lost = true
					break
				}
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
		if !lost && d.deliveredToAll(p.Status) {
			at := d.Now().UTC()
			err := d.Outbox.MarkDelivered(ctx, d.Owner, p.Event.ID, at)
			if err != nil && ctx.Err() == nil && !errors.Is(err, ErrClaimLost) {
				log.Error("mark event delivered", "event", p.Event.ID, "err", err)
			}
			if err == nil && d.OnDone != nil {
				d.OnDone(ctx, p, at)
			}
		}
	}
	return next
}

func (d *Dispatcher) attempt(ctx context.Context, log *slog.Logger, sink Sink, e Event, st SinkStatus) SinkStatus {
	actx, cancel := context.WithTimeout(ctx, d.Timeout)
	err := sink.Deliver(actx, e)
	cancel()
	st.Attempts++
	now := d.Now()
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
	b := lo
	for i := 1; i < attempts && b < hi; i++ {
		b *= 2
	}
	b = min(b, hi)
	return b/2 + time.Duration(mrand.Int64N(int64(b/2)+1))
}
