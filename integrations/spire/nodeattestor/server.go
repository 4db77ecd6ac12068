package nodeattestor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/nodeproof"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar/registrarapi"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Registrar is what the server side asks of Vigil's registrar.
type Registrar interface {
	Get(ctx context.Context, agentID string) (registrarapi.AgentView, error)
}

// Verifier is what the server side asks of Vigil's verifier.
type Verifier interface {
	Status(ctx context.Context, agentID string) (verifier.AgentView, error)
	GetPolicy(ctx context.Context, name string) (verifier.Policy, error)
}

// ServerConfig is the server side's plugin_data.
type ServerConfig struct {
	// Registrar is the Vigil registrar's URL.
	Registrar string `hcl:"registrar"`
	// Verifiers are the Vigil verifier replicas' URLs, asked in turn.
	Verifiers []string `hcl:"verifiers"`
	// TLSDir holds ca.crt and an admin client certificate (admin.crt,
	// admin.key) issued by the Vigil deployment's CA.
	TLSDir string `hcl:"tls_dir"`
}

// challengeSize is the size of the random challenge; nodeproof accepts
// 16 to 64 bytes.
const challengeSize = 32

// Server is the server side of the vigil NodeAttestor.
type Server struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	// Now defaults to time.Now.
	Now func() time.Time

	mu          sync.RWMutex
	trustDomain string
	registrar   Registrar
	verifier    Verifier
	log         hclog.Logger
}

var _ pluginsdk.NeedsLogger = (*Server)(nil)

// SetLogger implements pluginsdk.NeedsLogger.
func (s *Server) SetLogger(l hclog.Logger) {
	s.mu.Lock()
	s.log = l
	s.mu.Unlock()
}

// Use configures s without SPIRE's Configure call (tests).
func (s *Server) Use(trustDomain string, r Registrar, v Verifier) {
	s.mu.Lock()
	s.trustDomain, s.registrar, s.verifier = trustDomain, r, v
	s.mu.Unlock()
}

// Configure implements the Config service: it reads plugin_data and the
// trust domain, and builds the Vigil clients.
func (s *Server) Configure(ctx context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg ServerConfig
	if err := hcl.Decode(&cfg, req.HclConfiguration); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "vigil: plugin_data: %v", err)
	}
	switch {
	case req.CoreConfiguration == nil || req.CoreConfiguration.TrustDomain == "":
		return nil, status.Error(codes.InvalidArgument, "vigil: no trust domain in the core configuration")
	case cfg.Registrar == "":
		return nil, status.Error(codes.InvalidArgument, "vigil: plugin_data: registrar is required")
	case len(cfg.Verifiers) == 0:
		return nil, status.Error(codes.InvalidArgument, "vigil: plugin_data: verifiers is required")
	case cfg.TLSDir == "":
		return nil, status.Error(codes.InvalidArgument, "vigil: plugin_data: tls_dir is required")
	}
	tc, err := tlsutil.AdminClientConfig(cfg.TLSDir)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "vigil: plugin_data: tls_dir: %v", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 4}}
	vs := make(verifierSet, 0, len(cfg.Verifiers))
	for _, u := range cfg.Verifiers {
		vs = append(vs, &verifier.AdminClient{BaseURL: strings.TrimRight(u, "/"), HTTP: hc})
	}
	s.Use(req.CoreConfiguration.TrustDomain, &registrarapi.Client{BaseURL: strings.TrimRight(cfg.Registrar, "/"), HTTP: hc}, vs)
	return &configv1.ConfigureResponse{}, nil
}

