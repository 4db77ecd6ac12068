package verifier

import (
	"errors"
	"fmt"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
)

// NewPolicyCheck returns the check the admin API runs on every policy
// upload. A runtime policy must have the shape of Keylime's runtime policy
// (no other top-level member: a boot policy uploaded as a runtime policy is
// refused), a boot policy Vigil's or Keylime's boot format, a PCR policy
// Keylime's tpm_policy or Vigil's PCR format (package pcrpolicy). A DSSE envelope
// (as `keylime-policy sign runtime` or `vigil policy sign` write) is
// accepted only when one of its signatures verifies against one of keys and
// its payload type is Keylime's; its payload must then be a policy of the
// kind. A plain (unsigned) policy is accepted as before: keys do not make
// signatures mandatory.
func NewPolicyCheck(keys []dsse.PublicKey) PolicyCheck {
	return func(kind PolicyKind, body []byte) error {
		switch kind {
		case PolicyRuntime, PolicyBoot, PolicyPCR:
		default:
			return fmt.Errorf("unknown policy kind %q", kind)
		}
		if dsse.IsEnvelope(body) {
			payload, err := dsse.Open(body, dsse.PayloadTypeKeylime, keys)
			if errors.Is(err, dsse.ErrNoKeys) {
				return fmt.Errorf("signed policy refused: %w (start the verifier with --policy-key FILE)", err)
			}
			if err != nil {
				return fmt.Errorf("signed policy refused: %w", err)
			}
			body = payload
		}
		return parsePolicy(kind, body)
	}
}

// policyTooLarge is the admin API's answer (413) to a policy upload over
// MaxPolicy; it names the limit.
var policyTooLarge = fmt.Sprintf("policy over the size limit of %d MiB (%d bytes)", MaxPolicy>>20, MaxPolicy)

// CheckPolicy validates a policy body before it is stored, with no policy
// signing key: a signed (DSSE) policy is refused. NewPolicyCheck(keys)
// accepts the ones keys verify.
func CheckPolicy(kind PolicyKind, body []byte) error {
	return NewPolicyCheck(nil)(kind, body)
}

func parsePolicy(kind PolicyKind, body []byte) error {
	var err error
	switch kind {
	case PolicyRuntime:
		_, err = ima.ParsePolicy(body)
	case PolicyBoot:
		_, err = bootpolicy.Parse(body)
	case PolicyPCR:
		_, err = pcrpolicy.Parse(body)
	}
	return err
}

// storedPolicyBody is the policy in a stored body: a DSSE envelope's
// payload, or the body itself. The envelope's signature is not checked
// again: the policy check did it when the body was uploaded, and a verifier
// restarted without that key must go on judging hosts by it.
func storedPolicyBody(body []byte) ([]byte, error) {
	if !dsse.IsEnvelope(body) {
		return body, nil
	}
	e, err := dsse.Parse(body)
	if err != nil {
		return nil, err
	}
	return e.UnverifiedPayload()
}
