package verifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// Concurrency. Each agent has a slot whose mutex orders that agent's
// requests and guards the slot's fields; no lock spans agents on the
// verdict path. The other locks, and the order they are taken in when one
// is held while another is taken (never the reverse):
//
//	policyMu     admissions and updates (shared) against policy deletion
//	             (exclusive)
//	warmMu       the one-time load of every agent (Load)
//	slot.mu      one agent: its record, cached AK, parked failure
//	persistMu    synchronous writes (shared) against a checkpoint's
//	             commit (exclusive), so a checkpoint never lands a record
//	             older than one written synchronously
//	dirtyMu      the sets of dirty and parked slots
//
// The policy cache's lock, the refusal log's and the AK fetch semaphore are
// leaves: nothing else is taken while one is held. A checkpoint takes
// dirtyMu, lets it go, then each dirty slot's mutex in turn, then
// persistMu alone. Slots' generations (gen) and AK epochs (akEpoch) let
// work done outside a slot's lock (a checkpoint's copy, an AK fetch) see
// whether the slot moved on meanwhile, instead of holding the lock across
// I/O to the registrar or the store's commit.

// ErrNotEnrolled is returned by an AKSource for an agent whose AK the
// registrar does not (or no longer) vouch for.
var ErrNotEnrolled = errors.New("agent has no active AK at the registrar")

// AKSource tells which AK speaks for an agent.
type AKSource interface {
	AK(ctx context.Context, agentID string) (*evidence.AK, error)
}

// RefusalKind and Refusal are the APIs' one error type (internal/apierr).
// A refusal of an agent's request changes nothing: no state, no event,
// nothing stored.
type (
	RefusalKind = apierr.Kind
	Refusal     = apierr.Error
)

// The kinds the verifier refuses with.
const (
	RefusedInvalid     = apierr.Invalid
	RefusedForbidden   = apierr.Forbidden
	RefusedNotFound    = apierr.NotFound
	RefusedConflict    = apierr.Conflict
	RefusedUnavailable = apierr.Unavailable
	RefusedTooLarge    = apierr.TooLarge
	RefusedMoved       = apierr.Moved
)

func refuse(kind RefusalKind, format string, args ...any) *Refusal {
	return apierr.New(kind, "", format, args...)
}

func refuseAs(kind RefusalKind, reason, format string, args ...any) *Refusal {
	return apierr.New(kind, reason, format, args...)
}

// Reasons for refusing an agent's request: the label values of
// vigil_verifier_refused_total. Refusals for a quote that does not verify
// use the quote check's own reason (bad_signature, malformed_quote, ...).
const (
	refusedUnknownAgent  = "unknown_agent"
	refusedAgentFailed   = "agent_failed"
	refusedBadNonce      = "bad_nonce"
	refusedNonceExpired  = "nonce_expired"
	refusedNonceUsed     = "nonce_used"
	refusedNonceMismatch = "nonce_mismatch"
	refusedIMAOffset     = "ima_offset"
	refusedNotEnrolled   = "not_enrolled"
	refusedRegistrarDown = "registrar_unavailable"
	refusedStoreDown     = "store_unavailable"
	refusedTooLarge      = "too_large"
	refusedBusy          = "busy"
	refusedMalformed     = "malformed"
	refusedAgentMismatch = "agent_mismatch"
	refusedIncomplete    = "incomplete_evidence"
	refusedBadQuote      = "bad_quote"
	refusedMoved         = "other_replica"
	refusedUnassigned    = "unassigned"
)

// AutoRecover says which failures heal by themselves.
type AutoRecover string

// Auto-recovery modes.
const (
	// RecoverSilence: an agent failed only for silence is attesting again
	// once it sends complete fresh evidence that passes. Silence proves
	// nothing about the host (a network cut, a reboot, a stopped agent),
	// and the evidence that ends it is as complete as an operator's
	// readmission would demand. The default.
	RecoverSilence AutoRecover = "silence"
	// RecoverNever: every failure waits for an operator.
	RecoverNever AutoRecover = "never"
)

// ParseAutoRecover reads --auto-recover.
func ParseAutoRecover(s string) (AutoRecover, error) {
	switch AutoRecover(s) {
	case RecoverSilence, RecoverNever:
		return AutoRecover(s), nil
	}
	return "", fmt.Errorf("auto-recover %q: want silence or never", s)
}

