package verifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
)

// NewPolicyCheck returns the check the admin API runs on every policy
// upload. A runtime policy must have the shape of Keylime's runtime policy
// (no other top-level member: a boot policy uploaded as a runtime policy is
// refused), a boot policy Vigil's or Keylime's boot format. A DSSE envelope
// (as `keylime-policy sign runtime` or `vigil policy sign` write) is
// accepted only when one of its signatures verifies against one of keys and
// its payload type is Keylime's; its payload must then be a policy of the
// kind. A plain (unsigned) policy is accepted as before: keys do not make
// signatures mandatory.
func NewPolicyCheck(keys []dsse.PublicKey) PolicyCheck {
	return func(kind PolicyKind, body []byte) error {
		switch kind {
		case PolicyRuntime, PolicyBoot:
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

// The runtime checker's state (Agent.IMAState) is stored after every
// verdict and read before the next, so it has a compact binary form of its
// own rather than CBOR, whose reflective encoding and decoding cost more
// than checking the entries:
//
//	0x01                         format version
//	uvarint                      entries verified
//	byte                         number of banks, then per bank, by name:
//	  byte, bytes                  bank name ("sha1", "sha256")
//	  byte, bytes                  PCR 10 value after the last entry
//	uvarint                      number of keys learned, then per key:
//	  uvarint, bytes               keyring
//	  uint32 (big endian)          key ID
//	  uvarint, bytes               DER public key
//
// States stored before it are CBOR maps of ima.State, which begin with a
// byte from 0xa0 to 0xbf; they are still read, and rewritten in the binary
// form at the next verdict.
const imaStateV1 = 0x01

// maxStateBanks bounds the banks of a stored state: IMA knows a handful.
const maxStateBanks = 8

// appendIMAState appends st in the binary form, banks ordered by name. A
// state the form cannot hold (more banks, or names or values longer than
// its length bytes count) is written in the CBOR form instead; ima.Verify
// never returns one.
func appendIMAState(dst []byte, st ima.State) ([]byte, error) {
	var namesBuf [maxStateBanks]string
	names := namesBuf[:0]
	for name, v := range st.PCR10 {
		if len(names) == maxStateBanks || len(name) > 255 || len(v) > 255 {
			b, err := wire.Marshal(st)
			return append(dst, b...), err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	dst = append(dst, imaStateV1)
	dst = binary.AppendUvarint(dst, st.Entries)
	dst = append(dst, byte(len(names)))
	for _, name := range names {
		v := st.PCR10[name]
		dst = append(dst, byte(len(name)))
		dst = append(dst, name...)
		dst = append(dst, byte(len(v)))
		dst = append(dst, v...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(st.Keys)))
	for _, k := range st.Keys {
		dst = binary.AppendUvarint(dst, uint64(len(k.Keyring)))
		dst = append(dst, k.Keyring...)
		dst = binary.BigEndian.AppendUint32(dst, k.KeyID)
		dst = binary.AppendUvarint(dst, uint64(len(k.DER)))
		dst = append(dst, k.DER...)
	}
	return dst, nil
}

// decodeIMAState reads a stored state in either form. Errors name the byte
// offset; no length is trusted beyond the bytes present.
func decodeIMAState(b []byte) (ima.State, error) {
	if len(b) > 0 && b[0] != imaStateV1 {
		var st ima.State
		if err := wire.Unmarshal(b, &st); err != nil {
			return ima.State{}, fmt.Errorf("CBOR form: %w", err)
		}
		return st, nil
	}
	d := stateDecoder{b: b}
	if v := d.byte("format version"); d.err == nil && v != imaStateV1 {
		return ima.State{}, fmt.Errorf("byte offset 0: format version %#02x, want %#02x", v, imaStateV1)
	}
	st := ima.State{Entries: d.uvarint("entries")}
	banks := d.byte("bank count")
	if d.err == nil && banks > maxStateBanks {
		return ima.State{}, fmt.Errorf("byte offset %d: %d banks, at most %d", d.off-1, banks, maxStateBanks)
	}
	st.PCR10 = make(map[string]ima.HexBytes, banks)
	for range banks {
		at := d.off
		name := bankName(d.bytes(int(d.byte("bank name length")), "bank name"))
		value := d.bytes(int(d.byte("PCR 10 length")), "PCR 10 value")
		if d.err != nil {
			break
		}
		if _, dup := st.PCR10[name]; dup {
			return ima.State{}, fmt.Errorf("byte offset %d: bank %q given twice", at, name)
		}
		st.PCR10[name] = value
	}
	keys := d.uvarint("key count")
	// Each key takes at least 6 bytes (two lengths and the key ID).
	if d.err == nil && keys > uint64(len(b)-d.off)/6 {
		return ima.State{}, fmt.Errorf("byte offset %d: %d keys cannot fit in the %d bytes left", d.off, keys, len(b)-d.off)
	}
	if keys > 0 && d.err == nil {
		st.Keys = make([]ima.StateKey, 0, keys)
	}
	for i := uint64(0); i < keys && d.err == nil; i++ {
		var k ima.StateKey
		k.Keyring = string(d.bytes(d.length("keyring length"), "keyring"))
		k.KeyID = d.uint32("key ID")
		k.DER = d.bytes(d.length("key length"), "key")
		st.Keys = append(st.Keys, k)
	}
	if d.err != nil {
		return ima.State{}, d.err
	}
	if d.off != len(b) {
		return ima.State{}, fmt.Errorf("byte offset %d: %d trailing bytes", d.off, len(b)-d.off)
	}
	return st, nil
}

// stateDecoder reads the binary state; the first error sticks and later
// reads return zero values.
type stateDecoder struct {
	b   []byte
	off int
	err error
}

func (d *stateDecoder) fail(what, problem string) {
	if d.err == nil {
		d.err = fmt.Errorf("byte offset %d: %s: %s", d.off, what, problem)
	}
}

func (d *stateDecoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what, "truncated")
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *stateDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what, "truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

// length reads a byte count, which must fit in what is left.
func (d *stateDecoder) length(what string) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)-d.off) {
		d.fail(what, fmt.Sprintf("%d bytes, %d left", n, len(d.b)-d.off))
		return 0
	}
	return int(n)
}

func (d *stateDecoder) uint32(what string) uint32 {
	b := d.bytes(4, what)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// bytes returns the next n bytes, sharing the stored state (which is never
// written to: each verdict makes a new one), capped so an append copies.
func (d *stateDecoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail(what, fmt.Sprintf("%d bytes needed, %d left", n, len(d.b)-d.off))
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// bankName is string(b) without an allocation for the usual banks.
func bankName(b []byte) string {
	switch string(b) {
	case "sha1":
		return "sha1"
	case "sha256":
		return "sha256"
	}
	return string(b)
}
