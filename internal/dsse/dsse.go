package dsse

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PayloadTypeKeylime is the payload type of a Keylime runtime policy.
const PayloadTypeKeylime = "application/vnd.keylime+json"

// MaxSignatures bounds the signatures of one envelope: each costs a
// signature check per configured key.
const MaxSignatures = 16

// Errors a verification can end with; each is wrapped with the detail.
var (
	// ErrNoKeys: the envelope is signed, but no key is configured to
	// check it with.
	ErrNoKeys = errors.New("no policy signing key configured to verify a DSSE-signed document")
	// ErrPayloadType: the envelope holds a payload of another type.
	ErrPayloadType = errors.New("wrong DSSE payload type")
	// ErrNoValidSignature: no signature verifies against any key.
	ErrNoValidSignature = errors.New("no signature verifies")
)

// Signature is one signature of an envelope, encoded as in the JSON.
type Signature struct {
	KeyID string `json:"keyid,omitempty"`
	Sig   string `json:"sig"`
}

// Envelope is a DSSE envelope, its fields encoded as in the JSON.
type Envelope struct {
	Payload     string      `json:"payload"`
	PayloadType string      `json:"payloadType"`
	Signatures  []Signature `json:"signatures"`
}

// FormatError is an envelope that cannot be read; Field names the place.
type FormatError struct {
	Field string
	Msg   string
}

func (e *FormatError) Error() string {
	if e.Field == "" {
		return "DSSE envelope: " + e.Msg
	}
	return fmt.Sprintf("DSSE envelope %s: %s", e.Field, e.Msg)
}

// IsEnvelope reports whether data is a JSON object with a "payload" member
// (spelt exactly): what a DSSE envelope has and a policy never does.
func IsEnvelope(data []byte) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return false
	}
	_, ok := top["payload"]
	return ok
}

// Parse reads an envelope: exactly the DSSE members, a payload type, at
// least one and at most MaxSignatures signatures, and every payload and
// signature decodable (Keylime's decoding: hex, else padded base64, standard
// or URL-safe alphabet).
func Parse(data []byte) (*Envelope, error) {
	// Member names are matched exactly (encoding/json alone would take
	// "PAYLOAD" for "payload"), and no others are allowed.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, &FormatError{Msg: "not a JSON object: " + err.Error()}
	}
	if err := onlyMembers("", top, "payload", "payloadType", "signatures"); err != nil {
		return nil, err
	}
	var sigs []map[string]json.RawMessage
	if raw, ok := top["signatures"]; ok {
		if err := json.Unmarshal(raw, &sigs); err != nil {
			return nil, &FormatError{Field: "signatures", Msg: "not a list of objects: " + err.Error()}
		}
	}
	for i, sig := range sigs {
		if err := onlyMembers(fmt.Sprintf("signatures[%d].", i), sig, "keyid", "sig"); err != nil {
			return nil, err
		}
	}
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, &FormatError{Msg: "not of the DSSE shape: " + err.Error()}
	}
	if e.PayloadType == "" {
		return nil, &FormatError{Field: "payloadType", Msg: "missing or empty"}
	}
	if _, err := decode(e.Payload); err != nil {
		return nil, &FormatError{Field: "payload", Msg: err.Error()}
	}
	if len(e.Signatures) == 0 {
		return nil, &FormatError{Field: "signatures", Msg: "none: an unsigned envelope proves nothing"}
	}
	if len(e.Signatures) > MaxSignatures {
		return nil, &FormatError{Field: "signatures", Msg: fmt.Sprintf("%d signatures, at most %d", len(e.Signatures), MaxSignatures)}
	}
	for i, s := range e.Signatures {
		b, err := decode(s.Sig)
		if err == nil && len(b) == 0 {
			err = errors.New("empty")
		}
		if err != nil {
			return nil, &FormatError{Field: fmt.Sprintf("signatures[%d].sig", i), Msg: err.Error()}
		}
	}
	return &e, nil
}