// Service runs attestation for many agents. New makes it, with every field
// set from a Config; its fields have no defaults of their own.
type Service struct {
	Store Store
	AKs   AKSource
	Log   *slog.Logger
	// DefaultInterval applies to agents admitted without one.
	DefaultInterval time.Duration
	// NonceTTL is how long a challenge can be answered.
	NonceTTL time.Duration
	// Liveness is how long an agent may go without good evidence; zero
	// means LivenessIntervals of its interval.
	Liveness time.Duration
	// LivenessIntervals is how many intervals of silence fail an agent
	// when Liveness is zero.
	LivenessIntervals int
	// Now is time.Now when nil.
	Now func() time.Time
	// OnEvents, if set, is told when revocation events were stored (to
	// wake the dispatcher).
	OnEvents func()
	// OnVerdict, if set, is told of every verdict (metrics).
	OnVerdict func(a Agent, f *Failure, took time.Duration)
	// OnCheckpoint, if set, is told of every checkpoint (metrics).
	OnCheckpoint func(records int, took time.Duration, err error)

	// CheckpointEvery is how often the progress of attesting agents is
	// written to the store. Zero stores every verdict before answering it.
	// See Run for what is and is not deferred.
	CheckpointEvery time.Duration
	// LivenessEvery is how often Run looks for silent agents.
	LivenessEvery time.Duration
	// AKFetches bounds the AK fetches in flight to the registrar: a
	// verifier starting with a fleet must not storm it.
	AKFetches int
	// Feed, if set, tells Run which agents the registrar vouches for, so
	// that a host deleted there fails not_enrolled and an AK replaced by a
	// proper re-enrollment is fetched again, without a restart.
	Feed AKFeed
	// FeedEvery is how often Run polls Feed; zero means DefaultInterval.
	FeedEvery time.Duration
	// AutoRecover says which failures heal by themselves.
	AutoRecover AutoRecover
	// MinInterval and MaxInterval bound the attestation interval an agent
	// is admitted with.
	MinInterval, MaxInterval time.Duration
	// OnRefused, if set, is told of every refused agent request (metrics).
	OnRefused func(reason string)

	// Leases, when set, makes this verifier one replica of several on a
	// shared store: it serves only the agents it holds a lease on (see
	// lease.go and replica.go), as ReplicaID, reachable at ReplicaURL.
	Leases     LeaseStore
	ReplicaID  string
	ReplicaURL string
	// LeaseTTL is how long a lease lasts unrenewed: a replica that dies
	// loses its agents to the others after about that long.
	LeaseTTL time.Duration
	// OnLeaseMoves, if set, is told how many leases this replica gained
	// and lost in one round (metrics).
	OnLeaseMoves func(gained, lost int)

	slots sync.Map // agent ID → *slot

	// engine decides; policies feeds it the compiled policies.
	engine   Engine
	policies policyCache

	// persistMu orders checkpoints against synchronous writes: a write
	// that must be durable before its answer (a failure, a state change,
	// an operator's action) holds it shared; a checkpoint's commit holds
	// it exclusively, so a checkpoint can never land a record older than
	// one written synchronously.
	persistMu sync.RWMutex
	dirtyMu   sync.Mutex
	dirty     map[*slot]struct{}

	warmMu sync.Mutex
	warmed bool
	// background is Run's context, for work that outlives a request
	// (fetching an admitted agent's AK ahead of its first evidence).
	background atomic.Pointer[context.Context]

	akOnce sync.Once
	akSem  chan struct{}

	startOnce sync.Once
	startedAt time.Time

	macKey     atomic.Pointer[nonceMACKey]
	lastIssued atomic.Int64
	// storeDown is set while the store cannot be written: no verdict is
	// answered good then, and /readyz says not ready.
	storeDown atomic.Bool
	// parked holds slots whose failure could not be stored yet; Run
	// stores them (with their revocation events) once the store can be
	// written again. Guarded by dirtyMu.
	parked map[*slot]struct{}

	refusals refusalLog
	// policyMu keeps a policy from being deleted between an admission's
	// (or an update's) check that it exists and the agent's record naming
	// it being stored.
	policyMu sync.RWMutex
	// loaded is set once every stored agent has a slot (Load).
	loaded atomic.Bool
	// others maps the agents this replica does not hold to who does, as
	// of the last lease round: for redirects, and to take over at once an
	// agent whose holder's lease has lapsed since.
	others atomic.Pointer[map[string]heldBy]
	// HistoryRetention and HistoryMaxPerAgent bound the history Run
	// prunes; HistoryPeriod is how long passing verdicts are counted into
	// one entry (zero: DefaultHistoryPeriod).
	HistoryRetention, HistoryPeriod time.Duration
	HistoryMaxPerAgent              int
}

