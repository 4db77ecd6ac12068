package verifier

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// PolicyCheck validates a policy body of a kind before it is stored, so a
// policy that cannot be evaluated is refused at the door, not at the first
// verdict.
type PolicyCheck func(kind PolicyKind, body []byte) error

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// AddPolicy stores a new version of a named policy.
func (s *Service) AddPolicy(ctx context.Context, check PolicyCheck, name string, kind PolicyKind, body []byte) (Policy, error) {
	if !idPattern.MatchString(name) {
		return Policy{}, refuse(RefusedInvalid, "policy name %q: 1-128 of A-Z a-z 0-9 . _ : -", name)
	}
	if kind != PolicyRuntime && kind != PolicyBoot {
		return Policy{}, refuse(RefusedInvalid, "policy kind %q: want runtime or boot", kind)
	}
	if check != nil {
		if err := check(kind, body); err != nil {
			return Policy{}, refuse(RefusedInvalid, "%s policy %q: %v", kind, name, err)
		}
	}
	p, err := s.Store.PutPolicy(ctx, Policy{Name: name, Kind: kind, Body: body, CreatedAt: s.now().UTC()})
	if errors.Is(err, ErrExists) {
		return Policy{}, refuse(RefusedConflict, "%v", err)
	}
	if err == nil {
		s.log().Info("policy stored", "policy", name, "kind", kind, "version", p.Version, "sha256", p.SHA256)
		if s.OnPolicyChange != nil {
			s.OnPolicyChange(name)
		}
	}
	return p, err
}

// AdmitRequest is what an operator admits an agent with.
type AdmitRequest struct {
	AgentID       string        `json:"agent_id"`
	RuntimePolicy string        `json:"runtime_policy,omitempty"`
	BootPolicy    string        `json:"boot_policy,omitempty"`
	Identities    []string      `json:"identities,omitempty"`
	Interval      time.Duration `json:"interval,omitempty"`
}

// Admit adds an agent, pending its first evidence. At least one policy is
// required: an agent with nothing to be checked against would be trusted for
// merely having a TPM (deny by default).
func (s *Service) Admit(ctx context.Context, req AdmitRequest) (Agent, error) {
	if !idPattern.MatchString(req.AgentID) {
		return Agent{}, refuse(RefusedInvalid, "agent ID %q: 1-128 of A-Z a-z 0-9 . _ : -", req.AgentID)
	}
	if req.RuntimePolicy == "" && req.BootPolicy == "" {
		return Agent{}, refuse(RefusedInvalid, "agent %q: a runtime policy, a boot policy or both are required", req.AgentID)
	}
	for _, ref := range []struct {
		name string
		kind PolicyKind
	}{{req.RuntimePolicy, PolicyRuntime}, {req.BootPolicy, PolicyBoot}} {
		if ref.name == "" {
			continue
		}
		p, err := s.Store.GetPolicy(ctx, ref.name)
		if errors.Is(err, ErrNotFound) {
			return Agent{}, refuse(RefusedInvalid, "%s policy %q does not exist", ref.kind, ref.name)
		}
		if err != nil {
			return Agent{}, err
		}
		if p.Kind != ref.kind {
			return Agent{}, refuse(RefusedInvalid, "policy %q is a %s policy, not a %s policy", ref.name, p.Kind, ref.kind)
		}
	}
	for _, id := range req.Identities {
		u, err := url.Parse(id)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
			return Agent{}, refuse(RefusedInvalid, "identity %q is not an absolute URI (e.g. spiffe://example.org/node/web-1)", id)
		}
	}
	if req.Interval < 0 || (req.Interval > 0 && req.Interval < 100*time.Millisecond) {
		return Agent{}, refuse(RefusedInvalid, "interval %s: at least 100ms", req.Interval)
	}
	a := Agent{
		ID:            req.AgentID,
		RuntimePolicy: req.RuntimePolicy,
		BootPolicy:    req.BootPolicy,
		Identities:    req.Identities,
		Interval:      req.Interval,
		State:         StatePending,
		AdmittedAt:    s.now().UTC(),
	}
	sl := &slot{}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if err := s.createAgent(ctx, a); err != nil {
		if errors.Is(err, ErrExists) {
			return Agent{}, refuse(RefusedConflict, "%v", err)
		}
		return Agent{}, err
	}
	// A fresh slot: a request that still holds the slot of an agent once
	// deleted under this ID finds that one marked removed.
	s.set(sl, a)
	s.slots.Store(a.ID, sl)
	if bg := s.background.Load(); bg != nil {
		go s.prefetchAK(*bg, a.ID)
	}
	s.log().Info("agent admitted", "agent_id", a.ID, "runtime_policy", a.RuntimePolicy, "boot_policy", a.BootPolicy)
	return a, nil
}

