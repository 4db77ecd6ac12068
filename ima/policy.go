package ima

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-attest/vigil/internal/dsse"
)

// RuntimePolicy is Keylime's runtime-policy JSON, field for field, so that a
// policy written for Keylime reads unchanged and one Vigil writes Keylime
// accepts.
type RuntimePolicy struct {
	Meta             PolicyMeta          `json:"meta"`
	Release          int                 `json:"release"`
	Digests          map[string][]string `json:"digests"`
	Excludes         []string            `json:"excludes"`
	Keyrings         map[string][]string `json:"keyrings"`
	IMA              PolicyIMA           `json:"ima"`
	IMABuf           map[string][]string `json:"ima-buf"`
	VerificationKeys string              `json:"verification-keys"`
}

// PolicyMeta is the "meta" object.
type PolicyMeta struct {
	Version   int    `json:"version"`
	Generator int    `json:"generator"`
	Timestamp string `json:"timestamp,omitempty"`
}

// PolicyIMA is the "ima" object.
type PolicyIMA struct {
	IgnoredKeyrings []string        `json:"ignored_keyrings"`
	LogHashAlg      string          `json:"log_hash_alg"`
	DMPolicy        json.RawMessage `json:"dm_policy"`
}

// Keylime's generator numbers (keylime/ima/ima.py RUNTIME_POLICY_GENERATOR).
const (
	GeneratorUnknown             = 0
	GeneratorEmptyAllowList      = 1
	GeneratorCompatibleAllowList = 2
	GeneratorLegacyAllowList     = 3
)

// PolicyError is a policy that cannot be used; it names the JSON key.
type PolicyError struct {
	Key string
	Msg string
}

func (e *PolicyError) Error() string {
	if e.Key == "" {
		return "ima: runtime policy: " + e.Msg
	}
	return fmt.Sprintf("ima: runtime policy %s: %s", e.Key, e.Msg)
}

// Policy is a compiled runtime policy: the lookups the verifier makes per
// entry are map lookups, O(1) whatever the policy's size.
type Policy struct {
	Source RuntimePolicy

	digests   map[string][]policyDigest
	keyrings  map[string][]policyDigest
	imaBuf    map[string][]policyDigest
	excludes  *regexp.Regexp
	ignored   map[string]bool
	ignoreAll bool
	keys      []VerificationKey
	logHash   Algorithm
}

// policyDigest is one accepted digest; alg is set only when the policy
// spelled it ("sha256:<hex>", as old allowlists do).
type policyDigest struct {
	alg Algorithm
	d   []byte
}

// maxPolicyDigestHex bounds a digest string: 128 hex digits is sha512.
const maxPolicyDigestHex = 128

// PolicyFields are the top-level members of a runtime policy, as in
// Keylime's schema (keylime/ima/ima.py RUNTIME_POLICY_SCHEMA); any other
// member is refused.
var PolicyFields = []string{"meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys"}

// ParsePolicy reads a plain (unsigned) Keylime runtime policy: a JSON
// object with at least one of PolicyFields, spelt exactly (JSON member names
// are case-sensitive, as in Keylime), and no other member, so that a boot
// policy or any other document is not taken for a runtime policy. "meta"
// and "ima" are read leniently, as Keylime's schema allows more members in
// them. A DSSE envelope is refused here: its signature must be checked
// first (ParseSignedPolicy).
func ParsePolicy(data []byte) (*Policy, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || !json.Valid(data) {
			return nil, &PolicyError{Msg: "not JSON: " + err.Error()}
		}
		return nil, &PolicyError{Msg: "not a runtime policy (a JSON object): " + err.Error()}
	}
	names := make([]string, 0, len(top))
	for k := range top {
		names = append(names, k)
	}
	slices.Sort(names)
	var unknown []string
	for _, k := range names {
		if !slices.Contains(PolicyFields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		return nil, unknownFieldError(unknown)
	}
	if len(top) == 0 {
		return nil, &PolicyError{Msg: "not a runtime policy: none of its members (" + strings.Join(PolicyFields, ", ") + ")"}
	}
	var rp RuntimePolicy
	for _, m := range []struct {
		key string
		v   any
	}{
		{"meta", &rp.Meta}, {"release", &rp.Release}, {"digests", &rp.Digests}, {"excludes", &rp.Excludes},
		{"keyrings", &rp.Keyrings}, {"ima", &rp.IMA}, {"ima-buf", &rp.IMABuf}, {"verification-keys", &rp.VerificationKeys},
	} {
		raw, ok := top[m.key]
		if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		if err := json.Unmarshal(raw, m.v); err != nil {
			return nil, &PolicyError{Key: m.key, Msg: err.Error()}
		}
	}
	if rp.Release < 0 {
		return nil, &PolicyError{Key: "release", Msg: fmt.Sprintf("%d is negative", rp.Release)}
	}
	return CompilePolicy(rp)
}

