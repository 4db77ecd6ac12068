package registrar

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/registrar/registrarapi"
)

// API paths. Agent endpoints take CBOR and need no client certificate (the
// TPM authenticates the agent); admin endpoints answer JSON and require an
// admin client certificate.
const (
	PathRegister = wire.PathRegister
	PathActivate = wire.PathActivate
	PathAgents   = registrarapi.PathAgents
	PathAKs      = registrarapi.PathAKs
)

// AgentView is the admin API's JSON view of a record.
type AgentView = registrarapi.AgentView

// View is the admin view of a record.
func View(r Record) AgentView {
	v := AgentView{
		AgentID:              r.AgentID,
		Active:               r.Active,
		EKSHA256:             r.EKSHA256,
		EKTrust:              r.EKTrust,
		EKCert:               r.EKCert,
		AKAlg:                r.AKAlg,
		AKPublic:             r.AKPublic,
		AKName:               hex.EncodeToString(r.AKName),
		RegisteredAt:         r.RegisteredAt,
		Enrollments:          r.Enrollments,
		PendingRegistrations: len(r.Pending),
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
			svc.refuse("registration refused", "", undecodable())
			return
		}
		rsp, err := svc.Register(r.Context(), req)
		answer.CBOR(w, rsp, err)
	})
	mux.HandleFunc("POST "+PathActivate, func(w http.ResponseWriter, r *http.Request) {
		var req wire.ActivateRequest
		if !httpapi.ReadCBOR(w, r, wire.MaxMessage, http.StatusBadRequest, &req) {
			svc.refuse("activation refused", "", undecodable())
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
		if err := svc.Delete(r.Context(), id); err != nil {
			answer.JSONError(w, err)
			return
		}
		svc.log().Info("agent deleted by operator", "agent_id", id, "operator", httpapi.Operator(r))
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.Handle("GET "+PathAKs, httpapi.Admin((&aksHandler{svc: svc, answer: answer}).ServeHTTP))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

func status(err error) int {
	if errors.Is(err, ErrNotFound) {
		return http.StatusNotFound
	}
	return apierr.Status(err)
}

// undecodable stands for a body the decoder refused (it has answered with
// the detail) when counting refusals.
func undecodable() error { return invalid("body", "not a well-formed request") }

// The GET /v1/aks answer (registrarapi).
const AKListVersion = registrarapi.AKListVersion

type (
	AKList      = registrarapi.AKList
	AKListEntry = registrarapi.AKListEntry
)

// aksHandler serves the change feed. A poll that names the current
// generation costs one store read and no decoding; the full answer is built
// once per generation and kept.
type aksHandler struct {
	svc    *Service
	answer httpapi.Answers

	mu   sync.Mutex
	etag string
	body []byte
}

func (h *aksHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gen, err := h.svc.Store.Generation(r.Context())
	if err != nil {
		h.answer.JSONError(w, err)
		return
	}
	if etagMatches(r.Header.Get("If-None-Match"), gen) {
		w.Header().Set("ETag", registrarapi.QuoteETag(gen))
		w.WriteHeader(http.StatusNotModified)
		return
	}
	etag, body, err := h.list(r, gen)
	if err != nil {
		h.answer.JSONError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", registrarapi.QuoteETag(etag))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// list returns the answer for generation gen, or a newer one. Holding the
// lock while building means one build per generation however many
// verifiers poll at once.
func (h *aksHandler) list(r *http.Request, gen string) (string, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.etag == gen && h.body != nil {
		return h.etag, h.body, nil
	}
	gen, aks, err := h.svc.Store.ActiveAKs(r.Context())
	if err != nil {
		return "", nil, err
	}
	list := AKList{Version: AKListVersion, ETag: gen, Agents: make([]AKListEntry, 0, len(aks))}
	for _, ak := range aks {
		list.Agents = append(list.Agents, AKListEntry{AgentID: ak.AgentID, AKName: hex.EncodeToString(ak.AKName)})
	}
	slices.SortFunc(list.Agents, func(a, b AKListEntry) int { return strings.Compare(a.AgentID, b.AgentID) })
	body, err := json.Marshal(list)
	if err != nil {
		return "", nil, err
	}
	h.etag, h.body = gen, append(body, '\n')
	return h.etag, h.body, nil
}

// etagMatches reports whether an If-None-Match header names gen, quoted or
// not, weak or strong, or is "*".
func etagMatches(header, gen string) bool {
	if header == "" {
		return false
	}
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		tag = strings.TrimPrefix(tag, "W/")
		if tag == "*" || strings.Trim(tag, `"`) == gen {
			return true
		}
	}
	return false
}

// AdminClient calls the registrar's admin API (registrarapi.Client).
type AdminClient = registrarapi.Client

// ErrNotModified is AdminClient.ActiveAKs' answer when the set of active
// AKs has not changed.
var ErrNotModified = registrarapi.ErrNotModified
