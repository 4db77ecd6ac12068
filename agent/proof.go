package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/nodeproof"
)

// proofSelection is what a node proof quotes: one PCR, because the proof
// says which TPM signed, not what it measured (the verifier judges that).
var proofSelection = tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
	Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{1, 0, 0},
}}}

// ListenProofSocket creates the Unix socket ServeProofs answers on, mode
// 0660, replacing a stale socket left by an agent that died. Create it
// before dropping privileges when it lives in a directory only root may
// write.
func ListenProofSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("proof socket %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("proof socket %s: another agent answers on it", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("proof socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("proof socket: %w", err)
	}
	return ln, nil
}

// ServeProofs answers node-proof requests (package nodeproof) on ln until
// ctx ends: each is a quote by the enrolled AK over the labelled hash of
// the caller's challenge. Call it after Prepare. Requests are served one
// at a time, as the TPM serves them.
func (a *Attester) ServeProofs(ctx context.Context, ln net.Listener) error {
	if a.agentID == "" {
		return errors.New("node proofs: the agent is not prepared")
	}
	busy := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+nodeproof.Path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(nodeproof.Identity{Version: nodeproof.Version, AgentID: a.agentID})
	})
	mux.HandleFunc("POST "+nodeproof.Path, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, nodeproof.MaxAnswer+1))
		if err != nil {
			proofError(w, http.StatusBadRequest, err)
			return
		}
		req, err := nodeproof.ParseRequest(b)
		if err != nil {
			proofError(w, http.StatusBadRequest, err)
			return
		}
		// One proof at a time, and the rest refused rather than queued:
		// a local caller flooding the socket must not keep the TPM from
		// the attestations the verifier is waiting for.
		select {
		case busy <- struct{}{}:
			defer func() { <-busy }()
		default:
			w.Header().Set("Retry-After", "1")
			proofError(w, http.StatusTooManyRequests, errors.New("a node proof is already being made; retry"))
			return
		}
		p, err := a.Prove(r.Context(), req.Challenge)
		if err != nil {
			a.log().Warn("node proof failed", "err", err)
			proofError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("node proofs: %w", err)
	}
	return nil
}

// Prove quotes with the enrolled AK over nodeproof.QualifyingData(challenge).
func (a *Attester) Prove(ctx context.Context, challenge []byte) (nodeproof.Proof, error) {
	if err := nodeproof.CheckChallenge(challenge); err != nil {
		return nodeproof.Proof{}, err
	}
	a.tpmMu.Lock()
	defer a.tpmMu.Unlock()
	tpm, err := a.Open(ctx)
	if err != nil {
		return nodeproof.Proof{}, fmt.Errorf("open TPM: %w", err)
	}
	defer tpm.Close()
	quote, sig, err := tpm.Quote(ctx, a.ak, nodeproof.QualifyingData(challenge), proofSelection)
	if err != nil {
		return nodeproof.Proof{}, fmt.Errorf("quote: %w", err)
	}
	return nodeproof.Proof{
		Version:   nodeproof.Version,
		AgentID:   a.agentID,
		Attest:    quote.Bytes(),
		Signature: tpm2.Marshal(sig),
	}, nil
}

func proofError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
