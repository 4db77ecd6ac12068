package ima

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
)

// State is what a verifier keeps per host between attestations: how many
// entries are verified and what PCR 10 held after the last of them, per bank,
// plus the keys the list itself loaded into kernel keyrings (ima-buf key
// measurements) that later ima-sig entries may be signed with. It is small
// and serialisable (JSON and CBOR).
type State struct {
	// Entries is the number of entries verified: the next attestation
	// starts at entry number Entries.
	Entries uint64 `cbor:"entries" json:"entries"`
	// PCR10 maps a bank name ("sha1", "sha256") to PCR 10's value after
	// entry Entries-1.
	PCR10 map[string]HexBytes `cbor:"pcr10" json:"pcr10"`
	// Keys are keys measured into keyrings by verified entries.
	Keys []StateKey `cbor:"keys,omitempty" json:"keys,omitempty"`
}

// StateKey is a key learned from the measurement list.
type StateKey struct {
	Keyring string   `cbor:"keyring" json:"keyring"`
	KeyID   uint32   `cbor:"keyid" json:"keyid"`
	DER     HexBytes `cbor:"der" json:"der"`
}

// NewState is the state before the first entry: PCR 10 all zeros in each bank.
func NewState(banks ...Algorithm) State {
	s := State{PCR10: map[string]HexBytes{}}
	for _, b := range banks {
		s.PCR10[b.String()] = make(HexBytes, b.Size())
	}
	return s
}

// Rule names why an entry (or the list) failed. Operators and scripts match
// on these strings.
type Rule string

// Failure rules.
const (
	RuleTemplateHash    Rule = "template-hash"    // logged template digest does not match the template data
	RuleViolation       Rule = "violation"        // a measurement violation (ToMToU, open writers) and violations are not allowed
	RulePCRIndex        Rule = "pcr-index"        // entry extends a PCR other than 10
	RuleUnknownTemplate Rule = "unknown-template" // the policy cannot be applied to this template
	RuleNotInPolicy     Rule = "not-in-policy"    // path not listed, not excluded, no valid signature
	RuleDigestMismatch  Rule = "digest-mismatch"  // path listed with other digests
	RuleKeyring         Rule = "keyring"          // a key measured into a keyring that the policy does not allow
	RuleInvalidKey      Rule = "invalid-key"      // a keyring measurement holding a key Vigil cannot use
	RuleBootAggregate   Rule = "boot-aggregate"   // boot_aggregate does not match the quoted PCRs 0-9
	RulePCRMismatch     Rule = "pcr10-mismatch"   // no prefix of the entries replays to the quoted PCR 10
)