// started is when this verifier process began watching liveness. Silence
// is counted from then at the earliest: agents cannot reach a verifier that
// was down, and failing the whole fleet on every restart would turn an
// operator's routine into a mass revocation.
func (s *Service) started() time.Time {
	s.startOnce.Do(func() { s.startedAt = s.now() })
	return s.startedAt
}

// slot is the in-memory, per-agent part of the service: the agent's
// current record, the outstanding challenge and the cached AK. Its mutex
// orders one agent's requests; no lock spans agents.
type slot struct {
	mu sync.Mutex
	ak *evidence.AK
	// agent is the agent's current record. It is the truth while the
	// verifier runs: verdicts change it here and the store follows,
	// synchronously or at the next checkpoint. Nil means load it.
	agent *Agent
	// dirty is set when agent has changed since it was stored.
	dirty bool
	// removed is set when the agent was deleted while a request held
	// this slot.
	removed bool
	// akEpoch moves when ak is dropped, so an AK fetched before that is
	// not cached after it.
	akEpoch uint64
	// selection and its marshalled form depend only on the agent's
	// policies: made once, and again after an operator changes them
	// (Update clears them) or another version of its PCR policy is
	// compiled (selectionPCR, the compiled PCR policy they were made
	// with).
	selection    tpm2.TPMLPCRSelection
	selectionRaw []byte
	selectionPCR *pcrpolicy.Policy
	// gen counts synchronous writes of this agent's record. A checkpoint
	// drops a copy taken before the latest one.
	gen atomic.Uint64
	// deadline is when the agent fails for silence (Unix nanoseconds),
	// zero when it is not watched (failed). Atomic so the liveness sweep
	// reads it without waiting for a request in progress.
	deadline atomic.Int64
	// unsaved are the revocation events of a failure decided while the
	// store could not be written: agent holds the failed record, and both
	// go to the store together once it can be written.
	unsaved []revocation.Event
	parked  bool
	// history are entries for agent's history not yet stored: they go with
	// the next write of its record, synchronous or checkpoint.
	history []HistoryEntry
	// fence is the lease this replica holds the agent under; every record
	// set in the slot carries it to the store.
	fence Fence
	// heardFloor is when this replica took the agent over: silence is
	// counted from then at the earliest, so that no host fails for the
	// silence a failover caused.
	heardFloor time.Time
}

// selectionOf makes the slot's PCR selection for agent a under its
// compiled PCR policy pcr (nil for none, or none to be had), once for each
// PCR policy; the caller holds sl.mu.
func (sl *slot) selectionOf(a Agent, pcr *pcrpolicy.Policy) {
	if sl.selectionRaw == nil || sl.selectionPCR != pcr {
		sl.selection = Selection(a, pcr)
		sl.selectionRaw = marshalSelection(sl.selection)
		sl.selectionPCR = pcr
	}
}

// selectionFor makes the slot's PCR selection for agent a, compiling its
// PCR policy if need be; the caller holds sl.mu. A PCR policy that cannot
// be had leaves its PCRs out: the evidence then fails for that policy, as
// for any policy that cannot be had.
func (s *Service) selectionFor(ctx context.Context, sl *slot, a Agent) {
	pcr, _, _ := s.policies.pcrPolicy(ctx, s.Store, a)
	sl.selectionOf(a, pcr)
}

// set makes a the slot's record; the caller holds sl.mu.
func (s *Service) set(sl *slot, a Agent) {
	a.Fence = sl.fence
	sl.agent = &a
	if a.State == StatePending || a.State == StateAttesting {
		sl.deadline.Store(addSaturating(s.heardIn(sl, a), s.livenessWindow(a)).UnixNano())
	} else {
		sl.deadline.Store(0)
	}
}

