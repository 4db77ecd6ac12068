package verifier

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/ima"
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

// CheckPolicy validates a policy body before it is stored.
func CheckPolicy(kind PolicyKind, body []byte) error {
	switch kind {
	case PolicyRuntime:
		_, err := ima.ParsePolicy(body)
		return err
	case PolicyBoot:
		_, err := bootpolicy.Parse(body)
		return err
	}
	return fmt.Errorf("unknown policy kind %q", kind)
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
	p, err = bootpolicy.Parse(stored.Body)
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
	p, err = ima.ParsePolicy(stored.Body)
	if err != nil {
		return nil, fmt.Errorf("runtime policy %q: %w", name, err)
	}
	if c.runtime == nil {
		c.runtime = make(map[string]*ima.Policy)
	}
	c.runtime[name] = p
	return p, nil
}

// imaBanks maps the TPM banks Vigil quotes to IMA's names for them.
var imaBanks = map[tpm2.TPMAlgID]ima.Algorithm{
	tpm2.TPMAlgSHA1:   ima.SHA1,
	tpm2.TPMAlgSHA256: ima.SHA256,
}

// VerifyRuntime implements RuntimeVerifier.
func (c *PolicyChecks) VerifyRuntime(state []byte, offset uint64, entries []byte, quoted evidence.PCRValues, policy string) ([]byte, uint64, error) {
	pol, err := c.runtimePolicy(policy)
	if err != nil {
		return nil, 0, Fail(ReasonPolicyViolation, "runtime_policy_unavailable", "%v", err)
	}
	pcr10 := map[ima.Algorithm][]byte{}
	boot := map[ima.Algorithm]map[int][]byte{}
	for bank, values := range quoted {
		alg, ok := imaBanks[bank]
		if !ok {
			continue
		}
		if v, ok := values[10]; ok {
			pcr10[alg] = v
		}
		if _, ok := values[0]; ok {
			boot[alg] = values
		}
	}
	if len(pcr10) == 0 {
		return nil, 0, Fail(ReasonInvalidEvidence, "pcr_missing", "a runtime policy applies but PCR 10 was not quoted")
	}
	var st ima.State
	if len(state) > 0 {
		if err := wire.Unmarshal(state, &st); err != nil {
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
	opts := ima.VerifyOptions{MaxFailures: 5}
	if len(boot) > 0 && offset == 0 {
		opts.BootPCRs = boot
	}
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
	b, err := wire.Marshal(res.State)
	if err != nil {
		return nil, 0, err
	}
	return b, res.State.Entries, nil
}
