package verifier

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/wire"
)

// Admin API paths.
const (
	PathAgents   = "/v1/agents"
	PathPolicies = "/v1/policies"
)

// MaxPolicy bounds a policy upload: a runtime policy of a few hundred
// thousand paths is tens of MiB.
const MaxPolicy = 256 << 20

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// CheckPolicy validates policies on upload.
	CheckPolicy PolicyCheck
	// InFlight bounds the bytes of evidence bodies being read or checked
	// at once (default DefaultInFlight); past it, evidence is refused with
	// 503 and a Retry-After, so that many large bodies cannot exhaust the
	// verifier's memory.
	InFlight int64
	// OnEvidenceBytes, if set, is told the size of each evidence body.
	OnEvidenceBytes func(n int)
}

// DefaultInFlight is the default bound on evidence bytes in flight.
const DefaultInFlight = 256 << 20

// maxChallengeRequest bounds a challenge request: it holds an agent ID.
const maxChallengeRequest = 4 << 10

// Handler serves the verifier's agent API (CBOR, no client certificate:
// agents prove themselves with AK signatures over nonces) and its admin API
// (JSON, admin client certificate required).
//
// Agent-facing requests come from anyone on the network, so evidence is
// looked at in order of cost: the agent ID in the path and the nonce in the
// Vigil-Nonce header are checked before the body is read, the body is
// capped by what the nonce's challenge asked for, and the bytes of bodies
// in flight are bounded.
func Handler(s *Service, opts HandlerOptions) http.Handler {
	inFlight := opts.InFlight
	if inFlight <= 0 {
		inFlight = DefaultInFlight
	}
	budget := newByteBudget(inFlight)
	answer := httpapi.Answers{Status: status, Log: s.log(), RetryAfter: retryAfter}
	refuse := func(w http.ResponseWriter, kind RefusalKind, reason, msg string) {
		r := refuseAs(kind, reason, "%s", msg)
		if kind == RefusedUnavailable {
			r.RetryAfter = time.Second
		}
		answer.CBOR(w, nil, s.Refused(r))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChallenge, func(w http.ResponseWriter, r *http.Request) {
		var req wire.ChallengeRequest
		if err := readAgentCBOR(r, maxChallengeRequest, &req); err != nil {
			refuse(w, err.kind, err.reason, err.msg)
			return
		}
		ch, err := s.Challenge(r.Context(), req)
		httpapi.Redirect(w, r, err)
		answer.CBOR(w, ch, err)
	})
	mux.HandleFunc("POST "+wire.PathEvidence+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		nonce, err := hex.DecodeString(r.Header.Get(wire.NonceHeader))
		if err != nil || len(nonce) == 0 {
			refuse(w, RefusedInvalid, refusedBadNonce, "the "+wire.NonceHeader+" header must hold the challenge's nonce in hex")
			return
		}
		limit, err := s.EvidenceLimit(r.Context(), id, nonce)
		if err != nil {
			httpapi.Redirect(w, r, err)
			answer.CBOR(w, nil, err)
			return
		}
		if r.ContentLength > limit {
			refuse(w, RefusedTooLarge, refusedTooLarge, fmt.Sprintf("evidence of %d bytes is over the %d this challenge allows", r.ContentLength, limit))
			return
		}
		// Reserve what the body may take; a body of unknown length may take
		// the whole cap.
		need := limit
		if r.ContentLength >= 0 {
			need = r.ContentLength
		}
		if !budget.take(need) {
			refuse(w, RefusedUnavailable, refusedBusy, "the verifier is reading too much evidence at once; retry")
			return
		}
		defer budget.give(need)
		var ev wire.Evidence
		if err := readAgentCBOR(r, limit, &ev); err != nil {
			refuse(w, err.kind, err.reason, err.msg)
			return
		}
		if ev.AgentID != id {
			refuse(w, RefusedInvalid, refusedAgentMismatch, fmt.Sprintf("evidence names agent %q, posted for %q", ev.AgentID, id))
			return
		}
		if !bytes.Equal(ev.Nonce, nonce) {
			refuse(w, RefusedInvalid, refusedNonceMismatch, "the evidence's nonce is not the one in the "+wire.NonceHeader+" header")
			return
		}
		if opts.OnEvidenceBytes != nil {
			opts.OnEvidenceBytes(int(r.ContentLength))
		}
		v, err := s.Evidence(r.Context(), ev)
		httpapi.Redirect(w, r, err)
		answer.CBOR(w, v, err)
	})

	mux.HandleFunc("GET "+PathAgents, httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		agents, err := s.Agents(r.Context())
		answer.JSON(w, http.StatusOK, views(agents), err)
	}))
	mux.HandleFunc("POST "+PathAgents, httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		var req AdmitRequest
		if !readJSON(w, r, &req) {
			return
		}
		a, err := s.Admit(r.Context(), req)
		answer.JSON(w, http.StatusCreated, view(a), err)
	}))
	mux.HandleFunc("GET "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.Status(r.Context(), r.PathValue("id"))
		answer.JSON(w, http.StatusOK, view(a), err)
	}))
	mux.HandleFunc("GET "+PathAgents+"/{id}/history", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		since, limit, err := historyQuery(r.URL.Query())
		if err != nil {
			httpapi.WriteJSON(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		h, err := s.History(r.Context(), r.PathValue("id"), since, limit)
		answer.JSON(w, http.StatusOK, HistoryView{Version: HistoryVersion, AgentID: r.PathValue("id"), Entries: h}, err)
	}))
	mux.HandleFunc("DELETE "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		err := s.Remove(r.Context(), r.PathValue("id"))
		answer.JSON(w, http.StatusOK, map[string]any{"agent_id": r.PathValue("id"), "state": StateDeleted}, err)
	}))
	mux.HandleFunc("PATCH "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		var req UpdateRequest
		if !readJSON(w, r, &req) {
			return
		}
		a, err := s.Update(r.Context(), r.PathValue("id"), req)
		httpapi.Redirect(w, r, err)
		answer.JSON(w, http.StatusOK, view(a), err)
	}))
	mux.HandleFunc("POST "+PathAgents+"/{id}/readmit", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.Readmit(r.Context(), r.PathValue("id"))
		httpapi.Redirect(w, r, err)
		answer.JSON(w, http.StatusOK, view(a), err)
	}))

	mux.HandleFunc("GET "+PathPolicies, httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.Store.ListPolicies(r.Context())
		if ps == nil {
			ps = []Policy{}
		}
		answer.JSON(w, http.StatusOK, ps, err)
	}))
	mux.HandleFunc("PUT "+PathPolicies+"/{name}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		kind := PolicyKind(r.URL.Query().Get("kind"))
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxPolicy+1))
		if err != nil {
			httpapi.WriteJSON(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		if len(body) > MaxPolicy {
			httpapi.WriteJSON(w, http.StatusRequestEntityTooLarge, wire.Error{Error: policyTooLarge})
			return
		}
		p, err := s.AddPolicy(r.Context(), opts.CheckPolicy, r.PathValue("name"), kind, body)
		p.Body = nil
		answer.JSON(w, http.StatusCreated, p, err)
	}))
	mux.HandleFunc("GET "+PathPolicies+"/{name}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		version, err := versionQuery(r.URL.Query())
		if err != nil {
			httpapi.WriteJSON(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		p, err := s.Policy(r.Context(), r.PathValue("name"), version)
		answer.JSON(w, http.StatusOK, p, err)
	}))
	mux.HandleFunc("GET "+PathPolicies+"/{name}/versions", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.PolicyVersions(r.Context(), r.PathValue("name"))
		answer.JSON(w, http.StatusOK, ps, err)
	}))
	mux.HandleFunc("DELETE "+PathPolicies+"/{name}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		err := s.DeletePolicy(r.Context(), r.PathValue("name"))
		answer.JSON(w, http.StatusOK, map[string]any{"name": r.PathValue("name"), "deleted": true}, err)
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// AgentView is an agent as the admin API shows it: the stored record with
// the interval in Go duration syntax ("2s").
type AgentView struct {
	Agent
	Interval string `json:"interval"`
}

func view(a Agent) AgentView { return AgentView{Agent: a, Interval: a.Interval.String()} }

func views(as []Agent) []AgentView {
	out := make([]AgentView, 0, len(as))
	for _, a := range as {
		out = append(out, view(a))
	}
	return out
}

func status(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	}
	return apierr.Status(err)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, wire.MaxMessage))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpapi.WriteJSON(w, http.StatusBadRequest, wire.Error{Error: "bad JSON: " + err.Error()})
		return false
	}
	return true
}

