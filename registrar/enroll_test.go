package registrar_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// testRegistrar is a registrar served over TLS on loopback with a real
// store in a data directory.
type testRegistrar struct {
	t      *testing.T
	tlsDir string
	data   string
	policy registrar.EKPolicy
	reg    *registrar.Registrar
	srv    *httptest.Server
	svc    *registrar.Service
	// configure, if set, adjusts the configuration of each registrar
	// start makes.
	configure func(*registrar.Config)
}

func newTLSDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := tlsutil.InitDir(dir, tlsutil.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startRegistrar(t *testing.T, tlsDir, data string, policy registrar.EKPolicy) *testRegistrar {
	t.Helper()
	r := &testRegistrar{t: t, tlsDir: tlsDir, data: data, policy: policy}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *testRegistrar) start() {
	tlsCfg, err := tlsutil.ServerConfig(r.tlsDir)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := registrar.DefaultConfig()
	cfg.DataDir, cfg.EKPolicy = r.data, r.policy
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if r.configure != nil {
		r.configure(&cfg)
	}
	reg, err := registrar.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(reg.Handler())
	srv.TLS = tlsCfg
	srv.StartTLS()
	r.reg, r.srv, r.svc = reg, srv, reg.Service()
}

func (r *testRegistrar) stop() {
	if r.srv != nil {
		r.srv.Close()
		r.reg.Close()
		r.srv = nil
	}
}

// refusals reads the registrar's refusal counts from its metrics.
func (r *testRegistrar) refusals() map[string]int {
	r.t.Helper()
	rec := httptest.NewRecorder()
	r.reg.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := map[string]int{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		var reason string
		var n int
		if _, err := fmt.Sscanf(line, "vigil_registrar_refused_total{reason=%q} %d", &reason, &n); err == nil && n > 0 {
			out[reason] = n
		}
	}
	return out
}

func (r *testRegistrar) agentHTTP() *http.Client {
	cfg, err := tlsutil.ClientConfig(filepath.Join(r.tlsDir, tlsutil.CACert), "", "")
	if err != nil {
		r.t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func (r *testRegistrar) admin() *registrar.AdminClient {
	cfg, err := tlsutil.AdminClientConfig(r.tlsDir)
	if err != nil {
		r.t.Fatal(err)
	}
	return &registrar.AdminClient{BaseURL: r.srv.URL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
}

func (r *testRegistrar) enroller(open agent.Opener, dataDir, id string, akAlg tpm2.TPMAlgID) *agent.Enroller {
	return &agent.Enroller{
		Open:         open,
		DataDir:      dataDir,
		RegistrarURL: r.srv.URL,
		HTTP:         r.agentHTTP(),
		AgentID:      id,
		AKAlg:        akAlg,
	}
}

func swtpmOpener(s *tpmsim.Swtpm) agent.Opener {
	return func(ctx context.Context) (agent.TPM, error) {
		t, err := s.Open(ctx)
		if err != nil {
			return nil, err
		}
		return agent.NewGoTPM(t), nil
	}
}

func chainPolicy(t *testing.T, caDir string) registrar.EKPolicy {
	t.Helper()
	roots, inter, err := registrar.LoadEKRoots(caDir)
	if err != nil {
		t.Fatal(err)
	}
	return registrar.EKPolicy{Mode: registrar.EKPolicyChain, Roots: roots, Intermediates: inter}
}

func ekHash(t *testing.T, open agent.Opener) string {
	t.Helper()
	tpm, err := open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	ek, err := tpm.EKPublic(context.Background(), tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	h, err := registrar.EKHash(&ek)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func wantRefused(t *testing.T, err error, status int) {
	t.Helper()
	var ref *agent.RefusedError
	if !errors.As(err, &ref) || ref.Status != status {
		t.Fatalf("got %v, want a %d refusal", err, status)
	}
}

func TestEnrollAgainstSwtpmWithEKChain(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, sw.CADir()))
	ctx := context.Background()

	for _, tc := range []struct {
		alg  tpm2.TPMAlgID
		name string
	}{{tpm2.TPMAlgRSA, "rsa"}, {tpm2.TPMAlgECC, "ecc"}} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			res, err := reg.enroller(swtpmOpener(sw), data, "host-"+tc.name, tc.alg).Enroll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Active || res.AgentID != "host-"+tc.name || res.AKAlg != tc.name || !res.HasEKCrt || res.AKReused {
				t.Fatalf("enroll result %+v", res)
			}
			view, err := reg.admin().Get(ctx, "host-"+tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !view.Active || view.AKAlg != tc.name || view.EKTrust != "chain:swtpm-localca-rootca" {
				t.Errorf("registrar view %+v", view)
			}
			if view.EKSHA256 != ekHash(t, swtpmOpener(sw)) {
				t.Errorf("ek_sha256 %s is not the TPM's EK hash", view.EKSHA256)
			}
			// A restart of the agent reuses its AK and enrolls again.
			res2, err := reg.enroller(swtpmOpener(sw), data, "host-"+tc.name, tc.alg).Enroll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !res2.AKReused || !res2.Active {
				t.Errorf("second enrollment %+v, want the AK reused and active", res2)
			}
			view2, err := reg.admin().Get(ctx, "host-"+tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(view2.AKPublic, view.AKPublic) || view2.Enrollments != 2 || view2.PendingRegistrations != 0 {
				t.Errorf("after re-enrollment: enrollments %d, pending %d, AK changed %v", view2.Enrollments, view2.PendingRegistrations, !bytes.Equal(view2.AKPublic, view.AKPublic))
			}
		})
	}
}

func TestEnrollDefaultAgentIDIsEKHash(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, sw.CADir()))
	res, err := reg.enroller(swtpmOpener(sw), t.TempDir(), "", tpm2.TPMAlgRSA).Enroll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := ekHash(t, swtpmOpener(sw)); res.AgentID != want {
		t.Errorf("agent ID %s, want the EK hash %s", res.AgentID, want)
	}
}

func TestEKChainToAnotherRootRefused(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	other := newTLSDir(t) // its ca.crt is a self-signed root unrelated to swtpm's CA
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, other))
	_, err := reg.enroller(swtpmOpener(sw), t.TempDir(), "h1", tpm2.TPMAlgRSA).Enroll(context.Background())
	wantRefused(t, err, http.StatusForbidden)
	if _, err := reg.admin().Get(context.Background(), "h1"); !errors.Is(err, registrar.ErrNotFound) {
		t.Errorf("refused agent stored: %v", err)
	}
}

