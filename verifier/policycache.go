package verifier

import (
	"context"
	"fmt"
	"sync"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
)

// policyCache holds the stored policies compiled, by name, so that a
// verdict compiles nothing and reads no store once each policy has been
// seen. The service drops a name when a new version of it is stored or it
// is deleted. The zero value is ready.
type policyCache struct {
	// mu is read-locked on every verdict and write-locked only to compile
	// a policy or forget one, so a new version can never be overwritten
	// by a compile of the old one in flight.
	mu      sync.RWMutex
	runtime map[string]*ima.Policy
	boot    map[string]*bootpolicy.Policy
	// version is the stored version each cached name was compiled from.
	version map[string]int
}

// forget drops a policy (a new version was stored, or it was deleted).
func (c *policyCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.runtime, name)
	delete(c.boot, name)
	delete(c.version, name)
}

// forgetUnless drops policy name if what is cached was compiled from
// another version than version: a replica sharing the store stored a new
// one.
func (c *policyCache) forgetUnless(name string, version int) {
	c.mu.RLock()
	v, ok := c.version[name]
	c.mu.RUnlock()
	if ok && v != version {
		c.forget(name)
	}
}

// resolve compiles the policies agent a is admitted with. A policy that
// cannot be had is reported in Policies, not here: the engine decides
// whether the evidence needs it.
func (c *policyCache) resolve(ctx context.Context, st Store, a Agent) Policies {
	var p Policies
	if a.BootPolicy != "" {
		p.Boot, p.BootVersion, p.BootErr = cached(ctx, c, &c.boot, st, a.BootPolicy, PolicyBoot, bootpolicy.Parse)
	}
	if a.RuntimePolicy != "" {
		p.Runtime, p.RuntimeVersion, p.RuntimeErr = cached(ctx, c, &c.runtime, st, a.RuntimePolicy, PolicyRuntime, ima.ParsePolicy)
	}
	return p
}

// cached returns the compiled policy name from m, reading and compiling it
// from the store on a miss. Failures are not kept: the next verdict tries
// again.
func cached[P any](ctx context.Context, c *policyCache, m *map[string]*P, st Store, name string, kind PolicyKind, parse func([]byte) (*P, error)) (*P, int, error) {
	c.mu.RLock()
	p, ok := (*m)[name]
	v := c.version[name]
	c.mu.RUnlock()
	if ok {
		return p, v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := (*m)[name]; ok {
		return p, c.version[name], nil
	}
	stored, err := st.GetPolicy(ctx, name)
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
		return nil, 0, fmt.Errorf("%s policy %q: %w", kind, name, err)
	}
	if *m == nil {
		*m = make(map[string]*P)
	}
	if c.version == nil {
		c.version = make(map[string]int)
	}
	(*m)[name] = p
	c.version[name] = stored.Version
	return p, stored.Version, nil
}
