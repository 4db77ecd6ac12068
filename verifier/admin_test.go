package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

func refusalKind(err error) RefusalKind {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Kind
	}
	return 0
}

// Versioning is the service's: a backend stores the version it is given.
func TestAddPolicyNumbersVersionsAndRefusesAnotherKind(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	for v, body := range []string{`{"a":1}`, `{"a":2}`} {
		p, err := svc.AddPolicy(ctx, nil, "boot", PolicyBoot, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(body))
		if p.Version != v+1 || p.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("added policy version %d sha256 %s, want %d %x", p.Version, p.SHA256, v+1, sum)
		}
	}
	_, err := svc.AddPolicy(ctx, nil, "boot", PolicyRuntime, []byte(`{}`))
	if refusalKind(err) != RefusedConflict || !strings.Contains(err.Error(), "is a boot policy, not runtime") {
		t.Fatalf("a runtime policy under a boot policy's name: %v, want a conflict", err)
	}
	if p, _ := svc.Store.GetPolicy(ctx, "boot"); p.Version != 2 || p.Kind != PolicyBoot {
		t.Fatalf("stored %+v after the refusal", p)
	}
}

func TestConcurrentAddPolicyGetsDistinctVersions(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	const n = 10
	versions := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := svc.AddPolicy(ctx, nil, "boot", PolicyBoot, []byte(`{}`))
			if err != nil {
				t.Error(err)
			}
			versions[i] = p.Version
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != i+1 {
			t.Fatalf("versions %v, want 1..%d once each", versions, n)
		}
	}
}

// That a policy in use is kept is the service's rule, not the store's.
func TestDeletePolicyInUseIsRefused(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	if _, err := svc.AddPolicy(ctx, nil, "boot", PolicyBoot, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "web-1", BootPolicy: "boot"}); err != nil {
		t.Fatal(err)
	}
	err := svc.DeletePolicy(ctx, "boot")
	if refusalKind(err) != RefusedConflict || !strings.Contains(err.Error(), `used by agents [web-1]`) {
		t.Fatalf("DeletePolicy of a policy in use: %v, want a conflict naming web-1", err)
	}
	if _, err := svc.Store.GetPolicy(ctx, "boot"); err != nil {
		t.Fatalf("the policy went: %v", err)
	}
	if err := svc.Remove(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeletePolicy(ctx, "boot"); err != nil {
		t.Fatalf("DeletePolicy once unused: %v", err)
	}
	if err := svc.DeletePolicy(ctx, "boot"); refusalKind(err) != RefusedNotFound {
		t.Fatalf("DeletePolicy of a deleted policy: %v, want not found", err)
	}
}
