package verifier

import (
	"context"
	"maps"
	"slices"
	"testing"
)

// The cache keeps a pinned version when a new latest is stored, and drops
// what another replica made stale: the latest of a name with a new
// version, every version of a name deleted, or deleted and stored anew.
func TestPolicyCacheKeepsPinnedVersions(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 1)
	svc := f.service(0)
	f.addRuntimePolicy(t, svc, "rt", nil, nil)
	var c policyCache
	keys := func() []string { return slices.Sorted(maps.Keys(c.from)) }
	warm := func() {
		t.Helper()
		for _, pin := range []int{0, 1} {
			p := c.resolve(ctx, f.st, Agent{RuntimePolicy: "rt", RuntimePolicyVersion: pin})
			want := pin
			if pin == 0 {
				want = 2
			}
			if p.Runtime == nil || p.RuntimeVersion != want {
				t.Fatalf("resolve rt pinned to %d: version %d, %v", pin, p.RuntimeVersion, p.RuntimeErr)
			}
		}
	}
	warm()
	if got := keys(); !slices.Equal(got, []string{"rt", "rt@1"}) {
		t.Fatalf("cached %v", got)
	}
	v1, _ := f.st.GetPolicyVersion(ctx, "rt", 1)
	v2, _ := f.st.GetPolicy(ctx, "rt")
	v3 := v2
	v3.Version = 3
	c.refresh([]Policy{v3})
	if got := keys(); !slices.Equal(got, []string{"rt@1"}) {
		t.Fatalf("after a new version elsewhere: %v, want the pinned version kept", got)
	}
	c.forget("rt")
	if got := keys(); !slices.Equal(got, []string{"rt@1"}) {
		t.Fatalf("after a new version here: %v, want the pinned version kept", got)
	}
	warm()
	c.refresh([]Policy{v2})
	if got := keys(); !slices.Equal(got, []string{"rt", "rt@1"}) {
		t.Fatalf("after a round with nothing new: %v", got)
	}
	// Deleted and stored anew elsewhere: version 1 is another policy now.
	other := v1
	other.SHA256 = "another"
	c.refresh([]Policy{other})
	if got := keys(); len(got) != 0 {
		t.Fatalf("after the policy was stored anew: %v, want nothing", got)
	}
	warm()
	c.refresh(nil)
	if got := keys(); len(got) != 0 {
		t.Fatalf("after the policy was deleted elsewhere: %v, want nothing", got)
	}
	warm()
	c.forgetAll("rt")
	if got := keys(); len(got) != 0 {
		t.Fatalf("after the policy was deleted here: %v, want nothing", got)
	}
}
