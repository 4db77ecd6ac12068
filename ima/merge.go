package ima

import (
	"bytes"
	"slices"
	"strings"
)

// Merge adds src's entries to rp, as Keylime's `create runtime
// --base-policy` merges a base policy with what it generates: digests,
// keyrings and ima-buf are unioned per path (or name), excludes and
// ignored keyrings are unioned, verification keys are unioned (a key is the
// same key when its id and DER are). rp's meta, release, log_hash_alg and
// dm_policy are kept: the caller chooses them. Digests are compared in
// lower case, duplicates dropped; call Normalize for Keylime's sorted form.
// src must be a policy CompilePolicy accepts (its verification keys are
// parsed).
func (rp *RuntimePolicy) Merge(src RuntimePolicy) error {
	rp.init()
	mergeMap(rp.Digests, src.Digests)
	mergeMap(rp.Keyrings, src.Keyrings)
	mergeMap(rp.IMABuf, src.IMABuf)
	rp.Excludes = unionStrings(rp.Excludes, src.Excludes)
	rp.IMA.IgnoredKeyrings = unionStrings(rp.IMA.IgnoredKeyrings, src.IMA.IgnoredKeyrings)
	if src.VerificationKeys == "" {
		return nil
	}
	keys, err := ParseVerificationKeys(src.VerificationKeys)
	if err != nil {
		return err
	}
	return rp.AddVerificationKeys(keys...)
}

// AddVerificationKeys adds keys to the policy's "verification-keys" (in
// Keylime's format), leaving out those it already holds.
func (rp *RuntimePolicy) AddVerificationKeys(keys ...VerificationKey) error {
	if len(keys) == 0 {
		return nil
	}
	var have []VerificationKey
	if rp.VerificationKeys != "" {
		var err error
		if have, err = ParseVerificationKeys(rp.VerificationKeys); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if !slices.ContainsFunc(have, func(h VerificationKey) bool { return h.KeyID == k.KeyID && bytes.Equal(h.DER, k.DER) }) {
			have = append(have, k)
		}
	}
	s, err := VerificationKeysJSON(have)
	if err != nil {
		return err
	}
	rp.VerificationKeys = s
	return nil
}

// Normalize puts the policy in the form Keylime writes: every digest list
// and the excludes and ignored keyrings sorted without duplicates, digests
// in lower case, empty members present.
func (rp *RuntimePolicy) Normalize() {
	rp.init()
	for _, m := range []map[string][]string{rp.Digests, rp.Keyrings, rp.IMABuf} {
		for k, v := range m {
			m[k] = sortedSet(lowerAll(v))
		}
	}
	rp.Excludes = sortedSet(rp.Excludes)
	rp.IMA.IgnoredKeyrings = sortedSet(rp.IMA.IgnoredKeyrings)
}

func (rp *RuntimePolicy) init() {
	if rp.Digests == nil {
		rp.Digests = map[string][]string{}
	}
	if rp.Keyrings == nil {
		rp.Keyrings = map[string][]string{}
	}
	if rp.IMABuf == nil {
		rp.IMABuf = map[string][]string{}
	}
	if rp.Excludes == nil {
		rp.Excludes = []string{}
	}
	if rp.IMA.IgnoredKeyrings == nil {
		rp.IMA.IgnoredKeyrings = []string{}
	}
}

func mergeMap(dst, src map[string][]string) {
	for k, list := range src {
		for _, d := range list {
			addDigest(dst, k, strings.ToLower(d))
		}
		if _, ok := dst[k]; !ok {
			// A name listed with no digest stays listed (it then matches
			// nothing, but a diff shows it).
			dst[k] = []string{}
		}
	}
}

func unionStrings(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

func lowerAll(list []string) []string {
	for i, s := range list {
		list[i] = strings.ToLower(s)
	}
	return list
}

func sortedSet(list []string) []string {
	if list == nil {
		return []string{}
	}
	slices.Sort(list)
	return slices.Compact(list)
}

// DigestAlg guesses the algorithm of the policy's file digests from their
// length, as Keylime's create runtime does to keep a merged policy in one
// algorithm: boot_aggregate (whose algorithm follows the TPM's banks) and
// "algo:hex" digests of another algorithm are left out. It returns
// AlgUnknown when there is no file digest or their lengths disagree; 64
// hex digits are reported as SHA256 (SM3 has the same length).
func (rp RuntimePolicy) DigestAlg() Algorithm {
	found := AlgUnknown
	for path, list := range rp.Digests {
		if path == "boot_aggregate" {
			continue
		}
		for _, d := range list {
			a := AlgUnknown
			if i := strings.LastIndexByte(d, ':'); i >= 0 {
				a, _ = ParseAlgorithm(strings.ToLower(d[:i]))
				if a == SM3 {
					a = SHA256
				}
			} else {
				a = algorithmForSize(len(d) / 2)
			}
			if a == AlgUnknown || a == MD5 {
				continue
			}
			if found != AlgUnknown && a != found {
				return AlgUnknown
			}
			found = a
		}
	}
	return found
}
