package registrar

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
)

// ErrorKind and Error are the APIs' one error type (internal/apierr).
type (
	ErrorKind = apierr.Kind
	Error     = apierr.Error
)

// The kinds the registrar refuses with.
const (
	// Invalid: the request is malformed or names something impossible.
	Invalid = apierr.Invalid
	// Forbidden: well-formed, but policy refuses it.
	Forbidden = apierr.Forbidden
	// NotFound: no such agent.
	NotFound = apierr.NotFound
	// TooMany: accepting it would exceed a bound on pending registrations.
	TooMany = apierr.TooMany
)

// Refusal reasons, the label values of vigil_registrar_refused_total: a
// small fixed set, whatever callers send.
const (
	ReasonInvalid        = "invalid"
	ReasonForbiddenEK    = "forbidden_ek"
	ReasonEKMismatch     = "ek_mismatch"
	ReasonBadProof       = "bad_proof"
	ReasonExpired        = "expired"
	ReasonTooManyPending = "too_many_pending"
	ReasonNotFound       = "not_found"
)

// Reasons lists every refusal reason.
func Reasons() []string {
	return []string{ReasonInvalid, ReasonForbiddenEK, ReasonEKMismatch, ReasonBadProof, ReasonExpired, ReasonTooManyPending, ReasonNotFound}
}

