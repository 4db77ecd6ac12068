package e2e

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/agent/agenttest"
	"github.com/vigil-attest/vigil/integrations/spire/nodeattestor"
	"github.com/vigil-attest/vigil/internal/nodeproof"
	"github.com/vigil-attest/vigil/internal/proctest"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

const trustDomain = "example.org"

// spire is a SPIRE server and what the test needs to start agents.
type spire struct {
	bins                          binaries
	dir, socket, bundle, nodeConf string
	port                          int
	agents                        agentv1.AgentClient
}

func startSPIREServer(t *testing.T, bins binaries, dir, registrarURL, verifierURL, tlsDir string) *spire {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &spire{bins: bins, dir: dir, socket: filepath.Join(dir, "server-api.sock"), port: freePort(t)}
	conf := writeFile(t, filepath.Join(dir, "server.conf"), fmt.Sprintf(`
server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "INFO"
  ca_ttl = "24h"
  # Short node SVIDs, so the test sees a node re-attest (and so ask
  # Vigil again) at rotation.
  agent_ttl = "20s"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "vigil" {
    plugin_cmd = %q
    plugin_args = ["nodeattestor", "server"]
    plugin_data {
      registrar = %q
      verifiers = [%q]
      tls_dir = %q
    }
  }
}
`, s.port, s.socket, trustDomain, filepath.Join(dir, "server-data"), filepath.Join(dir, "datastore.sqlite3"),
		bins.vigilSPIRE, registrarURL, verifierURL, tlsDir))
	proctest.Start(t, "spire-server", bins.spireServer, nil, "run", "-config", conf)
	waitFor(t, "spire-server healthy", time.Minute, func() bool {
		return succeeds(bins.spireServer, "healthcheck", "-socketPath", s.socket)
	})
	s.bundle = writeFile(t, filepath.Join(dir, "bundle.pem"), run(t, bins.spireServer, "bundle", "show", "-socketPath", s.socket))
	conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.agents = agentv1.NewAgentClient(conn)
	return s
}

