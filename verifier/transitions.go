package verifier

import (
	"strconv"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// The agent state machine, in one place. Each transition takes an agent's
// record as it is and returns the record to store with the events it
// raises; the service stores both in one transaction, under the agent's
// lock. Nothing else sets an agent's State.
//
//	           admitted
//	              │
//	              ▼      passed
//	          pending ───────────▶ attesting ◀─┐ passed
//	              │                    │  └─────┘
//	       failed │                    │ failed
//	              ▼                    ▼
//	           failed ◀────────────────┘
//	              │ readmitted (operator) → pending
//	              │ recovered (failed only for silence, complete fresh
//	              │            evidence passed) → attesting
//
// failed raises dev.vigil.agent.revoked; readmitted and recovered raise
// dev.vigil.agent.readmitted. Deletion removes the record and raises
// nothing.

// admitted is a new agent's first record: pending its first evidence.
func admitted(req AdmitRequest, at time.Time) Agent {
	return Agent{
		ID:            req.AgentID,
		RuntimePolicy: req.RuntimePolicy,
		BootPolicy:    req.BootPolicy,
		PCRPolicy:     req.PCRPolicy,
		Identities:    req.Identities,
		Interval:      req.Interval,
		State:         StatePending,
		AdmittedAt:    at,
	}
}

// passed records good evidence at at: the agent is attesting.
func (a Agent) passed(at time.Time) Agent {
	a.State, a.Reason, a.Detail = StateAttesting, "", ""
	a.LastAttestedAt = at
	a.Attestations++
	return a
}

// failed moves the agent to failed for f, and revokes its identities.
func (a Agent) failed(f *Failure, at time.Time) (Agent, []revocation.Event) {
	a.State, a.Reason, a.Detail, a.FailedAt = StateFailed, f.Reason, f.Error(), at
	return a, []revocation.Event{revocation.NewEvent(revocation.TypeRevoked, at, eventData(a, f))}
}

// recovered is an agent back from silence: a has passed complete fresh
// evidence (passed), and its identities may be trusted again.
func (a Agent) recovered(at time.Time) (Agent, []revocation.Event) {
	a.FailedAt = time.Time{}
	return a, []revocation.Event{revocation.NewEvent(revocation.TypeReadmitted, at, eventData(a, nil))}
}

// readmitted is an operator's readmission of a failed agent: pending again,
// with a new admission time (so every nonce issued before is void) and
// nothing of before trusted. ok is false when a is not failed.
func (a Agent) readmitted(at time.Time) (next Agent, events []revocation.Event, ok bool) {
	if a.State != StateFailed {
		return a, nil, false
	}
	a = a.untrusted()
	a.State, a.Reason, a.Detail, a.FailedAt = StatePending, "", "", time.Time{}
	a.AdmittedAt = at
	return a, []revocation.Event{revocation.NewEvent(revocation.TypeReadmitted, at, eventData(a, nil))}, true
}

// updated is an operator's update u of what agent a is checked with. Its
// state stays: a failed agent stays failed, whatever it is checked with
// now. A change of policy applies from the next verdict: the passing
// verdicts counted under the old policies close (their entries are
// returned); evidence answering a nonce issued up to nonceFloor was asked
// for under the old policies and is refused as spent; a new or changed boot
// policy wants the boot log again; a new or changed runtime policy judges
// the IMA list from its first entry, as nothing verified under the old one
// was verified under it. A new or changed PCR policy needs nothing more:
// every quote's PCR values are checked against it whole.
func (a Agent) updated(u agentUpdate, nonceFloor int64) (Agent, []HistoryEntry) {
	runtimeName, runtimePin := a.RuntimePolicy, a.RuntimePolicyVersion
	if u.runtime != nil {
		runtimeName, runtimePin = u.runtime.name, u.runtime.pin
	}
	bootName, bootPin := a.BootPolicy, a.BootPolicyVersion
	if u.boot != nil {
		bootName, bootPin = u.boot.name, u.boot.pin
	}
	pcrName, pcrPin := a.PCRPolicy, a.PCRPolicyVersion
	if u.pcr != nil {
		pcrName, pcrPin = u.pcr.name, u.pcr.pin
	}
	runtimeChanged := runtimeName != a.RuntimePolicy || runtimePin != a.RuntimePolicyVersion
	bootChanged := bootName != a.BootPolicy || bootPin != a.BootPolicyVersion
	pcrChanged := pcrName != a.PCRPolicy || pcrPin != a.PCRPolicyVersion
	var closed []HistoryEntry
	if runtimeChanged || bootChanged || pcrChanged {
		a, closed = a.closePassing()
		a.LastNonce = max(a.LastNonce, nonceFloor)
	}
	if bootChanged {
		a.BootPolicy, a.BootPolicyVersion, a.BootChecked = bootName, bootPin, false
	}
	if runtimeChanged {
		a.RuntimePolicy, a.RuntimePolicyVersion, a.IMAEntries, a.IMAState = runtimeName, runtimePin, 0, nil
	}
	if pcrChanged {
		a.PCRPolicy, a.PCRPolicyVersion = pcrName, pcrPin
	}
	if u.identities != nil {
		a.Identities = *u.identities
		if len(a.Identities) == 0 {
			a.Identities = nil
		}
	}
	if u.interval != nil {
		a.Interval = *u.interval
	}
	return a, closed
}

// untrusted is a's record without what its past evidence established (the
// last clock, a checked boot log, the IMA entries verified): after a
// readmission, or for evidence ending a silence, evidence must stand on its
// own.
func (a Agent) untrusted() Agent {
	a.Clock, a.BootChecked, a.IMAEntries, a.IMAState = nil, false, 0, nil
	return a
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

// The history a transition writes, in one place too: the service stores
// these entries with the record they describe.

// policyRef names a policy version in history: name@version, or the name
// alone when the version is not known.
func policyRef(name string, version int) string {
	if name == "" || version == 0 {
		return name
	}
	return name + "@" + strconv.Itoa(version)
}

// policyVersions are the stored versions of an agent's policies that
// judged a verdict (0 for a kind it has none of).
type policyVersions struct {
	runtime, boot, pcr int
}

// versions are the stored versions of the compiled policies.
func (p Policies) versions() policyVersions {
	return policyVersions{runtime: p.RuntimeVersion, boot: p.BootVersion, pcr: p.PCRVersion}
}

// passingVersions are the versions the agent's open period of passing
// verdicts was judged under.
func (a Agent) passingVersions() policyVersions {
	return policyVersions{runtime: a.PassingRuntimeVersion, boot: a.PassingBootVersion, pcr: a.PassingPCRVersion}
}

// tally counts a passing verdict at at, judged under the given policy
// versions, into the agent's open period of passing verdicts. A period
// closes — and its entry is returned — when it has run for period, or
// when the policy versions change, so that each entry names the versions
// its verdicts used.
func (a Agent) tally(at time.Time, v policyVersions, period time.Duration) (Agent, []HistoryEntry) {
	var closed []HistoryEntry
	if a.Passing > 0 && (at.Sub(a.PassingFrom) >= period || v != a.passingVersions()) {
		a, closed = a.closePassing()
	}
	if a.Passing == 0 {
		a.PassingFrom = at
		a.PassingRuntimeVersion, a.PassingBootVersion, a.PassingPCRVersion = v.runtime, v.boot, v.pcr
	}
	a.Passing++
	a.PassingTo = at
	return a, closed
}

// closePassing ends the agent's open period of passing verdicts and
// returns its entry, if it counted any.
func (a Agent) closePassing() (Agent, []HistoryEntry) {
	if a.Passing == 0 {
		return a, nil
	}
	e := a.passingEntry()
	a.Passing, a.PassingFrom, a.PassingTo = 0, time.Time{}, time.Time{}
	a.PassingRuntimeVersion, a.PassingBootVersion, a.PassingPCRVersion = 0, 0, 0
	return a, []HistoryEntry{e}
}

// passingEntry is the history entry of the agent's open period.
func (a Agent) passingEntry() HistoryEntry {
	return HistoryEntry{
		AgentID:       a.ID,
		At:            a.PassingTo,
		Kind:          HistoryVerdicts,
		RuntimePolicy: policyRef(a.RuntimePolicy, a.PassingRuntimeVersion),
		BootPolicy:    policyRef(a.BootPolicy, a.PassingBootVersion),
		PCRPolicy:     policyRef(a.PCRPolicy, a.PassingPCRVersion),
		Verdicts:      &VerdictPeriod{From: a.PassingFrom, To: a.PassingTo, Count: a.Passing},
	}
}

// changes are the entries of going from prev to next at at: a reboot the
// quote showed, a failure, a change of state, and the revocation events
// raised, in that order.
func changes(prev, next Agent, f *Failure, events []revocation.Event, at time.Time) []HistoryEntry {
	var out []HistoryEntry
	if prev.Clock != nil && next.Clock != nil && next.Clock.ResetCount != prev.Clock.ResetCount {
		out = append(out, HistoryEntry{AgentID: next.ID, At: at, Kind: HistoryReboot, ResetCount: next.Clock.ResetCount, RestartCount: next.Clock.RestartCount})
	}
	if f != nil {
		e := HistoryEntry{AgentID: next.ID, At: at, Kind: HistoryFailure, Reason: f.Reason, Check: f.Check, Detail: f.Detail}
		if f.IMA != nil {
			e.IMA = &IMAEntryRef{Index: f.IMA.Entry, Path: f.IMA.Path, Digest: f.IMA.Digest}
		}
		out = append(out, e)
	}
	if prev.State != next.State {
		out = append(out, HistoryEntry{AgentID: next.ID, At: at, Kind: HistoryState, From: prev.State, To: next.State, Reason: next.Reason})
	}
	for _, ev := range events {
		out = append(out, HistoryEntry{AgentID: next.ID, At: at, Kind: HistoryRevocation, Event: &EventRef{ID: ev.ID, Type: ev.Type}})
	}
	return out
}
