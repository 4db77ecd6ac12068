// Package httpapi holds what the registrar's and the verifier's HTTP
// handlers share: reading agent messages (CBOR, bounded, strictly decoded),
// writing CBOR and JSON answers, and guarding admin endpoints with the
// deployment's client certificates.
package httpapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/wire"
)

// ReadCBOR decodes an agent message of at most limit bytes into v. On bad
// input it answers (415 for another content type, tooLarge for an oversize
// body, 400 for the rest, naming the field) and returns false.
func ReadCBOR(w http.ResponseWriter, r *http.Request, limit int64, tooLarge int, v any) bool {
	if r.Header.Get("Content-Type") != wire.ContentType {
		WriteCBOR(w, http.StatusUnsupportedMediaType, wire.Error{Error: "Content-Type must be " + wire.ContentType})
		return false
	}
	if err := wire.Read(r.Body, limit, v); err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, wire.ErrTooLarge) {
			code = tooLarge
		}
		WriteCBOR(w, code, wire.Error{Error: err.Error()})
		return false
	}
	return true
}

// WriteCBOR answers an agent.
func WriteCBOR(w http.ResponseWriter, code int, v any) {
	b, err := wire.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", wire.ContentType)
	w.WriteHeader(code)
	w.Write(b)
}

// WriteJSON answers an operator.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

type operatorKey struct{}

// Admin refuses requests without a verified admin client certificate
// (401) and passes the operator's name on in the request context.
func Admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, err := tlsutil.AdminIdentity(r)
		if err != nil {
			WriteJSON(w, http.StatusUnauthorized, wire.Error{Error: err.Error()})
			return
		}
		h(w, r.WithContext(WithOperator(r.Context(), who)))
	}
}

// RefuseRevoked refuses (401, and the connection is closed after the
// answer) every request whose client certificate revoked says is revoked.
// A CRL is checked at the handshake, but an operator's keep-alive
// connection opened before the revocation would otherwise keep working
// until it closed; with this the list in force (reloaded on SIGHUP)
// applies to the next request on every connection.
func RefuseRevoked(h http.Handler, revoked func(*x509.Certificate) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if leaf := r.TLS.PeerCertificates[0]; revoked(leaf) {
				w.Header().Set("Connection", "close")
				WriteJSON(w, http.StatusUnauthorized, wire.Error{Error: fmt.Sprintf("client certificate %q (serial %s) is revoked", leaf.Subject.CommonName, tlsutil.SerialHex(leaf))})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// Operator is the admin certificate's subject behind a request Admin let
// through.
func Operator(r *http.Request) string { return OperatorFrom(r.Context()) }

// OperatorFrom is Operator for the context of such a request: services
// name the operator behind an action they record.
func OperatorFrom(ctx context.Context) string {
	s, _ := ctx.Value(operatorKey{}).(string)
	return s
}

// Answers writes a service's results and errors. Status maps an error to its
// HTTP status; the detail of an internal error (500) goes to Log, and the
// client only learns that one happened.
type Answers struct {
	Status func(error) int
	Log    *slog.Logger
	// RetryAfter, if set, tells how long a client should wait before it
	// tries again after err (zero: no Retry-After header).
	RetryAfter func(err error) time.Duration
}

func (a Answers) failure(err error) (int, wire.Error) {
	code := a.Status(err)
	if code == http.StatusInternalServerError {
		a.Log.Error("internal error", "err", err)
		return code, wire.Error{Error: "internal error"}
	}
	return code, wire.Error{Error: err.Error()}
}

// CBOR answers an agent: v with 200, or the error.
func (a Answers) CBOR(w http.ResponseWriter, v any, err error) {
	if err != nil {
		if a.RetryAfter != nil {
			if d := a.RetryAfter(err); d > 0 {
				w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
			}
		}
		code, body := a.failure(err)
		WriteCBOR(w, code, body)
		return
	}
	WriteCBOR(w, http.StatusOK, v)
}

// JSON answers an operator: v with code, or the error.
func (a Answers) JSON(w http.ResponseWriter, code int, v any, err error) {
	if err != nil {
		a.JSONError(w, err)
		return
	}
	WriteJSON(w, code, v)
}

// Redirect sets Location for a Moved refusal: the same request, at the
// server that serves it. Clients follow a 307 with the same method and
// body. Call it before answering.
func Redirect(w http.ResponseWriter, r *http.Request, err error) {
	if loc := apierr.LocationOf(err); loc != "" {
		w.Header().Set("Location", strings.TrimRight(loc, "/")+r.URL.RequestURI())
	}
}

// JSONError answers an operator with an error.
func (a Answers) JSONError(w http.ResponseWriter, err error) {
	code, body := a.failure(err)
	WriteJSON(w, code, body)
}

// NewServer is the one place Vigil's HTTP servers are configured: the
// registrar, the verifier, the demo's and the bench's all serve with these
// settings, so what the bench measures is what ships. tlsCfg may be nil for
// a plain listener (a metrics port).
func NewServer(h http.Handler, tlsCfg *tls.Config, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		// Agents keep one connection open between attestations: a TLS
		// handshake per attestation would cost more than the verdict.
		IdleTimeout: 5 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// WithOperator is ctx acting for operator, as Admin makes it for each
// request it lets through.
func WithOperator(ctx context.Context, operator string) context.Context {
	return context.WithValue(ctx, operatorKey{}, operator)
}
