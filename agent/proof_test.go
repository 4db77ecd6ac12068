package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/nodeproof"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// A node proof is a quote by the enrolled AK over the labelled challenge,
// and checks as one against the AK's public area; a request that is not
// one is refused before the TPM is touched.
func TestServeProofs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	st, err := soft.Open(filepath.Join(dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	open := func(context.Context) (TPM, error) { return NewSoftTPM(st), nil }
	tpm, _ := open(ctx)
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	a := &Attester{Open: open, ak: ak, agentID: "host-1"}
	sock := filepath.Join(dir, "proof.sock")
	ln, err := ListenProofSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.ServeProofs(ctx, ln) }()

	if id, err := (nodeproof.Client{Socket: sock}).AgentID(ctx); err != nil || id != "host-1" {
		t.Fatalf("AgentID = %q, %v", id, err)
	}
	challenge := make([]byte, 32)
	rand.Read(challenge)
	p, err := nodeproof.Client{Socket: sock}.Prove(ctx, challenge)
	if err != nil {
		t.Fatal(err)
	}
	if p.AgentID != "host-1" {
		t.Fatalf("agent_id %q", p.AgentID)
	}
	pub, err := ak.Public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	key, err := evidence.NewAK(*pub)
	if err != nil {
		t.Fatal(err)
	}
	q, err := evidence.ParseQuote(p.Attest, p.Signature)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := key.VerifyQuote(q, evidence.Expect{Nonce: nodeproof.QualifyingData(challenge), SkipPCRs: true}); err != nil {
		t.Fatalf("the proof does not verify: %v", err)
	}
	if _, err := key.VerifyQuote(q, evidence.Expect{Nonce: challenge, SkipPCRs: true}); err == nil {
		t.Fatal("the quote is over the raw challenge: a local caller could choose the qualifying data")
	}

	// A second agent cannot take the socket over while this one answers.
	if _, err := ListenProofSocket(sock); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second listener: %v", err)
	}
	// Bad requests are 400s naming the problem.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	rsp, err := hc.Post("http://x"+nodeproof.Path, "application/json", bytes.NewReader([]byte(`{"version":1,"challenge":"AAAA"}`)))
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusBadRequest {
		t.Fatalf("short challenge: %s", rsp.Status)
	}

	// A flood of requests gets proofs or 429s, never a queue: at most one
	// quote is in the TPM at a time.
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nodeproof.Client{Socket: sock}.Prove(ctx, challenge)
			switch {
			case err == nil:
				ok.Add(1)
			case strings.Contains(err.Error(), "429"):
				refused.Add(1)
			default:
				t.Errorf("flood: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() == 0 || ok.Load()+refused.Load() != 8 {
		t.Fatalf("flood: %d proofs, %d refused", ok.Load(), refused.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
