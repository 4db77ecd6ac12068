package verifier

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// UpdateRequest changes what an admitted agent is checked with. A field
// left out (nil) keeps the agent's setting. A policy is named as in
// AdmitRequest (NAME follows the latest version, NAME@VERSION pins one);
// an empty name removes that policy, as long as the agent keeps another.
// An empty list of identities removes them all; an interval of 0 is the
// verifier's default.
type UpdateRequest struct {
	RuntimePolicy *string        `json:"runtime_policy,omitempty"`
	BootPolicy    *string        `json:"boot_policy,omitempty"`
	PCRPolicy     *string        `json:"pcr_policy,omitempty"`
	Identities    *[]string      `json:"identities,omitempty"`
	Interval      *time.Duration `json:"interval,omitempty"`
}

// policyChoice is a policy an operator named for an agent, checked.
type policyChoice struct {
	// name is empty for no policy of that kind.
	name string
	// pin is the version the agent is pinned to; 0 follows the latest.
	pin int
	// version is the version that judges the agent now: pin, or the
	// latest when the choice was checked.
	version int
}

// agentUpdate is an UpdateRequest checked: nil fields keep the agent's
// setting.
type agentUpdate struct {
	runtime, boot, pcr *policyChoice
	identities         *[]string
	interval           *time.Duration
}

// errUnchanged ends an update that changes nothing: nothing is stored.
var errUnchanged = errors.New("nothing changes")

