// Package registrarapi is the registrar's admin API as its clients see
// it: the paths, the JSON views, and a typed client. It imports nothing of
// the registrar, so that the verifier, which fetches AKs and follows the
// registrar's feed, does not link the registrar's service and store.
package registrarapi

import (
	"errors"
	"time"
)

// Admin API paths (JSON, admin client certificate).
const (
	PathAgents = "/v1/agents"
	PathAKs    = "/v1/aks"
)

// ErrNotFound is returned for an unknown agent ID.
var ErrNotFound = errors.New("agent not registered")

// AgentView is the admin API's JSON view of a record. The AK fields are the
// active AK's (empty before the first activation); pending registrations
// are only counted.
type AgentView struct {
	AgentID  string `json:"agent_id"`
	Active   bool   `json:"active"`
	EKSHA256 string `json:"ek_sha256"`
	EKTrust  string `json:"ek_trust"`
	EKCert   []byte `json:"ek_cert,omitempty"`
	AKAlg    string `json:"ak_alg"`
	// AKPublic is the marshalled TPMT_PUBLIC (base64 in JSON).
	AKPublic             []byte     `json:"ak_pub"`
	AKName               string     `json:"ak_name"`
	RegisteredAt         time.Time  `json:"registered_at"`
	ActivatedAt          *time.Time `json:"activated_at,omitempty"`
	Enrollments          int        `json:"enrollments"`
	PendingRegistrations int        `json:"pending_registrations"`
}

// AKListVersion is the version of the GET /v1/aks answer.
const AKListVersion = 1

// AKList is the answer of GET /v1/aks: every agent with an active AK.
type AKList struct {
	Version int    `json:"version"`
	ETag    string `json:"etag"`
	// Agents are sorted by agent ID.
	Agents []AKListEntry `json:"agents"`
}

// AKListEntry is one agent of an AKList.
type AKListEntry struct {
	AgentID string `json:"agent_id"`
	// AKName is the hex of the active AK's TPM name.
	AKName string `json:"ak_name"`
}

// QuoteETag is the ETag header value of a feed version.
func QuoteETag(version string) string { return `"` + version + `"` }
