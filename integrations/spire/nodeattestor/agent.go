package nodeattestor

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/hashicorp/hcl"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-attest/vigil/internal/nodeproof"
)

// DefaultAgentSocket is where `vigil agent --proof-socket` listens in the
// packaged deployment.
const DefaultAgentSocket = "/run/vigil/agent.sock"

// AgentConfig is the agent side's plugin_data.
type AgentConfig struct {
	// AgentSocket is the local Vigil agent's proof socket.
	AgentSocket string `hcl:"agent_socket"`
}

// Agent is the agent side of the vigil NodeAttestor.
type Agent struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu     sync.RWMutex
	client nodeproof.Client
}

// Configure implements the Config service.
func (a *Agent) Configure(ctx context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg AgentConfig
	if err := hcl.Decode(&cfg, req.HclConfiguration); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "vigil: plugin_data: %v", err)
	}
	if cfg.AgentSocket == "" {
		cfg.AgentSocket = DefaultAgentSocket
	}
	a.mu.Lock()
	a.client = nodeproof.Client{Socket: cfg.AgentSocket}
	a.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

// AidAttestation implements the NodeAttestor service: the host's agent ID
// as the payload, then the local Vigil agent's proof over the server's
// challenge.
func (a *Agent) AidAttestation(stream nodeattestorv1.NodeAttestor_AidAttestationServer) error {
	a.mu.RLock()
	c := a.client
	a.mu.RUnlock()
	if c.Socket == "" {
		return status.Error(codes.FailedPrecondition, "vigil: not configured")
	}
	ctx := stream.Context()
	id, err := c.AgentID(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "vigil: %v", err)
	}
	payload, _ := json.Marshal(Payload{Version: PayloadVersion, AgentID: id})
	if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{Data: &nodeattestorv1.PayloadOrChallengeResponse_Payload{Payload: payload}}); err != nil {
		return err
	}
	ch, err := stream.Recv()
	if err != nil {
		return err
	}
	proof, err := c.Prove(ctx, ch.GetChallenge())
	if err != nil {
		return status.Errorf(codes.Unavailable, "vigil: %v", err)
	}
	b, _ := json.Marshal(proof)
	return stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{Data: &nodeattestorv1.PayloadOrChallengeResponse_ChallengeResponse{ChallengeResponse: b}})
}

// Use configures a without SPIRE's Configure call (tests).
func (a *Agent) Use(c nodeproof.Client) {
	a.mu.Lock()
	a.client = c
	a.mu.Unlock()
}
