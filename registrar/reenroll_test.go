package registrar_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

func startRegistrarWith(t *testing.T, policy registrar.EKPolicy, configure func(*registrar.Config)) *testRegistrar {
	t.Helper()
	r := &testRegistrar{t: t, tlsDir: newTLSDir(t), data: t.TempDir(), policy: policy, configure: configure}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// clock is a Service.Now the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// softFleet makes soft TPMs of one manufacturer and the EK policy that
// trusts it.
type softFleet struct {
	t   *testing.T
	mfr *soft.Manufacturer
}

func newSoftFleet(t *testing.T) (*softFleet, registrar.EKPolicy) {
	t.Helper()
	m, err := soft.NewManufacturer("Test TPM Manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	roots := t.TempDir()
	os.WriteFile(filepath.Join(roots, "manufacturer.pem"), m.CertPEM(), 0o600)
	return &softFleet{t: t, mfr: m}, chainPolicy(t, roots)
}

func (f *softFleet) tpm() agent.Opener {
	f.t.Helper()
	st, err := soft.New(soft.Options{Manufacturer: f.mfr})
	if err != nil {
		f.t.Fatal(err)
	}
	return func(context.Context) (agent.TPM, error) { return agent.NewSoftTPM(st), nil }
}

// hostPublic is what anyone can learn of a host: its EK, its EK
// certificate.
type hostPublic struct {
	ek, cert []byte
}

func publicOf(t *testing.T, open agent.Opener) hostPublic {
	t.Helper()
	ctx := context.Background()
	tpm, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	ek, err := tpm.EKPublic(ctx, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tpm.EKCertificate(ctx, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	return hostPublic{ek: tpm2.Marshal(ek), cert: cert}
}

// newAK creates an AK on the TPM and returns it with its marshalled
// TPMT_PUBLIC and name.
func newAK(t *testing.T, open agent.Opener, alg tpm2.TPMAlgID) (agent.AKBlob, []byte, []byte) {
	t.Helper()
	ctx := context.Background()
	tpm, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, alg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ak.Public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ak, tpm2.Marshal(pub), name.Buffer
}

func (r *testRegistrar) view(id string) registrar.AgentView {
	r.t.Helper()
	v, err := r.admin().Get(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func (r *testRegistrar) activeAKs(etag string) (map[string][]byte, string, error) {
	r.t.Helper()
	return r.admin().ActiveAKs(context.Background(), etag)
}

// sameActive reports whether two views show the same active AK, the
// fields a verifier relies on.
func sameActive(a, b registrar.AgentView) bool {
	return a.Active == b.Active && a.AKName == b.AKName && string(a.AKPublic) == string(b.AKPublic) &&
		a.EKSHA256 == b.EKSHA256 && a.Enrollments == b.Enrollments
}

// A stranger who registers a host's public EK and EK certificate under its
// agent ID with an AK of its own gets a challenge it cannot answer, and the
// host's active AK, and the verifiers' change feed, stay as they were. The
// host itself can still re-enroll with a new AK, even while the stranger
// replays that AK's registration.
func TestRegistrationCannotHijackEnrollment(t *testing.T) {
	fleet, softPolicy := newSoftFleet(t)
	sw := tpmsimtest.NewTestSwtpm(t, "")
	for _, tc := range []struct {
		name   string
		open   agent.Opener
		policy registrar.EKPolicy
	}{
		{"swtpm", swtpmOpener(sw), chainPolicy(t, sw.CADir())},
		{"soft", fleet.tpm(), softPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			reg := startRegistrarWith(t, tc.policy, nil)
			const id = "victim"
			agentData := t.TempDir()
			if _, err := reg.enroller(tc.open, agentData, id, tpm2.TPMAlgECC).Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			before := reg.view(id)
			aks0, etag0, err := reg.activeAKs("")
			if err != nil {
				t.Fatal(err)
			}
			if !before.Active || hex.EncodeToString(aks0[id]) != before.AKName {
				t.Fatalf("after enrollment: view %+v, active AKs %x", before, aks0)
			}

			// The attacker: the host's public EK and certificate, an AK of
			// a TPM of its own.
			pub := publicOf(t, tc.open)
			_, strangerAK, strangerName := newAK(t, fleet.tpm(), tpm2.TPMAlgECC)
			var challenge wire.RegisterResponse
			if status := postCBOR(t, reg, wire.PathRegister, wire.RegisterRequest{
				AgentID: id, EKPublic: pub.ek, EKCert: pub.cert, AKPublic: strangerAK,
			}, &challenge); status != http.StatusOK {
				t.Fatalf("stranger's registration: %d, want 200 (it proves nothing yet)", status)
			}
			after := reg.view(id)
			if !sameActive(before, after) || after.PendingRegistrations != 1 {
				t.Fatalf("registration changed the active AK:\nbefore %+v\nafter  %+v", before, after)
			}
			if _, _, err := reg.activeAKs(etag0); !errors.Is(err, registrar.ErrNotModified) {
				t.Fatalf("change feed after a registration: %v, want not modified", err)
			}

			guess := make([]byte, 32)
			rand.Read(guess)
			for _, proof := range [][]byte{wire.ActivationProof(guess, id, strangerName), challenge.Secret[:32]} {
				if status := postCBOR(t, reg, wire.PathActivate, wire.ActivateRequest{AgentID: id, Proof: proof}, nil); status != http.StatusForbidden {
					t.Errorf("stranger's activation: %d, want 403", status)
				}
			}
			if after := reg.view(id); !sameActive(before, after) || after.PendingRegistrations != 1 {
				t.Fatalf("refused activation changed the record:\nbefore %+v\nafter  %+v", before, after)
			}
			if _, _, err := reg.activeAKs(etag0); !errors.Is(err, registrar.ErrNotModified) {
				t.Fatalf("change feed after a refused activation: %v, want not modified", err)
			}

			// The host re-enrolls with a new AK by hand, so that the
			// stranger can replay the registration (all public values)
			// between the host's registration and its activation.
			ak, akPub, akName := newAK(t, tc.open, tpm2.TPMAlgECC)
			regReq := wire.RegisterRequest{AgentID: id, EKPublic: pub.ek, EKCert: pub.cert, AKPublic: akPub}
			var genuine wire.RegisterResponse
			if status := postCBOR(t, reg, wire.PathRegister, regReq, &genuine); status != http.StatusOK {
				t.Fatalf("host's registration of a new AK: %d", status)
			}
			for range 3 {
				if status := postCBOR(t, reg, wire.PathRegister, regReq, nil); status != http.StatusOK {
					t.Fatalf("replayed registration: %d", status)
				}
			}
			if v := reg.view(id); !sameActive(before, v) || v.PendingRegistrations != 2 {
				t.Fatalf("after the host's registration and replays: %+v", v)
			}
			tpm, err := tc.open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			secret, err := tpm.ActivateCredential(ctx, ak, tpm2.TPM2BIDObject{Buffer: genuine.CredentialBlob}, tpm2.TPM2BEncryptedSecret{Buffer: genuine.Secret})
			tpm.Close()
			if err != nil {
				t.Fatal(err)
			}
			proof := wire.ActivationProof(secret, id, akName)
			for range 2 { // the second is an agent's retry after a lost answer
				if status := postCBOR(t, reg, wire.PathActivate, wire.ActivateRequest{AgentID: id, Proof: proof}, nil); status != http.StatusOK {
					t.Fatalf("host's activation: %d", status)
				}
			}
			renewed := reg.view(id)
			if !renewed.Active || renewed.AKName != hex.EncodeToString(akName) || renewed.AKName == before.AKName ||
				renewed.Enrollments != before.Enrollments+1 || renewed.PendingRegistrations != 1 {
				t.Fatalf("after re-enrollment: %+v", renewed)
			}
			aks1, etag1, err := reg.activeAKs(etag0)
			if err != nil {
				t.Fatalf("change feed after a re-enrollment: %v", err)
			}
			if etag1 == etag0 || hex.EncodeToString(aks1[id]) != renewed.AKName || len(aks1) != 1 {
				t.Fatalf("change feed after re-enrollment: etag %s -> %s, %x", etag0, etag1, aks1)
			}
			// The old AK's proof no longer activates anything.
			if status := postCBOR(t, reg, wire.PathActivate, wire.ActivateRequest{AgentID: id, Proof: wire.ActivationProof(guess, id, akName)}, nil); status != http.StatusForbidden {
				t.Errorf("wrong proof after re-enrollment: %d", status)
			}
		})
	}
}

// Pending registrations are bounded per EK and in total, expire at their
// deadline, and leave the store as it was once gone.
func TestPendingRegistrationsBoundedAndExpiring(t *testing.T) {
	fleet, policy := newSoftFleet(t)
	clk := newClock()
	const ttl = time.Minute
	reg := startRegistrarWith(t, policy, func(c *registrar.Config) {
		c.Now, c.ChallengeTTL, c.MaxPendingPerEK, c.MaxPending = clk.Now, ttl, 2, 3
	})
	ctx := context.Background()
	host := fleet.tpm()
	if _, err := reg.enroller(host, t.TempDir(), "enrolled", tpm2.TPMAlgECC).Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	list := func() []registrar.AgentView {
		t.Helper()
		l, err := reg.admin().List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	initial := list()
	_, etag0, err := reg.activeAKs("")
	if err != nil {
		t.Fatal(err)
	}

	register := func(pub hostPublic, id string, ak []byte) (int, string) {
		t.Helper()
		body, _ := wire.Marshal(wire.RegisterRequest{AgentID: id, EKPublic: pub.ek, EKCert: pub.cert, AKPublic: ak})
		rsp, err := reg.agentHTTP().Post(reg.srv.URL+wire.PathRegister, wire.ContentType, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer rsp.Body.Close()
		var e wire.Error
		if rsp.StatusCode != http.StatusOK {
			wire.Read(rsp.Body, wire.MaxMessage, &e)
		}
		return rsp.StatusCode, e.Error
	}
	strangerTPM := fleet.tpm()
	aks := make([][]byte, 6)
	for i := range aks {
		_, aks[i], _ = newAK(t, strangerTPM, tpm2.TPMAlgECC)
	}

	// The enrolled host's public EK, under its own ID and new ones.
	pub := publicOf(t, host)
	if code, msg := register(pub, "enrolled", aks[0]); code != http.StatusOK {
		t.Fatalf("first pending registration: %d %s", code, msg)
	}
	// A retrying agent (or a replay) does not pile up.
	for range 5 {
		if code, msg := register(pub, "enrolled", aks[0]); code != http.StatusOK {
			t.Fatalf("repeated registration: %d %s", code, msg)
		}
	}
	if n := len(list()); n != len(initial) {
		t.Fatalf("%d records after repeated registrations of one AK, want %d", n, len(initial))
	}
	if v := reg.view("enrolled"); v.PendingRegistrations != 1 {
		t.Fatalf("repeated registrations: %d pending, want 1", v.PendingRegistrations)
	}
	if code, msg := register(pub, "squatter-1", aks[1]); code != http.StatusOK {
		t.Fatalf("second pending registration of the EK: %d %s", code, msg)
	}
	beforeRefusal := list()
	code, msg := register(pub, "squatter-2", aks[2])
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "per EK") {
		t.Fatalf("third pending registration of one EK: %d %q, want 429 naming the per-EK bound", code, msg)
	}
	if got := list(); !reflect.DeepEqual(got, beforeRefusal) {
		t.Fatalf("refused registration changed the store:\nbefore %+v\nafter  %+v", beforeRefusal, got)
	}
	// The host's own active AK registering again (a restart) is not
	// stopped by the bound.
	if code, msg := register(pub, "enrolled", []byte(reg.view("enrolled").AKPublic)); code != http.StatusOK {
		t.Fatalf("the active AK registering again with the per-EK bound reached: %d %s", code, msg)
	}

	// Another EK: one more fits in the total (3), then the total is full.
	other := publicOf(t, fleet.tpm())
	if code, msg := register(other, "other-1", aks[3]); code != http.StatusOK {
		t.Fatalf("registration of another EK: %d %s", code, msg)
	}
	third := publicOf(t, fleet.tpm())
	beforeRefusal = list()
	code, msg = register(third, "third-1", aks[4])
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "in total") {
		t.Fatalf("registration beyond the total: %d %q, want 429 naming the total bound", code, msg)
	}
	if got := list(); !reflect.DeepEqual(got, beforeRefusal) {
		t.Fatalf("refused registration changed the store")
	}
	if _, _, err := reg.activeAKs(etag0); !errors.Is(err, registrar.ErrNotModified) {
		t.Fatalf("change feed after registrations: %v, want not modified", err)
	}
	if refusals := reg.refusals(); refusals[registrar.ReasonTooManyPending] != 2 || len(refusals) != 1 {
		t.Errorf("refusals counted %v, want 2 too_many_pending", refusals)
	}

	// Past the deadline the sweep removes every pending registration, and
	// the store is back as it was.
	clk.Advance(ttl + time.Second)
	n, err := reg.svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("sweep removed %d registrations, want 4", n)
	}
	if got := list(); !reflect.DeepEqual(got, initial) {
		t.Fatalf("after expiry the store is not as it was:\nbefore %+v\nafter  %+v", initial, got)
	}
	if _, _, err := reg.activeAKs(etag0); !errors.Is(err, registrar.ErrNotModified) {
		t.Fatalf("change feed after expiry: %v, want not modified", err)
	}
	// The per-EK bound counts no expired registration, swept or not.
	for i, ak := range aks[:2] {
		if code, msg := register(third, "third-"+string(rune('a'+i)), ak); code != http.StatusOK {
			t.Fatalf("registration %d after the sweep: %d %s", i, code, msg)
		}
	}
	clk.Advance(ttl)
	if code, msg := register(third, "third-c", aks[2]); code != http.StatusOK {
		t.Fatalf("registration after the EK's others expired, before a sweep: %d %s", code, msg)
	}
}

// An activation that comes after its challenge's deadline is refused and
// changes nothing; the record of an agent that never activated goes away.
func TestExpiredChallengeRefused(t *testing.T) {
	fleet, policy := newSoftFleet(t)
	clk := newClock()
	reg := startRegistrarWith(t, policy, func(c *registrar.Config) { c.Now, c.ChallengeTTL = clk.Now, time.Minute })
	ctx := context.Background()
	host := fleet.tpm()
	pub := publicOf(t, host)
	ak, akPub, akName := newAK(t, host, tpm2.TPMAlgECC)
	var ch wire.RegisterResponse
	if status := postCBOR(t, reg, wire.PathRegister, wire.RegisterRequest{AgentID: "late", EKPublic: pub.ek, EKCert: pub.cert, AKPublic: akPub}, &ch); status != http.StatusOK {
		t.Fatalf("register: %d", status)
	}
	tpm, err := host(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := tpm.ActivateCredential(ctx, ak, tpm2.TPM2BIDObject{Buffer: ch.CredentialBlob}, tpm2.TPM2BEncryptedSecret{Buffer: ch.Secret})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if status := postCBOR(t, reg, wire.PathActivate, wire.ActivateRequest{AgentID: "late", Proof: wire.ActivationProof(secret, "late", akName)}, nil); status != http.StatusForbidden {
		t.Fatalf("late activation: %d, want 403", status)
	}
	if v := reg.view("late"); v.Active || v.PendingRegistrations != 1 {
		t.Fatalf("late activation changed the record: %+v", v)
	}
	if _, err := reg.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.admin().Get(ctx, "late"); !errors.Is(err, registrar.ErrNotFound) {
		t.Fatalf("never-activated record after expiry: %v, want not found", err)
	}
}

// The change feed: an etag that survives restarts, 304 while nothing
// changed, a new list after a deletion; admin certificate required.
func TestActiveAKsFeed(t *testing.T) {
	fleet, policy := newSoftFleet(t)
	reg := startRegistrarWith(t, policy, nil)
	ctx := context.Background()
	_, etagEmpty, err := reg.activeAKs("")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := reg.enroller(fleet.tpm(), t.TempDir(), id, tpm2.TPMAlgECC).Enroll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	aks, etag1, err := reg.activeAKs(etagEmpty)
	if err != nil || len(aks) != 2 || etag1 == etagEmpty {
		t.Fatalf("after two enrollments: %x %q %v", aks, etag1, err)
	}
	if hex.EncodeToString(aks["a"]) != reg.view("a").AKName {
		t.Errorf("feed's AK name of a %x, view's %s", aks["a"], reg.view("a").AKName)
	}
	if _, same, err := reg.activeAKs(etag1); !errors.Is(err, registrar.ErrNotModified) || same != etag1 {
		t.Fatalf("unchanged: %v, want not modified", err)
	}
	reg.stop()
	reg.start()
	if _, _, err := reg.activeAKs(etag1); !errors.Is(err, registrar.ErrNotModified) {
		t.Fatalf("after a restart: %v, want not modified", err)
	}
	if err := reg.admin().Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	aks, etag2, err := reg.activeAKs(etag1)
	if err != nil || etag2 == etag1 || len(aks) != 1 || aks["b"] == nil {
		t.Fatalf("after a deletion: %x %q %v", aks, etag2, err)
	}

	for _, h := range []string{"", `"` + etag2 + `"`} {
		req, _ := http.NewRequest(http.MethodGet, reg.srv.URL+registrar.PathAKs, nil)
		if h != "" {
			req.Header.Set("If-None-Match", h)
		}
		rsp, err := reg.agentHTTP().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without client certificate (If-None-Match %q): %d, want 401", registrar.PathAKs, h, rsp.StatusCode)
		}
	}
}