func retryAfter(err error) time.Duration {
	var ref *Refusal
	if errors.As(err, &ref) {
		return ref.RetryAfter
	}
	return 0
}

// bodyError is an agent body that cannot be read.
type bodyError struct {
	kind   RefusalKind
	reason string
	msg    string
}

// readAgentCBOR reads an agent's CBOR message of at most limit bytes.
func readAgentCBOR(r *http.Request, limit int64, v any) *bodyError {
	if r.Header.Get("Content-Type") != wire.ContentType {
		return &bodyError{RefusedInvalid, refusedMalformed, "Content-Type must be " + wire.ContentType}
	}
	if err := wire.Read(r.Body, limit, v); err != nil {
		if errors.Is(err, wire.ErrTooLarge) {
			return &bodyError{RefusedTooLarge, refusedTooLarge, err.Error()}
		}
		return &bodyError{RefusedInvalid, refusedMalformed, err.Error()}
	}
	return nil
}

// byteBudget bounds the bytes held by request bodies at once. It never
// waits: a request that does not fit is refused at once, so that a flood
// of large bodies queues nowhere.
type byteBudget struct {
	mu   sync.Mutex
	left int64
}

func newByteBudget(n int64) *byteBudget { return &byteBudget{left: n} }

func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}

// HistoryView is the admin API's answer for an agent's history.
type HistoryView struct {
	Version int            `json:"version"`
	AgentID string         `json:"agent_id"`
	Entries []HistoryEntry `json:"entries"`
}

// historyQuery reads ?since=RFC3339 time&limit=N.
func historyQuery(q url.Values) (since time.Time, limit int, err error) {
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, 0, fmt.Errorf("query parameter since %q: want an RFC 3339 time", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return since, 0, fmt.Errorf("query parameter limit %q: want a count", v)
		}
	}
	return since, limit, nil
}

// versionQuery reads ?version=V, a policy version; 0 when absent (the
// latest).
func versionQuery(q url.Values) (int, error) {
	v := q.Get("version")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("query parameter version %q: want a version number (1, 2, …)", v)
	}
	return n, nil
}
