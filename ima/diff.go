package ima

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// PolicyDiff is what changed from one runtime policy (A) to another (B),
// member by member, in terms of what the policies accept: "meta" and
// "release" are left out (they change no verdict), digests are compared in
// lower case and as sets (order and duplicates do not matter).
type PolicyDiff struct {
	Digests          MapDiff    `json:"digests"`
	Excludes         ListDiff   `json:"excludes"`
	Keyrings         MapDiff    `json:"keyrings"`
	IMABuf           MapDiff    `json:"ima-buf"`
	VerificationKeys KeyDiff    `json:"verification-keys"`
	IgnoredKeyrings  ListDiff   `json:"ignored_keyrings"`
	LogHashAlg       *ValueDiff `json:"log_hash_alg,omitempty"`
	DMPolicy         *ValueDiff `json:"dm_policy,omitempty"`
	Counts           DiffCounts `json:"counts"`
	// Identical is true when nothing above changed.
	Identical bool `json:"identical"`
}

// MapDiff compares a name → digests member (digests, keyrings, ima-buf).
type MapDiff struct {
	// Added and Removed are names only B, or only A, lists, with their
	// digests.
	Added   map[string][]string `json:"added"`
	Removed map[string][]string `json:"removed"`
	// Changed are names both list with different digests: the digests B
	// adds and the ones it drops.
	Changed map[string]ListDiff `json:"changed"`
}

// ListDiff compares two sets of strings.
type ListDiff struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
}

// KeyDiff compares verification keys.
type KeyDiff struct {
	Added   []KeySummary `json:"added"`
	Removed []KeySummary `json:"removed"`
}

// KeySummary names a verification key: its 32-bit IMA key id and the
// SHA-256 of its DER SubjectPublicKeyInfo.
type KeySummary struct {
	KeyID  string `json:"keyid"`
	SHA256 string `json:"sha256"`
	Type   string `json:"type"`
}

func (k KeySummary) String() string {
	return fmt.Sprintf("%s key id %s (spki sha256 %s)", k.Type, k.KeyID, k.SHA256)
}

// ValueDiff is a scalar that changed.
type ValueDiff struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// DiffCounts sums up a PolicyDiff.
type DiffCounts struct {
	PathsAdded     int `json:"paths_added"`
	PathsRemoved   int `json:"paths_removed"`
	PathsChanged   int `json:"paths_changed"`
	ExcludesAdded  int `json:"excludes_added"`
	ExcludesRemove int `json:"excludes_removed"`
	Other          int `json:"other"`
}

// DiffPolicies compares two compiled policies (whose members, verification
// keys included, are known to be well formed).
func DiffPolicies(a, b *Policy) PolicyDiff {
	ra, rb := a.Source, b.Source
	d := PolicyDiff{
		Digests:          diffMaps(ra.Digests, rb.Digests),
		Excludes:         diffLists(ra.Excludes, rb.Excludes),
		Keyrings:         diffMaps(ra.Keyrings, rb.Keyrings),
		IMABuf:           diffMaps(ra.IMABuf, rb.IMABuf),
		VerificationKeys: diffKeys(a.keys, b.keys),
		IgnoredKeyrings:  diffLists(ra.IMA.IgnoredKeyrings, rb.IMA.IgnoredKeyrings),
	}
	if x, y := logHashName(ra), logHashName(rb); x != y {
		d.LogHashAlg = &ValueDiff{From: x, To: y}
	}
	if x, y := dmPolicy(ra), dmPolicy(rb); x != y {
		d.DMPolicy = &ValueDiff{From: x, To: y}
	}
	c := &d.Counts
	c.PathsAdded, c.PathsRemoved, c.PathsChanged = len(d.Digests.Added), len(d.Digests.Removed), len(d.Digests.Changed)
	c.ExcludesAdded, c.ExcludesRemove = len(d.Excludes.Added), len(d.Excludes.Removed)
	for _, m := range []MapDiff{d.Keyrings, d.IMABuf} {
		c.Other += len(m.Added) + len(m.Removed) + len(m.Changed)
	}
	c.Other += len(d.VerificationKeys.Added) + len(d.VerificationKeys.Removed) + len(d.IgnoredKeyrings.Added) + len(d.IgnoredKeyrings.Removed)
	if d.LogHashAlg != nil {
		c.Other++
	}
	if d.DMPolicy != nil {
		c.Other++
	}
	d.Identical = c.PathsAdded+c.PathsRemoved+c.PathsChanged+c.ExcludesAdded+c.ExcludesRemove+c.Other == 0
	return d
}