func TestEKAllowlist(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	hash := ekHash(t, swtpmOpener(sw))
	for _, tc := range []struct {
		name  string
		list  string
		allow bool
	}{
		{"listed", "# fleet A\n" + hash + "\n", true},
		{"not listed", "0000000000000000000000000000000000000000000000000000000000000000\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "allow")
			os.WriteFile(file, []byte(tc.list), 0o600)
			allow, err := registrar.LoadEKAllowlist(file)
			if err != nil {
				t.Fatal(err)
			}
			reg := startRegistrar(t, newTLSDir(t), t.TempDir(), registrar.EKPolicy{Mode: registrar.EKPolicyAllowlist, Allow: allow})
			res, err := reg.enroller(swtpmOpener(sw), t.TempDir(), "h", tpm2.TPMAlgRSA).Enroll(context.Background())
			if tc.allow {
				if err != nil || !res.Active {
					t.Fatalf("listed EK: %+v, %v", res, err)
				}
			} else {
				wantRefused(t, err, http.StatusForbidden)
			}
		})
	}
}

func TestForgedActivationProofRefused(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, sw.CADir()))
	ctx := context.Background()

	tpm, err := swtpmOpener(sw)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := tpm.EKPublic(ctx, tpm2.TPMAlgRSA)
	cert, _ := tpm.EKCertificate(ctx, tpm2.TPMAlgRSA)
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, tpm2.TPMAlgRSA)
	tpm.Close()
	if err != nil {
		t.Fatal(err)
	}
	akPub, _ := ak.Public.Contents()
	var regRsp wire.RegisterResponse
	status := postCBOR(t, reg, wire.PathRegister, wire.RegisterRequest{
		AgentID: "victim", EKPublic: tpm2.Marshal(ek), EKCert: cert, AKPublic: tpm2.Marshal(akPub),
	}, &regRsp)
	if status != http.StatusOK {
		t.Fatalf("register: %d", status)
	}
	// Without the TPM the secret is unknown; guess one.
	guess := make([]byte, 32)
	rand.Read(guess)
	akName, _ := tpm2.ObjectName(akPub)
	for _, proof := range [][]byte{
		wire.ActivationProof(guess, "victim", akName.Buffer),
		regRsp.Secret[:32], // the encrypted secret is no proof either
	} {
		if status := postCBOR(t, reg, wire.PathActivate, wire.ActivateRequest{AgentID: "victim", Proof: proof}, nil); status != http.StatusForbidden {
			t.Errorf("forged proof: %d, want 403", status)
		}
	}
	view, err := reg.admin().Get(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	if view.Active {
		t.Fatal("agent active after a forged proof")
	}
}

