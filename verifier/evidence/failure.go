package evidence

import (
	"errors"
	"fmt"
)

// Reason names why a piece of evidence was refused. The values are stable:
// they appear in JSON reports, verifier state and revocation events.
type Reason string

// Reasons the quote check gives.
const (
	ReasonMalformedQuote       Reason = "malformed_quote"
	ReasonMalformedSignature   Reason = "malformed_signature"
	ReasonBadMagic             Reason = "bad_magic"
	ReasonBadType              Reason = "bad_type"
	ReasonUnsupportedSignature Reason = "unsupported_signature"
	ReasonBadSignature         Reason = "bad_signature"
	ReasonNonceMismatch        Reason = "nonce_mismatch"
	ReasonPCRMissing           Reason = "pcr_missing"
	ReasonPCRDigestMismatch    Reason = "pcr_digest_mismatch"
	ReasonResetCountRollback   Reason = "reset_count_rollback"
	ReasonRestartCountRollback Reason = "restart_count_rollback"
	ReasonClockRollback        Reason = "clock_rollback"
)

// Failure is a refusal with its reason and a human-readable detail naming
// the field or place at fault. Other verifier packages (event-log replay,
// boot policy) return it too, with reasons of their own.
type Failure struct {
	Reason Reason `json:"reason"`
	Detail string `json:"detail"`
}

func (f *Failure) Error() string {
	if f.Detail == "" {
		return string(f.Reason)
	}
	return string(f.Reason) + ": " + f.Detail
}

// Fail builds a *Failure.
func Fail(r Reason, format string, args ...any) *Failure {
	return &Failure{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of the first *Failure in err's chain, or "" if
// there is none.
func ReasonOf(err error) Reason {
	var f *Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ""
}
