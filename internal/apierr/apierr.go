// Package apierr is the one error type of Vigil's APIs: a refusal with a
// kind that maps to an HTTP status in one place (Status), a short reason
// for metrics, the request field at fault, and how long to wait before
// trying again. The registrar and the verifier refuse with it, their HTTP
// layers answer with its status, and the admin clients give one back for
// every non-2xx answer (KindOf), so the CLI tells bad input from a server's
// trouble the same way for both.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Kind classifies a refusal.
type Kind int

// The kinds, each one HTTP status.
const (
	// Invalid: the request is malformed or names something impossible (400).
	Invalid Kind = iota + 1
	// Forbidden: well-formed, but refused by policy or by who asks (403).
	Forbidden
	// NotFound: the request names something that does not exist (404).
	NotFound
	// Conflict: it contradicts the current state; ask again (409).
	Conflict
	// TooLarge: the body is over the limit (413).
	TooLarge
	// TooMany: accepting it would exceed a bound (429).
	TooMany
	// Unavailable: the server cannot now; retry (503).
	Unavailable
	// Internal: the server failed (500); its detail stays in its log.
	Internal
	// Moved: another server serves this; ask it (307, Location).
	Moved
)

var statuses = [...]int{
	Invalid:     http.StatusBadRequest,
	Forbidden:   http.StatusForbidden,
	NotFound:    http.StatusNotFound,
	Conflict:    http.StatusConflict,
	TooLarge:    http.StatusRequestEntityTooLarge,
	TooMany:     http.StatusTooManyRequests,
	Unavailable: http.StatusServiceUnavailable,
	Internal:    http.StatusInternalServerError,
	Moved:       http.StatusTemporaryRedirect,
}

// Status is the HTTP status of kind k.
func (k Kind) Status() int {
	if k > 0 && int(k) < len(statuses) {
		return statuses[k]
	}
	return http.StatusInternalServerError
}

// KindOf is the kind an HTTP status answers for.
func KindOf(status int) Kind {
	for k, s := range statuses {
		if s == status && k != 0 {
			return Kind(k)
		}
	}
	return Internal
}

// ClientError tells the kinds that blame the request (4xx) from those
// that blame the server.
func (k Kind) ClientError() bool { return k.Status()/100 == 4 }

// LocationOf is where err (a Moved refusal) sends the client, or "".
func LocationOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Kind == Moved {
		return e.Location
	}
	return ""
}

// Error is a refusal fit to send back to whoever asked.
type Error struct {
	Kind Kind
	// Reason is a short fixed word for metrics; empty when not counted.
	Reason string
	// Field names the request field at fault, when one is.
	Field string
	Msg   string
	// RetryAfter, when set, is how long to wait before asking again.
	RetryAfter time.Duration
	// Location, with Moved, is the base URL of the server to ask instead.
	Location string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return "field " + e.Field + ": " + e.Msg
	}
	return e.Msg
}

// New is a refusal of kind k, with a reason for metrics.
func New(k Kind, reason, format string, args ...any) *Error {
	return &Error{Kind: k, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Status is the HTTP status err answers with: its kind's when it is (or
// wraps) an *Error, else 500.
func Status(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind.Status()
	}
	return http.StatusInternalServerError
}

// ClientError tells whether err is a refusal that blames the request.
func ClientError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind.ClientError()
}
