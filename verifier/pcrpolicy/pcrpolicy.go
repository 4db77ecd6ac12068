// Package pcrpolicy reads static PCR policies and holds quoted PCR values
// to them: for any PCR 0-23 of any bank a TPM has (sha1, sha256, sha384,
// sha512), a list of the values it may have.
//
// Two formats are read, told apart by their members:
//
// Keylime's tpm_policy, unchanged: PCR indices as keys, each with a hex
// digest or a list of them, and an optional "mask" (the PCRs Keylime's
// agent quotes, as a hex or decimal integer):
//
//	{"22": ["0000…", "ffff…"], "15": ["…"], "mask": "0x408000"}
//
// Keylime compares the values in the one bank its hash_alg names, so the
// bank is decided by the digests' length (20 bytes sha1, 32 sha256, 48
// sha384, 64 sha512), and every digest of such a policy must have the same
// length. Every PCR with values must be in the mask, when there is one;
// mask bits without values are ignored (Keylime's verifier adds PCR 10 and
// the measured-boot PCRs to the mask itself: in Vigil the runtime and boot
// policies ask for those).
//
// Vigil's, which names the banks:
//
//	{"version": 1, "pcrs": {"sha256": {"16": ["hex", …]}, "sha1": {"16": ["hex"]}}}
//
// Parsing is strict: an unknown member, a PCR index outside 0-23, a value
// that is not hex or not a digest of its bank's length, an unknown bank, a
// PCR with no values, a policy with no PCRs, or a member given twice is an
// *Error naming the member at fault.
package pcrpolicy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Version is the version of Vigil's format this package writes and reads.
const Version = 1

// MaxPCR is the highest PCR index (a PC Client TPM has 24).
const MaxPCR = evidence.MaxPCR

// Banks are the banks a policy may name, in the order selections and
// reports list them.
var Banks = []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512}

// Reasons a check fails for.
const (
	// ReasonNotAllowed: a quoted PCR value is not one of its allowed values.
	ReasonNotAllowed evidence.Reason = "pcr_not_allowed"
	// ReasonNotQuoted: a PCR of the policy is not among the quoted values.
	ReasonNotQuoted evidence.Reason = "pcr_not_quoted"
)

// Error is a policy that cannot be read: Field names the member at fault
// as a path ("pcrs.sha256.16[1]", "22[0]", "mask"), empty for the document.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "PCR policy: " + e.Msg
	}
	return "PCR policy: field " + e.Field + ": " + e.Msg
}

func errorf(field, format string, args ...any) *Error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Policy is a compiled PCR policy. It is immutable once made, so one may be
// shared by every verdict.
type Policy struct {
	// allowed holds, per bank and PCR, the allowed digests: sorted and
	// unique, for output; set the same digests keyed by their bytes, for
	// the check.
	allowed map[tpm2.TPMAlgID]map[int][][]byte
	set     map[tpm2.TPMAlgID]map[int]map[string]struct{}
	// keylime is set for a policy read from Keylime's format.
	keylime bool
}

// FromKeylime says whether the policy was read from Keylime's tpm_policy.
func (p *Policy) FromKeylime() bool { return p.keylime }