// Readmit puts a failed agent back to pending. Its next evidence must be
// complete (boot log, IMA from entry 0): nothing from before the failure is
// trusted.
func (s *Service) Readmit(ctx context.Context, id string) (Agent, error) {
	sl := s.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var out Agent
	err := s.updateAgent(ctx, sl, id, func(a *Agent) ([]revocation.Event, error) {
		if a.State != StateFailed {
			return nil, refuse(RefusedConflict, "agent %q is %s, not failed", id, a.State)
		}
		a.State, a.Reason, a.Detail = StatePending, "", ""
		a.FailedAt = time.Time{}
		a.AdmittedAt = s.now().UTC()
		a.Clock, a.BootChecked, a.IMAEntries, a.IMAState = nil, false, 0, nil
		out = *a
		return []revocation.Event{revocation.NewEvent(revocation.TypeReadmitted, a.AdmittedAt, eventData(*a, nil))}, nil
	})
	if errors.Is(err, ErrNotFound) {
		s.forget(id, sl)
		return Agent{}, refuse(RefusedNotFound, "%v", err)
	}
	if err != nil {
		return Agent{}, err
	}
	sl.asked, sl.ak = nil, nil
	sl.akEpoch++
	s.set(sl, out)
	s.log().Info("agent readmitted", "agent_id", id)
	s.eventsRaised()
	return out, nil
}

// Remove deletes an agent from the verifier.
func (s *Service) Remove(ctx context.Context, id string) error {
	sl := s.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	s.persistMu.RLock()
	err := s.Store.DeleteAgent(ctx, id)
	if err == nil || errors.Is(err, ErrNotFound) {
		sl.gen.Add(1)
	}
	s.persistMu.RUnlock()
	if errors.Is(err, ErrNotFound) {
		s.forget(id, sl)
		return refuse(RefusedNotFound, "%v", err)
	}
	if err != nil {
		return err
	}
	s.forget(id, sl)
	s.log().Info("agent deleted", "agent_id", id)
	return nil
}

// forget drops an agent's slot; the caller holds sl.mu. A request still
// holding the slot finds it removed.
func (s *Service) forget(id string, sl *slot) {
	sl.removed, sl.dirty, sl.agent, sl.asked = true, false, nil, nil
	sl.deadline.Store(0)
	s.slots.CompareAndDelete(id, sl)
}

// createAgent stores a new agent, ordered with checkpoints.
func (s *Service) createAgent(ctx context.Context, a Agent) error {
	s.persistMu.RLock()
	defer s.persistMu.RUnlock()
	return s.Store.CreateAgent(ctx, a)
}

// updateAgent changes an agent's stored record synchronously; the caller
// holds sl.mu. The change applies to the newest record — the slot's, which
// may be ahead of the store — and supersedes any pending checkpoint of it.
func (s *Service) updateAgent(ctx context.Context, sl *slot, id string, fn func(*Agent) ([]revocation.Event, error)) error {
	if sl.agent == nil {
		a, err := s.Store.GetAgent(ctx, id)
		if err != nil {
			return err
		}
		s.set(sl, a)
	}
	a := *sl.agent
	events, err := fn(&a)
	if err != nil {
		return err
	}
	return s.saveSync(ctx, sl, a, events)
}

// CheckLiveness fails every pending or attesting agent that has sent no
// good evidence within its liveness window. It returns how many it
// failed. Deadlines are kept in memory, so a sweep reads no store.
func (s *Service) CheckLiveness(ctx context.Context) (int, error) {
	if err := s.Load(ctx); err != nil {
		return 0, err
	}
	now := s.now()
	var due []string
	s.slots.Range(func(k, v any) bool {
		if d := v.(*slot).deadline.Load(); d != 0 && now.UnixNano() >= d {
			due = append(due, k.(string))
		}
		return true
	})
	failed := 0
	for _, id := range due {
		ok, err := s.failSilent(ctx, id, now)
		if err != nil {
			return failed, err
		}
		if ok {
			failed++
		}
	}
	return failed, nil
}

func (s *Service) failSilent(ctx context.Context, id string, now time.Time) (bool, error) {
	v, ok := s.slots.Load(id)
	if !ok {
		return false, nil
	}
	sl := v.(*slot)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.removed {
		return false, nil
	}
	var failedAgent Agent
	var f *Failure
	err := s.updateAgent(ctx, sl, id, func(a *Agent) ([]revocation.Event, error) {
		// Re-check under the agent's lock: evidence may have arrived.
		last := s.lastHeard(*a)
		deadline := last.Add(s.livenessWindow(*a))
		if (a.State != StatePending && a.State != StateAttesting) || now.Before(deadline) {
			return nil, errNothingToDo
		}
		f = Fail(ReasonLivenessTimeout, "no_evidence", "no good evidence since %s (deadline %s)", last.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))
		a.State, a.Reason, a.Detail, a.FailedAt = StateFailed, f.Reason, f.Error(), now
		failedAgent = *a
		return []revocation.Event{revocation.NewEvent(revocation.TypeRevoked, now, eventData(*a, f))}, nil
	})
	if errors.Is(err, errNothingToDo) {
		return false, nil
	}
	if errors.Is(err, ErrNotFound) {
		s.forget(id, sl)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sl.asked = nil
	s.set(sl, failedAgent)
	s.log().Warn("attestation failed", "agent_id", id, "reason", f.Reason, "detail", f.Detail)
	s.eventsRaised()
	if s.OnVerdict != nil {
		s.OnVerdict(failedAgent, f, 0)
	}
	return true, nil
}

