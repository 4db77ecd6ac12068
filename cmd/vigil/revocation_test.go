package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier/revocation"
)

// webhookReceiver stands for an identity issuer: it verifies signatures and
// records events, refusing them while down is set.
type webhookReceiver struct {
	key      []byte
	mu       sync.Mutex
	down     bool
	refused  []string // webhook-ids refused while down
	accepted []revocation.CloudEvent
}

func (r *webhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	id := req.Header.Get("webhook-id")
	if err := revocation.Verify(r.key, id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, time.Now(), 5*time.Minute); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.down {
		r.refused = append(r.refused, id)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var ce revocation.CloudEvent
	json.Unmarshal(body, &ce)
	r.accepted = append(r.accepted, ce)
	w.WriteHeader(http.StatusOK)
}

func (r *webhookReceiver) snapshot() ([]string, []revocation.CloudEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.refused...), append([]revocation.CloudEvent(nil), r.accepted...)
}

// TestRevocationSurvivesKill9 fails an agent (liveness) while the webhook
// receiver is down, kills the verifier with SIGKILL, brings the receiver
// up, restarts the verifier, and expects the revocation, same event ID,
// signed and complete; then a readmission event.
func TestRevocationSurvivesKill9(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := revocation.ParseSecret(secret)
	rcv := &webhookReceiver{key: key, down: true}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	secretFile, caFile := filepath.Join(dir, "secret"), filepath.Join(dir, "receiver-ca.pem")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	regURL := startRegistrarCmd(t, tlsDir, tlsDir) // no agent enrolls here; any root will do
	addr := freeAddr(t)
	verURL := "https://" + addr
	args := []string{"verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir, "--listen", addr,
		"--registrar", regURL, "--interval", "200ms", "--min-interval", "100ms", "--log-level", "warn",
		"--webhook", srv.URL, "--webhook-secret-file", secretFile, "--webhook-ca", caFile, "--webhook-max-backoff", "300ms"}
	ver := startProcess(t, nil, args...)
	waitHealthy(t, tlsDir, verURL)

	tenant := []string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}
	pol := filepath.Join(dir, "rt.json")
	os.WriteFile(pol, []byte(`{"meta":{"version":1},"digests":{}}`), 0o600)
	for _, a := range [][]string{
		{"policy", "add", "rt", "--runtime", pol},
		{"agent", "add", "silent-1", "--runtime-policy", "rt", "--identity", "spiffe://example.org/node/silent-1", "--interval", "200ms"},
	} {
		if _, code := run(t, ctx, append(append([]string{}, tenant...), a...)...); code != 0 {
			t.Fatalf("vigil tenant %v failed", a)
		}
	}

	// The agent never attests: liveness fails it, the event is attempted
	// while the receiver is down.
	deadline := time.Now().Add(15 * time.Second)
	for {
		refused, _ := rcv.snapshot()
		if len(refused) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery attempt reached the receiver")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ver.Kill()
	refused, _ := rcv.snapshot()
	rcv.mu.Lock()
	rcv.down = false
	rcv.mu.Unlock()

	ver = startProcess(t, nil, args...)
	waitHealthy(t, tlsDir, verURL)
	deadline = time.Now().Add(15 * time.Second)
	var accepted []revocation.CloudEvent
	for {
		_, accepted = rcv.snapshot()
		if len(accepted) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revocation was not delivered after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ce := accepted[0]
	if ce.ID != refused[0] || ce.Type != revocation.TypeRevoked || ce.Subject != "silent-1" ||
		ce.Data.Reason != "liveness_timeout" || len(ce.Data.Identities) != 1 || ce.Data.Identities[0] != "spiffe://example.org/node/silent-1" {
		t.Fatalf("delivered event %+v, want the revocation first attempted as %s", ce, refused[0])
	}

	// Readmission raises its own event.
	if _, code := run(t, ctx, append(append([]string{}, tenant...), "agent", "readmit", "silent-1")...); code != 0 {
		t.Fatal("readmit failed")
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		_, accepted = rcv.snapshot()
		found := false
		for _, e := range accepted {
			found = found || e.Type == revocation.TypeReadmitted
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readmission event; got %+v", accepted)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
