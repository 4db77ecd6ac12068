package revocation

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Event types.
const (
	TypeRevoked    = "dev.vigil.agent.revoked"
	TypeReadmitted = "dev.vigil.agent.readmitted"
)

// Data is what an event says about the agent.
type Data struct {
	AgentID string `json:"agent_id" cbor:"agent_id"`
	// State is the agent's state after the event (failed, pending).
	State string `json:"state" cbor:"state"`
	// Reason, Check and Detail say why it failed: the reason vocabulary,
	// the check that failed, and where (the file, the PCR).
	Reason string `json:"reason,omitempty" cbor:"reason,omitempty"`
	Check  string `json:"check,omitempty" cbor:"check,omitempty"`
	Detail string `json:"detail,omitempty" cbor:"detail,omitempty"`
	// Identities are the workload identities to revoke (or that may be
	// issued again after readmission).
	Identities []string `json:"identities" cbor:"identities"`
	// Attestations and the last clock info are the attestation counters.
	Attestations   uint64    `json:"attestations" cbor:"attestations"`
	LastAttestedAt time.Time `json:"last_attested_at,omitempty" cbor:"last_attested_at,omitempty"`
	ResetCount     uint32    `json:"reset_count" cbor:"reset_count"`
	RestartCount   uint32    `json:"restart_count" cbor:"restart_count"`
}

// Event is one revocation (or readmission) to deliver.
type Event struct {
	// ID is stable across retries: receivers deduplicate on it.
	ID      string    `json:"id" cbor:"id"`
	Type    string    `json:"type" cbor:"type"`
	Time    time.Time `json:"time" cbor:"time"`
	Subject string    `json:"subject" cbor:"subject"`
	Data    Data      `json:"data" cbor:"data"`
}

// NewEvent makes an event with a fresh random ID.
func NewEvent(typ string, at time.Time, d Data) Event {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return Event{ID: "vigil-" + hex.EncodeToString(b[:]), Type: typ, Time: at.UTC(), Subject: d.AgentID, Data: d}
}

// CloudEvent is the structured-mode CloudEvents 1.0 JSON form.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Cloud renders e as a CloudEvent from source (a URI naming the verifier).
func (e Event) Cloud(source string) CloudEvent {
	return CloudEvent{
		SpecVersion:     "1.0",
		ID:              e.ID,
		Source:          source,
		Type:            e.Type,
		Subject:         e.Subject,
		Time:            e.Time,
		DataContentType: "application/json",
		Data:            e.Data,
	}
}
