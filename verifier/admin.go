package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"

	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// PolicyCheck validates a policy body of a kind before it is stored, so a
// policy that cannot be evaluated is refused at the door, not at the first
// verdict.
type PolicyCheck func(kind PolicyKind, body []byte) error

// Bounds on what an operator admits an agent with: each is far above any
// real use, and keeps one record from growing without limit.
const (
	MaxIdentities  = 64
	MaxIdentityLen = 2048
)

// intervalBounds are the attestation intervals an agent may be admitted
// with.
func (s *Service) intervalBounds() (lo, hi time.Duration) {
	return s.MinInterval, s.MaxInterval
}

// AddPolicy stores a new version of a named policy.
func (s *Service) AddPolicy(ctx context.Context, check PolicyCheck, name string, kind PolicyKind, body []byte) (Policy, error) {
	if !tpmfacts.ValidAgentID(name) {
		return Policy{}, refuse(RefusedInvalid, "policy name %q: 1-128 of A-Z a-z 0-9 . _ : -", name)
	}
	if kind != PolicyRuntime && kind != PolicyBoot && kind != PolicyPCR {
		return Policy{}, refuse(RefusedInvalid, "policy kind %q: want runtime, boot or pcr", kind)
	}
	if check != nil {
		if err := check(kind, body); err != nil {
			return Policy{}, refuse(RefusedInvalid, "%s policy %q: %v", kind, name, err)
		}
	}
	p, err := s.putPolicy(ctx, Policy{Name: name, Kind: kind, Body: body, CreatedAt: s.now().UTC()})
	if err == nil {
		s.log().Info("policy stored", "policy", name, "kind", kind, "version", p.Version, "sha256", p.SHA256)
		s.policies.forget(name)
	}
	return p, err
}

// putPolicy stores p as the next version of its name: one more than the
// highest stored, of the same kind. Two operators adding versions at once
// both get one, in some order.
func (s *Service) putPolicy(ctx context.Context, p Policy) (Policy, error) {
	sum := sha256.Sum256(p.Body)
	p.SHA256 = hex.EncodeToString(sum[:])
	for {
		cur, err := s.Store.GetPolicy(ctx, p.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			p.Version = 1
		case err != nil:
			return Policy{}, err
		case cur.Kind != p.Kind:
			return Policy{}, refuse(RefusedConflict, "policy %q is a %s policy, not %s: %v", p.Name, cur.Kind, p.Kind, ErrExists)
		default:
			p.Version = cur.Version + 1
		}
		err = s.Store.CreatePolicy(ctx, p)
		if !errors.Is(err, ErrExists) {
			return p, err
		}
		// Another version took this number meanwhile: read the newest
		// again, which may also be of another kind by now.
	}
}

// AdmitRequest is what an operator admits an agent with. A policy is
// named NAME, to follow its latest version, or NAME@VERSION, to be pinned
// to that version.
type AdmitRequest struct {
	AgentID       string        `json:"agent_id"`
	RuntimePolicy string        `json:"runtime_policy,omitempty"`
	BootPolicy    string        `json:"boot_policy,omitempty"`
	PCRPolicy     string        `json:"pcr_policy,omitempty"`
	Identities    []string      `json:"identities,omitempty"`
	Interval      time.Duration `json:"interval,omitempty"`
}

