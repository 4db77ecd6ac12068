package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/vigil-attest/vigil/internal/store"
)

// Applied remembers, per agent, the time of the last event the bridge
// applied at SPIRE. An event older than that is not applied: the verifier
// retries an event until a receiver takes it, so a revocation that failed
// to reach SPIRE can arrive after the readmission that followed it, and
// must not ban the readmitted node. Kept only in memory, that order was
// lost on a restart, and such a stale revocation then banned a healthy
// node (it failed closed, but for someone else's traffic).
type Applied interface {
	// Last returns the time of the last event applied for agentID, and
	// whether there was one.
	Last(ctx context.Context, agentID string) (time.Time, bool, error)
	// Record notes that an event of time t was applied for agentID,
	// keeping the later of t and what it had.
	Record(ctx context.Context, agentID string, t time.Time) error
}

// MemoryApplied is Applied in memory, for tests.
type MemoryApplied struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (m *MemoryApplied) Last(_ context.Context, agentID string) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.last[agentID]
	return t, ok, nil
}

func (m *MemoryApplied) Record(_ context.Context, agentID string, t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		m.last = map[string]time.Time{}
	}
	if t.After(m.last[agentID]) {
		m.last[agentID] = t
	}
	return nil
}

// StoreApplied is Applied in the bridge's data directory (Vigil's embedded
// store, one record per agent), so the order survives restarts.
type StoreApplied struct{ DB *store.DB }

const appliedCollection = "bridge_applied"

// appliedRecord is the stored form, versioned.
type appliedRecord struct {
	Version int       `json:"v"`
	Time    time.Time `json:"time"`
}

const appliedVersion = 1

func (s StoreApplied) Last(ctx context.Context, agentID string) (time.Time, bool, error) {
	var (
		t  time.Time
		ok bool
	)
	err := s.DB.View(ctx, func(tx store.Tx) error {
		var err error
		t, ok, err = decodeApplied(agentID, tx.Get(appliedCollection, agentID))
		return err
	})
	return t, ok, err
}

func (s StoreApplied) Record(ctx context.Context, agentID string, t time.Time) error {
	return s.DB.Update(ctx, func(tx store.Tx) error {
		had, ok, err := decodeApplied(agentID, tx.Get(appliedCollection, agentID))
		if err != nil {
			return err
		}
		if ok && !t.After(had) {
			return nil
		}
		b, err := json.Marshal(appliedRecord{Version: appliedVersion, Time: t})
		if err != nil {
			return err
		}
		return tx.Put(appliedCollection, agentID, b)
	})
}

func decodeApplied(agentID string, b []byte) (time.Time, bool, error) {
	if b == nil {
		return time.Time{}, false, nil
	}
	var r appliedRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return time.Time{}, false, fmt.Errorf("bridge store: agent %q: %w", agentID, err)
	}
	if r.Version != appliedVersion {
		return time.Time{}, false, fmt.Errorf("bridge store: agent %q: record version %d, this bridge reads %d", agentID, r.Version, appliedVersion)
	}
	return r.Time, true, nil
}

// agentLocks serializes the events of one agent: an event's check against
// the last one applied, its action at SPIRE and its record happen as one,
// so a stale event racing a newer one cannot act after it.
type agentLocks struct{ m sync.Map } // agent ID → *sync.Mutex

func (l *agentLocks) lock(agentID string) func() {
	mu, _ := l.m.LoadOrStore(agentID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}
