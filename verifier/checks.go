package verifier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// PolicyChecks implements the engine's runtime (and boot) checks over the
// ima and bootpolicy packages, with policies compiled once and cached by
// name. The service drops a name from the cache when a new version of it is
// stored.
type PolicyChecks struct {
	Store Store

	// mu guards the compiled policies: read-locked on every verdict,
	// write-locked only to compile a policy or forget one, so a new version
	// can never be overwritten by a compile of the old one in flight.
	mu      sync.RWMutex
	runtime map[string]*ima.Policy
	boot    map[string]*bootpolicy.Policy
}

// Forget drops a policy from the cache (a new version was stored).
func (c *PolicyChecks) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.runtime, name)
	delete(c.boot, name)
}

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

func (c *PolicyChecks) bootPolicy(name string) (*bootpolicy.Policy, error) {
	c.mu.RLock()
	p, ok := c.boot[name]
	c.mu.RUnlock()
	if ok {
		return p, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.boot[name]; ok {
		return p, nil
	}
	stored, err := c.Store.GetPolicy(context.Background(), name)
	if err != nil {
		return nil, err
	}
	if stored.Kind != PolicyBoot {
		return nil, fmt.Errorf("policy %q is a %s policy", name, stored.Kind)
	}
	body, err := storedPolicyBody(stored.Body)
	if err == nil {
		p, err = bootpolicy.Parse(body)
	}
	if err != nil {
		return nil, fmt.Errorf("boot policy %q: %w", name, err)
	}
	if c.boot == nil {
		c.boot = make(map[string]*bootpolicy.Policy)
	}
	c.boot[name] = p
	return p, nil
}

// VerifyBoot implements BootVerifier: the log must replay to the quoted
// PCRs 0-9 and its boot state must meet the policy.
func (c *PolicyChecks) VerifyBoot(log []byte, quoted evidence.PCRValues, policy string) error {
	pol, err := c.bootPolicy(policy)
	if err != nil {
		return Fail(ReasonPolicyViolation, "boot_policy_unavailable", "%v", err)
	}
	l, err := bootlog.Parse(log)
	if err != nil {
		return Fail(ReasonInvalidEvidence, "boot_log_malformed", "%v", err)
	}
	v, err := l.Verify(quoted)
	if err != nil {
		return evidenceFailure(ReasonInvalidEvidence, err)
	}
	bank, _ := evidence.ParseBank(pol.Bank)
	st, err := v.State(bank)
	if err != nil {
		return Fail(ReasonPolicyViolation, string(bootpolicy.ReasonStateMissing), "%v", err)
	}
	if fs := pol.Evaluate(st); len(fs) > 0 {
		detail := fs[0].Error()
		if len(fs) > 1 {
			detail = fmt.Sprintf("%s (and %d more)", detail, len(fs)-1)
		}
		return &Failure{Reason: ReasonPolicyViolation, Check: string(fs[0].Reason), Detail: detail}
	}
	return nil
}

func evidenceFailure(r Reason, err error) *Failure {
	var f *evidence.Failure
	if errors.As(err, &f) {
		return &Failure{Reason: r, Check: string(f.Reason), Detail: err.Error()}
	}
	return &Failure{Reason: r, Detail: err.Error()}
}

func (c *PolicyChecks) runtimePolicy(name string) (*ima.Policy, error) {
	c.mu.RLock()
	p, ok := c.runtime[name]
	c.mu.RUnlock()
	if ok {
		return p, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.runtime[name]; ok {
		return p, nil
	}
	stored, err := c.Store.GetPolicy(context.Background(), name)
	if err != nil {
		return nil, err
	}
	if stored.Kind != PolicyRuntime {
		return nil, fmt.Errorf("policy %q is a %s policy", name, stored.Kind)
	}
	body, err := storedPolicyBody(stored.Body)
	if err == nil {
		p, err = ima.ParsePolicy(body)
	}
	if err != nil {
		return nil, fmt.Errorf("runtime policy %q: %w", name, err)
	}
	if c.runtime == nil {
		c.runtime = make(map[string]*ima.Policy)
	}
	c.runtime[name] = p
	return p, nil
}

// imaBank maps the TPM banks Vigil quotes to IMA's names for them.
func imaBank(bank tpm2.TPMAlgID) (ima.Algorithm, bool) {
	switch bank {
	case tpm2.TPMAlgSHA1:
		return ima.SHA1, true
	case tpm2.TPMAlgSHA256:
		return ima.SHA256, true
	}
	return ima.AlgUnknown, false
}

// VerifyRuntime implements RuntimeVerifier.
func (c *PolicyChecks) VerifyRuntime(state []byte, offset uint64, entries []byte, quoted evidence.PCRValues, policy string) ([]byte, uint64, error) {
	pol, err := c.runtimePolicy(policy)
	if err != nil {
		return nil, 0, Fail(ReasonPolicyViolation, "runtime_policy_unavailable", "%v", err)
	}
	pcr10 := make(map[ima.Algorithm][]byte, 2)
	var boot map[ima.Algorithm]map[int][]byte
	for bank, values := range quoted {
		alg, ok := imaBank(bank)
		if !ok {
			continue
		}
		if v, ok := values[10]; ok {
			pcr10[alg] = v
		}
		if _, ok := values[0]; ok && offset == 0 {
			if boot == nil {
				boot = make(map[ima.Algorithm]map[int][]byte, 2)
			}
			boot[alg] = values
		}
	}
	if len(pcr10) == 0 {
		return nil, 0, Fail(ReasonInvalidEvidence, "pcr_missing", "a runtime policy applies but PCR 10 was not quoted")
	}
	var st ima.State
	if len(state) > 0 {
		if st, err = decodeIMAState(state); err != nil {
			return nil, 0, fmt.Errorf("stored IMA state: %w", err)
		}
	} else {
		algs := make([]ima.Algorithm, 0, len(pcr10))
		for a := range pcr10 {
			algs = append(algs, a)
		}
		st = ima.NewState(algs...)
	}
	if st.Entries != offset {
		return nil, 0, Fail(ReasonInvalidEvidence, "ima_offset_mismatch", "entries start at %d, %d are verified", offset, st.Entries)
	}
	opts := ima.VerifyOptions{MaxFailures: 5, BootPCRs: boot}
	res, err := ima.Verify(st, entries, pcr10, pol, opts)
	if err != nil {
		var pe *ima.ParseError
		if errors.As(err, &pe) {
			return nil, 0, Fail(ReasonInvalidEvidence, "ima_malformed", "%v", err)
		}
		return nil, 0, Fail(ReasonInvalidEvidence, "ima_unusable", "%v", err)
	}
	if !res.OK() {
		f := res.Failures[0]
		reason := ReasonInvalidEvidence
		switch f.Rule {
		case ima.RuleNotInPolicy, ima.RuleDigestMismatch, ima.RuleKeyring, ima.RuleViolation, ima.RuleUnknownTemplate, ima.RuleBootAggregate:
			reason = ReasonPolicyViolation
		}
		detail := f.Error()
		if res.FailureCount > 1 {
			detail = fmt.Sprintf("%s (and %d more)", detail, res.FailureCount-1)
		}
		return nil, 0, &Failure{Reason: reason, Check: "ima_" + string(f.Rule), Detail: detail}
	}
	b, err := appendIMAState(nil, res.State)
	if err != nil {
		return nil, 0, err
	}
	return b, res.State.Entries, nil
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