// ParseSignedPolicy reads a runtime policy that may be a DSSE envelope (as
// Keylime's `keylime-policy sign runtime` and `vigil policy sign` write):
// an envelope is opened only when one of its signatures verifies against
// keys, and its payload must be of Keylime's policy type; a plain policy is
// read as by ParsePolicy. Errors of the envelope wrap dsse.ErrNoKeys,
// dsse.ErrPayloadType or dsse.ErrNoValidSignature, or are a
// *dsse.FormatError.
func ParseSignedPolicy(data []byte, keys []dsse.PublicKey) (*Policy, error) {
	if !dsse.IsEnvelope(data) {
		return ParsePolicy(data)
	}
	payload, err := dsse.Open(data, dsse.PayloadTypeKeylime, keys)
	if err != nil {
		return nil, fmt.Errorf("ima: signed runtime policy: %w", err)
	}
	return ParsePolicy(payload)
}

// unknownFieldError refuses the unknown members (sorted), naming the first
// as the key and recognising a DSSE envelope and a boot policy.
func unknownFieldError(unknown []string) error {
	quoted := make([]string, len(unknown))
	for i, f := range unknown {
		quoted[i] = strconv.Quote(f)
	}
	key := unknown[0]
	msg := fmt.Sprintf("unknown member %s: a runtime policy has only %s", strings.Join(quoted, ", "), strings.Join(PolicyFields, ", "))
	for _, f := range []string{"payload", "payloadType", "signatures"} {
		if slices.Contains(unknown, f) {
			return &PolicyError{Key: f, Msg: "a DSSE-signed policy: its signature must be verified with a configured key (--policy-key) before it is read"}
		}
	}
	// Members of Vigil's boot policy and Keylime's measured-boot reference
	// state.
	for _, f := range []string{"kind", "scrtm_and_bios", "secure_boot", "boot_digests"} {
		if slices.Contains(unknown, f) {
			return &PolicyError{Key: f, Msg: msg + " (this looks like a boot policy)"}
		}
	}
	return &PolicyError{Key: key, Msg: msg}
}

