package registrar

import (
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/wire"
)

// API paths. Agent endpoints take CBOR and need no client certificate (the
// TPM authenticates the agent); admin endpoints answer JSON and require an
// admin client certificate.
const (
	PathRegister = wire.PathRegister
	PathActivate = wire.PathActivate
	PathAgents   = "/v1/agents"
)

// AgentView is the admin API's JSON view of a record.
type AgentView struct {
	AgentID  string `json:"agent_id"`
	Active   bool   `json:"active"`
	EKSHA256 string `json:"ek_sha256"`
	EKTrust  string `json:"ek_trust"`
	EKCert   []byte `json:"ek_cert,omitempty"`
	AKAlg    string `json:"ak_alg"`
	// AKPublic is the marshalled TPMT_PUBLIC (base64 in JSON).
	AKPublic      []byte     `json:"ak_pub"`
	AKName        string     `json:"ak_name"`
	RegisteredAt  time.Time  `json:"registered_at"`
	ActivatedAt   *time.Time `json:"activated_at,omitempty"`
	Registrations int        `json:"registrations"`
}

// View is the admin view of a record.
func View(r Record) AgentView {
	v := AgentView{
		AgentID:       r.AgentID,
		Active:        r.Active,
		EKSHA256:      r.EKSHA256,
		EKTrust:       r.EKTrust,
		EKCert:        r.EKCert,
		AKAlg:         r.AKAlg,
		AKPublic:      r.AKPublic,
		AKName:        hex.EncodeToString(r.AKName),
		RegisteredAt:  r.RegisteredAt,
		Registrations: r.Registrations,
	}
	if !r.ActivatedAt.IsZero() {
		t := r.ActivatedAt
		v.ActivatedAt = &t
	}
	return v
}

// Handler serves the registrar API.
func Handler(svc *Service) http.Handler {
	answer := httpapi.Answers{Status: status, Log: svc.log()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathRegister, func(w http.ResponseWriter, r *http.Request) {
		var req wire.RegisterRequest
		if !httpapi.ReadCBOR(w, r, wire.MaxMessage, http.StatusBadRequest, &req) {
			return
		}
		rsp, err := svc.Register(r.Context(), req)
		answer.CBOR(w, rsp, err)
	})
	mux.HandleFunc("POST "+PathActivate, func(w http.ResponseWriter, r *http.Request) {
		var req wire.ActivateRequest
		if !httpapi.ReadCBOR(w, r, wire.MaxMessage, http.StatusBadRequest, &req) {
			return
		}
		rsp, err := svc.Activate(r.Context(), req)
		answer.CBOR(w, rsp, err)
	})
	mux.HandleFunc("GET "+PathAgents, httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		recs, err := svc.Store.List(r.Context())
		if err != nil {
			answer.JSONError(w, err)
			return
		}
		views := make([]AgentView, 0, len(recs))
		for _, rec := range recs {
			views = append(views, View(rec))
		}
		httpapi.WriteJSON(w, http.StatusOK, views)
	}))
	mux.HandleFunc("GET "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		rec, err := svc.Store.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			answer.JSONError(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, View(rec))
	}))
	mux.HandleFunc("DELETE "+PathAgents+"/{id}", httpapi.Admin(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := svc.Store.Delete(r.Context(), id); err != nil {
			answer.JSONError(w, err)
			return
		}
		svc.log().Info("agent deleted by operator", "agent_id", id, "operator", httpapi.Operator(r))
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

func status(err error) int {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Kind == Invalid:
		return http.StatusBadRequest
	case errors.As(err, &e) && e.Kind == Forbidden:
		return http.StatusForbidden
	case errors.As(err, &e) && e.Kind == NotFound, errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}