// lockAgent returns the agent's slot, locked, and its record. Unknown
// agents get no slot: IDs nobody admitted must not grow the verifier's
// memory.
func (s *Service) lockAgent(ctx context.Context, id string) (*slot, Agent, error) {
	sl := (*slot)(nil)
	if v, ok := s.slots.Load(id); ok {
		sl = v.(*slot)
	} else {
		if s.Leases != nil {
			if err := s.notHeld(ctx, id); err != nil {
				return nil, Agent{}, err
			}
			// Taken over just now.
			return s.lockAgent(ctx, id)
		}
		if s.loaded.Load() {
			// Every admitted agent has a slot once loaded: an unknown ID
			// costs no store read.
			return nil, Agent{}, s.loadError(id, ErrNotFound)
		}
		if _, err := s.Store.GetAgent(ctx, id); err != nil {
			return nil, Agent{}, s.loadError(id, err)
		}
		sl = s.slot(id)
	}
	sl.mu.Lock()
	if sl.removed {
		sl.mu.Unlock()
		return nil, Agent{}, s.loadError(id, ErrNotFound)
	}
	if sl.agent == nil {
		a, err := s.Store.GetAgent(ctx, id)
		if err != nil {
			sl.mu.Unlock()
			return nil, Agent{}, s.loadError(id, err)
		}
		s.set(sl, a)
	}
	return sl, *sl.agent, nil
}

func (s *Service) loadError(id string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return refuseAs(RefusedForbidden, refusedUnknownAgent, "agent %q is not admitted to this verifier", id)
	}
	return err
}

func (s *Service) slot(id string) *slot {
	if v, ok := s.slots.Load(id); ok {
		return v.(*slot)
	}
	v, _ := s.slots.LoadOrStore(id, &slot{})
	return v.(*slot)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) interval(a Agent) time.Duration {
	if a.Interval > 0 {
		return a.Interval
	}
	return s.DefaultInterval
}

// livenessWindow is how long agent a may stay silent.
func (s *Service) livenessWindow(a Agent) time.Duration {
	if s.Liveness > 0 {
		return s.Liveness
	}
	return time.Duration(s.LivenessIntervals) * s.interval(a)
}

func (s *Service) nonceTTL(a Agent) time.Duration {
	if s.NonceTTL > 0 {
		return s.NonceTTL
	}
	return max(30*time.Second, 2*s.interval(a))
}

// Challenge issues a challenge to an agent. Challenges are stateless (see
// nonce.go): issuing one invalidates none issued before, so anyone may ask
// for one in any admitted agent's name without disturbing the agent.
func (s *Service) Challenge(ctx context.Context, req wire.ChallengeRequest) (wire.Challenge, error) {
	sl, a, err := s.lockAgent(ctx, req.AgentID)
	if err != nil {
		return wire.Challenge{}, s.refused(err)
	}
	defer sl.mu.Unlock()
	full := req.Started
	if a.State == StateFailed {
		if !s.recoverable(a) {
			return wire.Challenge{}, s.refused(s.failedRefusal(a))
		}
		// Coming back from silence takes everything, as a readmission does.
		full = true
	}
	return s.issue(ctx, sl, a, full)
}

// failedRefusal refuses a failed agent's request; the agent is told to ask
// again after one interval, so that it is back soon after an operator
// readmits it rather than asleep in a long backoff.
func (s *Service) failedRefusal(a Agent) *Refusal {
	r := refuseAs(RefusedForbidden, refusedAgentFailed, "agent %q failed (%s) and must be readmitted by an operator", a.ID, a.Reason)
	r.RetryAfter = s.interval(a)
	return r
}

// recoverable tells whether failed agent a may come back by itself.
func (s *Service) recoverable(a Agent) bool {
	return a.State == StateFailed && a.Reason == ReasonLivenessTimeout && s.AutoRecover != RecoverNever
}

