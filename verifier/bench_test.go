package verifier

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// staticAKs serves one agent's AK.
type staticAKs struct{ ak *evidence.AK }

func (s staticAKs) AK(context.Context, string) (*evidence.AK, error) { return s.ak, nil }

// BenchmarkVerdict measures the verifier's work for one steady-state
// attestation: Service.Evidence on a quote over PCR 10 with 20 new IMA
// entries checked against the runtime policy, the verdict stored (group
// commit), the next challenge issued. Making the evidence is not timed.
//
//	go test ./verifier -run '^$' -bench Verdict -benchtime 2000x
func BenchmarkVerdict(b *testing.B) {
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		b.Run(tpmfacts.AlgName(alg), func(b *testing.B) { benchVerdict(b, alg) })
	}
}

func benchVerdict(b *testing.B, akAlg tpm2.TPMAlgID) {
	ctx := context.Background()
	svc, _ := newTestService(b)
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		b.Fatal(err)
	}
	tpm := agent.NewSoftTPM(st)
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgECC, akAlg)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := ak.Public.Contents()
	key, _ := evidence.NewAK(*pub)
	svc.AKs = staticAKs{key}
	list := simhost.IMALog{Path: filepath.Join(b.TempDir(), "ima")}
	if _, err := list.Init(ctx, tpm); err != nil {
		b.Fatal(err)
	}
	// A policy allowing every file the benchmark will measure.
	const perAttestation = 20
	total := b.N*perAttestation + perAttestation
	rp := ima.NewRuntimePolicy()
	entries := make([]simhost.IMAEntry, total)
	for i := range entries {
		sum := sha256.Sum256([]byte(fmt.Sprint("file", i)))
		entries[i] = simhost.IMAEntry{Path: fmt.Sprintf("/usr/bin/f%d", i), FileDigest: sum[:]}
		rp.Digests[entries[i].Path] = []string{fmt.Sprintf("%x", sum)}
	}
	data, _ := os.ReadFile(list.Path)
	boot, _ := ima.ParseAll(data, ima.ParseOptions{})
	bd, _ := boot[0].Digest()
	rp.Digests["boot_aggregate"] = []string{fmt.Sprintf("%x", bd.Digest)}
	body, _ := rp.JSON()
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, body); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Admit(ctx, AdmitRequest{AgentID: "h", RuntimePolicy: "rt"}); err != nil {
		b.Fatal(err)
	}
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: "h", Started: true})
	if err != nil {
		b.Fatal(err)
	}
	next := 0
	makeEvidence := func(ch wire.Challenge) wire.Evidence {
		fi, err := os.Stat(list.Path)
		if err != nil {
			b.Fatal(err)
		}
		if err := list.Append(ctx, tpm, entries[next:next+perAttestation]...); err != nil {
			b.Fatal(err)
		}
		next += perAttestation
		sel, _ := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
		q, sig, err := tpm.Quote(ctx, ak, ch.Nonce, *sel)
		if err != nil {
			b.Fatal(err)
		}
		pcrs, _ := tpm.PCRRead(ctx, *sel)
		ev := wire.Evidence{AgentID: "h", Nonce: ch.Nonce, Quote: q.Bytes(), Signature: tpm2.Marshal(sig),
			PCRs: map[uint16]map[int][]byte{}, IMAOffset: ch.IMAOffset}
		for bank, v := range pcrs {
			ev.PCRs[uint16(bank)] = v
		}
		all, _ := os.ReadFile(list.Path)
		// The first challenge asks for the whole list; later ones for what
		// was appended since.
		start := fi.Size()
		if ch.IMAOffset == 0 {
			start = 0
		}
		ev.IMA = all[start:]
		return ev
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ev := makeEvidence(ch)
		b.StartTimer()
		v, err := svc.Evidence(ctx, ev)
		if err != nil || v.Next == nil {
			b.Fatalf("verdict %+v, %v", v, err)
		}
		ch = *v.Next
	}
}