// startAgent starts a spire-agent whose vigil NodeAttestor asks the Vigil
// agent on proofSocket; its Workload API is the returned socket.
func (s *spire) startAgent(t *testing.T, name, proofSocket string) (*proctest.Process, string) {
	t.Helper()
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	workload := filepath.Join(dir, "workload.sock")
	conf := writeFile(t, filepath.Join(dir, "agent.conf"), fmt.Sprintf(`
agent {
  data_dir = %q
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_bundle_path = %q
  trust_domain = %q
}
plugins {
  NodeAttestor "vigil" {
    plugin_cmd = %q
    plugin_args = ["nodeattestor", "agent"]
    plugin_data {
      agent_socket = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "data"), s.port, workload, s.bundle, trustDomain, s.bins.vigilSPIRE, proofSocket))
	return proctest.Start(t, name, s.bins.spireAgent, nil, "run", "-config", conf), workload
}

// node returns SPIRE's record of the SPIRE agent of a Vigil agent ID, or
// nil when it has none.
func (s *spire) node(t *testing.T, agentID string) *types.Agent {
	t.Helper()
	a, err := s.agents.GetAgent(context.Background(), &agentv1.GetAgentRequest{
		Id: &types.SPIFFEID{TrustDomain: trustDomain, Path: nodeattestor.AgentPath(agentID)},
	})
	if err != nil {
		return nil
	}
	return a
}

// TestSPIREFollowsVigil is the integration end to end: a SPIRE agent gets
// its node identity only while Vigil says its host is attesting, a
// workload gets SVIDs through it, and a tamper on the host bans the node
// at SPIRE so the workload's SVID is no longer renewed. Hosts that are not
// admitted, not enrolled, impersonated or failed cannot attest.
func TestSPIREFollowsVigil(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with SPIRE")
	}
	bins := buildAll(t)
	ctx := context.Background()
	dir := t.TempDir()
	h := agenttest.NewBootedSwtpmHost(t, filepath.Join(dir, "host"))

	// Vigil: CA, registrar, verifier posting to the bridge, policies.
	tlsDir := filepath.Join(dir, "tls")
	run(t, bins.vigil, "ca", "init", tlsDir)
	regURL := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	proctest.Start(t, "registrar", bins.vigil, nil, "registrar", "--data", filepath.Join(dir, "registrar"), "--tls-dir", tlsDir,
		"--listen", strings.TrimPrefix(regURL, "https://"), "--ek-roots", h.Swtpm.CADir(), "--log-level", "warn")
	key := make([]byte, 32)
	rand.Read(key)
	secret := writeFile(t, filepath.Join(dir, "webhook.secret"), revocation.SecretPrefix+base64.StdEncoding.EncodeToString(key))
	bridgeURL := fmt.Sprintf("https://127.0.0.1:%d/", freePort(t))
	verURL := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	proctest.Start(t, "verifier", bins.vigil, nil, "verifier", "--data", filepath.Join(dir, "verifier"), "--tls-dir", tlsDir,
		"--listen", strings.TrimPrefix(verURL, "https://"), "--registrar", regURL,
		"--interval", "1s", "--min-interval", "100ms", "--log-level", "warn",
		"--webhook", bridgeURL, "--webhook-secret-file", secret, "--webhook-ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--webhook-max-backoff", "2s")
	admin := adminClient(t, tlsDir, verURL)
	waitFor(t, "registrar and verifier up", 30*time.Second, func() bool {
		_, err := admin.List(ctx)
		return err == nil
	})
	bootPol, runPol := filepath.Join(dir, "boot.json"), filepath.Join(dir, "runtime.json")
	run(t, bins.vigil, "policy", "create", "boot", "--boot-log", h.BootLog, "--out", bootPol)
	run(t, bins.vigil, "policy", "create", "runtime", "--ima-log", h.IMALog.Path, "--out", runPol)
	tenant := func(args ...string) string {
		t.Helper()
		return run(t, bins.vigil, append([]string{"tenant", "--tls-dir", tlsDir, "--registrar", regURL, "--verifier", verURL}, args...)...)
	}
	tenant("policy", "add", "host-boot", "--boot", bootPol)
	tenant("policy", "add", "host-runtime", "--runtime", runPol)

	// The host's Vigil agent enrolls and answers node proofs, but the
	// verifier has not admitted it yet.
	proofSocket := filepath.Join(dir, "vigil-agent.sock")
	proctest.Start(t, "vigil-agent", bins.vigil, nil, "agent", "--data", filepath.Join(dir, "agent"), "--tpm", h.Swtpm.Spec(),
		"--registrar", regURL, "--verifier", verURL, "--ca", filepath.Join(tlsDir, tlsutil.CACert),
		"--id", "host-1", "--boot-log", h.BootLog, "--ima-log", h.IMALog.Path, "--proof-socket", proofSocket, "--log-level", "warn")
	waitFor(t, "the Vigil agent's proof socket", 30*time.Second, func() bool {
		_, err := os.Stat(proofSocket)
		return err == nil
	})

	// SPIRE, and the bridge beside it.
	sp := startSPIREServer(t, bins, filepath.Join(dir, "spire"), regURL, verURL, tlsDir)
	// Through `vigil spire`, which runs the vigil-spire beside it.
	br := proctest.Start(t, "bridge", bins.vigil, nil, "spire", "bridge", "--listen", strings.TrimPrefix(strings.TrimSuffix(bridgeURL, "/"), "https://"),
		"--tls-dir", tlsDir, "--spire-server-socket", sp.socket, "--trust-domain", trustDomain, "--webhook-secret-file", secret, "--data", filepath.Join(dir, "bridge"))

	// 1. Enrolled, not admitted: no node identity.
	refused(t, sp, "spire-agent-unadmitted", proofSocket, "host-1", "not admitted at the verifier")

	// 2. Admitted and attesting: the SPIRE agent attests.
	tenant("agent", "add", "host-1", "--boot-policy", "host-boot", "--runtime-policy", "host-runtime", "--interval", "1s")
	waitFor(t, "host-1 attesting at Vigil", 60*time.Second, func() bool {
		a, err := admin.Status(ctx, "host-1")
		return err == nil && a.State == verifier.StateAttesting
	})
	spireAgent, workloadSocket := sp.startAgent(t, "spire-agent", proofSocket)
	waitFor(t, "node SVID for host-1", 60*time.Second, func() bool {
		return strings.Contains(spireAgent.Output(), "Node attestation was successful")
	})
	// Re-attestable: at rotation the node attests afresh, which asks Vigil.
	waitFor(t, "host-1's node re-attests at rotation", 60*time.Second, func() bool {
		return strings.Contains(spireAgent.Output(), "Successfully reattested node")
	})
	node := sp.node(t, "host-1")
	if node == nil {
		t.Fatal("SPIRE has no record of host-1's agent")
	}
	var sels []string
	for _, s := range node.Selectors {
		sels = append(sels, s.Type+":"+s.Value)
	}
	for _, want := range []string{"vigil:agent_id:host-1", "vigil:runtime_policy:host-runtime", "vigil:runtime_policy:host-runtime@1",
		"vigil:boot_policy:host-boot@1", "vigil:ak_alg:rsa"} {
		if !contains(sels, want) {
			t.Errorf("node selectors %v lack %s", sels, want)
		}
	}
	if !hasPrefix(sels, "vigil:ek_sha256:") || !hasPrefix(sels, "vigil:ek_trust:chain:") {
		t.Errorf("node selectors %v lack the EK hash or how the EK was trusted", sels)
	}
	t.Logf("node %s selectors %v", node.Id.Path, sels)

	// 3. A workload on the node, under an alias of every node whose
	// runtime policy is host-runtime, gets short-lived SVIDs, renewed.
	run(t, bins.spireServer, "entry", "create", "-socketPath", sp.socket, "-node",
		"-spiffeID", "spiffe://"+trustDomain+"/vigil/runtime/host-runtime", "-selector", "vigil:runtime_policy:host-runtime")
	run(t, bins.spireServer, "entry", "create", "-socketPath", sp.socket,
		"-parentID", "spiffe://"+trustDomain+"/vigil/runtime/host-runtime", "-spiffeID", "spiffe://"+trustDomain+"/workload",
		"-selector", "unix:uid:"+strconv.Itoa(os.Getuid()), "-x509SVIDTTL", "10")
	w := watchSVIDs(t, workloadSocket)
	waitFor(t, "a workload SVID and one renewal", 90*time.Second, func() bool { return w.count() >= 2 })
	t.Logf("workload SVIDs so far: %d", w.count())

	// 4. Attacks. An unsigned revocation to the bridge changes nothing.
	forged, _ := json.Marshal(revocation.NewEvent(revocation.TypeRevoked, time.Now(), revocation.Data{AgentID: "host-1", State: "failed"}).Cloud("attacker"))
	if code := post(t, tlsDir, bridgeURL, forged, nil); code != http.StatusUnauthorized {
		t.Errorf("unsigned revocation: %d, want 401", code)
	}
	// Another TPM claiming to be host-1 is refused; so is a host Vigil has
	// never enrolled.
	impostor := fakeProofSocket(t, filepath.Join(dir, "impostor.sock"), "host-1")
	refused(t, sp, "spire-agent-impostor", impostor, "host-1", "not a quote by its enrolled AK")
	ghost := fakeProofSocket(t, filepath.Join(dir, "ghost.sock"), "ghost")
	refused(t, sp, "spire-agent-ghost", ghost, "ghost", "not admitted at the verifier")
	if sp.node(t, "host-1").GetBanned() || spireAgent.Exited() {
		t.Fatal("the attacks touched host-1's SPIRE agent")
	}
	if a, _ := admin.Status(ctx, "host-1"); a.State != verifier.StateAttesting {
		t.Fatalf("after the attacks host-1 is %s", a.State)
	}

	// 5. A tamper: Vigil fails the host, the bridge bans its SPIRE agent,
	// which shuts down; the workload's SVID is not renewed again.
	tpm := h.TPM(t)
	bad := h.Measure(t, tpm, "not-in-policy")
	tpm.Close()
	tamper := time.Now()
	failedAt := waitFor(t, "Vigil fails host-1", 30*time.Second, func() bool {
		a, err := admin.Status(ctx, "host-1")
		return err == nil && a.State == verifier.StateFailed
	})
	bannedAt := waitFor(t, "SPIRE bans host-1's agent", 30*time.Second, func() bool { return sp.node(t, "host-1").GetBanned() })
	downAt := waitFor(t, "host-1's SPIRE agent shuts down", 60*time.Second, spireAgent.Exited)
	if !strings.Contains(spireAgent.Output(), "banned") {
		t.Errorf("the SPIRE agent stopped, but not for the ban:\n%s", proctest.Tail(spireAgent.Output(), 20))
	}
	last := w.last()
	// Nothing issued after the ban: watch past the last SVID's expiry.
	waitFor(t, "the last workload SVID to expire", 60*time.Second, func() bool { return time.Now().After(last.NotAfter.Add(time.Second)) })
	if after := w.issuedAfter(bannedAt.Add(time.Second)); after != nil {
		t.Fatalf("a workload SVID first seen %s after the ban (serial %x)", w.seen(after).Sub(bannedAt), after.SerialNumber)
	}
	if _, err := fetchSVID(workloadSocket); err == nil {
		t.Fatal("the workload still gets an SVID after the ban")
	}
	a, _ := admin.Status(ctx, "host-1")
	if !strings.Contains(a.Detail, bad) {
		t.Errorf("Vigil's failure detail %q does not name %s", a.Detail, bad)
	}
	t.Logf("timeline: tamper → Vigil failed %s → SPIRE ban %s (+%s) → SPIRE agent down %s (+%s) → last workload SVID renewed %s before the ban, expired %s after the tamper",
		failedAt.Sub(tamper).Round(time.Millisecond), bannedAt.Sub(tamper).Round(time.Millisecond), bannedAt.Sub(failedAt).Round(time.Millisecond),
		downAt.Sub(tamper).Round(time.Millisecond), downAt.Sub(bannedAt).Round(time.Millisecond),
		bannedAt.Sub(w.seen(last)).Round(time.Millisecond), last.NotAfter.Sub(tamper).Round(time.Second))

	// 6. Failed at Vigil: a new SPIRE agent cannot attest.
	refused(t, sp, "spire-agent-failed", proofSocket, "host-1", "is failed")

	// 7. The operator allows the file and readmits: the bridge lifts the
	// ban, and once Vigil says attesting the node attests again.
	tenant("policy", "add", "host-runtime", "--runtime", agenttest.AllowFile(t, runPol, bad))
	tenant("agent", "readmit", "host-1")
	waitFor(t, "SPIRE lifts the ban", 30*time.Second, func() bool { return !sp.node(t, "host-1").GetBanned() })
	waitFor(t, "host-1 attesting again", 60*time.Second, func() bool {
		a, err := admin.Status(ctx, "host-1")
		return err == nil && a.State == verifier.StateAttesting
	})
	again, workloadSocket := sp.startAgent(t, "spire-agent-readmitted", proofSocket)
	waitFor(t, "node SVID after readmission", 60*time.Second, func() bool {
		return strings.Contains(again.Output(), "Node attestation was successful")
	})
	sels = sels[:0]
	for _, s := range sp.node(t, "host-1").GetSelectors() {
		sels = append(sels, s.Type+":"+s.Value)
	}
	if !contains(sels, "vigil:runtime_policy:host-runtime@2") {
		t.Errorf("selectors after readmission %v lack the new policy version", sels)
	}
	w2 := watchSVIDs(t, workloadSocket)
	waitFor(t, "a workload SVID after readmission", 60*time.Second, func() bool { return w2.count() >= 1 })
	if br.Exited() {
		t.Fatal("the bridge stopped")
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func hasPrefix(s []string, p string) bool {
	for _, x := range s {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}

// refused starts a SPIRE agent that must fail node attestation with a
// message containing why, and leave SPIRE without a node for agentID
// (or with the one it had).
func refused(t *testing.T, sp *spire, name, proofSocket, agentID, why string) {
	t.Helper()
	before := sp.node(t, agentID)
	p, _ := sp.startAgent(t, name, proofSocket)
	waitFor(t, name+" gives up", 60*time.Second, p.Exited)
	if out := p.Output(); !strings.Contains(out, why) {
		t.Fatalf("%s stopped without %q:\n%s", name, why, proctest.Tail(out, 20))
	}
	if before == nil && sp.node(t, agentID) != nil {
		t.Fatalf("%s: SPIRE now has a node for %s", name, agentID)
	}
}

func adminClient(t *testing.T, tlsDir, url string) *verifier.AdminClient {
	t.Helper()
	tc, err := tlsutil.AdminClientConfig(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	return &verifier.AdminClient{BaseURL: url, HTTP: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}
}

func post(t *testing.T, tlsDir, url string, body []byte, hdr map[string]string) int {
	t.Helper()
	tc, err := tlsutil.ClientConfig(filepath.Join(tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rsp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	return rsp.StatusCode
}

// fakeProofSocket answers node proofs as agentID with a TPM Vigil never
// enrolled: a soft TPM's AK, quoting over the labelled challenge as a real
// Vigil agent would.
func fakeProofSocket(t *testing.T, path, agentID string) string {
	t.Helper()
	ctx := context.Background()
	st, err := soft.Open(filepath.Join(t.TempDir(), "soft-tpm"))
	if err != nil {
		t.Fatal(err)
	}
	tpm := agent.NewSoftTPM(st)
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{1, 0, 0}}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+nodeproof.Path, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(nodeproof.Identity{Version: nodeproof.Version, AgentID: agentID})
	})
	mux.HandleFunc("POST "+nodeproof.Path, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req, err := nodeproof.ParseRequest(b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q, sig, err := tpm.Quote(r.Context(), ak, nodeproof.QualifyingData(req.Challenge), sel)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(nodeproof.Proof{Version: nodeproof.Version, AgentID: agentID, Attest: q.Bytes(), Signature: tpm2.Marshal(sig)})
	})
	ln, err := agent.ListenProofSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

// svidWatch polls the Workload API and records each distinct SVID.
type svidWatch struct {
	mu    chan struct{}
	certs []*x509.Certificate
	at    []time.Time
}

func watchSVIDs(t *testing.T, socket string) *svidWatch {
	w := &svidWatch{mu: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if c, err := fetchSVID(socket); err == nil {
				w.mu <- struct{}{}
				if n := len(w.certs); n == 0 || w.certs[n-1].SerialNumber.Cmp(c.SerialNumber) != 0 {
					w.certs, w.at = append(w.certs, c), append(w.at, time.Now())
				}
				<-w.mu
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

func (w *svidWatch) count() int {
	w.mu <- struct{}{}
	defer func() { <-w.mu }()
	return len(w.certs)
}

func (w *svidWatch) last() *x509.Certificate {
	w.mu <- struct{}{}
	defer func() { <-w.mu }()
	return w.certs[len(w.certs)-1]
}

func (w *svidWatch) seen(c *x509.Certificate) time.Time {
	w.mu <- struct{}{}
	defer func() { <-w.mu }()
	for i, x := range w.certs {
		if x == c {
			return w.at[i]
		}
	}
	return time.Time{}
}

// issuedAfter returns the first SVID first seen after at, or nil.
func (w *svidWatch) issuedAfter(at time.Time) *x509.Certificate {
	w.mu <- struct{}{}
	defer func() { <-w.mu }()
	for i, c := range w.certs {
		if w.at[i].After(at) {
			return c
		}
	}
	return nil
}

func fetchSVID(socket string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return nil, err
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("no certificate")
	}
	return svid.Certificates[0], nil
}
