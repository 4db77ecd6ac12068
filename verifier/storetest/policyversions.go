package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier"
)

// getPolicyVersion: any stored version is answered as stored, body and
// all, whichever is the highest; a version or a name not stored is
// ErrNotFound.
func getPolicyVersion(t *testing.T, s verifier.Store) {
	// Out of order and with a gap: the numbers are the caller's.
	r1, r3, r2 := policy("rt", verifier.PolicyRuntime, 1), policy("rt", verifier.PolicyRuntime, 3), policy("rt", verifier.PolicyRuntime, 2)
	for _, p := range []verifier.Policy{r1, r3, r2, policy("rt-other", verifier.PolicyRuntime, 4)} {
		mustCreatePolicy(t, s, p)
	}
	for _, want := range []verifier.Policy{r1, r2, r3} {
		got, err := s.GetPolicyVersion(ctx(t), "rt", want.Version)
		if err != nil {
			t.Fatalf("GetPolicyVersion(rt, %d): %v", want.Version, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("GetPolicyVersion(rt, %d)\n got %+v\nwant %+v (as stored, with its body)", want.Version, got, want)
		}
	}
	for _, c := range []struct {
		name    string
		version int
	}{{"rt", 4}, {"rt", 0}, {"nothing", 1}} {
		if _, err := s.GetPolicyVersion(ctx(t), c.name, c.version); !errors.Is(err, verifier.ErrNotFound) {
			t.Fatalf("GetPolicyVersion(%s, %d) of nothing stored: %v, want ErrNotFound", c.name, c.version, err)
		}
	}
	// Every version goes with its policy.
	if err := s.DeletePolicy(ctx(t), "rt"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPolicyVersion(ctx(t), "rt", 1); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("GetPolicyVersion after DeletePolicy: %v, want ErrNotFound", err)
	}
}

// listPolicyVersions: every version of one name, oldest first, without
// bodies, and nothing of another name that shares its prefix.
func listPolicyVersions(t *testing.T, s verifier.Store) {
	var want []verifier.Policy
	// Created out of order, and past 9, so that an order of keys as text
	// ("rt@10" before "rt@2") shows.
	for _, v := range []int{2, 10, 1, 3} {
		p := policy("rt", verifier.PolicyRuntime, v)
		mustCreatePolicy(t, s, p)
	}
	mustCreatePolicy(t, s, policy("rt-2", verifier.PolicyRuntime, 1))
	mustCreatePolicy(t, s, policy("r", verifier.PolicyRuntime, 5))
	for _, v := range []int{1, 2, 3, 10} {
		p := policy("rt", verifier.PolicyRuntime, v)
		p.Body = nil
		want = append(want, p)
	}
	got, err := s.PolicyVersions(ctx(t), "rt")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PolicyVersions(rt)\n got %+v\nwant %+v (every version, oldest first, without bodies)", got, want)
	}
	if _, err := s.PolicyVersions(ctx(t), "nothing"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("PolicyVersions of an unknown name: %v, want ErrNotFound", err)
	}
	if err := s.DeletePolicy(ctx(t), "rt"); err != nil {
		t.Fatal(err)
	}
	if ps, err := s.PolicyVersions(ctx(t), "rt"); !errors.Is(err, verifier.ErrNotFound) {
		t.Fatalf("PolicyVersions after DeletePolicy: %+v, %v, want ErrNotFound", ps, err)
	}
}

// agentPolicyPins: the versions an agent is pinned to are part of its
// record, kept by every write.
func agentPolicyPins(t *testing.T, s verifier.Store) {
	a := agent("web-1")
	a.RuntimePolicyVersion, a.BootPolicyVersion = 3, 7
	a.PCRPolicy, a.PCRPolicyVersion = "pcr-1", 2
	a.Passing, a.PassingFrom, a.PassingTo = 5, t0(), t0().Add(time.Minute)
	a.PassingRuntimeVersion, a.PassingBootVersion, a.PassingPCRVersion = 3, 7, 2
	mustCreate(t, s, a)
	sameAgent(t, mustGet(t, s, a.ID), a)
	a.RuntimePolicyVersion, a.PCRPolicyVersion = 0, 0
	if err := s.SaveAgent(ctx(t), a, nil); err != nil {
		t.Fatal(err)
	}
	sameAgent(t, mustGet(t, s, a.ID), a)
	// A PCR policy alone.
	only := agent("web-2")
	only.RuntimePolicy, only.BootPolicy, only.PCRPolicy, only.PCRPolicyVersion = "", "", "pcr-only", 4
	mustCreate(t, s, only)
	sameAgent(t, mustGet(t, s, only.ID), only)
}