// issue makes a challenge; the caller holds sl.mu. full asks for
// everything: the IMA list from entry 0 and the boot log.
func (s *Service) issue(ctx context.Context, sl *slot, a Agent, full bool) (wire.Challenge, error) {
	s.selectionFor(ctx, sl, a)
	full = full || a.Clock == nil
	var flags byte
	if full {
		flags |= nonceFullIMA
	}
	wantBoot := a.BootPolicy != "" && (full || !a.BootChecked)
	if wantBoot {
		flags |= nonceBootLog
	}
	nonce, err := s.mintNonce(ctx, a, sl.selectionRaw, flags)
	if err != nil {
		return wire.Challenge{}, err
	}
	ch := wire.Challenge{
		AgentID:      a.ID,
		Nonce:        nonce,
		PCRSelection: sl.selectionRaw,
		WantIMA:      a.RuntimePolicy != "",
		WantBootLog:  wantBoot,
		IntervalMS:   s.interval(a).Milliseconds(),
		ExpiresInMS:  s.nonceTTL(a).Milliseconds(),
	}
	if !full {
		ch.IMAOffset = a.IMAEntries
	}
	return ch, nil
}

// EvidenceLimit is the largest evidence body a challenge's nonce allows,
// checked before the body is read: the agent must be admitted and able to
// attest, and the nonce issued to it and unexpired. Bodies are capped by
// what was asked: the boot log's room only when the nonce asked for it.
func (s *Service) EvidenceLimit(ctx context.Context, agentID string, nonce []byte) (int64, error) {
	sl, a, err := s.lockAgent(ctx, agentID)
	if err != nil {
		return 0, s.refused(err)
	}
	if a.State == StateFailed && !s.recoverable(a) {
		sl.mu.Unlock()
		return 0, s.refused(s.failedRefusal(a))
	}
	s.selectionFor(ctx, sl, a)
	sel := sl.selectionRaw
	sl.mu.Unlock()
	n, err := s.checkNonce(ctx, a, sel, nonce, s.now())
	if err != nil {
		return 0, s.refused(err)
	}
	limit := int64(wire.MaxEvidenceIMA)
	if n.bootLog() {
		limit += wire.MaxBootLog
	}
	return limit, nil
}

// Evidence checks an agent's answer to a challenge, stores the verdict and
// returns it with the next challenge.
//
// What does not prove it comes from the agent's TPM answering a nonce this
// verifier issued to it — an unknown or failed agent, a nonce that is
// forged, expired, already used or not the quote's, a malformed quote, a
// signature by another key — is refused and changes nothing. Only evidence
// that does is checked further (PCRs, logs, policies), and only then can it
// fail the agent.
func (s *Service) Evidence(ctx context.Context, ev wire.Evidence) (wire.Verdict, error) {
	v, err := s.evidence(ctx, ev)
	return v, s.refused(err)
}