func invalid(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Reason: ReasonInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func refused(kind ErrorKind, reason, format string, args ...any) *Error {
	return apierr.New(kind, reason, format, args...)
}

// Defaults of the Service's bounds, used when a field is zero.
const (
	DefaultChallengeTTL    = 5 * time.Minute
	DefaultMaxPendingPerEK = 4
	DefaultMaxPending      = 10000
	DefaultSweepInterval   = 30 * time.Second
)

// refusalLogEvery is how often each refusal reason may reach the log:
// refusals are what an attacker can make at will.
const refusalLogEvery = 10 * time.Second

// Service is the registrar's logic, independent of transport.
type Service struct {
	Store Store
	// EKPolicy decides which EKs may enroll. SetEKPolicy replaces it while
	// the service runs (a reload); the field is then no longer read.
	EKPolicy EKPolicy
	Log      *slog.Logger
	// ChallengeTTL bounds the time between Register and Activate; a pending
	// registration is removed after it.
	ChallengeTTL time.Duration
	// MaxPendingPerEK bounds the pending registrations of one EK, under all
	// agent IDs together; MaxPending bounds them all. Beyond either,
	// Register answers TooMany and stores nothing.
	MaxPendingPerEK int
	MaxPending      int
	// SweepInterval is how often Run removes expired registrations.
	SweepInterval time.Duration
	// Rand and Now default to crypto/rand and time.Now.
	Rand io.Reader
	Now  func() time.Time
	// OnRegister, if set, is told of each accepted registration (metrics).
	OnRegister func(akAlg, ekTrust string)
	// OnRefuse, if set, is told the reason of each refusal (metrics).
	OnRefuse func(reason string)

	refusals refusalLog
	// ekPolicy, once SetEKPolicy has been called, is the policy in force;
	// each registration reads it once, so a reload never splits one.
	ekPolicy atomic.Pointer[EKPolicy]
}

// SetEKPolicy replaces the EK policy for the registrations that start from
// now on, without a restart: registrations already past their EK check
// and pending activations are not affected. It refuses a policy that does
// not validate and then keeps the one in force.
func (s *Service) SetEKPolicy(p EKPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.ekPolicy.Store(&p)
	return nil
}

// CurrentEKPolicy is the EK policy in force: the last one SetEKPolicy
// stored, or the EKPolicy field.
func (s *Service) CurrentEKPolicy() EKPolicy {
	if p := s.ekPolicy.Load(); p != nil {
		return *p
	}
	return s.EKPolicy
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) challengeTTL() time.Duration {
	if s.ChallengeTTL > 0 {
		return s.ChallengeTTL
	}
	return DefaultChallengeTTL
}

func (s *Service) maxPendingPerEK() int {
	if s.MaxPendingPerEK > 0 {
		return s.MaxPendingPerEK
	}
	return DefaultMaxPendingPerEK
}

func (s *Service) maxPending() int {
	if s.MaxPending > 0 {
		return s.MaxPending
	}
	return DefaultMaxPending
}

func (s *Service) sweepInterval() time.Duration {
	if s.SweepInterval > 0 {
		return s.SweepInterval
	}
	return DefaultSweepInterval
}

// errNoChange aborts a Modify whose result would equal what is stored, so
// that nothing is written.
var errNoChange = errors.New("no change")

// modify is Store.Modify for every change the Service makes: what it
// stores carries the Service's decision of which registrations count, for
// the store to index.
func (s *Service) modify(ctx context.Context, id string, fn func(cur *Record, counts PendingCounts) (*Record, error)) error {
	return s.Store.Modify(ctx, id, func(cur *Record, counts PendingCounts) (*Record, error) {
		next, err := fn(cur, counts)
		if next != nil {
			next.markUncounted()
		}
		return next, err
	})
}

// Register checks an agent's EK and AK and returns the activation challenge.
//
// It never touches the agent's active AK: it adds a pending registration
// (or finds the live one of the same AK and re-sends its secret), which only
// Activate can turn into the active AK.
func (s *Service) Register(ctx context.Context, req wire.RegisterRequest) (wire.RegisterResponse, error) {
	rsp, err := s.register(ctx, req)
	if err != nil {
		s.refuse("registration refused", req.AgentID, err)
	}
	return rsp, err
}

func (s *Service) register(ctx context.Context, req wire.RegisterRequest) (wire.RegisterResponse, error) {
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](req.EKPublic)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ek_pub", "not a marshalled TPMT_PUBLIC: %v", err)
	}
	ak, err := tpm2.Unmarshal[tpm2.TPMTPublic](req.AKPublic)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ak_pub", "not a marshalled TPMT_PUBLIC: %v", err)
	}
	if !ek.ObjectAttributes.Restricted || !ek.ObjectAttributes.Decrypt || ek.ObjectAttributes.SignEncrypt {
		return wire.RegisterResponse{}, invalid("ek_pub", "an EK is a restricted decryption key; these attributes are not an EK's")
	}
	ekKey, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ek_pub", "unusable EK: %v", err)
	}
	ekHash, err := EKHash(ek)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ek_pub", "%v", err)
	}
	id := req.AgentID
	if id == "" {
		id = ekHash
	}
	if !tpmfacts.ValidAgentID(id) {
		return wire.RegisterResponse{}, invalid("agent_id", "%q is not a valid agent ID (1-128 of A-Z a-z 0-9 . _ : -)", id)
	}
	akAlg, err := CheckAK(ak)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ak_pub", "%v", err)
	}
	trust, err := s.CurrentEKPolicy().Check(ek, req.EKCert)
	if err != nil {
		return wire.RegisterResponse{}, refused(Forbidden, ReasonForbiddenEK, "%v", err)
	}
	log := s.log().With("agent_id", id, "ek_sha256", ekHash)
	if trust == EKPolicyAny {
		log.Warn("EK accepted without any check because --ek-policy is any; do not run a fleet like this")
	}
	akName, err := tpm2.ObjectName(ak)
	if err != nil {
		return wire.RegisterResponse{}, invalid("ak_pub", "%v", err)
	}

	rnd := s.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	fresh := make([]byte, 32)
	if _, err := io.ReadFull(rnd, fresh); err != nil {
		return wire.RegisterResponse{}, err
	}
	now := s.now()
	var secret []byte
	var added bool
	err = s.modify(ctx, id, func(cur *Record, counts PendingCounts) (*Record, error) {
		secret, added = nil, false
		var next Record
		if cur == nil {
			next = Record{AgentID: id, EKPublic: req.EKPublic, EKSHA256: ekHash, EKCert: req.EKCert, EKTrust: trust, RegisteredAt: now}
		} else {
			if cur.EKSHA256 != ekHash {
				return nil, refused(Forbidden, ReasonEKMismatch, "agent ID %q is registered with another EK (sha256 %s)", id, cur.EKSHA256)
			}
			next = *cur
		}
		dropped := next.countedPending()
		changed := next.dropExpired(now)
		dropped -= next.countedPending()
		if i := next.pendingIndex(akName.Buffer); i >= 0 {
			// A retry, or a stranger replaying public values: either way
			// the challenge standing for this AK must stay answerable.
			secret = next.Pending[i].Secret
			if !changed {
				return nil, errNoChange
			}
			return &next, nil
		}
		// The agent's own active AK registering again (an agent restart) is
		// not counted against the bounds: it is one entry per record, and
		// filling the bounds must not stop a host from restarting.
		if !(next.Active && bytes.Equal(next.AKName, akName.Buffer)) {
			n, err := counts.ForEK(ekHash, now)
			if err != nil {
				return nil, err
			}
			if n >= s.maxPendingPerEK() {
				return nil, refused(TooMany, ReasonTooManyPending, "EK %s already has %d pending registrations (at most %d per EK); activate one or wait for them to expire", ekHash, n, s.maxPendingPerEK())
			}
			total, err := counts.Total()
			if err != nil {
				return nil, err
			}
			if total-dropped >= s.maxPending() {
				return nil, refused(TooMany, ReasonTooManyPending, "the registrar holds %d pending registrations (at most %d in total); try again later", total-dropped, s.maxPending())
			}
		}
		secret, added = fresh, true
		next.Pending = append(next.Pending, Pending{
			AKPublic:     req.AKPublic,
			AKName:       akName.Buffer,
			AKAlg:        akAlg,
			EKTrust:      trust,
			Secret:       fresh,
			Deadline:     now.Add(s.challengeTTL()),
			RegisteredAt: now,
		})
		return &next, nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return wire.RegisterResponse{}, err
	}
	idObject, encSecret, err := tpm2.CreateCredential(rnd, ekKey, akName.Buffer, secret)
	if err != nil {
		return wire.RegisterResponse{}, fmt.Errorf("make credential: %w", err)
	}
	if added {
		log.Info("agent registered, awaiting activation", "ak_alg", akAlg, "ek_trust", trust)
	} else {
		log.Debug("registration repeated; the standing challenge is sent again", "ak_alg", akAlg)
	}
	if s.OnRegister != nil {
		s.OnRegister(akAlg, trust)
	}
	return wire.RegisterResponse{AgentID: id, CredentialBlob: idObject, Secret: encSecret}, nil
}