// onlyMembers refuses a member of obj not in names.
func onlyMembers(prefix string, obj map[string]json.RawMessage, names ...string) error {
	var unknown []string
	for k := range obj {
		if !slices.Contains(names, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return &FormatError{Field: prefix + strconv.Quote(unknown[0]), Msg: "not a DSSE member (want " + strings.Join(names, ", ") + ")"}
}

// decode reads a payload or signature as Keylime's dsse.b64dec does: hex
// when the text is hex, else padded base64 in the standard alphabet, else in
// the URL-safe one. Unpadded base64 is refused, as Keylime refuses it.
func decode(s string) ([]byte, error) {
	if s == "" {
		return []byte{}, nil
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) > 0 {
		return b, nil
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil {
		return b, nil
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(strings.NewReplacer("-", "+", "_", "/").Replace(s)); err == nil {
		return b, nil
	}
	return nil, errors.New("not hex or padded base64")
}

// PAE is DSSE's pre-authentication encoding, what is signed:
// "DSSEv1" SP len(type) SP type SP len(payload) SP payload.
func PAE(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, len(payloadType)+len(payload)+32)
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// UnverifiedPayload decodes the payload without checking any signature.
// Only for a document whose envelope was verified before (a policy the
// verifier checked when it was uploaded and stored).
func (e *Envelope) UnverifiedPayload() ([]byte, error) {
	b, err := decode(e.Payload)
	if err != nil {
		return nil, &FormatError{Field: "payload", Msg: err.Error()}
	}
	return b, nil
}

// Verified is the outcome of a successful verification.
type Verified struct {
	PayloadType string
	Payload     []byte
	// Signers are the keys that verified a signature.
	Signers []PublicKey
}

// Verify checks the signatures against keys: it succeeds when at least one
// signature verifies under one key. An error wraps ErrNoKeys or
// ErrNoValidSignature and names each signature and the keys tried.
func (e *Envelope) Verify(keys []PublicKey) (*Verified, error) {
	payload, err := e.UnverifiedPayload()
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w (%d signature(s), first keyid %s)", ErrNoKeys, len(e.Signatures), shortID(firstKeyID(e)))
	}
	pae := PAE(e.PayloadType, payload)
	digest := sha256.Sum256(pae)
	v := &Verified{PayloadType: e.PayloadType, Payload: payload}
	for _, s := range e.Signatures {
		sig, err := decode(s.Sig)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if verifyDigest(k.Key, digest[:], sig) && !containsKey(v.Signers, k) {
				v.Signers = append(v.Signers, k)
			}
		}
	}
	if len(v.Signers) > 0 {
		return v, nil
	}
	var sigs []string
	for i, s := range e.Signatures {
		sigs = append(sigs, fmt.Sprintf("signatures[%d] (keyid %s)", i, shortID(s.KeyID)))
	}
	var tried []string
	for _, k := range keys {
		tried = append(tried, k.String())
	}
	return nil, fmt.Errorf("%w: %s verified by none of the %d configured key(s): %s",
		ErrNoValidSignature, strings.Join(sigs, ", "), len(keys), strings.Join(tried, ", "))
}

func firstKeyID(e *Envelope) string {
	if len(e.Signatures) == 0 {
		return ""
	}
	return e.Signatures[0].KeyID
}

func containsKey(ks []PublicKey, k PublicKey) bool {
	for _, x := range ks {
		if x.Source == k.Source && x.KeyID == k.KeyID {
			return true
		}
	}
	return false
}

// shortID abbreviates a key ID for messages (an x509 key ID is a whole
// base64 certificate).
func shortID(id string) string {
	switch {
	case id == "":
		return "none"
	case len(id) > 24:
		return id[:16] + "…"
	}
	return id
}

func verifyDigest(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		if rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil {
			return true
		}
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// Open reads data as an envelope of payloadType and returns its payload
// once a signature verifies against keys. Errors wrap ErrNoKeys,
// ErrPayloadType or ErrNoValidSignature, or are a *FormatError.
func Open(data []byte, payloadType string, keys []PublicKey) ([]byte, error) {
	e, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if e.PayloadType != payloadType {
		return nil, fmt.Errorf("%w: %q, want %q", ErrPayloadType, e.PayloadType, payloadType)
	}
	v, err := e.Verify(keys)
	if err != nil {
		return nil, err
	}
	return v.Payload, nil
}

// Sign makes an envelope of payload signed by each signer, as Keylime's
// dsse.Sign does (standard base64, the signer's key ID).
func Sign(payloadType string, payload []byte, signers ...*Signer) (*Envelope, error) {
	if payloadType == "" {
		return nil, errors.New("dsse: empty payload type")
	}
	if len(signers) == 0 {
		return nil, errors.New("dsse: no signer")
	}
	pae := PAE(payloadType, payload)
	e := &Envelope{Payload: base64.StdEncoding.EncodeToString(payload), PayloadType: payloadType}
	for _, s := range signers {
		sig, err := s.sign(pae)
		if err != nil {
			return nil, fmt.Errorf("dsse: signing with %s: %w", s.Source, err)
		}
		e.Signatures = append(e.Signatures, Signature{KeyID: s.KeyID, Sig: base64.StdEncoding.EncodeToString(sig)})
	}
	return e, nil
}

// Marshal writes the envelope as Keylime does (Python's json.dumps:
// members in DSSE order, ", " and ": " separators).
func (e *Envelope) Marshal() ([]byte, error) {
	str := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"payload": %s, "payloadType": %s, "signatures": [`, str(e.Payload), str(e.PayloadType))
	for i, s := range e.Signatures {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{")
		if s.KeyID != "" {
			fmt.Fprintf(&b, `"keyid": %s, `, str(s.KeyID))
		}
		fmt.Fprintf(&b, `"sig": %s}`, str(s.Sig))
	}
	b.WriteString("]}")
	return []byte(b.String()), nil
}

func (s *Signer) sign(pae []byte) ([]byte, error) {
	digest := sha256.Sum256(pae)
	switch k := s.key.(type) {
	case *ecdsa.PrivateKey:
		return ecdsa.SignASN1(rand.Reader, k, digest[:])
	case *rsa.PrivateKey:
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	}
	return nil, fmt.Errorf("unsupported key type %T", s.key)
}