func (s *Service) evidence(ctx context.Context, ev wire.Evidence) (wire.Verdict, error) {
	start := s.now()
	sl, a, err := s.lockAgent(ctx, ev.AgentID)
	if err != nil {
		return wire.Verdict{}, err
	}
	defer sl.mu.Unlock()
	recovering := false
	if a.State == StateFailed {
		if !s.recoverable(a) {
			return wire.Verdict{}, s.failedRefusal(a)
		}
		recovering = true
	}
	// The policies are had before the nonce is checked: the PCRs its
	// challenge asked for, under its MAC, follow from the PCR policy, and
	// the evidence is judged by the very versions the selection came from.
	pol := s.policies.resolve(ctx, s.Store, a)
	sl.selectionOf(a, pol.PCR)
	n, err := s.checkNonce(ctx, a, sl.selectionRaw, ev.Nonce, start)
	if err != nil {
		return wire.Verdict{}, err
	}
	base := a
	if recovering {
		// Nothing from before the silence is trusted: the evidence must
		// stand on its own, as after a readmission.
		if !n.fullIMA() {
			return wire.Verdict{}, refuseAs(RefusedConflict, refusedIncomplete, "agent %q is coming back from silence: answer a challenge asking for everything (ask for a new one)", a.ID)
		}
		base = base.untrusted()
	}
	want := base.IMAEntries
	if n.fullIMA() {
		want = 0
	}
	if base.RuntimePolicy != "" && ev.IMAOffset != want {
		// Not the agent's fault or the host's: the verifier's record moved
		// (a restart lost a checkpoint) or the nonce is older than that.
		return wire.Verdict{}, refuseAs(RefusedConflict, refusedIMAOffset, "agent %q: IMA entries start at %d, the verifier expects %d: ask for a new challenge", a.ID, ev.IMAOffset, want)
	}
	asked := Asked{
		Nonce:       n.raw,
		Selection:   sl.selection,
		IMAOffset:   want,
		WantIMA:     base.RuntimePolicy != "",
		WantBootLog: n.bootLog(),
	}

	ak := sl.ak
	if ak == nil {
		ak, err = s.fetchAK(ctx, a.ID)
		if errors.Is(err, ErrNotEnrolled) {
			// Only the registrar feed fails a host for this (an operator
			// deleted it there); evidence nobody can vouch for is refused.
			return wire.Verdict{}, refuseAs(RefusedForbidden, refusedNotEnrolled, "agent %q: %v", a.ID, err)
		}
		if err != nil {
			// The registrar is slow or down: the agent did nothing wrong and
			// retries; its liveness window keeps running meanwhile.
			s.log().Warn("cannot fetch AK from the registrar", "agent_id", a.ID, "err", err)
			r := refuseAs(RefusedUnavailable, refusedRegistrarDown, "the verifier cannot reach the registrar for agent %q's AK; retry", a.ID)
			r.RetryAfter = time.Second
			return wire.Verdict{}, r
		}
		sl.ak = ak
	}
	out := s.engine.Check(base, ak, asked, ev, pol, start)
	if out.Refused != nil && out.Refused.Check == string(evidence.ReasonBadSignature) {
		// The agent may have enrolled a new AK since it was cached.
		if fresh, err := s.fetchAK(ctx, a.ID); err == nil && string(fresh.Name) != string(ak.Name) {
			sl.ak = fresh
			out = s.engine.Check(base, fresh, asked, ev, pol, start)
		}
	}
	if out.Refused != nil {
		return wire.Verdict{}, quoteRefusal(a.ID, out.Refused)
	}
	// The nonce is spent, whatever the verdict.
	out.Agent.LastNonce = n.issueNS
	if out.Reboot {
		// Nothing was decided, but the nonce is spent.
		out.Agent = a
		out.Agent.LastNonce = n.issueNS
	}
	return s.conclude(ctx, sl, a, out, pol, recovering, start)
}

// quoteRefusal turns a quote that does not prove where it came from into a
// refusal.
func quoteRefusal(id string, f *Failure) *Refusal {
	kind := RefusedForbidden
	switch evidence.Reason(f.Check) {
	case evidence.ReasonMalformedQuote, evidence.ReasonMalformedSignature:
		kind = RefusedInvalid
	case evidence.ReasonNonceMismatch:
		kind = RefusedConflict
	}
	reason := f.Check
	if reason == "" {
		reason = refusedBadQuote
	}
	return refuseAs(kind, reason, "agent %q: evidence refused, it does not prove it comes from the agent's TPM: %s", id, f.Detail)
}