// Activate checks the agent's proof that its TPM recovered the challenge
// secret of one of its pending registrations and, if it holds, makes that
// registration's AK the active one. Repeating a successful activation with
// the same proof succeeds again, so an agent that lost the answer can
// retry. A wrong proof changes nothing.
func (s *Service) Activate(ctx context.Context, req wire.ActivateRequest) (wire.ActivateResponse, error) {
	rsp, err := s.activate(ctx, req)
	if err != nil {
		s.refuse("activation refused", req.AgentID, err)
	}
	return rsp, err
}

func (s *Service) activate(ctx context.Context, req wire.ActivateRequest) (wire.ActivateResponse, error) {
	if !tpmfacts.ValidAgentID(req.AgentID) {
		return wire.ActivateResponse{}, invalid("agent_id", "%q is not a valid agent ID", req.AgentID)
	}
	if len(req.Proof) == 0 {
		return wire.ActivateResponse{}, invalid("proof", "missing")
	}
	now := s.now()
	var replaced bool
	err := s.modify(ctx, req.AgentID, func(cur *Record, _ PendingCounts) (*Record, error) {
		if cur == nil {
			return nil, refused(NotFound, ReasonNotFound, "agent %q is not registered", req.AgentID)
		}
		match := -1
		for i, p := range cur.Pending {
			if hmac.Equal(req.Proof, wire.ActivationProof(p.Secret, req.AgentID, p.AKName)) {
				match = i
			}
		}
		if match < 0 {
			if cur.Active && hmac.Equal(req.Proof, cur.ActiveProof) {
				return nil, errNoChange
			}
			return nil, refused(Forbidden, ReasonBadProof, "activation proof for agent %q answers none of its challenges", req.AgentID)
		}
		p := cur.Pending[match]
		if !p.live(now) {
			return nil, refused(Forbidden, ReasonExpired, "activation challenge for agent %q expired at %s; register again", req.AgentID, p.Deadline.Format(time.RFC3339))
		}
		next := *cur
		replaced = next.Active && !bytes.Equal(next.AKName, p.AKName)
		next.AKPublic, next.AKName, next.AKAlg, next.EKTrust = p.AKPublic, p.AKName, p.AKAlg, p.EKTrust
		next.Active, next.ActivatedAt, next.ActiveProof = true, now, bytes.Clone(req.Proof)
		next.Enrollments++
		next.Pending = append(next.Pending[:match:match], next.Pending[match+1:]...)
		next.dropExpired(now)
		if len(next.Pending) == 0 {
			next.Pending = nil
		}
		return &next, nil
	})
	if errors.Is(err, errNoChange) {
		s.log().Debug("activation repeated", "agent_id", req.AgentID)
		return wire.ActivateResponse{AgentID: req.AgentID, Active: true}, nil
	}
	if err != nil {
		return wire.ActivateResponse{}, err
	}
	s.log().Info("agent activated", "agent_id", req.AgentID, "ak_replaced", replaced)
	return wire.ActivateResponse{AgentID: req.AgentID, Active: true}, nil
}