// Failure is one reason verification failed. Entry is the entry's number in
// the whole list, or -1 for failures of the list as a whole.
type Failure struct {
	Entry    int64  `json:"entry"`
	Line     int    `json:"line,omitempty"`
	Path     string `json:"path,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Template string `json:"template,omitempty"`
	Rule     Rule   `json:"rule"`
	Detail   string `json:"detail"`
}

func (f Failure) Error() string {
	if f.Entry < 0 {
		return fmt.Sprintf("ima: %s: %s", f.Rule, f.Detail)
	}
	return fmt.Sprintf("ima: entry %d %s (%s): %s: %s", f.Entry, f.Path, f.Digest, f.Rule, f.Detail)
}

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Parse options for the new entries; FirstIndex is set from the state.
	Parse ParseOptions
	// Replay options (legacy zero-padded SHA-1 banks).
	Replay ReplayOptions
	// AllowViolations accepts violation entries. Deny by default: a
	// violation means a file's contents were not measured as executed.
	AllowViolations bool
	// BootPCRs holds quoted PCRs 0-9 per bank; when set, the boot_aggregate
	// entry must match the aggregate computed from them (or be listed in
	// the policy under "boot_aggregate").
	BootPCRs map[Algorithm]map[int][]byte
	// DeferBootAggregate is for a check without a quote (vigil policy
	// check): with no BootPCRs, a boot_aggregate entry that the policy does
	// not accept is not a failure but is reported in
	// Result.BootAggregateUnchecked, since whether it passes depends on
	// PCRs 0-9 the caller does not have.
	DeferBootAggregate bool
	// Keys are verification keys besides the policy's.
	Keys []VerificationKey
	// MaxFailures caps the failures listed (all are counted); 0 means 100.
	MaxFailures int
}

// Result is the outcome of Verify.
type Result struct {
	// State is the state to keep: advanced to the last entry covered by the
	// quote when verification passed, the input state when it failed.
	State State `json:"state"`
	// Entries is the number of entries in the input; Committed those up to
	// the quoted PCR 10 value; Pending the rest, which the log holds but the
	// quote does not cover yet: they were checked against the policy and are
	// sent again next time.
	Entries   uint64 `json:"entries"`
	Committed uint64 `json:"committed"`
	Pending   uint64 `json:"pending"`
	// Violations counts violation entries; Unchecked entries whose logged
	// template digest uses an algorithm Vigil cannot compute (their
	// replay into the banks is still computed from the template data).
	Violations uint64 `json:"violations"`
	Unchecked  uint64 `json:"unchecked"`
	// PCR10 is each bank's value after the last input entry.
	PCR10 map[string]HexBytes `json:"pcr10"`
	// Failures lists what failed (capped by MaxFailures); FailureCount
	// counts them all.
	Failures     []Failure `json:"failures"`
	FailureCount int       `json:"failure_count"`
	// BootAggregateUnchecked is set under VerifyOptions.DeferBootAggregate
	// when a boot_aggregate entry was left to the quoted PCRs 0-9.
	BootAggregateUnchecked bool `json:"boot_aggregate_unchecked,omitempty"`
}

// OK reports whether verification passed.
func (r *Result) OK() bool { return r.FailureCount == 0 }

// Verify continues verification from state over data, which holds entries
// state.Entries.. of the list in either format. quoted maps banks to the
// PCR 10 values in a verified quote; nil skips the PCR check (and commits
// every entry). pol may be nil to check integrity only.
//
// As in Keylime, the quote may lag the log: reading PCR 10 and reading the
// list are not atomic, so the quote may cover only a prefix of the new
// entries. Verify commits the state at the first prefix that replays to the
// quoted value in every bank; later entries are policy-checked now and
// committed by a later attestation.
//
// The returned error is for unusable input (a parse error, a state that
// does not fit the quote); everything else is a Failure in the Result.
func Verify(state State, data []byte, quoted map[Algorithm][]byte, pol *Policy, opts VerifyOptions) (Result, error) {
	v, err := newVerifier(state, quoted, pol, opts)
	if err != nil {
		return Result{}, err
	}
	popts := opts.Parse
	popts.FirstIndex = state.Entries
	p := NewParser(data, popts)
	for p.Next() {
		if err := v.entry(p.Entry()); err != nil {
			return Result{}, err
		}
	}
	if err := p.Err(); err != nil {
		return Result{}, err
	}
	return v.finish(), nil
}

type verifier struct {
	in      State
	pol     *Policy
	opts    VerifyOptions
	r       *Replayer
	algs    []Algorithm
	quoted  [][]byte // per algs index; nil when no quote
	found   bool
	matchAt uint64
	matchPC map[string]HexBytes
	matchKs int

	keys    []VerificationKey // policy + options + learned
	learned []StateKey
	bootAgg map[Algorithm][]byte
	n       uint64
	res     Result
	maxFail int
}

func newVerifier(state State, quoted map[Algorithm][]byte, pol *Policy, opts VerifyOptions) (*verifier, error) {
	v := &verifier{in: state, pol: pol, opts: opts, maxFail: opts.MaxFailures}
	if v.maxFail <= 0 {
		v.maxFail = 100
	}
	// Banks: the state's, else the quote's, else SHA-1 alone.
	for name := range state.PCR10 {
		a, ok := ParseAlgorithm(name)
		if !ok {
			return nil, fmt.Errorf("ima: state names unknown bank %q", name)
		}
		v.algs = append(v.algs, a)
	}
	if len(v.algs) == 0 {
		if state.Entries > 0 {
			return nil, fmt.Errorf("ima: state at entry %d has no PCR 10 values", state.Entries)
		}
		for a := range quoted {
			v.algs = append(v.algs, a)
		}
		if len(v.algs) == 0 {
			v.algs = []Algorithm{SHA1}
		}
	}
	sort.Slice(v.algs, func(i, j int) bool { return v.algs[i] < v.algs[j] })
	r, err := NewReplayer(opts.Replay, v.algs...)
	if err != nil {
		return nil, err
	}
	for _, a := range v.algs {
		if val, ok := state.PCR10[a.String()]; ok {
			if err := r.SetPCR(a, val); err != nil {
				return nil, err
			}
		}
	}
	v.r = r
	if quoted != nil {
		v.quoted = make([][]byte, len(v.algs))
		for a, val := range quoted {
			i := indexOf(v.algs, a)
			if i < 0 {
				return nil, fmt.Errorf("ima: quote has PCR 10 in bank %s, the state tracks %v", a, v.algs)
			}
			if len(val) != a.Size() {
				return nil, fmt.Errorf("ima: quoted %s PCR 10 is %d bytes, want %d", a, len(val), a.Size())
			}
			v.quoted[i] = val
		}
		v.checkMatch()
	} else {
		v.found = true
	}
	if pol != nil {
		v.keys = append(v.keys, pol.keys...)
	}
	v.keys = append(v.keys, opts.Keys...)
	for i, k := range state.Keys {
		pub, err := x509.ParsePKIXPublicKey(k.DER)
		if err != nil {
			return nil, fmt.Errorf("ima: state key %d: %v", i, err)
		}
		v.keys = append(v.keys, VerificationKey{KeyID: k.KeyID, Public: pub, Keyring: k.Keyring, DER: k.DER})
	}
	if len(opts.BootPCRs) > 0 {
		v.bootAgg = map[Algorithm][]byte{}
		for a, pcrs := range opts.BootPCRs {
			agg, err := BootAggregate(a, pcrs)
			if err != nil {
				return nil, err
			}
			v.bootAgg[a] = agg
		}
	}
	return v, nil
}

func indexOf(algs []Algorithm, a Algorithm) int {
	for i, b := range algs {
		if a == b {
			return i
		}
	}
	return -1
}

// checkMatch records the first point where every quoted bank matches.
func (v *verifier) checkMatch() {
	if v.found {
		return
	}
	for i := range v.algs {
		if v.quoted[i] != nil && !bytes.Equal(v.r.pcrView(i), v.quoted[i]) {
			return
		}
	}
	v.found = true
	v.matchAt = v.n
	v.matchPC = v.snapshot()
	v.matchKs = len(v.learned)
}

func (v *verifier) snapshot() map[string]HexBytes {
	m := make(map[string]HexBytes, len(v.algs))
	for _, a := range v.algs {
		m[a.String()] = v.r.PCR(a)
	}
	return m
}

func (v *verifier) fail(e *Entry, rule Rule, detail string) {
	v.res.FailureCount++
	if len(v.res.Failures) >= v.maxFail {
		return
	}
	f := Failure{Entry: -1, Rule: rule, Detail: detail}
	if e != nil {
		f.Entry = int64(e.Index)
		f.Line = e.Line
		f.Path = string(e.Path())
		f.Template = e.TemplateName
		if d, ok := e.Digest(); ok {
			f.Digest = d.String()
		}
	}
	v.res.Failures = append(v.res.Failures, f)
}

func (v *verifier) entry(e *Entry) error {
	v.n++
	extended, err := v.r.Extend(e)
	if err != nil {
		return err
	}
	if !extended {
		v.fail(e, RulePCRIndex, fmt.Sprintf("entry extends PCR %d, not PCR %d", e.PCR, v.r.opts.PCR))
	}
	checked, err := checkAgainstBanks(v.r, e)
	if !checked {
		v.res.Unchecked++
	}
	if err != nil {
		// Only here: errors.As's target would otherwise cost an
		// allocation per entry.
		var the *TemplateHashError
		if !errors.As(err, &the) {
			return err
		}
		v.fail(e, RuleTemplateHash, fmt.Sprintf("logged %s template hash %x, template data hashes to %x", the.Alg, the.Logged, the.Computed))
	}
	if e.IsViolation() {
		v.res.Violations++
	}
	if v.pol != nil {
		v.policy(e)
	}
	if extended {
		v.checkMatch()
	}
	return nil
}

// policy applies the runtime policy to one entry. Passing takes any of: the
// path listed with this digest, a valid signature by a trusted key, or an
// exclude pattern matching the path. The cheap map lookup runs first; the
// regular expressions and signature checks only for entries that need them.
func (v *verifier) policy(e *Entry) {
	if e.IsViolation() {
		if !v.opts.AllowViolations {
			v.fail(e, RuleViolation, "measurement violation (file changed or open for write while measured)")
		}
		return
	}
	path := e.Path()
	d, ok := e.Digest()
	if e.Template == nil || !ok || path == nil {
		v.fail(e, RuleUnknownTemplate, fmt.Sprintf("template %q has no digest and name the policy can judge", e.TemplateName))
		return
	}
	if buf, _, isBuf := e.field(FieldBuf); isBuf {
		v.policyBuf(e, path, d, buf)
		return
	}
	bootAgg := string(path) == "boot_aggregate"
	if v.bootAgg != nil && bootAgg {
		if agg, ok := v.bootAgg[d.Alg]; ok && bytes.Equal(agg, d.Digest) {
			return
		}
		if _, ok := match(v.pol.digests, path, d.Alg, d.Digest); ok {
			return
		}
		detail := "boot_aggregate matches neither the quoted PCRs 0-9 nor the policy"
		if _, ok := v.bootAgg[d.Alg]; !ok {
			detail = fmt.Sprintf("boot_aggregate is %s, PCRs 0-9 were quoted in other banks, and the policy does not list it", d.Alg)
		}
		v.fail(e, RuleBootAggregate, detail)
		return
	}
	listed, ok := match(v.pol.digests, path, d.Alg, d.Digest)
	if ok {
		return
	}
	var sigErr error
	if sig := e.Signature(); len(sig) > 0 {
		if len(v.keys) == 0 {
			sigErr = errors.New("no verification keys")
		} else if sigErr = verifySignature(v.keys, sig, d.Alg, d.Digest); sigErr == nil {
			return
		}
	}
	if v.pol.Excluded(path) {
		return
	}
	if bootAgg && v.opts.DeferBootAggregate {
		v.res.BootAggregateUnchecked = true
		return
	}
	detail := "path is not in the policy's digests"
	rule := RuleNotInPolicy
	if listed {
		rule = RuleDigestMismatch
		detail = "digest is not among the policy's digests for this path"
	}
	if bootAgg {
		detail += " (PCRs 0-9 were not quoted, so boot_aggregate could not be checked against them)"
	}
	if sigErr != nil {
		detail += "; signature: " + sigErr.Error()
	}
	v.fail(e, rule, detail)
}

// policyBuf judges an ima-buf entry: a key loaded into a keyring must be
// allowed by "keyrings" (unless the keyring is ignored) and is then trusted
// for signatures; any other buffer must be listed under "ima-buf".
func (v *verifier) policyBuf(e *Entry, name []byte, d FileDigest, buf []byte) {
	key, isKey, err := KeyFromBytes(buf, string(name))
	if isKey {
		if v.pol.ignoreAll || v.pol.ignored[string(name)] {
			return
		}
		if err != nil {
			v.fail(e, RuleInvalidKey, err.Error())
			return
		}
		listed, ok := match(v.pol.keyrings, name, d.Alg, d.Digest)
		if !ok && !v.pol.Excluded(name) {
			detail := "keyring is not in the policy's keyrings"
			if listed {
				detail = "key digest is not among the policy's digests for this keyring"
			}
			v.fail(e, RuleKeyring, detail)
			return
		}
		v.keys = append(v.keys, key)
		v.learned = append(v.learned, StateKey{Keyring: key.Keyring, KeyID: key.KeyID, DER: HexBytes(key.DER)})
		return
	}
	listed, ok := match(v.pol.imaBuf, name, d.Alg, d.Digest)
	if ok || v.pol.Excluded(name) {
		return
	}
	rule, detail := RuleNotInPolicy, "buffer name is not in the policy's ima-buf"
	if listed {
		rule, detail = RuleDigestMismatch, "buffer digest is not among the policy's ima-buf digests for this name"
	}
	v.fail(e, rule, detail)
}

func (v *verifier) finish() Result {
	res := v.res
	res.Entries = v.n
	res.PCR10 = v.snapshot()
	if !v.found {
		v.fail(nil, RulePCRMismatch, fmt.Sprintf("no prefix of the %d new entries replays to the quoted PCR 10 (replayed %s)", v.n, fmtPCRs(res.PCR10)))
		res.Failures, res.FailureCount = v.res.Failures, v.res.FailureCount
	}
	if v.quoted == nil {
		v.matchAt = v.n
		v.matchPC = res.PCR10
		v.matchKs = len(v.learned)
	}
	if res.Failures == nil {
		res.Failures = []Failure{}
	}
	if res.FailureCount > 0 {
		res.State = v.in
		return res
	}
	res.Committed = v.matchAt
	res.Pending = v.n - v.matchAt
	res.State = State{
		Entries: v.in.Entries + v.matchAt,
		PCR10:   v.matchPC,
		Keys:    append(append([]StateKey(nil), v.in.Keys...), v.learned[:v.matchKs]...),
	}
	return res
}

func fmtPCRs(m map[string]HexBytes) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for i, k := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s:%x", k, []byte(m[k]))
	}
	return b.String()
}
