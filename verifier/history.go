package verifier

import (
	"context"
	"errors"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// HistoryKind says what a history entry records.
type HistoryKind string

// The kinds of history entries.
const (
	// HistoryAdmitted: an operator admitted the agent (Operator, the
	// policies and the interval it was admitted with).
	HistoryAdmitted HistoryKind = "admitted"
	// HistoryReadmitted: an operator readmitted the failed agent.
	HistoryReadmitted HistoryKind = "readmitted"
	// HistoryUpdated: an operator changed what the agent is checked with
	// (Operator; the policies and interval that changed, and in Detail a
	// summary of every change, old → new).
	HistoryUpdated HistoryKind = "updated"
	// HistoryDeleted: an operator removed the agent. Its history stays
	// until it ages out.
	HistoryDeleted HistoryKind = "deleted"
	// HistoryState: the agent's state changed (From, To).
	HistoryState HistoryKind = "state"
	// HistoryFailure: a verdict failed the agent (Reason, Check, Detail,
	// and for IMA the entry).
	HistoryFailure HistoryKind = "failure"
	// HistoryReboot: the TPM's reset count moved: the host rebooted.
	HistoryReboot HistoryKind = "reboot"
	// HistoryRevocation: a revocation event was raised (Event); its
	// delivery to each webhook is read from the outbox (Deliveries).
	HistoryRevocation HistoryKind = "revocation"
	// HistoryVerdicts: passing verdicts, counted over a period (Verdicts)
	// under the policy versions named, rather than one entry each.
	HistoryVerdicts HistoryKind = "verdicts"
	// HistoryDelivered: every webhook has a revocation event (Event), with
	// its final status per webhook (Deliveries): the record of delivery
	// that outlives the outbox.
	HistoryDelivered HistoryKind = "delivered"
)

// History bounds by default: a month of it, at most a thousand entries a
// host, passing verdicts counted by the hour.
const (
	DefaultHistoryRetention   = 30 * 24 * time.Hour
	DefaultHistoryMaxPerAgent = 1000
	DefaultHistoryPeriod      = time.Hour
)

// historyPruneEvery is how often Run prunes the history.
const historyPruneEvery = 10 * time.Minute

// HistoryVersion is the version of the stored form of HistoryEntry.
const HistoryVersion = 1

// HistoryEntry is one thing that happened to an agent.
type HistoryEntry struct {
	Version int         `cbor:"v" json:"-"`
	AgentID string      `cbor:"agent_id" json:"agent_id"`
	At      time.Time   `cbor:"at" json:"at"`
	Kind    HistoryKind `cbor:"kind" json:"kind"`
	// Seq orders one agent's entries; the store assigns it.
	Seq uint64 `cbor:"-" json:"seq"`

	// Operator is the admin certificate's subject of an operator action.
	Operator string `cbor:"operator,omitempty" json:"operator,omitempty"`
	From     State  `cbor:"from,omitempty" json:"from,omitempty"`
	To       State  `cbor:"to,omitempty" json:"to,omitempty"`
	Reason   Reason `cbor:"reason,omitempty" json:"reason,omitempty"`
	Check    string `cbor:"check,omitempty" json:"check,omitempty"`
	Detail   string `cbor:"detail,omitempty" json:"detail,omitempty"`
	// IMA is the failing IMA entry, for IMA failures.
	IMA *IMAEntryRef `cbor:"ima,omitempty" json:"ima,omitempty"`
	// RuntimePolicy, BootPolicy and PCRPolicy are the policies in force,
	// as name@version.
	RuntimePolicy string `cbor:"runtime_policy,omitempty" json:"runtime_policy,omitempty"`
	BootPolicy    string `cbor:"boot_policy,omitempty" json:"boot_policy,omitempty"`
	PCRPolicy     string `cbor:"pcr_policy,omitempty" json:"pcr_policy,omitempty"`
	// Interval is an admission's attestation interval, or an update's new
	// one.
	Interval     time.Duration `cbor:"interval,omitempty" json:"-"`
	IntervalText string        `cbor:"-" json:"interval,omitempty"`
	// ResetCount and RestartCount are the TPM's counters after a reboot.
	ResetCount   uint32 `cbor:"reset_count,omitempty" json:"reset_count,omitempty"`
	RestartCount uint32 `cbor:"restart_count,omitempty" json:"restart_count,omitempty"`
	// Event is a revocation event raised.
	Event *EventRef `cbor:"event,omitempty" json:"event,omitempty"`
	// Deliveries is Event's delivery to each webhook: stored in a
	// delivered entry; for a revocation entry, read from the outbox (or,
	// once the outbox pruned the event, from its delivered entry) when the
	// history is read.
	Deliveries map[string]revocation.SinkStatus `cbor:"deliveries,omitempty" json:"deliveries,omitempty"`
	// Verdicts counts passing verdicts over a period.
	Verdicts *VerdictPeriod `cbor:"verdicts,omitempty" json:"verdicts,omitempty"`
}

// IMAEntryRef names an entry of a host's IMA list.
type IMAEntryRef struct {
	Index  int64  `cbor:"index" json:"index"`
	Path   string `cbor:"path,omitempty" json:"path,omitempty"`
	Digest string `cbor:"digest,omitempty" json:"digest,omitempty"`
}

// EventRef names a revocation event.
type EventRef struct {
	ID   string `cbor:"id" json:"id"`
	Type string `cbor:"type" json:"type"`
}

// VerdictPeriod counts the passing verdicts from From to To.
type VerdictPeriod struct {
	From  time.Time `cbor:"from" json:"from"`
	To    time.Time `cbor:"to" json:"to"`
	Count uint64    `cbor:"count" json:"count"`
}

func (s *Service) historyPeriod() time.Duration {
	if s.HistoryPeriod > 0 {
		return s.HistoryPeriod
	}
	return DefaultHistoryPeriod
}

// PruneHistory removes the history entries past the retention and beyond
// the count kept per agent.
func (s *Service) PruneHistory(ctx context.Context) (int, error) {
	if s.HistoryRetention <= 0 && s.HistoryMaxPerAgent <= 0 {
		return 0, nil
	}
	var cutoff time.Time
	if s.HistoryRetention > 0 {
		cutoff = s.now().Add(-s.HistoryRetention)
	}
	return s.Store.PruneHistory(ctx, cutoff, s.HistoryMaxPerAgent)
}

// History is agent id's history since since, oldest first (the newest
// limit entries when limit > 0): what is stored, each revocation with its
// delivery to each webhook, and last the passing verdicts counted since the
// last entry of them, with Seq 0, as they are not stored yet. A deleted
// agent's history is answered too; an ID with no history is not found.
func (s *Service) History(ctx context.Context, id string, since time.Time, limit int) ([]HistoryEntry, error) {
	hist, err := s.Store.History(ctx, id, since, limit)
	if err != nil {
		return nil, err
	}
	// What this replica holds and has not stored yet.
	if v, ok := s.slots.Load(id); ok {
		sl := v.(*slot)
		sl.mu.Lock()
		for _, h := range sl.history {
			if !h.At.Before(since) {
				hist = append(hist, h)
			}
		}
		if sl.agent != nil && sl.agent.Passing > 0 && !sl.agent.PassingTo.Before(since) {
			hist = append(hist, sl.agent.passingEntry())
		}
		sl.mu.Unlock()
	} else if a, err := s.Store.GetAgent(ctx, id); err == nil && a.Passing > 0 && !a.PassingTo.Before(since) {
		hist = append(hist, a.passingEntry())
	}
	if len(hist) == 0 {
		if _, err := s.Store.GetAgent(ctx, id); errors.Is(err, ErrNotFound) {
			return nil, refuse(RefusedNotFound, "agent %q has no history: never admitted, or its history aged out", id)
		}
	}
	if limit > 0 && len(hist) > limit {
		hist = hist[len(hist)-limit:]
	}
	var ids []string
	for i, h := range hist {
		if h.Interval > 0 {
			hist[i].IntervalText = h.Interval.String()
		}
		if h.Event != nil {
			ids = append(ids, h.Event.ID)
		}
	}
	if len(ids) > 0 {
		st, err := s.Store.EventStatus(ctx, ids)
		if err != nil {
			return nil, err
		}
		final := make(map[string]map[string]revocation.SinkStatus)
		for _, h := range hist {
			if h.Kind == HistoryDelivered && h.Event != nil {
				final[h.Event.ID] = h.Deliveries
			}
		}
		for i := range hist {
			if e := hist[i].Event; e != nil && hist[i].Kind == HistoryRevocation {
				if d, ok := st[e.ID]; ok {
					hist[i].Deliveries = d
				} else {
					hist[i].Deliveries = final[e.ID]
				}
			}
		}
	}
	return hist, nil
}

// recordDelivered writes the history entry of an event every webhook
// has (revocation.Dispatcher.OnDone). A history entry for an agent
// deleted meanwhile is dropped, as a checkpoint drops it.
func (s *Service) recordDelivered(ctx context.Context, p revocation.Pending, at time.Time) {
	e := HistoryEntry{AgentID: p.Event.Data.AgentID, At: at, Kind: HistoryDelivered,
		Event: &EventRef{ID: p.Event.ID, Type: p.Event.Type}, Deliveries: p.Status}
	if err := s.Store.Checkpoint(ctx, nil, e); err != nil && ctx.Err() == nil {
		s.log().Warn("cannot record a delivery in the history", "agent_id", e.AgentID, "event", p.Event.ID, "err", err)
	}
}