// Delete removes an agent's record (an operator's action).
func (s *Service) Delete(ctx context.Context, id string) error {
	return s.Store.Delete(ctx, id)
}

// Sweep removes the pending registrations past their deadline, and the
// records left with neither an active AK nor a pending registration. It
// returns how many registrations it removed.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	ids, err := s.Store.Expired(ctx, now)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, id := range ids {
		n := 0
		err := s.modify(ctx, id, func(cur *Record, _ PendingCounts) (*Record, error) {
			if cur == nil {
				return nil, errNoChange
			}
			before := len(cur.Pending)
			if !cur.dropExpired(now) {
				return nil, errNoChange
			}
			n = before - len(cur.Pending)
			if cur.empty() {
				return nil, nil
			}
			return cur, nil
		})
		if err != nil && !errors.Is(err, errNoChange) {
			return removed, err
		}
		if err == nil {
			removed += n
		}
	}
	if removed > 0 {
		s.log().Info("expired registrations removed", "count", removed)
	}
	return removed, nil
}

// Run sweeps expired registrations every SweepInterval until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.sweepInterval())
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log().Error("sweeping expired registrations", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refuse counts a refusal and logs it, at most once per reason per
// refusalLogEvery with the number of refusals it did not log.
func (s *Service) refuse(what, agentID string, err error) {
	var e *Error
	if !errors.As(err, &e) {
		return
	}
	if s.OnRefuse != nil {
		s.OnRefuse(e.Reason)
	}
	if suppressed, ok := s.refusals.allow(e.Reason, s.now()); ok {
		s.log().Warn(what, "reason", e.Reason, "agent_id", agentID, "err", err, "suppressed_since_last", suppressed)
	}
}

// refusalLog rate-limits refusal log lines per reason.
type refusalLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// allow reports whether a refusal for reason may be logged at now, and how
// many were suppressed since the last one logged.
func (l *refusalLog) allow(reason string, now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if last, ok := l.last[reason]; ok && now.Sub(last) < refusalLogEvery && now.Sub(last) >= 0 {
		l.suppressed[reason]++
		return 0, false
	}
	n := l.suppressed[reason]
	l.last[reason], l.suppressed[reason] = now, 0
	return n, true
}
