package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// ContentType is the media type of every agent-facing message.
const ContentType = "application/cbor"

// Registrar paths agents call.
const (
	PathRegister = "/v1/register"
	PathActivate = "/v1/activate"
)

// MaxMessage is the largest agent message accepted by default.
const MaxMessage = 1 << 20

// RegisterRequest asks the registrar to enroll an agent's AK.
type RegisterRequest struct {
	AgentID string `cbor:"agent_id"`
	// EKPublic is the marshalled TPMT_PUBLIC of the endorsement key.
	EKPublic []byte `cbor:"ek_pub"`
	// EKCert is the DER EK certificate from the TPM's NV, if it has one.
	EKCert []byte `cbor:"ek_cert,omitempty"`
	// AKPublic is the marshalled TPMT_PUBLIC of the attestation key.
	AKPublic []byte `cbor:"ak_pub"`
}

// RegisterResponse carries the credential-activation challenge: a secret
// sealed with TPM2_MakeCredential to the EK and the AK's name.
type RegisterResponse struct {
	AgentID string `cbor:"agent_id"`
	// CredentialBlob is the TPM2B_ID_OBJECT's contents.
	CredentialBlob []byte `cbor:"credential_blob"`
	// Secret is the TPM2B_ENCRYPTED_SECRET's contents.
	Secret []byte `cbor:"secret"`
}

// ActivateRequest proves the agent's TPM recovered the secret.
type ActivateRequest struct {
	AgentID string `cbor:"agent_id"`
	// Proof is ActivationProof(secret, agent ID, AK name).
	Proof []byte `cbor:"proof"`
}

// ActivateResponse confirms the AK is trusted.
type ActivateResponse struct {
	AgentID string `cbor:"agent_id"`
	Active  bool   `cbor:"active"`
}

// Error is the body of every 4xx/5xx answer to an agent.
type Error struct {
	Error string `cbor:"error" json:"error"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	opts := cbor.CoreDetEncOptions()
	// Timestamps keep their nanoseconds: the default (Unix seconds) would
	// make a verdict at 12:00:00.9 look a second old at once, and liveness
	// windows are a few seconds.
	opts.Time = cbor.TimeRFC3339Nano
	encMode, err = opts.EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
		MaxArrayElements:  1 << 17,
		MaxMapPairs:       1 << 17,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v in deterministic CBOR.
func Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case Verdict:
		return appendVerdict(make([]byte, 0, 256), &m), nil
	case *Verdict:
		if m != nil {
			return appendVerdict(make([]byte, 0, 256), m), nil
		}
	case Challenge:
		return appendChallenge(make([]byte, 0, 192), &m), nil
	case *Challenge:
		if m != nil {
			return appendChallenge(make([]byte, 0, 192), m), nil
		}
	case Evidence:
		return AppendEvidence(make([]byte, 0, evidenceSize(&m)), &m), nil
	case *Evidence:
		if m != nil {
			return AppendEvidence(make([]byte, 0, evidenceSize(m)), m), nil
		}
	}
	return encMode.Marshal(v)
}

// Unmarshal decodes exactly one CBOR message into v, strictly. Errors name
// the message field at fault.
func Unmarshal(data []byte, v any) error { return unmarshal(data, v, false) }

// unmarshal is Unmarshal; owned says data is the caller's to give away, so
// decoded byte strings may share it instead of a copy.
func unmarshal(data []byte, v any, owned bool) error {
	// The messages exchanged on every attestation try a decoder written
	// for them first (fast.go, fastdec.go); it declines anything but the
	// form Marshal writes, and decodes only into zero targets (the general
	// decoder merges into what a target holds).
	switch m := v.(type) {
	case *Evidence:
		if m != nil && m.isZero() && decodeEvidenceFast(data, m, owned) {
			return nil
		}
	case *Verdict:
		if m != nil && m.isZero() && decodeVerdictFast(data, m, owned) {
			return nil
		}
	case *Challenge:
		if m != nil && m.isZero() && decodeChallengeFast(data, m, owned) {
			return nil
		}
	}
	rest, err := decMode.UnmarshalFirst(data, v)
	if err != nil {
		return describe(err, v)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes of trailing data after the CBOR message", len(rest))
	}
	return nil
}

// ErrTooLarge is returned by Read for bodies over the limit.
var ErrTooLarge = errors.New("message too large")

// Read reads at most limit bytes from r and decodes them into v. The body
// is read into a buffer of its own, which v's byte fields may then share.
func Read(r io.Reader, limit int64, v any) error {
	body, err := readLimited(r, limit, nil)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return errors.New("empty body: a CBOR message is required")
	}
	return unmarshal(body, v, true)
}

// readLimited appends r's contents to buf, failing with ErrTooLarge past
// limit bytes. It grows buf by doubling from what it has, instead of
// io.ReadAll's fresh 512 bytes per call.
func readLimited(r io.Reader, limit int64, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			grow := max(cap(buf), 4096)
			if room := limit + 1 - int64(len(buf)); int64(grow) > room {
				grow = int(room)
			}
			buf = slices.Grow(buf, grow)
		}
		free := buf[len(buf):cap(buf)]
		if room := limit + 1 - int64(len(buf)); int64(len(free)) > room {
			free = free[:room]
		}
		n, err := r.Read(free)
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// describe rewrites decoder errors in terms of the message's field names.
func describe(err error, v any) error {
	var typeErr *cbor.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.StructFieldName != "" {
		return fmt.Errorf("field %q: %s value where %s is expected", wireName(v, typeErr.StructFieldName), typeErr.CBORType, typeErr.GoType)
	}
	var unknown *cbor.UnknownFieldError
	if errors.As(err, &unknown) {
		return fmt.Errorf("unknown field at map entry %d", unknown.Index)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("truncated CBOR message")
	}
	return fmt.Errorf("malformed CBOR: %s", strings.TrimPrefix(err.Error(), "cbor: "))
}

// wireName maps a Go field path ("RegisterRequest.EKPublic") to its CBOR key.
func wireName(v any, path string) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := path
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		name = path[i+1:]
	}
	if t == nil || t.Kind() != reflect.Struct {
		return name
	}
	if f, ok := t.FieldByName(name); ok {
		if tag := f.Tag.Get("cbor"); tag != "" {
			return strings.Split(tag, ",")[0]
		}
	}
	return name
}

// ActivationProof is what an agent returns after TPM2_ActivateCredential:
// an HMAC keyed with the recovered secret over the agent ID and the AK name.
// Only a TPM holding the EK could recover the secret, and it releases it only
// for the AK of that name, so a correct proof binds the AK to the EK. The
// secret itself never travels back.
func ActivationProof(secret []byte, agentID string, akName []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("vigil activation proof v1\x00"))
	m.Write([]byte(agentID))
	m.Write([]byte{0})
	m.Write(akName)
	return m.Sum(nil)
}
