package verifier

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// ErrNotEnrolled is returned by an AKSource for an agent whose AK the
// registrar does not (or no longer) vouch for.
var ErrNotEnrolled = errors.New("agent has no active AK at the registrar")

// AKSource tells which AK speaks for an agent.
type AKSource interface {
	AK(ctx context.Context, agentID string) (*evidence.AK, error)
}

// RefusalKind classifies why the service refused a request.
type RefusalKind int

// Refusal kinds, mapped to HTTP statuses by the transport.
const (
	RefusedInvalid     RefusalKind = iota + 1 // 400
	RefusedForbidden                          // 403
	RefusedNotFound                           // 404
	RefusedConflict                           // 409
	RefusedUnavailable                        // 503: try again later
)

// Refusal is a request the service will not act on.
type Refusal struct {
	Kind RefusalKind
	Msg  string
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(kind RefusalKind, format string, args ...any) *Refusal {
	return &Refusal{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Service runs attestation for many agents.
type Service struct {
	Store  Store
	Engine *Engine
	AKs    AKSource
	Log    *slog.Logger
	// DefaultInterval applies to agents admitted without one.
	DefaultInterval time.Duration
	// NonceTTL is how long a challenge can be answered.
	NonceTTL time.Duration
	// Liveness is how long an agent may go without good evidence; zero
	// means LivenessIntervals of its interval.
	Liveness time.Duration
	// LivenessIntervals is how many intervals of silence fail an agent
	// (default 3) when Liveness is zero.
	LivenessIntervals int
	// Now defaults to time.Now.
	Now func() time.Time
	// OnPolicyChange, if set, is told when a policy gets a new version or is
	// deleted (to drop compiled copies).
	OnPolicyChange func(name string)
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
	// LivenessEvery is how often Run looks for silent agents (default 1s).
	LivenessEvery time.Duration
	// AKFetches bounds the AK fetches in flight to the registrar (default
	// 16): a verifier starting with a fleet must not storm it.
	AKFetches int

	slots sync.Map // agent ID → *slot

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
	mu      sync.Mutex
	asked   *Asked
	expires time.Time
	ak      *evidence.AK
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
	// policies, which do not change while it is admitted: made once.
	selection    tpm2.TPMLPCRSelection
	selectionRaw []byte
	// gen counts synchronous writes of this agent's record. A checkpoint
	// drops a copy taken before the latest one.
	gen atomic.Uint64
	// deadline is when the agent fails for silence (Unix nanoseconds),
	// zero when it is not watched (failed). Atomic so the liveness sweep
	// reads it without waiting for a request in progress.
	deadline atomic.Int64
}

// set makes a the slot's record; the caller holds sl.mu.
func (s *Service) set(sl *slot, a Agent) {
	sl.agent = &a
	if a.State == StatePending || a.State == StateAttesting {
		sl.deadline.Store(s.lastHeard(a).Add(s.livenessWindow(a)).UnixNano())
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
		return refuse(RefusedForbidden, "agent %q is not admitted to this verifier", id)
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
	if s.DefaultInterval > 0 {
		return s.DefaultInterval
	}
	return 2 * time.Second
}

// livenessWindow is how long agent a may stay silent.
func (s *Service) livenessWindow(a Agent) time.Duration {
	if s.Liveness > 0 {
		return s.Liveness
	}
	n := s.LivenessIntervals
	if n <= 0 {
		n = 3
	}
	return time.Duration(n) * s.interval(a)
}

func (s *Service) nonceTTL(a Agent) time.Duration {
	if s.NonceTTL > 0 {
		return s.NonceTTL
	}
	return max(30*time.Second, 2*s.interval(a))
}

// Challenge issues a fresh challenge to an agent. It replaces any earlier
// one: only the newest challenge can be answered.
func (s *Service) Challenge(ctx context.Context, req wire.ChallengeRequest) (wire.Challenge, error) {
	sl, a, err := s.lockAgent(ctx, req.AgentID)
	if err != nil {
		return wire.Challenge{}, err
	}
	defer sl.mu.Unlock()
	if a.State == StateFailed {
		return wire.Challenge{}, refuse(RefusedForbidden, "agent %q failed (%s) and must be readmitted by an operator", a.ID, a.Reason)
	}
	return s.issue(sl, a, req.Started)
}

// issue makes a challenge; the caller holds sl.mu.
func (s *Service) issue(sl *slot, a Agent, full bool) (wire.Challenge, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return wire.Challenge{}, err
	}
	if sl.selectionRaw == nil {
		sl.selection = Selection(a)
		sl.selectionRaw = marshalSelection(sl.selection)
	}
	asked := &Asked{
		Nonce:     nonce,
		Selection: sl.selection,
		WantIMA:   a.RuntimePolicy != "",
	}
	if !full && a.Clock != nil {
		asked.IMAOffset = a.IMAEntries
	}
	asked.WantBootLog = a.BootPolicy != "" && (full || !a.BootChecked)
	ttl := s.nonceTTL(a)
	sl.asked, sl.expires = asked, s.now().Add(ttl)
	return wire.Challenge{
		AgentID:      a.ID,
		Nonce:        nonce,
		PCRSelection: sl.selectionRaw,
		IMAOffset:    asked.IMAOffset,
		WantIMA:      asked.WantIMA,
		WantBootLog:  asked.WantBootLog,
		IntervalMS:   s.interval(a).Milliseconds(),
		ExpiresInMS:  ttl.Milliseconds(),
	}, nil
}

// Evidence checks an agent's answer to its challenge, stores the verdict
// and returns it with the next challenge.
func (s *Service) Evidence(ctx context.Context, ev wire.Evidence) (wire.Verdict, error) {
	start := s.now()
	sl, a, err := s.lockAgent(ctx, ev.AgentID)
	if err != nil {
		return wire.Verdict{}, err
	}
	defer sl.mu.Unlock()
	if a.State == StateFailed {
		return wire.Verdict{}, refuse(RefusedForbidden, "agent %q failed (%s) and must be readmitted by an operator", a.ID, a.Reason)
	}
	asked := sl.asked
	if asked == nil || start.After(sl.expires) {
		sl.asked = nil
		return wire.Verdict{}, refuse(RefusedConflict, "no open challenge for agent %q (expired, answered, or the verifier restarted): ask for a new one", a.ID)
	}
	// Single use: whatever the outcome, this nonce is spent.
	sl.asked = nil

	ak := sl.ak
	if ak == nil {
		ak, err = s.fetchAK(ctx, a.ID)
		if errors.Is(err, ErrNotEnrolled) {
			// The registrar no longer vouches for this host: it fails (and
			// its identities are revoked), and its evidence is refused.
			if _, cerr := s.conclude(ctx, sl, a, Outcome{}, Fail(ReasonNotEnrolled, "ak_not_active", "%v", err), start); cerr != nil {
				return wire.Verdict{}, cerr
			}
			return wire.Verdict{}, refuse(RefusedForbidden, "agent %q: %v", a.ID, err)
		}
		if err != nil {
			// The registrar is slow or down: the agent did nothing wrong and
			// retries; its liveness window keeps running meanwhile.
			s.log().Warn("cannot fetch AK from the registrar", "agent_id", a.ID, "err", err)
			return wire.Verdict{}, refuse(RefusedUnavailable, "the verifier cannot reach the registrar for agent %q's AK; retry", a.ID)
		}
		sl.ak = ak
	}
	out := s.Engine.Check(a, ak, *asked, ev, start)
	if out.Failure != nil && out.Failure.Check == string(evidence.ReasonBadSignature) {
		// The agent may have enrolled a new AK since it was cached.
		if fresh, err := s.fetchAK(ctx, a.ID); err == nil && string(fresh.Name) != string(ak.Name) {
			sl.ak = fresh
			out = s.Engine.Check(a, fresh, *asked, ev, start)
		}
	}
	return s.conclude(ctx, sl, a, out, out.Failure, start)
}

func (s *Service) conclude(ctx context.Context, sl *slot, a Agent, out Outcome, f *Failure, start time.Time) (wire.Verdict, error) {
	next := out.Agent
	if f != nil && out.Agent.ID == "" {
		next = a
		next.State, next.Reason, next.Detail, next.FailedAt = StateFailed, f.Reason, f.Error(), start
	}
	// Only the transition into failed raises a revocation: a failed agent
	// is refused before it gets here, so this is that transition.
	var events []revocation.Event
	if f != nil {
		events = append(events, revocation.NewEvent(revocation.TypeRevoked, start, eventData(next, f)))
	}
	// A failure or a change of state is durable before it is answered;
	// the progress of an agent that keeps attesting waits for the next
	// checkpoint.
	if f != nil || next.State != a.State || s.CheckpointEvery <= 0 {
		if err := s.saveSync(ctx, sl, next, events); err != nil {
			sl.agent, sl.dirty = nil, false // the store is the truth; reload it next time
			return wire.Verdict{}, fmt.Errorf("store verdict of %q: %w", a.ID, err)
		}
	} else {
		s.markDirty(sl)
	}
	s.set(sl, next)
	if len(events) > 0 {
		s.eventsRaised()
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
	if out.Reboot {
		s.log().Info("reboot detected: asking for the boot log and the IMA list from its start", "agent_id", a.ID)
	} else if log := s.log(); log.Enabled(ctx, slog.LevelDebug) {
		// Checked first: building the arguments costs allocations on every
		// verdict even when the level is off.
		log.Debug("attestation passed", "agent_id", a.ID, "attestations", next.Attestations, "ima_entries", next.IMAEntries)
	}
	ch, err := s.issue(sl, next, out.Reboot)
	if err != nil {
		return wire.Verdict{}, err
	}
	v.Next = &ch
	return v, nil
}