// Admit adds an agent, pending its first evidence. At least one policy, of
// any kind, is required: an agent with nothing to be checked against would
// be trusted for merely having a TPM (deny by default).
func (s *Service) Admit(ctx context.Context, req AdmitRequest) (Agent, error) {
	if !tpmfacts.ValidAgentID(req.AgentID) {
		return Agent{}, refuse(RefusedInvalid, "agent ID %q: 1-128 of A-Z a-z 0-9 . _ : -", req.AgentID)
	}
	if req.RuntimePolicy == "" && req.BootPolicy == "" && req.PCRPolicy == "" {
		return Agent{}, refuse(RefusedInvalid, "agent %q: at least one policy is required: a runtime policy, a boot policy, a PCR policy, or several", req.AgentID)
	}
	// Held until the agent is stored, so that no policy checked here is
	// deleted before the agent that uses it exists.
	s.policyMu.RLock()
	defer s.policyMu.RUnlock()
	rt, err := s.checkPolicyRef(ctx, req.RuntimePolicy, PolicyRuntime)
	if err != nil {
		return Agent{}, err
	}
	boot, err := s.checkPolicyRef(ctx, req.BootPolicy, PolicyBoot)
	if err != nil {
		return Agent{}, err
	}
	pcr, err := s.checkPolicyRef(ctx, req.PCRPolicy, PolicyPCR)
	if err != nil {
		return Agent{}, err
	}
	if err := checkIdentities(req.AgentID, req.Identities); err != nil {
		return Agent{}, err
	}
	if err := s.checkInterval(req.Interval); err != nil {
		return Agent{}, err
	}
	req.RuntimePolicy, req.BootPolicy, req.PCRPolicy = rt.name, boot.name, pcr.name
	a := admitted(req, s.now().UTC())
	a.RuntimePolicyVersion, a.BootPolicyVersion, a.PCRPolicyVersion = rt.pin, boot.pin, pcr.pin
	sl := &slot{}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	admission := HistoryEntry{
		AgentID: a.ID, At: a.AdmittedAt, Kind: HistoryAdmitted, Operator: httpapi.OperatorFrom(ctx),
		To: a.State, Interval: a.Interval,
		RuntimePolicy: policyRef(rt.name, rt.version),
		BootPolicy:    policyRef(boot.name, boot.version),
		PCRPolicy:     policyRef(pcr.name, pcr.version),
	}
	if err := s.createAgent(ctx, a, admission); err != nil {
		if errors.Is(err, ErrExists) {
			return Agent{}, refuse(RefusedConflict, "%v", err)
		}
		return Agent{}, err
	}
	if s.Leases != nil {
		// The replica rendezvous hashing names takes it at its next round.
		s.log().Info("agent admitted", "agent_id", a.ID, "runtime_policy", a.RuntimePolicy, "boot_policy", a.BootPolicy, "pcr_policy", a.PCRPolicy)
		return a, nil
	}
	// A fresh slot: a request that still holds the slot of an agent once
	// deleted under this ID finds that one marked removed.
	s.set(sl, a)
	s.slots.Store(a.ID, sl)
	if bg := s.background.Load(); bg != nil {
		go s.prefetchAK(*bg, a.ID)
	}
	s.log().Info("agent admitted", "agent_id", a.ID, "runtime_policy", a.RuntimePolicy, "boot_policy", a.BootPolicy, "pcr_policy", a.PCRPolicy)
	return a, nil
}

// Readmit puts a failed agent back to pending. Its next evidence must be
// complete (boot log, IMA from entry 0): nothing from before the failure is
// trusted.
func (s *Service) Readmit(ctx context.Context, id string) (Agent, error) {
	if err := s.holdForOperator(ctx, id); err != nil {
		return Agent{}, err
	}
	sl := s.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var out Agent
	err := s.updateAgent(ctx, sl, id, func(a *Agent) ([]revocation.Event, []HistoryEntry, error) {
		at := s.now().UTC()
		next, events, ok := a.readmitted(at)
		if !ok {
			return nil, nil, refuse(RefusedConflict, "agent %q is %s, not failed", id, a.State)
		}
		hist := append([]HistoryEntry{{AgentID: id, At: at, Kind: HistoryReadmitted, Operator: httpapi.OperatorFrom(ctx)}},
			changes(*a, next, nil, events, at)...)
		*a, out = next, next
		// A failure still waiting to be stored goes in with its events
		// first: the issuers hear of the revocation before the readmission.
		return append(append([]revocation.Event(nil), sl.unsaved...), events...), hist, nil
	})
	if errors.Is(err, ErrNotFound) {
		s.forget(id, sl)
		return Agent{}, refuse(RefusedNotFound, "%v", err)
	}
	if err != nil {
		return Agent{}, err
	}
	sl.ak, sl.unsaved, sl.parked = nil, nil, false
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
	if sl.parked {
		return refuse(RefusedUnavailable, "agent %q has a failure waiting to be stored (the store cannot be written); delete it once the verifier is ready", id)
	}
	var hist []HistoryEntry
	if sl.agent != nil {
		_, hist = sl.agent.closePassing()
	}
	hist = append(append(sl.history, hist...), HistoryEntry{AgentID: id, At: s.now().UTC(), Kind: HistoryDeleted, Operator: httpapi.OperatorFrom(ctx)})
	s.persistMu.RLock()
	err := s.Store.DeleteAgent(ctx, id, hist...)
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
	sl.removed, sl.dirty, sl.agent, sl.unsaved, sl.parked = true, false, nil, nil, false
	sl.deadline.Store(0)
	s.slots.CompareAndDelete(id, sl)
}

// DeletePolicy deletes a policy that no agent uses, so no agent is left
// without one.
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	// The stored records are the ones to ask: an agent's policies change
	// only by operator actions, which are stored before they are answered.
	// An agent pinned to a version names the policy too.
	agents, err := s.Store.ListAgents(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, a := range agents {
		if a.RuntimePolicy == name || a.BootPolicy == name || a.PCRPolicy == name {
			users = append(users, a.ID)
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		return refuse(RefusedConflict, "policy %q is used by agents %v: %v", name, users, ErrExists)
	}
	err = s.Store.DeletePolicy(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return refuse(RefusedNotFound, "%v", err)
	case err != nil:
		return err
	}
	s.policies.forgetAll(name)
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

func (s *Service) eventsRaised() {
	if s.OnEvents != nil {
		s.OnEvents()
	}
}