// Lines renders the difference one change a line, sorted, as
// "+ member name: values" (only in B), "- member name: values" (only in
// A), "~ member name: +added -removed" (changed).
func (d PolicyDiff) Lines() []string {
	var out []string
	mapLines := func(member string, m MapDiff) {
		for _, k := range sortedKeys(m.Removed) {
			out = append(out, fmt.Sprintf("- %s %s: %s", member, k, strings.Join(m.Removed[k], " ")))
		}
		for _, k := range sortedKeys(m.Added) {
			out = append(out, fmt.Sprintf("+ %s %s: %s", member, k, strings.Join(m.Added[k], " ")))
		}
		for _, k := range sortedKeys(m.Changed) {
			ch := m.Changed[k]
			var parts []string
			for _, x := range ch.Added {
				parts = append(parts, "+"+x)
			}
			for _, x := range ch.Removed {
				parts = append(parts, "-"+x)
			}
			out = append(out, fmt.Sprintf("~ %s %s: %s", member, k, strings.Join(parts, " ")))
		}
	}
	listLines := func(member string, l ListDiff) {
		for _, x := range l.Removed {
			out = append(out, fmt.Sprintf("- %s %s", member, x))
		}
		for _, x := range l.Added {
			out = append(out, fmt.Sprintf("+ %s %s", member, x))
		}
	}
	mapLines("digests", d.Digests)
	listLines("excludes", d.Excludes)
	mapLines("keyrings", d.Keyrings)
	mapLines("ima-buf", d.IMABuf)
	for _, k := range d.VerificationKeys.Removed {
		out = append(out, "- verification-keys "+k.String())
	}
	for _, k := range d.VerificationKeys.Added {
		out = append(out, "+ verification-keys "+k.String())
	}
	listLines("ima.ignored_keyrings", d.IgnoredKeyrings)
	if d.LogHashAlg != nil {
		out = append(out, fmt.Sprintf("~ ima.log_hash_alg: %s -> %s", d.LogHashAlg.From, d.LogHashAlg.To))
	}
	if d.DMPolicy != nil {
		out = append(out, fmt.Sprintf("~ ima.dm_policy: %s -> %s", d.DMPolicy.From, d.DMPolicy.To))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func digestSet(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ToLower(s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func diffLists(a, b []string) ListDiff {
	sa, sb := sortedSet(slices.Clone(a)), sortedSet(slices.Clone(b))
	d := ListDiff{Added: []string{}, Removed: []string{}}
	for _, x := range sb {
		if _, ok := slices.BinarySearch(sa, x); !ok {
			d.Added = append(d.Added, x)
		}
	}
	for _, x := range sa {
		if _, ok := slices.BinarySearch(sb, x); !ok {
			d.Removed = append(d.Removed, x)
		}
	}
	return d
}

func diffMaps(a, b map[string][]string) MapDiff {
	d := MapDiff{Added: map[string][]string{}, Removed: map[string][]string{}, Changed: map[string]ListDiff{}}
	for k, vb := range b {
		va, ok := a[k]
		if !ok {
			d.Added[k] = digestSet(vb)
			continue
		}
		if ld := diffLists(digestSet(va), digestSet(vb)); len(ld.Added)+len(ld.Removed) > 0 {
			d.Changed[k] = ld
		}
	}
	for k, va := range a {
		if _, ok := b[k]; !ok {
			d.Removed[k] = digestSet(va)
		}
	}
	return d
}

func summarize(k VerificationKey) KeySummary {
	s := sha256.Sum256(k.DER)
	t := "unknown"
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		t = fmt.Sprintf("rsa-%d", pub.N.BitLen())
	case *ecdsa.PublicKey:
		t = "ecdsa-" + pub.Curve.Params().Name
	}
	return KeySummary{KeyID: fmt.Sprintf("%08x", k.KeyID), SHA256: hex.EncodeToString(s[:]), Type: t}
}

func diffKeys(a, b []VerificationKey) KeyDiff {
	name := func(ks []VerificationKey) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			s := summarize(k)
			out[i] = s.KeyID + " " + s.SHA256 + " " + s.Type
		}
		return out
	}
	ld := diffLists(name(a), name(b))
	d := KeyDiff{Added: []KeySummary{}, Removed: []KeySummary{}}
	parse := func(s string) KeySummary {
		f := strings.Fields(s)
		return KeySummary{KeyID: f[0], SHA256: f[1], Type: f[2]}
	}
	for _, s := range ld.Added {
		d.Added = append(d.Added, parse(s))
	}
	for _, s := range ld.Removed {
		d.Removed = append(d.Removed, parse(s))
	}
	return d
}

// logHashName is ima.log_hash_alg as Keylime reads it: sha1 when unset.
func logHashName(rp RuntimePolicy) string {
	if rp.IMA.LogHashAlg == "" {
		return "sha1"
	}
	if a, ok := ParseAlgorithm(rp.IMA.LogHashAlg); ok {
		return a.String()
	}
	return rp.IMA.LogHashAlg
}

func dmPolicy(rp RuntimePolicy) string {
	s := strings.TrimSpace(string(rp.IMA.DMPolicy))
	if s == "" {
		return "null"
	}
	return s
}
