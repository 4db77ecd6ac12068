package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/vigil-attest/vigil/integrations/spire/nodeattestor"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// SPIRE is what the bridge asks of the SPIRE server, for a node's agent ID
// path (nodeattestor.AgentPath).
type SPIRE interface {
	// Ban bans the node; a node SPIRE never admitted is not an error (the
	// NodeAttestor refuses it anyway while Vigil says it failed).
	Ban(ctx context.Context, path string) error
	// Unban lifts a ban; a node that is not banned is left alone.
	Unban(ctx context.Context, path string) error
}

// MaxBody bounds a webhook body; Vigil's events are a few hundred bytes.
const MaxBody = 64 << 10

// DefaultTolerance is how far a webhook-timestamp may be from now.
const DefaultTolerance = 5 * time.Minute

// Handler receives Vigil's webhooks.
type Handler struct {
	// Keys are the webhook secrets' keys (revocation.ParseSecret); a
	// message signed with any of them is accepted, for rotation.
	Keys  [][]byte
	SPIRE SPIRE
	Log   *slog.Logger
	// Tolerance defaults to DefaultTolerance; Now to time.Now.
	Tolerance time.Duration
	Now       func() time.Time
	// Applied keeps the order of each agent's events; nil keeps it in
	// memory only (tests), which a restart loses.
	Applied Applied
	// OnApplied, if set, sees each event applied (tests, metrics).
	OnApplied func(revocation.CloudEvent)

	mem   MemoryApplied
	locks agentLocks
}

// Answer is the bridge's JSON answer.
type Answer struct {
	Applied bool   `json:"applied"`
	Action  string `json:"action,omitempty"`
	AgentID string `json:"agent_id,omitempty"`
	Note    string `json:"note,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		answer(w, http.StatusMethodNotAllowed, Answer{Error: "POST a Vigil webhook"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		answer(w, http.StatusBadRequest, Answer{Error: "body: " + err.Error()})
		return
	}
	if len(body) > MaxBody {
		answer(w, http.StatusRequestEntityTooLarge, Answer{Error: fmt.Sprintf("body over %d bytes", MaxBody)})
		return
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	tol := h.Tolerance
	if tol == 0 {
		tol = DefaultTolerance
	}
	id, ts, sig := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	verr := errors.New("no webhook secret configured")
	for _, k := range h.Keys {
		if verr = revocation.Verify(k, id, ts, sig, body, now(), tol); verr == nil {
			break
		}
	}
	if verr != nil {
		// Nothing unsigned reaches SPIRE.
		h.log().Warn("refused an unsigned or stale webhook", "remote", r.RemoteAddr, "err", verr)
		answer(w, http.StatusUnauthorized, Answer{Error: verr.Error()})
		return
	}
	var ev revocation.CloudEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		answer(w, http.StatusBadRequest, Answer{Error: "CloudEvent: " + err.Error()})
		return
	}
	if ev.SpecVersion != "1.0" || ev.ID != id {
		answer(w, http.StatusBadRequest, Answer{Error: fmt.Sprintf("CloudEvent: specversion %q, id %q (webhook-id %q)", ev.SpecVersion, ev.ID, id)})
		return
	}
	var action string
	switch ev.Type {
	case revocation.TypeRevoked:
		action = "ban"
	case revocation.TypeReadmitted:
		action = "unban"
	default:
		// Another kind of event is not this bridge's business; accepting
		// it keeps it out of the verifier's retries.
		answer(w, http.StatusOK, Answer{Note: "event type " + ev.Type + " ignored"})
		return
	}
	agentID := ev.Data.AgentID
	if err := nodeattestor.CheckAgentID(agentID); err != nil {
		answer(w, http.StatusBadRequest, Answer{Error: "data.agent_id: " + err.Error()})
		return
	}
	applied := h.Applied
	if applied == nil {
		applied = &h.mem
	}
	unlock := h.locks.lock(agentID)
	defer unlock()
	last, ok, err := applied.Last(r.Context(), agentID)
	if err != nil {
		// Without the order, a stale event could undo a newer one: the
		// verifier retries instead.
		h.log().Error("cannot read the last event applied", "agent_id", agentID, "err", err)
		answer(w, http.StatusInternalServerError, Answer{AgentID: agentID, Error: "bridge store: " + err.Error()})
		return
	}
	if ok && ev.Time.Before(last) {
		h.log().Info("ignored an event older than the last one applied", "agent_id", agentID, "type", ev.Type, "event_time", ev.Time, "last", last)
		answer(w, http.StatusOK, Answer{AgentID: agentID, Note: "older than the last event applied for this agent"})
		return
	}

	path := nodeattestor.AgentPath(agentID)
	if action == "ban" {
		err = h.SPIRE.Ban(r.Context(), path)
	} else {
		err = h.SPIRE.Unban(r.Context(), path)
	}
	if err != nil {
		// The verifier retries: the event stays in its outbox.
		h.log().Error("SPIRE did not apply the event", "agent_id", agentID, "action", action, "err", err)
		answer(w, http.StatusBadGateway, Answer{AgentID: agentID, Action: action, Error: "SPIRE: " + err.Error()})
		return
	}
	if err := applied.Record(r.Context(), agentID, ev.Time); err != nil {
		// SPIRE did it, but the order is not kept: the verifier retries,
		// and applying the event again changes nothing at SPIRE.
		h.log().Error("cannot record the event applied", "agent_id", agentID, "err", err)
		answer(w, http.StatusInternalServerError, Answer{AgentID: agentID, Action: action, Error: "bridge store: " + err.Error()})
		return
	}
	h.log().Info("applied at SPIRE", "agent_id", agentID, "action", action, "event", ev.ID, "reason", ev.Data.Reason, "detail", ev.Data.Detail)
	if h.OnApplied != nil {
		h.OnApplied(ev)
	}
	answer(w, http.StatusOK, Answer{Applied: true, AgentID: agentID, Action: action})
}

func answer(w http.ResponseWriter, code int, a Answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(a)
}