// CompilePolicy checks rp and builds its lookup tables.
func CompilePolicy(rp RuntimePolicy) (*Policy, error) {
	if rp.Meta.Version > 1 {
		return nil, &PolicyError{Key: "meta.version", Msg: fmt.Sprintf("version %d is newer than the supported 1", rp.Meta.Version)}
	}
	p := &Policy{Source: rp, ignored: map[string]bool{}}
	var err error
	if p.digests, err = compileDigests("digests", rp.Digests); err != nil {
		return nil, err
	}
	if p.keyrings, err = compileDigests("keyrings", rp.Keyrings); err != nil {
		return nil, err
	}
	if p.imaBuf, err = compileDigests("ima-buf", rp.IMABuf); err != nil {
		return nil, err
	}
	// Keylime joins the excludes into one alternation and matches it at the
	// start of the path (Python's re.match).
	if p.excludes, err = compileExcludes(rp.Excludes); err != nil {
		return nil, err
	}
	for _, k := range rp.IMA.IgnoredKeyrings {
		if k == "*" {
			p.ignoreAll = true
		}
		p.ignored[k] = true
	}
	if rp.IMA.LogHashAlg != "" {
		a, ok := ParseAlgorithm(rp.IMA.LogHashAlg)
		if !ok || a == MD5 {
			return nil, &PolicyError{Key: "ima.log_hash_alg", Msg: fmt.Sprintf("unknown algorithm %q", rp.IMA.LogHashAlg)}
		}
		p.logHash = a
	}
	if dm := bytes.TrimSpace(rp.IMA.DMPolicy); len(dm) > 0 && !bytes.Equal(dm, []byte("null")) {
		return nil, &PolicyError{Key: "ima.dm_policy", Msg: "device-mapper policies are not supported (Keylime's schema also requires null)"}
	}
	if rp.VerificationKeys != "" {
		if p.keys, err = ParseVerificationKeys(rp.VerificationKeys); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func compileDigests(key string, m map[string][]string) (map[string][]policyDigest, error) {
	out := make(map[string][]policyDigest, len(m))
	// One backing array for every digest keeps a 100,000-path policy to a
	// handful of allocations.
	total := 0
	for _, list := range m {
		for _, s := range list {
			total += len(s) / 2
		}
	}
	arena := make([]byte, 0, total)
	for path, list := range m {
		ds := make([]policyDigest, 0, len(list))
		for i, s := range list {
			var pd policyDigest
			hx := s
			if j := strings.LastIndexByte(s, ':'); j >= 0 {
				a, ok := ParseAlgorithm(s[:j])
				if !ok {
					return nil, &PolicyError{Key: fmt.Sprintf("%s[%q][%d]", key, path, i), Msg: fmt.Sprintf("unknown algorithm in %q", s)}
				}
				pd.alg, hx = a, s[j+1:]
			}
			if len(hx) < 2 || len(hx) > maxPolicyDigestHex || len(hx)%2 != 0 {
				return nil, &PolicyError{Key: fmt.Sprintf("%s[%q][%d]", key, path, i), Msg: fmt.Sprintf("%q is not a digest (even hex, at most %d digits)", s, maxPolicyDigestHex)}
			}
			n := len(arena)
			arena = arena[:n+len(hx)/2]
			if _, err := hex.Decode(arena[n:], []byte(hx)); err != nil {
				return nil, &PolicyError{Key: fmt.Sprintf("%s[%q][%d]", key, path, i), Msg: fmt.Sprintf("%q is not hex", s)}
			}
			pd.d = arena[n:len(arena):len(arena)]
			ds = append(ds, pd)
		}
		out[path] = ds
	}
	return out, nil
}

// match reports whether the path is listed and whether d is one of its
// digests. The []byte-to-string conversion in the map index does not
// allocate.
func match(m map[string][]policyDigest, path []byte, alg Algorithm, d []byte) (listed, ok bool) {
	list, listed := m[string(path)]
	if !listed {
		return false, false
	}
	for _, pd := range list {
		if bytes.Equal(pd.d, d) && (pd.alg == AlgUnknown || pd.alg == alg) {
			return true, true
		}
	}
	return true, false
}

// Excluded reports whether an exclude pattern matches path.
func (p *Policy) Excluded(path []byte) bool {
	return p.excludes != nil && p.excludes.Match(path)
}

// Paths is the number of paths the policy lists under "digests".
func (p *Policy) Paths() int { return len(p.digests) }

// LogHashAlg is the policy's ima.log_hash_alg (AlgUnknown when unset).
func (p *Policy) LogHashAlg() Algorithm { return p.logHash }

// Keys are the policy's signature verification keys.
func (p *Policy) Keys() []VerificationKey { return p.keys }

// JSON renders the policy as Keylime writes it.
func (rp RuntimePolicy) JSON() ([]byte, error) {
	if rp.Digests == nil {
		rp.Digests = map[string][]string{}
	}
	if rp.Excludes == nil {
		rp.Excludes = []string{}
	}
	if rp.Keyrings == nil {
		rp.Keyrings = map[string][]string{}
	}
	if rp.IMABuf == nil {
		rp.IMABuf = map[string][]string{}
	}
	if rp.IMA.IgnoredKeyrings == nil {
		rp.IMA.IgnoredKeyrings = []string{}
	}
	if rp.IMA.DMPolicy == nil {
		rp.IMA.DMPolicy = json.RawMessage("null")
	}
	if rp.IMA.LogHashAlg == "" {
		rp.IMA.LogHashAlg = "sha1"
	}
	return json.MarshalIndent(rp, "", "  ")
}