// conclude applies a verdict; the caller holds sl.mu. a is the agent's
// record before the evidence.
func (s *Service) conclude(ctx context.Context, sl *slot, a Agent, out Outcome, pol Policies, recovering bool, start time.Time) (wire.Verdict, error) {
	// A host coming back from silence with evidence that fails is failed
	// again, now for what its evidence shows: that revocation is news for
	// the issuers too.
	next, f, events := out.Agent, out.Failure, out.Events
	if f == nil && recovering {
		next, events = next.recovered(start)
	}
	var hist []HistoryEntry
	if f == nil && !out.Reboot {
		next, hist = next.tally(start, pol.versions(), s.historyPeriod())
		hist = append(hist, changes(a, next, nil, events, start)...)
	}
	switch {
	case f != nil:
		s.commitFailure(ctx, sl, next, f, events)
	case next.State != a.State || s.CheckpointEvery <= 0 || s.storeDown.Load():
		// A change of state is durable before it is answered; so is every
		// verdict while the store is failing, which is how a verdict finds
		// out that it can be written again.
		if err := s.saveSync(ctx, sl, next, events, hist); err != nil {
			s.log().Error("cannot store a verdict", "agent_id", a.ID, "err", err)
			r := refuseAs(RefusedUnavailable, refusedStoreDown, "the verifier cannot store agent %q's verdict; retry", a.ID)
			r.RetryAfter = time.Second
			return wire.Verdict{}, r
		}
		s.set(sl, next)
		if len(events) > 0 {
			s.eventsRaised()
		}
	default:
		s.set(sl, next)
		if len(hist) > 0 {
			sl.history = append(sl.history, hist...)
		}
		s.markDirty(sl)
	}
	took := s.now().Sub(start)
	if s.OnVerdict != nil {
		s.OnVerdict(next, f, took)
	}
	v := wire.Verdict{AgentID: a.ID, State: string(next.State)}
	if f != nil {
		s.log().Warn("attestation failed", "agent_id", a.ID, "reason", f.Reason, "check", f.Check, "detail", f.Detail)
		v.Reason, v.Detail = string(f.Reason), f.Detail
		return v, nil
	}
	if recovering {
		s.log().Info("agent back from silence: fresh complete evidence passed", "agent_id", a.ID)
	} else if out.Reboot {
		s.log().Info("reboot detected: asking for the boot log and the IMA list from its start", "agent_id", a.ID)
	} else if log := s.log(); log.Enabled(ctx, slog.LevelDebug) {
		// Checked first: building the arguments costs allocations on every
		// verdict even when the level is off.
		log.Debug("attestation passed", "agent_id", a.ID, "attestations", next.Attestations, "ima_entries", next.IMAEntries)
	}
	ch, err := s.issue(ctx, sl, next, out.Reboot)
	if err != nil {
		return wire.Verdict{}, err
	}
	v.Next = &ch
	return v, nil
}

// commitFailure stores a failed record and its revocation events before
// the failure is answered; the caller holds sl.mu. When the store cannot
// be written, the failure is kept in memory — the agent shows failed, is
// not watched for silence, and its evidence is refused — and Run stores it
// with its events once the store can be written: the failure that happened
// is the one recorded, not a later liveness timeout.
func (s *Service) commitFailure(ctx context.Context, sl *slot, next Agent, f *Failure, events []revocation.Event) {
	prev := next
	if sl.agent != nil {
		prev = *sl.agent
	}
	// The passing verdicts before the failure come first in the history.
	next, hist := next.closePassing()
	hist = append(hist, changes(prev, next, f, events, next.FailedAt)...)
	err := s.saveSync(ctx, sl, next, events, hist)
	if errors.Is(err, ErrFenced) {
		// The new owner decides this agent from its own evidence.
		s.log().Warn("a failure was not stored: another replica holds the agent now", "agent_id", next.ID, "reason", next.Reason)
		return
	}
	s.set(sl, next)
	if err != nil {
		s.log().Error("cannot store a failure; it is kept and stored once the store can be written", "agent_id", next.ID, "reason", next.Reason, "err", err)
		sl.unsaved = append(sl.unsaved, events...)
		sl.history = append(sl.history, hist...)
		sl.dirty = false
		s.park(sl)
		return
	}
	s.eventsRaised()
}

// Refused counts and logs a refused agent request, and returns err. The
// transport calls it for the refusals it makes itself (a body too large).
func (s *Service) Refused(err error) error { return s.refused(err) }

func (s *Service) refused(err error) error {
	var r *Refusal
	if errors.As(err, &r) && r.Reason != "" {
		if s.OnRefused != nil {
			s.OnRefused(r.Reason)
		}
		s.refusals.log(s.log(), s.now(), r)
	}
	return err
}

// refusalLog logs refusals without flooding the log: anyone can make the
// verifier refuse as often as they like, so each reason is logged at most
// once per refusalLogEvery, with how many were left out since.
type refusalLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

const refusalLogEvery = 10 * time.Second

func (l *refusalLog) log(log *slog.Logger, now time.Time, r *Refusal) {
	l.mu.Lock()
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if last, ok := l.last[r.Reason]; ok && now.Sub(last) < refusalLogEvery {
		l.suppressed[r.Reason]++
		l.mu.Unlock()
		return
	}
	n := l.suppressed[r.Reason]
	l.last[r.Reason], l.suppressed[r.Reason] = now, 0
	l.mu.Unlock()
	log.Warn("agent request refused", "reason", r.Reason, "detail", r.Msg, "suppressed_since_last", n)
}