func TestSecondTPMUnderSameIDRefused(t *testing.T) {
	ca := t.TempDir()
	first := tpmsimtest.NewTestSwtpm(t, ca)
	second := tpmsimtest.NewTestSwtpm(t, ca)
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, ca))
	ctx := context.Background()
	if _, err := reg.enroller(swtpmOpener(first), t.TempDir(), "shared", tpm2.TPMAlgRSA).Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := reg.admin().Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	_, err = reg.enroller(swtpmOpener(second), t.TempDir(), "shared", tpm2.TPMAlgRSA).Enroll(ctx)
	wantRefused(t, err, http.StatusForbidden)
	after, err := reg.admin().Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if after.EKSHA256 != before.EKSHA256 || !bytes.Equal(after.AKPublic, before.AKPublic) || !after.Active || after.Enrollments != before.Enrollments {
		t.Errorf("record changed by a refused registration:\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestRegistrarRestartKeepsRecords(t *testing.T) {
	ca := t.TempDir()
	tpms := []*tpmsim.Swtpm{tpmsimtest.NewTestSwtpm(t, ca), tpmsimtest.NewTestSwtpm(t, ca)}
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, ca))
	ctx := context.Background()
	for i, sw := range tpms {
		if _, err := reg.enroller(swtpmOpener(sw), t.TempDir(), []string{"a", "b"}[i], tpm2.TPMAlgECC).Enroll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before, err := reg.admin().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg.stop()
	reg.start()
	after, err := reg.admin().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || len(before) != 2 {
		t.Fatalf("%d records before restart, %d after; want 2", len(before), len(after))
	}
	for _, v := range after {
		if !v.Active {
			t.Errorf("agent %s inactive after restart", v.AgentID)
		}
	}
}

func TestAdminAPIRequiresClientCertificate(t *testing.T) {
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), registrar.EKPolicy{Mode: registrar.EKPolicyAny})
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		for _, path := range []string{registrar.PathAgents, registrar.PathAgents + "/x"} {
			if method == http.MethodDelete && path == registrar.PathAgents {
				continue
			}
			req, _ := http.NewRequest(method, reg.srv.URL+path, nil)
			rsp, err := reg.agentHTTP().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			rsp.Body.Close()
			if rsp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s without client cert: %d, want 401", method, path, rsp.StatusCode)
			}
		}
	}
	if _, err := reg.admin().List(context.Background()); err != nil {
		t.Errorf("with admin cert: %v", err)
	}
}

func postCBOR(t *testing.T, reg *testRegistrar, path string, req, rsp any) int {
	t.Helper()
	body, err := wire.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	hrsp, err := reg.agentHTTP().Post(reg.srv.URL+path, wire.ContentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer hrsp.Body.Close()
	if rsp != nil && hrsp.StatusCode == http.StatusOK {
		if err := wire.Read(hrsp.Body, wire.MaxMessage, rsp); err != nil {
			t.Fatal(err)
		}
	}
	return hrsp.StatusCode
}

// swtpm's ECC EK is the high-range NIST P-384 one (certificate at NV
// 0x01c00016, userWithAuth, SHA-384 name): enrollment must find it, match it
// to its certificate, and let the registrar make a credential for it.
func TestEnrollWithECCEK(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, sw.CADir()))
	e := reg.enroller(swtpmOpener(sw), t.TempDir(), "ecc-ek", tpm2.TPMAlgECC)
	e.EKAlg = tpm2.TPMAlgECC
	res, err := e.Enroll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Active || res.EKAlg != "ecc" || !res.HasEKCrt {
		t.Fatalf("enroll result %+v", res)
	}
	view, err := reg.admin().Get(context.Background(), "ecc-ek")
	if err != nil {
		t.Fatal(err)
	}
	if view.EKTrust != "chain:swtpm-localca-rootca" {
		t.Errorf("ECC EK trusted by %q", view.EKTrust)
	}
}

// The soft TPM (a simulation for the demo and the bench) enrolls through the
// same agent code and the same registrar checks as a real TPM: its EK
// certificate chains to its manufacturer's CA and credential activation
// works for both AK algorithms.
func TestEnrollSoftTPM(t *testing.T) {
	m, err := soft.NewManufacturer("Test TPM Manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	roots := t.TempDir()
	os.WriteFile(filepath.Join(roots, "manufacturer.pem"), m.CertPEM(), 0o600)
	reg := startRegistrar(t, newTLSDir(t), t.TempDir(), chainPolicy(t, roots))
	for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		st, err := soft.New(soft.Options{Manufacturer: m})
		if err != nil {
			t.Fatal(err)
		}
		open := func(context.Context) (agent.TPM, error) { return agent.NewSoftTPM(st), nil }
		id := "soft-" + tpmfacts.AlgName(akAlg)
		res, err := reg.enroller(open, t.TempDir(), id, akAlg).Enroll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !res.Active || !res.HasEKCrt {
			t.Fatalf("soft TPM enrollment %+v", res)
		}
		view, err := reg.admin().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if view.EKTrust != "chain:Test TPM Manufacturer" {
			t.Errorf("ek_trust %q", view.EKTrust)
		}
	}
}
