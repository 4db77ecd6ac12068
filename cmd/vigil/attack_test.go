package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// attackDeployment is a registrar, a verifier with a webhook receiver,
// and one host over swtpm with its agent, all run through the CLI.
type attackDeployment struct {
	t      *testing.T
	dir    string
	host   *e2eHost
	tlsDir string
	regURL string
	verURL string
	// metricsURL is the verifier's --metrics-listen.
	metricsURL string
	rcv        *webhookReceiver
	agent      *process
	agentArg   []string
	// verifier is the verifier's process, started with verifierArgs.
	verifier     *process
	verifierArgs []string
	// stranger is a client with the deployment CA and nothing else: no
	// client certificate, no TPM of the host's.
	stranger *http.Client
}

func newAttackDeployment(t *testing.T) *attackDeployment {
	t.Helper()
	return newDeployment(t, "")
}

// newDeployment is newAttackDeployment with both services on the
// PostgreSQL database at storeURL, or on their embedded stores when it is
// empty.
func newDeployment(t *testing.T, storeURL string) *attackDeployment {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	d := &attackDeployment{t: t, dir: dir, host: newBootedSwtpmHost(t, dir)}

	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := revocation.ParseSecret(secret)
	d.rcv = &webhookReceiver{key: key}
	srv := httptest.NewTLSServer(d.rcv)
	t.Cleanup(srv.Close)
	secretFile, caFile := filepath.Join(dir, "secret"), filepath.Join(dir, "receiver-ca.pem")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	d.tlsDir = filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", d.tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	store := []string{"--data", filepath.Join(dir, "verifier")}
	if storeURL == "" {
		d.regURL = startRegistrarCmd(t, d.tlsDir, d.host.Swtpm.CADir())
	} else {
		store = []string{"--store", storeURL}
		regAddr := freeAddr(t)
		d.regURL = "https://" + regAddr
		startProcess(t, nil, "registrar", "--store", storeURL, "--tls-dir", d.tlsDir, "--listen", regAddr,
			"--ek-roots", d.host.Swtpm.CADir(), "--log-level", "warn")
		waitHealthy(t, d.tlsDir, d.regURL)
	}
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	d.verURL, d.metricsURL = "https://"+addr, "http://"+metricsAddr+"/metrics"
	d.verifierArgs = append(append([]string{"verifier"}, store...), "--tls-dir", d.tlsDir, "--listen", addr,
		"--metrics-listen", metricsAddr,
		"--registrar", d.regURL, "--interval", "300ms", "--min-interval", "100ms", "--log-level", "warn",
		"--webhook", srv.URL, "--webhook-secret-file", secretFile, "--webhook-ca", caFile, "--webhook-max-backoff", "300ms")
	d.verifier = startProcess(t, nil, d.verifierArgs...)
	waitHealthy(t, d.tlsDir, d.verURL)

	runPol := filepath.Join(dir, "runtime.json")
	if _, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", d.host.IMALog.Path, "--out", runPol); code != 0 {
		t.Fatal("policy create runtime")
	}
	d.tenant("policy", "add", "host-runtime", "--runtime", runPol)
	d.tenant("agent", "add", "host-1", "--runtime-policy", "host-runtime",
		"--identity", "spiffe://example.org/node/host-1", "--interval", "300ms")
	// The agent knows two verifiers; the first is down, so every test here
	// also has the agent fail over to the second.
	d.agentArg = []string{"agent", "--data", filepath.Join(dir, "agent"), "--tpm", d.host.Swtpm.Spec(),
		"--registrar", d.regURL, "--verifier", "https://" + freeAddr(t), "--verifier", d.verURL, "--ca", filepath.Join(d.tlsDir, tlsutil.CACert),
		"--id", "host-1", "--boot-log", d.host.BootLog, "--ima-log", d.host.IMALog.Path, "--log-level", "warn"}
	if os.Geteuid() == 0 {
		// As root, the agent drops to nobody once it has opened the TPM and
		// the logs, which only root may read: it attests on what it holds.
		for _, f := range []string{d.host.BootLog, d.host.IMALog.Path} {
			if err := os.Chmod(f, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		d.agentArg = append(d.agentArg, "--user", "nobody")
	}
	d.agent = startProcess(t, nil, d.agentArg...)

	cfg, err := tlsutil.ClientConfig(filepath.Join(d.tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	d.stranger = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	return d
}

func (d *attackDeployment) tenant(args ...string) string {
	d.t.Helper()
	out, code := run(d.t, context.Background(), append([]string{"tenant", "--tls-dir", d.tlsDir, "--registrar", d.regURL, "--verifier", d.verURL}, args...)...)
	if code != 0 {
		d.t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
	}
	return out
}

func (d *attackDeployment) status() agentStatus {
	d.t.Helper()
	var st agentStatus
	if err := json.Unmarshal([]byte(d.tenant("agent", "status", "host-1", "--json")), &st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

func (d *attackDeployment) waitFor(what string, limit time.Duration, ok func(agentStatus) bool) agentStatus {
	d.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := d.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: not within %s; last status %+v", what, limit, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// post sends what a stranger would: a CBOR body to an agent endpoint.
func (d *attackDeployment) post(url string, hdr map[string]string, body []byte) (int, []byte) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", wire.ContentType)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rsp, err := d.stranger.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	return rsp.StatusCode, b
}

func (d *attackDeployment) strangerChallenge() wire.Challenge {
	d.t.Helper()
	body, _ := wire.Marshal(wire.ChallengeRequest{AgentID: "host-1"})
	code, rsp := d.post(d.verURL+wire.PathChallenge, nil, body)
	if code != http.StatusOK {
		d.t.Fatalf("stranger's challenge: %d %s", code, rsp)
	}
	var ch wire.Challenge
	if err := wire.Unmarshal(rsp, &ch); err != nil {
		d.t.Fatal(err)
	}
	return ch
}

func (d *attackDeployment) events() []revocation.CloudEvent {
	_, accepted := d.rcv.snapshot()
	return accepted
}

// TestUnauthenticatedPeerCannotChangeAHost plays a stranger on the network
// against a host attesting over swtpm through the real binaries: each of
// the attacks that used to fail and revoke the host is refused, the host
// keeps attesting, and no event reaches the identity issuer.
func TestUnauthenticatedPeerCannotChangeAHost(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := newAttackDeployment(t)
	d.waitFor("attesting", 30*time.Second, func(s agentStatus) bool { return s.State == "attesting" && s.Attestations >= 3 })
	if os.Geteuid() == 0 {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.agent.Pid()))
		if err != nil || !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n") {
			t.Fatalf("the attesting agent does not run as nobody: %v\n%s", err, status)
		}
	}

	// Challenges asked for in the host's name, many times over.
	for range 30 {
		d.strangerChallenge()
	}
	// Evidence in the host's name: a garbage quote over a nonce it got.
	ch := d.strangerChallenge()
	ev, _ := wire.Marshal(wire.Evidence{AgentID: "host-1", Nonce: ch.Nonce, Quote: []byte("garbage"), Signature: []byte{0, 1}, IMAOffset: ch.IMAOffset})
	hdr := map[string]string{wire.NonceHeader: hex.EncodeToString(ch.Nonce)}
	if code, rsp := d.post(d.verURL+wire.EvidencePath("host-1"), hdr, ev); code != http.StatusBadRequest {
		t.Errorf("garbage quote: %d %s, want 400", code, rsp)
	}
	// A body far over what the challenge asked for.
	big := make([]byte, wire.MaxEvidence+1)
	if code, _ := d.post(d.verURL+wire.EvidencePath("host-1"), hdr, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize evidence: %d, want 413", code)
	}
	// Evidence for an agent nobody admitted.
	if code, _ := d.post(d.verURL+wire.EvidencePath("nobody"), hdr, ev); code != http.StatusForbidden {
		t.Errorf("evidence for an unknown agent: %d, want 403", code)
	}
	// Metrics are for operators.
	if rsp, err := d.stranger.Get(d.verURL + "/metrics"); err != nil || rsp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a client certificate: %v %v, want 401", rsp.StatusCode, err)
	}

	// The host's public EK and certificate registered with another TPM's AK.
	akBefore := d.registrarAK()
	st0, err := soft.New(soft.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.strangerRegistersHostEK(agent.NewSoftTPM(st0))
	if ak := d.registrarAK(); ak != akBefore {
		t.Fatalf("the stranger's registration replaced the host's active AK: %s, was %s", ak, akBefore)
	}

	// Each refusal was counted, on the operator's plain metrics port.
	rsp, err := http.Get(d.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	for _, reason := range []string{"malformed_quote", "too_large", "unknown_agent"} {
		if !strings.Contains(string(page), `vigil_verifier_refused_total{reason="`+reason+`"}`) {
			t.Errorf("--metrics-listen page has no refusal count for %s", reason)
		}
	}

	before := d.status().Attestations
	st := d.waitFor("attesting through the attacks", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+3
	})
	if st.Reason != "" {
		t.Errorf("host carries a failure reason %q", st.Reason)
	}
	if evs := d.events(); len(evs) != 0 {
		t.Fatalf("events reached the issuer: %+v", evs)
	}

	// An operator deletes the host at the registrar: the verifier follows
	// within a few intervals, without a restart.
	d.tenant("registrar", "delete", "host-1")
	st = d.waitFor("not_enrolled after deletion at the registrar", 15*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "not_enrolled" {
		t.Fatalf("failed with %q, want not_enrolled", st.Reason)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(d.events()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no revocation delivered for the deleted host")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if e := d.events()[0]; e.Type != revocation.TypeRevoked || e.Data.Reason != "not_enrolled" {
		t.Fatalf("event %s %s, want revoked not_enrolled", e.Type, e.Data.Reason)
	}
}

// registrarAK is the host's active AK name at the registrar.
func (d *attackDeployment) registrarAK() string {
	d.t.Helper()
	var v struct {
		Active bool   `json:"active"`
		AKName string `json:"ak_name"`
	}
	if err := json.Unmarshal([]byte(d.tenant("registrar", "show", "host-1", "--json")), &v); err != nil {
		d.t.Fatal(err)
	}
	if !v.Active {
		d.t.Fatal("the host has no active AK at the registrar")
	}
	return v.AKName
}

// TestSilenceHealsEndToEnd stops a host's agent past its liveness window
// and starts it again: the host is failed and revoked, then attesting again
// by itself, with the readmission delivered after the revocation.
func TestSilenceHealsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := newAttackDeployment(t)
	d.waitFor("attesting", 30*time.Second, func(s agentStatus) bool { return s.State == "attesting" && s.Attestations >= 2 })
	d.agent.Stop()
	st := d.waitFor("liveness timeout", 15*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "liveness_timeout" {
		t.Fatalf("failed with %q, want liveness_timeout", st.Reason)
	}
	d.agent = startProcess(t, nil, d.agentArg...)
	st = d.waitFor("back from silence", 30*time.Second, func(s agentStatus) bool { return s.State == "attesting" })
	if st.Reason != "" {
		t.Errorf("attesting with reason %q", st.Reason)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs := d.events()
		var types []string
		for _, e := range evs {
			types = append(types, e.Type)
		}
		if len(evs) >= 2 {
			if types[0] != revocation.TypeRevoked || types[1] != revocation.TypeReadmitted || evs[0].Data.Reason != "liveness_timeout" {
				t.Fatalf("events %v, want revoked (liveness_timeout) then readmitted", types)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events delivered: %v, want revoked then readmitted", types)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// strangerRegistersHostEK registers the host's public EK and EK
// certificate, read as anyone can read them, under its ID with an AK of
// another TPM, and answers the activation challenge with a guess.
func (d *attackDeployment) strangerRegistersHostEK(otherTPM agent.TPM) {
	d.t.Helper()
	ctx := context.Background()
	tpm := d.host.TPM(d.t)
	ek, err := tpm.EKPublic(ctx, tpm2.TPMAlgRSA)
	if err != nil {
		d.t.Fatal(err)
	}
	cert, err := tpm.EKCertificate(ctx, tpm2.TPMAlgRSA)
	tpm.Close()
	if err != nil {
		d.t.Fatal(err)
	}
	ak, err := otherTPM.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgRSA)
	if err != nil {
		d.t.Fatal(err)
	}
	pub, err := ak.Public.Contents()
	if err != nil {
		d.t.Fatal(err)
	}
	body, _ := wire.Marshal(wire.RegisterRequest{AgentID: "host-1", EKPublic: tpm2.Marshal(ek), EKCert: cert, AKPublic: tpm2.Marshal(pub)})
	if code, rsp := d.post(d.regURL+wire.PathRegister, nil, body); code != http.StatusOK {
		d.t.Fatalf("stranger's registration: %d %s (it is answered with a challenge, which only the host's TPM can meet)", code, rsp)
	}
	guess, _ := wire.Marshal(wire.ActivateRequest{AgentID: "host-1", Proof: bytes.Repeat([]byte{7}, 32)})
	if code, _ := d.post(d.regURL+wire.PathActivate, nil, guess); code != http.StatusForbidden {
		d.t.Errorf("stranger's activation: %d, want 403", code)
	}
}