// Update changes an admitted agent's policies, identities or interval, as
// an operator's action: stored before it is answered, with a history entry
// naming the operator and what changed.
//
// A change of policy applies from the next verdict (see Agent.updated):
// evidence answering a challenge issued before is refused and the agent
// asks again, the next challenge selects the PCRs the new policies need,
// asks for the boot log again when the boot policy is new or changed, and
// has the IMA list judged from its start when the runtime policy is. A new
// interval applies from the next challenge. The agent's state does not
// change: a failed agent stays failed, however loose its new policy; only
// a readmission brings it back.
func (s *Service) Update(ctx context.Context, id string, req UpdateRequest) (Agent, error) {
	if !tpmfacts.ValidAgentID(id) {
		return Agent{}, refuse(RefusedInvalid, "agent ID %q: 1-128 of A-Z a-z 0-9 . _ : -", id)
	}
	if req == (UpdateRequest{}) {
		return Agent{}, refuse(RefusedInvalid, "agent %q: nothing to update: give a runtime policy, a boot policy, a PCR policy, identities or an interval", id)
	}
	if err := s.holdForOperator(ctx, id); err != nil {
		return Agent{}, err
	}
	// Held until the agent is stored, so that no policy checked here is
	// deleted before the agent that now uses it is stored.
	s.policyMu.RLock()
	defer s.policyMu.RUnlock()
	var u agentUpdate
	for _, p := range []struct {
		ref  *string
		kind PolicyKind
		to   **policyChoice
	}{{req.RuntimePolicy, PolicyRuntime, &u.runtime}, {req.BootPolicy, PolicyBoot, &u.boot}, {req.PCRPolicy, PolicyPCR, &u.pcr}} {
		if p.ref == nil {
			continue
		}
		c, err := s.checkPolicyRef(ctx, *p.ref, p.kind)
		if err != nil {
			return Agent{}, err
		}
		*p.to = &c
	}
	if req.Identities != nil {
		if err := checkIdentities(id, *req.Identities); err != nil {
			return Agent{}, err
		}
		ids := slices.Clone(*req.Identities)
		u.identities = &ids
	}
	if req.Interval != nil {
		if err := s.checkInterval(*req.Interval); err != nil {
			return Agent{}, err
		}
		u.interval = req.Interval
	}

	sl := s.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var out Agent
	var events []revocation.Event
	err := s.updateAgent(ctx, sl, id, func(a *Agent) ([]revocation.Event, []HistoryEntry, error) {
		at := s.now().UTC()
		// Nonces issued up to now were issued for the old policies.
		next, hist := a.updated(u, s.issueTime())
		if next.RuntimePolicy == "" && next.BootPolicy == "" && next.PCRPolicy == "" {
			return nil, nil, refuse(RefusedInvalid, "agent %q: an agent keeps at least one policy: this update would leave it with no runtime, boot or PCR policy", id)
		}
		entry, changed := s.updateEntry(ctx, *a, next, u, at)
		if !changed {
			out = *a
			return nil, nil, errUnchanged
		}
		*a, out = next, next
		// A failure still waiting to be stored goes in with its events, as
		// the update stores the failed record.
		events = append([]revocation.Event(nil), sl.unsaved...)
		return events, append(hist, entry), nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return out, nil
	case errors.Is(err, ErrNotFound):
		s.forget(id, sl)
		return Agent{}, refuse(RefusedNotFound, "%v", err)
	case err != nil:
		return Agent{}, err
	}
	sl.unsaved, sl.parked = nil, false
	// The PCRs to quote depend on the policies: made again at the next
	// challenge.
	sl.selection, sl.selectionRaw, sl.selectionPCR = tpm2.TPMLPCRSelection{}, nil, nil
	s.set(sl, out)
	s.log().Info("agent updated", "agent_id", id, "runtime_policy", policyRef(out.RuntimePolicy, out.RuntimePolicyVersion),
		"boot_policy", policyRef(out.BootPolicy, out.BootPolicyVersion), "pcr_policy", policyRef(out.PCRPolicy, out.PCRPolicyVersion),
		"interval", s.interval(out))
	if len(events) > 0 {
		s.eventsRaised()
	}
	return out, nil
}

// updateEntry is the history entry of an update from prev to next, and
// whether anything changed: the operator, the policies and interval that
// changed, and a summary of every change for people.
func (s *Service) updateEntry(ctx context.Context, prev, next Agent, u agentUpdate, at time.Time) (HistoryEntry, bool) {
	e := HistoryEntry{AgentID: next.ID, At: at, Kind: HistoryUpdated, Operator: httpapi.OperatorFrom(ctx)}
	var what []string
	for _, p := range []struct {
		kind             PolicyKind
		oldName, newName string
		oldPin, newPin   int
		choice           *policyChoice
		field            *string
	}{
		{PolicyRuntime, prev.RuntimePolicy, next.RuntimePolicy, prev.RuntimePolicyVersion, next.RuntimePolicyVersion, u.runtime, &e.RuntimePolicy},
		{PolicyBoot, prev.BootPolicy, next.BootPolicy, prev.BootPolicyVersion, next.BootPolicyVersion, u.boot, &e.BootPolicy},
		{PolicyPCR, prev.PCRPolicy, next.PCRPolicy, prev.PCRPolicyVersion, next.PCRPolicyVersion, u.pcr, &e.PCRPolicy},
	} {
		if p.oldName == p.newName && p.oldPin == p.newPin {
			continue
		}
		newVersion := 0
		if p.choice != nil {
			newVersion = p.choice.version
		}
		*p.field = policyRef(p.newName, newVersion)
		what = append(what, fmt.Sprintf("%s policy %s → %s", p.kind, s.describePolicy(ctx, p.oldName, p.oldPin, 0), s.describePolicy(ctx, p.newName, p.newPin, newVersion)))
	}
	if !slices.Equal(prev.Identities, next.Identities) {
		what = append(what, fmt.Sprintf("identities %s → %s", describeIdentities(prev.Identities), describeIdentities(next.Identities)))
	}
	if prev.Interval != next.Interval {
		e.Interval = s.interval(next)
		what = append(what, fmt.Sprintf("interval %s → %s", s.describeInterval(prev), s.describeInterval(next)))
	}
	e.Detail = strings.Join(what, "; ")
	return e, len(what) > 0
}

// describePolicy names a policy for people: none, NAME@V (pinned), or
// NAME@V for the latest version V (read from the store when version is 0).
func (s *Service) describePolicy(ctx context.Context, name string, pin, version int) string {
	switch {
	case name == "":
		return "none"
	case pin > 0:
		return policyRef(name, pin) + " (pinned)"
	case version == 0:
		if p, err := s.Store.GetPolicy(ctx, name); err == nil {
			version = p.Version
		}
	}
	return policyRef(name, version)
}

func (s *Service) describeInterval(a Agent) string {
	if a.Interval == 0 {
		return fmt.Sprintf("%s (the verifier's default)", s.interval(a))
	}
	return a.Interval.String()
}

func describeIdentities(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return "[" + strings.Join(ids, " ") + "]"
}

// holdForOperator makes sure, with replicas, that this replica holds
// agent id before an operator's action changes it. The replica holding it
// has its newest record, so the action is redirected there (307); an
// agent whose holder died is taken over now.
func (s *Service) holdForOperator(ctx context.Context, id string) error {
	if s.Leases == nil {
		return nil
	}
	if _, held := s.slots.Load(id); held {
		return nil
	}
	return s.notHeld(ctx, id)
}

// parsePolicyRef reads NAME or NAME@VERSION. Policy names hold no "@".
func parsePolicyRef(kind PolicyKind, ref string) (name string, pin int, err error) {
	name, v, pinned := strings.Cut(ref, "@")
	if !tpmfacts.ValidAgentID(name) {
		return "", 0, refuse(RefusedInvalid, "%s policy %q: want NAME or NAME@VERSION, NAME 1-128 of A-Z a-z 0-9 . _ : -", kind, ref)
	}
	if pinned {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || strconv.Itoa(n) != v {
			return "", 0, refuse(RefusedInvalid, "%s policy %q: version %q is not a version number (1, 2, …): want NAME or NAME@VERSION", kind, ref, v)
		}
		pin = n
	}
	return name, pin, nil
}

// checkPolicyRef checks that ref (NAME or NAME@VERSION; "" for none) names
// a stored policy of kind, or a stored version of one.
func (s *Service) checkPolicyRef(ctx context.Context, ref string, kind PolicyKind) (policyChoice, error) {
	if ref == "" {
		return policyChoice{}, nil
	}
	name, pin, err := parsePolicyRef(kind, ref)
	if err != nil {
		return policyChoice{}, err
	}
	var p Policy
	if pin > 0 {
		p, err = s.Store.GetPolicyVersion(ctx, name, pin)
	} else {
		p, err = s.Store.GetPolicy(ctx, name)
	}
	if errors.Is(err, ErrNotFound) {
		if pin > 0 {
			if latest, err := s.Store.GetPolicy(ctx, name); err == nil {
				return policyChoice{}, refuse(RefusedInvalid, "%s policy %q has no version %d (the latest is %d)", kind, name, pin, latest.Version)
			}
		}
		return policyChoice{}, refuse(RefusedInvalid, "%s policy %q does not exist", kind, name)
	}
	if err != nil {
		return policyChoice{}, err
	}
	if p.Kind != kind {
		return policyChoice{}, refuse(RefusedInvalid, "policy %q is a %s policy, not a %s policy", name, p.Kind, kind)
	}
	return policyChoice{name: name, pin: pin, version: p.Version}, nil
}

// checkIdentities checks the identities agent id is to be revoked under.
func checkIdentities(id string, ids []string) error {
	for _, i := range ids {
		if len(i) > MaxIdentityLen {
			return refuse(RefusedInvalid, "identity %.64q…: %d bytes, at most %d", i, len(i), MaxIdentityLen)
		}
		u, err := url.Parse(i)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
			return refuse(RefusedInvalid, "identity %q is not an absolute URI (e.g. spiffe://example.org/node/web-1)", i)
		}
	}
	if len(ids) > MaxIdentities {
		return refuse(RefusedInvalid, "agent %q: %d identities, at most %d", id, len(ids), MaxIdentities)
	}
	return nil
}

