//go:build cgo

package verifier

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// The soft TPM has SHA-1 and SHA-256 banks only; the in-process simulator
// (the Microsoft reference TPM) has SHA-384 and SHA-512 too. A PCR policy
// naming PCR 16 of SHA-384 and PCR 23 of SHA-512: the challenge quotes
// those, the verifier checks the PCR digest across them, the host passes
// while the values are allowed and fails naming PCR 16 and sha384 once it
// leaves its list.
func TestPCRPolicySHA384AndSHA512OnTheSimulator(t *testing.T) {
	ctx := context.Background()
	sim, err := tpmsim.OpenSimulator()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	f := newFleet(t, 0, 0)
	h := &serviceHost{id: "sim-host", tpm: agent.NewGoTPM(sim.Conn())}
	if h.ak, err = h.tpm.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgECC); err != nil {
		t.Fatal(err)
	}
	pub, _ := h.ak.Public.Contents()
	key, err := evidence.NewAK(*pub)
	if err != nil {
		t.Fatal(err)
	}
	f.aks.keys[h.id] = key
	svc := f.service(0)

	sha384, sha512 := tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512
	v16 := extendPCR(t, h.tpm, 16, "workload", sha384)[sha384]
	v23 := extendPCR(t, h.tpm, 23, "app", sha512)[sha512]
	if len(v16) != 48 || len(v23) != 64 {
		t.Fatalf("values of %d and %d bytes", len(v16), len(v23))
	}
	addPCRPolicy(t, svc, "big", pcrPolicyBody(t, map[tpm2.TPMAlgID]map[int][][]byte{
		sha384: {16: {v16, nextValue(sha384, v16, "workload v2")}},
		sha512: {23: {v23}},
	}))
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: h.id, PCRPolicy: "big"}); err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionOfChallenge(t, ch); !reflect.DeepEqual(got, map[tpm2.TPMAlgID][]int{sha384: {16}, sha512: {23}}) {
		t.Fatalf("selection %v", got)
	}
	if v, err := svc.Evidence(ctx, h.answer(t, ch)); err != nil || v.State != string(StateAttesting) {
		t.Fatalf("allowed values: %+v, %v", v, err)
	}
	extendPCR(t, h.tpm, 16, "workload v2", sha384)
	mustAttest(t, svc, h, false)
	v3 := extendPCR(t, h.tpm, 16, "tampered", sha384)[sha384]
	v, err := h.attest(t, svc, false)
	want := fmt.Sprintf("PCR 16 (sha384) = %x, not one of the 2 allowed values", v3)
	if err != nil || v.State != string(StateFailed) || v.Reason != string(ReasonPolicyViolation) || !strings.Contains(v.Detail, want) {
		t.Fatalf("SHA-384 PCR 16 out of its list: %+v, %v; want %q", v, err, want)
	}
}
