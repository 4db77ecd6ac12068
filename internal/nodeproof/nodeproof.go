package nodeproof

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// Version is the version of the request and answer below; a reader refuses
// any other.
const Version = 1

// Path is the one endpoint the agent serves on its proof socket.
const Path = "/v1/node-proof"

// Challenge bounds: SPIRE's plugin sends 32 random bytes; fewer would make
// a proof guessable, more is never needed.
const (
	MinChallenge = 16
	MaxChallenge = 64
)

// MaxAnswer bounds an answer: a quote and an RSA-4096 signature fit in a
// few kilobytes, with room for JSON and base64.
const MaxAnswer = 16 << 10

// label separates node proofs from every other use of the AK.
const label = "vigil node proof v1\x00"

// QualifyingData is what the agent quotes over for challenge: the
// SHA-256 of a fixed label and the challenge.
func QualifyingData(challenge []byte) []byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(challenge)
	return h.Sum(nil)
}

// Request asks for a proof over Challenge.
type Request struct {
	Version   int    `json:"version"`
	Challenge []byte `json:"challenge"`
}

// Proof is the agent's answer: who it is, and a quote by its AK over
// QualifyingData(challenge).
type Proof struct {
	Version int    `json:"version"`
	AgentID string `json:"agent_id"`
	// Attest is the TPMS_ATTEST as the TPM marshalled it, Signature its
	// TPMT_SIGNATURE.
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// CheckChallenge says why a challenge cannot be answered, or nil.
func CheckChallenge(c []byte) error {
	if len(c) < MinChallenge || len(c) > MaxChallenge {
		return fmt.Errorf("challenge: %d bytes, want %d to %d", len(c), MinChallenge, MaxChallenge)
	}
	return nil
}

// ParseRequest decodes and checks a request.
func ParseRequest(b []byte) (Request, error) {
	var r Request
	if err := strictJSON(b, &r); err != nil {
		return Request{}, fmt.Errorf("node proof request: %w", err)
	}
	if r.Version != Version {
		return Request{}, fmt.Errorf("node proof request: version %d, want %d", r.Version, Version)
	}
	if err := CheckChallenge(r.Challenge); err != nil {
		return Request{}, fmt.Errorf("node proof request: %w", err)
	}
	return r, nil
}

// ParseProof decodes and checks the form of a proof; whether its quote is
// good is the verifying side's to decide.
func ParseProof(b []byte) (Proof, error) {
	var p Proof
	if err := strictJSON(b, &p); err != nil {
		return Proof{}, fmt.Errorf("node proof: %w", err)
	}
	switch {
	case p.Version != Version:
		return Proof{}, fmt.Errorf("node proof: version %d, want %d", p.Version, Version)
	case !tpmfacts.ValidAgentID(p.AgentID):
		return Proof{}, fmt.Errorf("node proof: field agent_id %q: want %s", p.AgentID, tpmfacts.AgentIDRule)
	case len(p.Attest) == 0:
		return Proof{}, errors.New("node proof: field attest is empty")
	case len(p.Signature) == 0:
		return Proof{}, errors.New("node proof: field signature is empty")
	}
	return p, nil
}

func strictJSON(b []byte, v any) error {
	if len(b) > MaxAnswer {
		return fmt.Errorf("%d bytes, more than %d", len(b), MaxAnswer)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Client asks the agent listening on Socket for proofs.
type Client struct {
	Socket string
	// Timeout bounds one request (a quote takes well under a second on a
	// hardware TPM); zero means 30 s.
	Timeout time.Duration
}

// Identity is the agent's answer to GET Path: the agent ID it proves.
type Identity struct {
	Version int    `json:"version"`
	AgentID string `json:"agent_id"`
}

// AgentID asks the agent which agent ID it proves.
func (c Client) AgentID(ctx context.Context) (string, error) {
	b, err := c.do(ctx, http.MethodGet, nil)
	if err != nil {
		return "", err
	}
	var id Identity
	if err := strictJSON(b, &id); err != nil {
		return "", fmt.Errorf("vigil agent at %s: identity: %w", c.Socket, err)
	}
	if id.Version != Version || !tpmfacts.ValidAgentID(id.AgentID) {
		return "", fmt.Errorf("vigil agent at %s: identity: version %d, agent_id %q", c.Socket, id.Version, id.AgentID)
	}
	return id.AgentID, nil
}

// Prove asks for a proof over challenge.
func (c Client) Prove(ctx context.Context, challenge []byte) (Proof, error) {
	if err := CheckChallenge(challenge); err != nil {
		return Proof{}, err
	}
	body, _ := json.Marshal(Request{Version: Version, Challenge: challenge})
	b, err := c.do(ctx, http.MethodPost, body)
	if err != nil {
		return Proof{}, err
	}
	p, err := ParseProof(b)
	if err != nil {
		return Proof{}, fmt.Errorf("vigil agent at %s: %w", c.Socket, err)
	}
	return p, nil
}

func (c Client) do(ctx context.Context, method string, body []byte) ([]byte, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	hc := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", c.Socket)
			},
		},
	}
	defer hc.CloseIdleConnections()
	// The host part is ignored: the socket is the address.
	req, err := http.NewRequestWithContext(ctx, method, "http://vigil-agent"+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rsp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("vigil agent at %s: %w", c.Socket, err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, MaxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("vigil agent at %s: %w", c.Socket, err)
	}
	if rsp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("vigil agent at %s answered %s: %s", c.Socket, rsp.Status, e.Error)
		}
		return nil, fmt.Errorf("vigil agent at %s answered %s", c.Socket, rsp.Status)
	}
	return b, nil
}
