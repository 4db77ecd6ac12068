package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

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
	// MaxEvidence bounds evidence bodies (default wire.MaxEvidence).
	MaxEvidence int64
	// OnEvidenceBytes, if set, is told the size of each evidence body.
	OnEvidenceBytes func(n int)
}

// Handler serves the verifier's agent API (CBOR, no client certificate:
// agents prove themselves with AK signatures over nonces) and its admin API
// (JSON, admin client certificate required).
func Handler(s *Service, opts HandlerOptions) http.Handler {
	maxEvidence := opts.MaxEvidence
	if maxEvidence == 0 {
		maxEvidence = wire.MaxEvidence
	}
	answer := httpapi.Answers{Status: status, Log: s.log()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChallenge, func(w http.ResponseWriter, r *http.Request) {
		var req wire.ChallengeRequest
		if !httpapi.ReadCBOR(w, r, wire.MaxMessage, http.StatusRequestEntityTooLarge, &req) {
			return
		}
		ch, err := s.Challenge(r.Context(), req)
		answer.CBOR(w, ch, err)
	})
	mux.HandleFunc("POST "+wire.PathEvidence, func(w http.ResponseWriter, r *http.Request) {
		var ev wire.Evidence
		if r.ContentLength > maxEvidence {
			httpapi.WriteCBOR(w, http.StatusRequestEntityTooLarge, wire.Error{Error: "evidence over the size limit"})
			return
		}
		if !httpapi.ReadCBOR(w, r, maxEvidence, http.StatusRequestEntityTooLarge, &ev) {
			return
		}
		if opts.OnEvidenceBytes != nil {
			opts.OnEvidenceBytes(int(r.ContentLength))
		}
		v, err := s.Evidence(r.Context(), ev)
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
	mux.HandleFunc("DELETE "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		err := s.Remove(r.Context(), r.PathValue("id"))
		answer.JSON(w, http.StatusOK, map[string]any{"agent_id": r.PathValue("id"), "state": StateDeleted}, err)
	}))
	mux.HandleFunc("POST "+PathAgents+"/{id}/readmit", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.Readmit(r.Context(), r.PathValue("id"))
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
		p, err := s.Store.GetPolicy(r.Context(), r.PathValue("name"))
		answer.JSON(w, http.StatusOK, p, err)
	}))
	mux.HandleFunc("DELETE "+PathPolicies+"/{name}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		err := s.DeletePolicy(r.Context(), r.PathValue("name"))
		answer.JSON(w, http.StatusOK, map[string]any{"name": r.PathValue("name"), "deleted": true}, err)
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := s.Store.ListPolicies(ctx); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
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
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		switch ref.Kind {
		case RefusedInvalid:
			return http.StatusBadRequest
		case RefusedForbidden:
			return http.StatusForbidden
		case RefusedNotFound:
			return http.StatusNotFound
		case RefusedConflict:
			return http.StatusConflict
		case RefusedUnavailable:
			return http.StatusServiceUnavailable
		}
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
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
