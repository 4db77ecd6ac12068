package verifier

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
)

// policyCache holds the stored policies compiled, so that a verdict
// compiles nothing and reads no store once each policy has been seen. It
// keys what it compiled by the policy's name for the latest version, and
// by name@version for a version agents are pinned to (names hold no "@").
// The service drops a name's latest when a new version of it is stored,
// and every key of a name when it is deleted; a pinned version never
// changes, so it stays. The zero value is ready.
type policyCache struct {
	// mu is read-locked on every verdict and write-locked only to compile
	// a policy or forget one, so a new version can never be overwritten
	// by a compile of the old one in flight.
	mu      sync.RWMutex
	runtime map[string]*ima.Policy
	boot    map[string]*bootpolicy.Policy
	pcr     map[string]*pcrpolicy.Policy
	// from is the stored version each cached key was compiled from.
	from map[string]compiledFrom
}

// compiledFrom names the stored version a cached policy was compiled from.
type compiledFrom struct {
	version int
	sha256  string
}

// cacheKey is the key of policy name's latest version (pin 0) or of the
// version pinned.
func cacheKey(name string, pin int) string {
	if pin == 0 {
		return name
	}
	return name + "@" + strconv.Itoa(pin)
}

// drop forgets one key; the caller holds c.mu.
func (c *policyCache) drop(key string) {
	delete(c.runtime, key)
	delete(c.boot, key)
	delete(c.pcr, key)
	delete(c.from, key)
}

// forget drops a policy's latest version: a new version was stored.
// Versions agents are pinned to stay.
func (c *policyCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(name)
}

// forgetAll drops every version of a policy: it was deleted, and a policy
// stored later under its name numbers its versions from 1 again.
func (c *policyCache) forgetAll(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.from {
		if key == name || strings.HasPrefix(key, name+"@") {
			c.drop(key)
		}
	}
}

// refresh drops what another replica sharing the store made stale, given
// the latest version of every stored policy: the latest of a name that has
// a new one, and every version of a name deleted (and maybe stored anew)
// since it was compiled.
func (c *policyCache) refresh(latest []Policy) {
	now := make(map[string]compiledFrom, len(latest))
	for _, p := range latest {
		now[p.Name] = compiledFrom{p.Version, p.SHA256}
	}
	var stale []string
	c.mu.RLock()
	for key, from := range c.from {
		name, pinned := strings.CutSuffix(key, "@"+strconv.Itoa(from.version))
		cur, ok := now[name]
		switch {
		case !ok:
			// Deleted.
			stale = append(stale, key)
		case !pinned && from != cur:
			stale = append(stale, key)
		case pinned && (from.version > cur.version || (from.version == cur.version && from.sha256 != cur.sha256)):
			// Numbered anew: the policy was deleted and stored again.
			stale = append(stale, key)
		}
	}
	c.mu.RUnlock()
	if len(stale) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, key := range stale {
		c.drop(key)
	}
}

// resolve compiles the policies agent a is admitted with: the versions it
// is pinned to, or the latest. A policy that cannot be had is reported in
// Policies, not here: the engine decides whether the evidence needs it.
func (c *policyCache) resolve(ctx context.Context, st Store, a Agent) Policies {
	var p Policies
	if a.BootPolicy != "" {
		p.Boot, p.BootVersion, p.BootErr = cached(ctx, c, &c.boot, st, a.BootPolicy, a.BootPolicyVersion, PolicyBoot, bootpolicy.Parse)
	}
	if a.RuntimePolicy != "" {
		p.Runtime, p.RuntimeVersion, p.RuntimeErr = cached(ctx, c, &c.runtime, st, a.RuntimePolicy, a.RuntimePolicyVersion, PolicyRuntime, ima.ParsePolicy)
	}
	p.PCR, p.PCRVersion, p.PCRErr = c.pcrPolicy(ctx, st, a)
	return p
}

// pcrPolicy compiles agent a's PCR policy alone, which the PCRs a challenge
// asks for depend on; nil when a has none.
func (c *policyCache) pcrPolicy(ctx context.Context, st Store, a Agent) (*pcrpolicy.Policy, int, error) {
	if a.PCRPolicy == "" {
		return nil, 0, nil
	}
	return cached(ctx, c, &c.pcr, st, a.PCRPolicy, a.PCRPolicyVersion, PolicyPCR, pcrpolicy.Parse)
}

// cached returns the compiled policy name — version pin of it, or the
// latest when pin is 0 — from m, reading and compiling it from the store
// on a miss. Failures are not kept: the next verdict tries again.
func cached[P any](ctx context.Context, c *policyCache, m *map[string]*P, st Store, name string, pin int, kind PolicyKind, parse func([]byte) (*P, error)) (*P, int, error) {
	key := cacheKey(name, pin)
	c.mu.RLock()
	p, ok := (*m)[key]
	v := c.from[key].version
	c.mu.RUnlock()
	if ok {
		return p, v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := (*m)[key]; ok {
		return p, c.from[key].version, nil
	}
	var stored Policy
	var err error
	if pin > 0 {
		stored, err = st.GetPolicyVersion(ctx, name, pin)
	} else {
		stored, err = st.GetPolicy(ctx, name)
	}
	if err != nil {
		return nil, 0, err
	}
	if stored.Kind != kind {
		return nil, 0, fmt.Errorf("policy %q is a %s policy", name, stored.Kind)
	}
	body, err := storedPolicyBody(stored.Body)
	if err == nil {
		p, err = parse(body)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s policy %q: %w", kind, policyRef(name, pin), err)
	}
	if *m == nil {
		*m = make(map[string]*P)
	}
	if c.from == nil {
		c.from = make(map[string]compiledFrom)
	}
	(*m)[key] = p
	c.from[key] = compiledFrom{stored.Version, stored.SHA256}
	return p, stored.Version, nil
}