// Banks lists the banks the policy names, in the order of Banks.
func (p *Policy) Banks() []tpm2.TPMAlgID {
	var out []tpm2.TPMAlgID
	for _, b := range Banks {
		if len(p.allowed[b]) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// PCRs lists the PCRs the policy names in bank, ascending.
func (p *Policy) PCRs(bank tpm2.TPMAlgID) []int {
	out := make([]int, 0, len(p.allowed[bank]))
	for i := range p.allowed[bank] {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// Allowed returns the allowed values of one PCR, sorted; nil when the
// policy does not name it. The caller must not change them.
func (p *Policy) Allowed(bank tpm2.TPMAlgID, pcr int) [][]byte { return p.allowed[bank][pcr] }

// Count is the number of (bank, PCR) pairs the policy checks.
func (p *Policy) Count() int {
	n := 0
	for _, pcrs := range p.allowed {
		n += len(pcrs)
	}
	return n
}

// New makes a policy from allowed values: bank → PCR → the values it may
// have. It is validated as a parsed policy is.
func New(allowed map[tpm2.TPMAlgID]map[int][][]byte) (*Policy, error) {
	b := newBuilder()
	for bank, pcrs := range allowed {
		h, ok := tpmfacts.HashOf(bank)
		if !ok {
			return nil, errorf("", "unknown PCR bank %s", tpmfacts.BankName(bank))
		}
		name := tpmfacts.BankName(bank)
		for pcr, values := range pcrs {
			field := name + "." + strconv.Itoa(pcr)
			if pcr < 0 || pcr > MaxPCR {
				return nil, errorf(field, "PCR index %d is not 0-%d", pcr, MaxPCR)
			}
			if len(values) == 0 {
				return nil, errorf(field, "no allowed values: list at least one")
			}
			for i, v := range values {
				if len(v) != h.Size() {
					return nil, errorf(fmt.Sprintf("%s[%d]", field, i), "%d bytes: %s digests are %d", len(v), name, h.Size())
				}
				b.add(bank, pcr, v)
			}
		}
	}
	return b.done(false)
}

// Exactly is a policy that allows each of the given PCR values and nothing
// else, e.g. from a known-good host's quoted values.
func Exactly(values evidence.PCRValues) (*Policy, error) {
	allowed := make(map[tpm2.TPMAlgID]map[int][][]byte, len(values))
	for bank, pcrs := range values {
		allowed[bank] = make(map[int][][]byte, len(pcrs))
		for i, v := range pcrs {
			allowed[bank][i] = [][]byte{v}
		}
	}
	return New(allowed)
}

// Parse reads a PCR policy in Keylime's tpm_policy format or Vigil's, told
// apart by their members: Vigil's has "version" and "pcrs", Keylime's PCR
// indices and "mask".
func Parse(data []byte) (*Policy, error) {
	members, err := object(data, "")
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.key == "version" || m.key == "pcrs" {
			return parseVigil(members)
		}
	}
	return parseKeylime(members)
}

// member is one member of a JSON object, in document order.
type member struct {
	key   string
	value json.RawMessage
}

// object reads a JSON object's members, refusing anything else, a member
// given twice, and trailing data. field names the object in errors.
func object(data []byte, field string) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, errorf(field, "not JSON: %v", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errorf(field, "want a JSON object, got %s", kindOf(tok))
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errorf(field, "not JSON: %v", jsonErr(err))
		}
		key := tok.(string) // object keys are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errorf(join(field, key), "not JSON: %v", jsonErr(err))
		}
		if seen[key] {
			return nil, errorf(join(field, key), "given twice")
		}
		seen[key] = true
		out = append(out, member{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, errorf(field, "not JSON: %v", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(field, "trailing data after the JSON object")
	}
	return out, nil
}

func jsonErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("unexpected end of input")
	}
	return err
}

func kindOf(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// pcrIndex reads a PCR index key: decimal digits, 0-23.
func pcrIndex(field, key string) (int, error) {
	if key == "" || strings.Trim(key, "0123456789") != "" {
		return 0, errorf(field, "%q is not a PCR index (0-%d)", key, MaxPCR)
	}
	n, err := strconv.Atoi(key)
	if err != nil || n > MaxPCR {
		return 0, errorf(field, "PCR index %s is out of range: PCRs are 0-%d", key, MaxPCR)
	}
	return n, nil
}

// digest reads one hex digest.
func digest(field string, raw json.RawMessage) ([]byte, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || isNull(raw) {
		return nil, errorf(field, "want a hex digest string, got %s", describeRaw(raw))
	}
	if s == "" {
		return nil, errorf(field, "empty digest")
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return nil, errorf(field, "%q is not hex: %v", abbrev(s), err)
	}
	return v, nil
}

// isNull tells JSON null, which decodes into anything without an error.
func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func describeRaw(raw json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return "invalid JSON"
	}
	return kindOf(tok)
}

// abbrev shortens a long value for an error message.
func abbrev(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// digests reads a list of hex digests; single says a lone string is taken
// as a list of one (Keylime's leniency).
func digests(field string, raw json.RawMessage, single bool) ([][]byte, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || isNull(raw) {
		if single {
			var s string
			if json.Unmarshal(raw, &s) == nil && !isNull(raw) {
				v, err := digest(field, raw)
				if err != nil {
					return nil, err
				}
				return [][]byte{v}, nil
			}
			return nil, errorf(field, "want a hex digest or a list of them, got %s", describeRaw(raw))
		}
		return nil, errorf(field, "want a list of hex digests, got %s", describeRaw(raw))
	}
	if len(list) == 0 {
		return nil, errorf(field, "no allowed values: list at least one")
	}
	out := make([][]byte, 0, len(list))
	for i, r := range list {
		v, err := digest(fmt.Sprintf("%s[%d]", field, i), r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// bankOfLength is the bank whose digests have n bytes.
func bankOfLength(n int) (tpm2.TPMAlgID, bool) {
	for _, b := range Banks {
		if h, _ := tpmfacts.HashOf(b); h.Size() == n {
			return b, true
		}
	}
	return 0, false
}

func parseKeylime(members []member) (*Policy, error) {
	b := newBuilder()
	var mask *uint64
	var bank tpm2.TPMAlgID
	var bankFrom string // the first value's field, naming where the bank was decided
	var pcrs []int
	for _, m := range members {
		if m.key == "mask" {
			v, err := parseMask(m.value)
			if err != nil {
				return nil, err
			}
			mask = &v
			continue
		}
		if m.key == "" || strings.Trim(m.key, "0123456789") != "" {
			return nil, errorf(m.key, "unknown member: a Keylime tpm_policy has PCR indices (0-%d) and \"mask\"; Vigil's format has \"version\" and \"pcrs\"", MaxPCR)
		}
		pcr, err := pcrIndex(m.key, m.key)
		if err != nil {
			return nil, err
		}
		if slices.Contains(pcrs, pcr) {
			return nil, errorf(m.key, "PCR %d given twice", pcr)
		}
		pcrs = append(pcrs, pcr)
		values, err := digests(m.key, m.value, true)
		if err != nil {
			return nil, err
		}
		for i, v := range values {
			field := fmt.Sprintf("%s[%d]", m.key, i)
			vb, ok := bankOfLength(len(v))
			if !ok {
				return nil, errorf(field, "%d bytes is no PCR digest: want 20 (sha1), 32 (sha256), 48 (sha384) or 64 (sha512)", len(v))
			}
			if bankFrom == "" {
				bank, bankFrom = vb, field
			} else if vb != bank {
				return nil, errorf(field, "%d bytes (%s), but %s is %s: a Keylime tpm_policy holds digests of one bank; name several banks in Vigil's format",
					len(v), tpmfacts.BankName(vb), bankFrom, tpmfacts.BankName(bank))
			}
			b.add(bank, pcr, v)
		}
	}
	if mask != nil {
		for _, pcr := range pcrs {
			if *mask&(1<<pcr) == 0 {
				return nil, errorf("mask", "%#x does not select PCR %d, which the policy lists values for (Keylime would never find it in a quote)", *mask, pcr)
			}
		}
	}
	return b.done(true)
}

// parseMask reads Keylime's mask: a string holding a hex ("0x…") or decimal
// integer, as Python's int(mask, 0) reads it, of PCRs 0-23.
func parseMask(raw json.RawMessage) (uint64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, errorf("mask", "want a string such as \"0x408000\", got %s", describeRaw(raw))
	}
	var v uint64
	var err error
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		v, err = strconv.ParseUint(s[2:], 16, 64)
	case s != "" && strings.Trim(s, "0123456789") == "":
		v, err = strconv.ParseUint(s, 10, 64)
	default:
		err = errors.New("not an integer")
	}
	if err != nil {
		return 0, errorf("mask", "%q is not a hex (0x…) or decimal integer", abbrev(s))
	}
	if v>>(MaxPCR+1) != 0 {
		return 0, errorf("mask", "%q selects PCRs above %d", abbrev(s), MaxPCR)
	}
	return v, nil
}

func parseVigil(members []member) (*Policy, error) {
	b := newBuilder()
	var version, pcrs json.RawMessage
	for _, m := range members {
		switch m.key {
		case "version":
			version = m.value
		case "pcrs":
			pcrs = m.value
		default:
			return nil, errorf(m.key, "unknown member: Vigil's PCR policy has \"version\" and \"pcrs\"")
		}
	}
	if version == nil {
		return nil, errorf("version", "missing: want %d", Version)
	}
	var v int
	if err := json.Unmarshal(version, &v); err != nil || v != Version || isNull(version) {
		return nil, errorf("version", "%s: this build reads version %d", bytes.TrimSpace(version), Version)
	}
	if pcrs == nil {
		return nil, errorf("pcrs", "missing: want {\"sha256\": {\"16\": [\"hex\", …]}, …}")
	}
	banks, err := object(pcrs, "pcrs")
	if err != nil {
		return nil, err
	}
	seenBank := map[tpm2.TPMAlgID]string{}
	for _, bm := range banks {
		field := "pcrs." + bm.key
		bank, err := tpmfacts.ParseBank(bm.key)
		if err != nil {
			return nil, errorf(field, "unknown PCR bank %q: want sha1, sha256, sha384 or sha512", bm.key)
		}
		if prev, ok := seenBank[bank]; ok {
			return nil, errorf(field, "bank %s given twice (also as %q)", tpmfacts.BankName(bank), prev)
		}
		seenBank[bank] = bm.key
		h, _ := tpmfacts.HashOf(bank)
		entries, err := object(bm.value, field)
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			return nil, errorf(field, "no PCRs: list at least one, or leave the bank out")
		}
		seenPCR := map[int]bool{}
		for _, e := range entries {
			pfield := field + "." + e.key
			pcr, err := pcrIndex(pfield, e.key)
			if err != nil {
				return nil, err
			}
			if seenPCR[pcr] {
				return nil, errorf(pfield, "PCR %d given twice", pcr)
			}
			seenPCR[pcr] = true
			values, err := digests(pfield, e.value, false)
			if err != nil {
				return nil, err
			}
			for i, v := range values {
				if len(v) != h.Size() {
					return nil, errorf(fmt.Sprintf("%s[%d]", pfield, i), "%d bytes: %s digests are %d", len(v), tpmfacts.BankName(bank), h.Size())
				}
				b.add(bank, pcr, v)
			}
		}
	}
	return b.done(false)
}

// builder collects allowed values.
type builder struct {
	p *Policy
}

func newBuilder() builder {
	return builder{&Policy{
		allowed: map[tpm2.TPMAlgID]map[int][][]byte{},
		set:     map[tpm2.TPMAlgID]map[int]map[string]struct{}{},
	}}
}

func (b builder) add(bank tpm2.TPMAlgID, pcr int, v []byte) {
	p := b.p
	if p.set[bank] == nil {
		p.set[bank] = map[int]map[string]struct{}{}
		p.allowed[bank] = map[int][][]byte{}
	}
	if p.set[bank][pcr] == nil {
		p.set[bank][pcr] = map[string]struct{}{}
	}
	if _, dup := p.set[bank][pcr][string(v)]; dup {
		return
	}
	p.set[bank][pcr][string(v)] = struct{}{}
	p.allowed[bank][pcr] = append(p.allowed[bank][pcr], bytes.Clone(v))
}

func (b builder) done(keylime bool) (*Policy, error) {
	p := b.p
	if p.Count() == 0 {
		return nil, errorf("", "no PCRs: a PCR policy lists at least one PCR and its allowed values")
	}
	for _, pcrs := range p.allowed {
		for _, values := range pcrs {
			slices.SortFunc(values, bytes.Compare)
		}
	}
	p.keylime = keylime
	return p, nil
}

// MarshalJSON writes the policy in Vigil's format: banks in the order of
// Banks, PCRs ascending, values sorted, lowercase hex.
func (p *Policy) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"version":%d,"pcrs":{`, Version)
	for i, bank := range p.Banks() {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, "%q:{", tpmfacts.BankName(bank))
		for j, pcr := range p.PCRs(bank) {
			if j > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `"%d":[`, pcr)
			for k, v := range p.allowed[bank][pcr] {
				if k > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `"%x"`, v)
			}
			buf.WriteByte(']')
		}
		buf.WriteByte('}')
	}
	buf.WriteString("}}")
	return buf.Bytes(), nil
}

// Check holds quoted PCR values (those of a verified quote) to the policy:
// every PCR it names must be quoted, in its bank, with one of its allowed
// values. It returns every failure, ordered by PCR, then bank; none when
// the values pass.
func (p *Policy) Check(quoted evidence.PCRValues) []*evidence.Failure {
	var out []*evidence.Failure
	for pcr := 0; pcr <= MaxPCR; pcr++ {
		for _, bank := range Banks {
			set, ok := p.set[bank][pcr]
			if !ok {
				continue
			}
			v, ok := quoted.Get(bank, pcr)
			if !ok {
				out = append(out, evidence.Fail(ReasonNotQuoted, "PCR %d (%s) is not in the quote", pcr, tpmfacts.BankName(bank)))
				continue
			}
			if _, ok := set[string(v)]; ok {
				continue
			}
			if n := len(set); n == 1 {
				out = append(out, evidence.Fail(ReasonNotAllowed, "PCR %d (%s) = %x, not the allowed value %x", pcr, tpmfacts.BankName(bank), v, p.allowed[bank][pcr][0]))
			} else {
				out = append(out, evidence.Fail(ReasonNotAllowed, "PCR %d (%s) = %x, not one of the %d allowed values", pcr, tpmfacts.BankName(bank), v, n))
			}
		}
	}
	return out
}