// Attest implements the NodeAttestor service: payload, challenge, proof,
// and the node's attributes if Vigil says the host is attesting.
func (s *Server) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	s.mu.RLock()
	td, reg, ver, log := s.trustDomain, s.registrar, s.verifier, s.log
	s.mu.RUnlock()
	if reg == nil {
		return status.Error(codes.FailedPrecondition, "vigil: not configured")
	}
	ctx := stream.Context()
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	p, err := ParsePayload(req.GetPayload())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "vigil: %v", err)
	}
	// A host Vigil does not vouch for is refused before it is asked for
	// any TPM work.
	if _, err := s.attesting(ctx, ver, p.AgentID); err != nil {
		return err
	}
	rec, err := reg.Get(ctx, p.AgentID)
	if errors.Is(err, registrarapi.ErrNotFound) || notFound(err) || (err == nil && !rec.Active) {
		return status.Errorf(codes.PermissionDenied, "vigil: agent %s is not enrolled at the registrar", p.AgentID)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "vigil: registrar: %v", err)
	}
	ak, err := parseAK(rec.AKPublic)
	if err != nil {
		return status.Errorf(codes.Internal, "vigil: agent %s: the registrar's AK: %v", p.AgentID, err)
	}

	challenge := make([]byte, challengeSize)
	if _, err := rand.Read(challenge); err != nil {
		return status.Errorf(codes.Internal, "vigil: %v", err)
	}
	if err := stream.Send(&nodeattestorv1.AttestResponse{Response: &nodeattestorv1.AttestResponse_Challenge{Challenge: challenge}}); err != nil {
		return err
	}
	req, err = stream.Recv()
	if err != nil {
		return err
	}
	proof, err := nodeproof.ParseProof(req.GetChallengeResponse())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "vigil: %v", err)
	}
	if proof.AgentID != p.AgentID {
		return status.Errorf(codes.PermissionDenied, "vigil: the proof is for agent %s, the payload named %s", proof.AgentID, p.AgentID)
	}
	q, err := evidence.ParseQuote(proof.Attest, proof.Signature)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "vigil: agent %s: %v", p.AgentID, err)
	}
	if _, err := ak.VerifyQuote(q, evidence.Expect{Nonce: nodeproof.QualifyingData(challenge), SkipPCRs: true}); err != nil {
		return status.Errorf(codes.PermissionDenied, "vigil: agent %s: the proof is not a quote by its enrolled AK over this challenge: %v", p.AgentID, err)
	}
	// Asked again: the host may have failed while it answered.
	ag, err := s.attesting(ctx, ver, p.AgentID)
	if err != nil {
		return err
	}
	policies := map[string]verifier.Policy{}
	for _, name := range []string{ag.RuntimePolicy, ag.BootPolicy, ag.PCRPolicy} {
		if name == "" {
			continue
		}
		if pol, err := ver.GetPolicy(ctx, name); err == nil {
			policies[name] = pol
		}
	}
	id := AgentSPIFFEID(td, p.AgentID)
	if log != nil {
		log.Info("Vigil admitted the node", "agent_id", p.AgentID, "spiffe_id", id)
	}
	return stream.Send(&nodeattestorv1.AttestResponse{Response: &nodeattestorv1.AttestResponse_AgentAttributes{AgentAttributes: &nodeattestorv1.AgentAttributes{
		SpiffeId:       id,
		SelectorValues: Selectors(rec, ag, policies),
		// Each node SVID rotation attests again, so asks Vigil again.
		CanReattest: true,
	}}})
}

// attesting returns the verifier's record of agentID if the host is
// attesting and has been heard from within its liveness window, else a
// PermissionDenied naming why.
func (s *Server) attesting(ctx context.Context, v Verifier, agentID string) (verifier.AgentView, error) {
	ag, err := v.Status(ctx, agentID)
	if notFound(err) {
		return ag, status.Errorf(codes.PermissionDenied, "vigil: agent %s is not admitted at the verifier", agentID)
	}
	if err != nil {
		return ag, status.Errorf(codes.Unavailable, "vigil: verifier: %v", err)
	}
	if ag.State != verifier.StateAttesting {
		why := string(ag.State)
		if ag.Reason != "" {
			why += " (" + string(ag.Reason) + ")"
		}
		if !ag.FailedAt.IsZero() {
			why += " since " + ag.FailedAt.UTC().Format(time.RFC3339)
		}
		return ag, status.Errorf(codes.PermissionDenied, "vigil: agent %s is %s, not attesting", agentID, why)
	}
	interval, err := time.ParseDuration(ag.Interval)
	if err != nil || interval <= 0 {
		return ag, status.Errorf(codes.Internal, "vigil: verifier: agent %s: interval %q", agentID, ag.Interval)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	// The verifier fails a silent host itself; this bounds what a verifier
	// that stopped judging (but still answers from its store) can vouch for.
	if age := now().Sub(ag.LastAttestedAt); age > 3*interval+2*time.Second {
		return ag, status.Errorf(codes.PermissionDenied, "vigil: agent %s last attested %s ago, more than three intervals (%s)", agentID, age.Round(time.Second), interval)
	}
	return ag, nil
}

func parseAK(b []byte) (*evidence.AK, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, err
	}
	return evidence.NewAK(*pub)
}

// verifierSet asks each verifier replica in turn until one answers; an
// answer (even "not found") from one is the answer, as replicas share one
// store.
type verifierSet []*verifier.AdminClient

func (vs verifierSet) Status(ctx context.Context, id string) (verifier.AgentView, error) {
	var err error
	for _, v := range vs {
		var a verifier.AgentView
		if a, err = v.Status(ctx, id); err == nil || !unreachable(err) {
			return a, err
		}
	}
	return verifier.AgentView{}, fmt.Errorf("no verifier answered: %w", err)
}

func (vs verifierSet) GetPolicy(ctx context.Context, name string) (verifier.Policy, error) {
	var err error
	for _, v := range vs {
		var p verifier.Policy
		if p, err = v.GetPolicy(ctx, name); err == nil || !unreachable(err) {
			return p, err
		}
	}
	return verifier.Policy{}, fmt.Errorf("no verifier answered: %w", err)
}

// unreachable reports whether err means the replica could not answer,
// rather than answered no.
func unreachable(err error) bool {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae.Kind == apierr.Unavailable || ae.Kind == apierr.Internal
	}
	return true
}

func notFound(err error) bool {
	var ae *apierr.Error
	return errors.As(err, &ae) && ae.Kind == apierr.NotFound
}
