package nodeattestor

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// PluginName is the name both halves are configured under, and the
// selector type SPIRE gives their selectors.
const PluginName = "vigil"

// PayloadVersion is the version of Payload.
const PayloadVersion = 1

// Payload is what the agent side sends first: the agent ID it will prove.
type Payload struct {
	Version int    `json:"version"`
	AgentID string `json:"agent_id"`
}

// ParsePayload decodes and checks a payload.
func ParsePayload(b []byte) (Payload, error) {
	var p Payload
	if len(b) > 4096 {
		return Payload{}, fmt.Errorf("payload: %d bytes, more than 4096", len(b))
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return Payload{}, fmt.Errorf("payload: %w", err)
	}
	if p.Version != PayloadVersion {
		return Payload{}, fmt.Errorf("payload: version %d, want %d", p.Version, PayloadVersion)
	}
	if err := CheckAgentID(p.AgentID); err != nil {
		return Payload{}, fmt.Errorf("payload: field agent_id: %w", err)
	}
	return p, nil
}

// CheckAgentID says why a Vigil agent ID cannot name a SPIRE agent, or
// nil. Vigil allows ':' in agent IDs; a SPIFFE ID's path does not.
func CheckAgentID(id string) error {
	if !tpmfacts.ValidAgentID(id) {
		return fmt.Errorf("%q: want %s", id, tpmfacts.AgentIDRule)
	}
	if strings.ContainsRune(id, ':') {
		return fmt.Errorf("%q: a SPIFFE ID path segment cannot hold ':'; enroll the host with --id without one", id)
	}
	return nil
}

// AgentPath is the path of the SPIFFE ID a host's SPIRE agent gets:
// /spire/agent/vigil/<agent id>, for an ID CheckAgentID accepts.
func AgentPath(agentID string) string { return "/spire/agent/" + PluginName + "/" + agentID }

// AgentSPIFFEID is the full SPIFFE ID of the host's SPIRE agent.
func AgentSPIFFEID(trustDomain, agentID string) string {
	return "spiffe://" + trustDomain + AgentPath(agentID)
}