// checkInterval checks an attestation interval; 0 is the default.
func (s *Service) checkInterval(d time.Duration) error {
	if lo, hi := s.intervalBounds(); d != 0 && (d < lo || d > hi) {
		return refuse(RefusedInvalid, "interval %s: between %s and %s", d, lo, hi)
	}
	return nil
}

// Policy returns one version of a policy with its body: the latest when
// version is 0.
func (s *Service) Policy(ctx context.Context, name string, version int) (Policy, error) {
	var p Policy
	var err error
	if version == 0 {
		p, err = s.Store.GetPolicy(ctx, name)
	} else {
		p, err = s.Store.GetPolicyVersion(ctx, name, version)
	}
	if errors.Is(err, ErrNotFound) {
		if version > 0 {
			if latest, err := s.Store.GetPolicy(ctx, name); err == nil {
				return Policy{}, refuse(RefusedNotFound, "policy %q has no version %d (the latest is %d)", name, version, latest.Version)
			}
		}
		return Policy{}, refuse(RefusedNotFound, "policy %q does not exist", name)
	}
	return p, err
}

// PolicyVersions lists every version of a policy, oldest first, without
// bodies.
func (s *Service) PolicyVersions(ctx context.Context, name string) ([]Policy, error) {
	ps, err := s.Store.PolicyVersions(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, refuse(RefusedNotFound, "policy %q does not exist", name)
	}
	return ps, err
}