var errNothingToDo = errors.New("nothing to do")

// lastHeard is when the liveness window of agent a started: its last good
// evidence, its admission, or this verifier's start, whichever is latest.
func (s *Service) lastHeard(a Agent) time.Time {
	last := a.LastAttestedAt
	if last.Before(a.AdmittedAt) {
		last = a.AdmittedAt
	}
	if st := s.started(); last.Before(st) {
		last = st
	}
	return last
}

// Run does the service's background work until ctx ends: it loads every
// agent, fails silent ones every LivenessEvery, and writes checkpoints
// every CheckpointEvery. When ctx ends it writes a last checkpoint and
// returns; stop serving requests first, and close the store after.
//
// What a checkpoint defers is only the progress of an agent that keeps
// attesting: its counters, last quote clock, and how far its IMA list is
// verified. A crash loses at most CheckpointEvery of that progress, and
// nothing of it is trust: the restarted verifier asks each agent for its
// IMA list from the last stored offset, replays it again, and counts
// liveness from its own start. Failures, state changes, and operators'
// actions are stored before they are answered.
func (s *Service) Run(ctx context.Context) error {
	s.started()
	if err := s.Load(ctx); err != nil {
		return fmt.Errorf("load agents: %w", err)
	}
	s.background.Store(&ctx)
	var ids []string
	s.slots.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	prefetched := make(chan struct{})
	go func() { s.prefetchAKs(ctx, ids); close(prefetched) }()
	defer func() { <-prefetched }()
	every := s.LivenessEvery
	if every <= 0 {
		every = time.Second
	}
	live := time.NewTicker(every)
	defer live.Stop()
	var flush <-chan time.Time
	if s.CheckpointEvery > 0 {
		t := time.NewTicker(s.CheckpointEvery)
		defer t.Stop()
		flush = t.C
	}
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, err := s.Checkpoint(final); err != nil {
				return fmt.Errorf("last checkpoint: %w", err)
			}
			return nil
		case <-live.C:
			if _, err := s.CheckLiveness(ctx); err != nil && ctx.Err() == nil {
				s.log().Error("liveness check", "err", err)
			}
		case <-flush:
			if _, err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.log().Error("checkpoint", "err", err)
			}
		}
	}
}

// DeletePolicy deletes a policy that no agent uses.
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	err := s.Store.DeletePolicy(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return refuse(RefusedNotFound, "%v", err)
	case errors.Is(err, ErrExists):
		return refuse(RefusedConflict, "%v", err)
	case err != nil:
		return err
	}
	if s.OnPolicyChange != nil {
		s.OnPolicyChange(name)
	}
	s.log().Info("policy deleted", "policy", name)
	return nil
}

// Status is an agent's record as operators see it: the newest, which may
// be ahead of the store by one checkpoint.
func (s *Service) Status(ctx context.Context, id string) (Agent, error) {
	if v, ok := s.slots.Load(id); ok {
		sl := v.(*slot)
		sl.mu.Lock()
		a, ok := sl.agent, !sl.removed
		sl.mu.Unlock()
		if a != nil && ok {
			return *a, nil
		}
	}
	a, err := s.Store.GetAgent(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Agent{}, refuse(RefusedNotFound, "%v", err)
	}
	return a, err
}

// CountStates counts agents by state, from memory: a scrape every few
// seconds must not decode the whole store.
func (s *Service) CountStates(ctx context.Context) (map[State]int, error) {
	if err := s.Load(ctx); err != nil {
		return nil, err
	}
	counts := map[State]int{}
	s.slots.Range(func(_, v any) bool {
		sl := v.(*slot)
		sl.mu.Lock()
		if sl.agent != nil && !sl.removed {
			counts[sl.agent.State]++
		}
		sl.mu.Unlock()
		return true
	})
	return counts, nil
}

// Agents lists every agent's newest record.
func (s *Service) Agents(ctx context.Context) ([]Agent, error) {
	stored, err := s.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	for i, a := range stored {
		if v, ok := s.slots.Load(a.ID); ok {
			sl := v.(*slot)
			sl.mu.Lock()
			if sl.agent != nil && !sl.removed {
				stored[i] = *sl.agent
			}
			sl.mu.Unlock()
		}
	}
	return stored, nil
}

// eventData describes agent a, and failure f if any, for an event.
func eventData(a Agent, f *Failure) revocation.Data {
	d := revocation.Data{
		AgentID:        a.ID,
		State:          string(a.State),
		Identities:     append([]string{}, a.Identities...),
		Attestations:   a.Attestations,
		LastAttestedAt: a.LastAttestedAt,
	}
	if a.Clock != nil {
		d.ResetCount, d.RestartCount = a.Clock.ResetCount, a.Clock.RestartCount
	}
	if f != nil {
		d.Reason, d.Check, d.Detail = string(f.Reason), f.Check, f.Detail
	}
	return d
}

func (s *Service) eventsRaised() {
	if s.OnEvents != nil {
		s.OnEvents()
	}
}
