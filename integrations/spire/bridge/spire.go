package bridge

import (
	"context"
	"fmt"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ServerAPI is SPIRE through its Server API on the admin socket, where
// SPIRE treats every local caller as an admin (the socket's file mode is
// the access control).
type ServerAPI struct {
	TrustDomain string
	conn        *grpc.ClientConn
	agents      agentv1.AgentClient
}

// DialServerAPI connects to spire-server's admin socket (its
// socket_path). The connection is lazy: a SPIRE server that is down
// fails the calls, which the verifier then retries.
func DialServerAPI(socket, trustDomain string) (*ServerAPI, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("SPIRE server socket %s: %w", socket, err)
	}
	return &ServerAPI{TrustDomain: trustDomain, conn: conn, agents: agentv1.NewAgentClient(conn)}, nil
}

// Close closes the connection.
func (s *ServerAPI) Close() error { return s.conn.Close() }

func (s *ServerAPI) id(path string) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: s.TrustDomain, Path: path}
}

// Ban implements SPIRE.
func (s *ServerAPI) Ban(ctx context.Context, path string) error {
	_, err := s.agents.BanAgent(ctx, &agentv1.BanAgentRequest{Id: s.id(path)})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// Unban implements SPIRE: a banned node's record is deleted, which is how
// SPIRE lifts a ban.
func (s *ServerAPI) Unban(ctx context.Context, path string) error {
	a, err := s.agents.GetAgent(ctx, &agentv1.GetAgentRequest{Id: s.id(path), OutputMask: &types.AgentMask{Banned: true}})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if !a.Banned {
		return nil
	}
	_, err = s.agents.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: s.id(path)})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// Banned reports whether SPIRE has banned the node (false for a node it
// does not know).
func (s *ServerAPI) Banned(ctx context.Context, path string) (bool, error) {
	a, err := s.agents.GetAgent(ctx, &agentv1.GetAgentRequest{Id: s.id(path), OutputMask: &types.AgentMask{Banned: true}})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return a.Banned, nil
}
