package registrar

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
)

// ErrorKind classifies a refusal for the transport to map (HTTP 400, 403,
// 404).
type ErrorKind int

const (
	// Invalid: the request is malformed or names something impossible.
	Invalid ErrorKind = iota + 1
	// Forbidden: well-formed, but policy refuses it.
	Forbidden
	// NotFound: no such agent.
	NotFound
)

// Error is a refusal with a reason fit to send back to the client.
type Error struct {
	Kind ErrorKind
	// Field names the request field at fault, when one is.
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return "field " + e.Field + ": " + e.Msg
	}
	return e.Msg
}

func invalid(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) *Error {
	return &Error{Kind: Forbidden, Msg: fmt.Sprintf(format, args...)}
}

// Service is the registrar's logic, independent of transport.
type Service struct {
	Store    Store
	EKPolicy EKPolicy
	Log      *slog.Logger
	// ChallengeTTL bounds the time between Register and Activate.
	ChallengeTTL time.Duration
	// Rand and Now default to crypto/rand and time.Now.
	Rand io.Reader
	Now  func() time.Time
	// OnRegister, if set, is told of each accepted registration (metrics).
	OnRegister func(akAlg, ekTrust string)
}

const defaultChallengeTTL = 5 * time.Minute

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidAgentID reports whether id can name an agent: 1 to 128 characters
// from letters, digits and . _ : -, starting with a letter or digit, so it is
// safe in URLs, file names and log lines.
func ValidAgentID(id string) bool { return agentIDPattern.MatchString(id) }

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

// Register checks an agent's EK and AK and returns the activation challenge.
func (s *Service) Register(ctx context.Context, req wire.RegisterRequest) (wire.RegisterResponse, error) {
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
	if !ValidAgentID(id) {
		return wire.RegisterResponse{}, invalid("agent_id", "%q is not a valid agent ID (1-128 of A-Z a-z 0-9 . _ : -)", id)
	}
	log := s.log().With("agent_id", id, "ek_sha256", ekHash)

	akAlg, err := CheckAK(ak)
	if err != nil {
		log.Warn("registration refused: bad AK", "err", err)
		return wire.RegisterResponse{}, invalid("ak_pub", "%v", err)
	}
	trust, err := s.EKPolicy.Check(ek, req.EKCert)
	if err != nil {
		log.Warn("registration refused", "err", err)
		return wire.RegisterResponse{}, forbidden("%v", err)
	}
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
	secret := make([]byte, 32)
	if _, err := io.ReadFull(rnd, secret); err != nil {
		return wire.RegisterResponse{}, err
	}
	idObject, encSecret, err := tpm2.CreateCredential(rnd, ekKey, akName.Buffer, secret)
	if err != nil {
		return wire.RegisterResponse{}, fmt.Errorf("make credential: %w", err)
	}

	ttl := s.ChallengeTTL
	if ttl == 0 {
		ttl = defaultChallengeTTL
	}
	now := s.now().UTC()
	err = s.Store.Modify(ctx, id, func(cur *Record) (Record, error) {
		registrations := 0
		if cur != nil {
			if cur.EKSHA256 != ekHash {
				return Record{}, forbidden("agent ID %q is registered with another EK (sha256 %s)", id, cur.EKSHA256)
			}
			registrations = cur.Registrations
		}
		return Record{
			AgentID:          id,
			EKPublic:         req.EKPublic,
			EKSHA256:         ekHash,
			EKCert:           req.EKCert,
			EKTrust:          trust,
			AKPublic:         req.AKPublic,
			AKName:           akName.Buffer,
			AKAlg:            akAlg,
			ExpectedProof:    wire.ActivationProof(secret, id, akName.Buffer),
			ChallengeExpires: now.Add(ttl),
			RegisteredAt:     now,
			Registrations:    registrations + 1,
		}, nil
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			log.Warn("registration refused", "err", err)
		}
		return wire.RegisterResponse{}, err
	}
	log.Info("agent registered, awaiting activation", "ak_alg", akAlg, "ek_trust", trust)
	if s.OnRegister != nil {
		s.OnRegister(akAlg, trust)
	}
	return wire.RegisterResponse{AgentID: id, CredentialBlob: idObject, Secret: encSecret}, nil
}

// Activate checks the agent's proof that its TPM recovered the challenge
// secret and, if it holds, trusts the AK. Repeating a successful activation
// with the same proof succeeds again, so an agent that lost the answer can
// retry.
func (s *Service) Activate(ctx context.Context, req wire.ActivateRequest) (wire.ActivateResponse, error) {
	if !ValidAgentID(req.AgentID) {
		return wire.ActivateResponse{}, invalid("agent_id", "%q is not a valid agent ID", req.AgentID)
	}
	if len(req.Proof) == 0 {
		return wire.ActivateResponse{}, invalid("proof", "missing")
	}
	log := s.log().With("agent_id", req.AgentID)
	now := s.now().UTC()
	err := s.Store.Modify(ctx, req.AgentID, func(cur *Record) (Record, error) {
		if cur == nil {
			return Record{}, &Error{Kind: NotFound, Msg: fmt.Sprintf("agent %q is not registered", req.AgentID)}
		}
		if len(cur.ExpectedProof) == 0 {
			return Record{}, forbidden("agent %q has no pending activation; register first", req.AgentID)
		}
		if !hmac.Equal(req.Proof, cur.ExpectedProof) {
			return Record{}, forbidden("activation proof for agent %q does not match the challenge", req.AgentID)
		}
		if cur.Active {
			return *cur, nil
		}
		if now.After(cur.ChallengeExpires) {
			return Record{}, forbidden("activation challenge for agent %q expired at %s; register again", req.AgentID, cur.ChallengeExpires.Format(time.RFC3339))
		}
		next := *cur
		next.Active = true
		next.ActivatedAt = now
		return next, nil
	})
	if err != nil {
		log.Warn("activation refused", "err", err)
		return wire.ActivateResponse{}, err
	}
	log.Info("agent activated")
	return wire.ActivateResponse{AgentID: req.AgentID, Active: true}, nil
}
