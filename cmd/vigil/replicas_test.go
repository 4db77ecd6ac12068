package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/vigil-attest/vigil/agent/agenttest"
	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// TestReplicasTakeOverADeadOne runs PostgreSQL, two registrars and three
// verifier replicas through the CLI, with a host on swtpm and one on the
// soft TPM, whose agents know all three verifiers. The replica that holds one host is killed
// (SIGKILL): the host is attesting again under another replica, and no
// host fails for the silence; a tamper on it afterwards is revoked exactly
// once.
func TestReplicasTakeOverADeadOne(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	db := pgtest.Start(t)
	storeURL := db.NewDatabase(t)
	caDir := filepath.Join(dir, "swtpm-ca")
	os.MkdirAll(caDir, 0o700)

	tlsDir := filepath.Join(dir, "tls")
	if _, code := run(t, ctx, "ca", "init", tlsDir); code != 0 {
		t.Fatal("ca init")
	}
	// host-0 is on swtpm, host-1 on Vigil's soft TPM, made by a
	// manufacturer whose root joins swtpm's in the registrars' --ek-roots.
	mfr, err := soft.NewManufacturer("replicas test TPM manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caDir, "soft-manufacturer.pem"), mfr.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	softPath := filepath.Join(dir, "soft-tpm")
	if _, err := soft.Create(softPath, soft.Options{Manufacturer: mfr}); err != nil {
		t.Fatal(err)
	}
	hosts := make([]*e2eHost, 2)
	for i := range hosts {
		h := &e2eHost{
			BootLog:  filepath.Join(dir, fmt.Sprintf("boot-%d", i)),
			IMALog:   simhost.IMALog{Path: filepath.Join(dir, fmt.Sprintf("ima-%d", i))},
			Measured: filepath.Join(dir, fmt.Sprintf("bin-%d", i)),
		}
		if i == 0 {
			h.Swtpm = tpmsimtest.NewTestSwtpm(t, caDir)
		} else {
			h.SoftPath = softPath
		}
		os.MkdirAll(h.Measured, 0o700)
		h.Boot(t)
		hosts[i] = h
	}

	var regURLs []string
	for range 2 {
		addr := freeAddr(t)
		startProcess(t, nil, "registrar", "--store", storeURL, "--tls-dir", tlsDir, "--listen", addr,
			"--ek-roots", caDir, "--log-level", "warn")
		regURLs = append(regURLs, "https://"+addr)
		waitHealthy(t, tlsDir, "https://"+addr)
	}

	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := revocation.ParseSecret(secret)
	rcv := &webhookReceiver{key: key}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	secretFile, caFile := filepath.Join(dir, "secret"), filepath.Join(dir, "receiver-ca.pem")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	const interval = time.Second
	verifiers := map[string]*process{}
	var verURLs []string
	for i := range 3 {
		addr := freeAddr(t)
		url := "https://" + addr
		id := fmt.Sprintf("v%d", i+1)
		verifiers[id] = startProcess(t, nil, "verifier", "--store", storeURL, "--advertise", url, "--replica-id", id,
			"--tls-dir", tlsDir, "--listen", addr, "--registrar", regURLs[0], "--interval", interval.String(),
			"--log-level", "warn", "--webhook", srv.URL, "--webhook-secret-file", secretFile, "--webhook-ca", caFile,
			"--webhook-max-backoff", "300ms")
		verURLs = append(verURLs, url)
		waitHealthy(t, tlsDir, url)
	}

	tenant := func(verURL string, args ...string) string {
		t.Helper()
		out, code := run(t, ctx, append([]string{"tenant", "--tls-dir", tlsDir, "--registrar", regURLs[0], "--verifier", verURL}, args...)...)
		if code != 0 {
			t.Fatalf("vigil tenant %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	for i, h := range hosts {
		pol := filepath.Join(dir, fmt.Sprintf("rt-%d.json", i))
		if _, code := run(t, ctx, "policy", "create", "runtime", "--ima-log", h.IMALog.Path, "--out", pol); code != 0 {
			t.Fatal("policy create runtime")
		}
		// Policies and admissions go to different replicas: the operator's
		// view is the fleet's, whichever replica it asks.
		tenant(verURLs[i], "policy", "add", fmt.Sprintf("rt-%d", i), "--runtime", pol)
		tenant(verURLs[(i+1)%3], "agent", "add", fmt.Sprintf("host-%d", i), "--runtime-policy", fmt.Sprintf("rt-%d", i),
			"--identity", fmt.Sprintf("spiffe://example.org/node/host-%d", i), "--interval", interval.String())
		args := []string{"agent", "--data", filepath.Join(dir, fmt.Sprintf("agent-%d", i)), "--tpm", h.Spec(),
			"--registrar", regURLs[i], "--ca", filepath.Join(tlsDir, tlsutil.CACert), "--id", fmt.Sprintf("host-%d", i),
			"--boot-log", h.BootLog, "--ima-log", h.IMALog.Path, "--log-level", "warn"}
		for _, u := range verURLs {
			args = append(args, "--verifier", u)
		}
		startProcess(t, nil, args...)
	}

	status := func(verURL, id string) agentStatus {
		t.Helper()
		var st agentStatus
		if err := json.Unmarshal([]byte(tenant(verURL, "agent", "status", id, "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor := func(what string, verURL, id string, limit time.Duration, ok func(agentStatus) bool) agentStatus {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			st := status(verURL, id)
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; last status %+v", what, limit, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i := range hosts {
		waitFor("attesting", verURLs[0], fmt.Sprintf("host-%d", i), 60*time.Second, func(s agentStatus) bool {
			return s.State == "attesting" && s.Attestations >= 3
		})
	}

	pool, err := pgxpool.New(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var owner string
	if err := pool.QueryRow(ctx, `SELECT owner FROM verifier_leases WHERE agent_id = 'host-0'`).Scan(&owner); err != nil {
		t.Fatalf("host-0's lease: %v", err)
	}
	var survivor string
	for i, id := range []string{"v1", "v2", "v3"} {
		if id != owner {
			survivor = verURLs[i]
		}
	}
	before := status(survivor, "host-0").Attestations
	killed := time.Now()
	verifiers[owner].Kill()
	t.Logf("killed %s, which held host-0", owner)

	st := waitFor("host-0 attesting under another replica", survivor, "host-0", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+2
	})
	t.Logf("host-0 attesting again %s after the kill (%d attestations)", time.Since(killed).Round(10*time.Millisecond), st.Attestations)
	var newOwner string
	if err := pool.QueryRow(ctx, `SELECT owner FROM verifier_leases WHERE agent_id = 'host-0'`).Scan(&newOwner); err != nil || newOwner == owner {
		t.Fatalf("host-0's lease after the kill: %q, %v", newOwner, err)
	}
	for i := range hosts {
		if st := status(survivor, fmt.Sprintf("host-%d", i)); st.State != "attesting" {
			t.Fatalf("host-%d after the failover: %s %s", i, st.State, st.Reason)
		}
	}
	if _, accepted := rcv.snapshot(); len(accepted) != 0 {
		t.Fatalf("a failover raised events: %+v", accepted)
	}

	// A tamper on the host the dead replica held: revoked, once.
	tpm := hosts[0].TPM(t)
	bad := hosts[0].Measure(t, tpm, "not-in-policy")
	tpm.Close()
	st = waitFor("failure on a file outside the policy", survivor, "host-0", 15*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "policy_violation" || !strings.Contains(st.Detail, bad) {
		t.Fatalf("failed with %q %q", st.Reason, st.Detail)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, accepted := rcv.snapshot()
		if len(accepted) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no revocation delivered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	_, accepted := rcv.snapshot()
	revoked := 0
	for _, e := range accepted {
		if e.Type == revocation.TypeRevoked && e.Subject == "host-0" {
			revoked++
		}
	}
	if revoked != 1 || len(accepted) != 1 {
		t.Fatalf("events delivered: %+v, want host-0 revoked exactly once", accepted)
	}
	if st := status(survivor, "host-1"); st.State != "attesting" {
		t.Fatalf("host-1: %s %s", st.State, st.Reason)
	}

	// The killed replica comes back: hosts rendezvous hashing gives it are
	// handed over to it, and PostgreSQL restarts under the fleet; host-1
	// keeps attesting through both, and nothing more is revoked.
	for i, id := range []string{"v1", "v2", "v3"} {
		if id == owner {
			addr := strings.TrimPrefix(verURLs[i], "https://")
			verifiers[id] = startProcess(t, nil, "verifier", "--store", storeURL, "--advertise", verURLs[i], "--replica-id", id,
				"--tls-dir", tlsDir, "--listen", addr, "--registrar", regURLs[0], "--interval", interval.String(),
				"--log-level", "warn", "--webhook", srv.URL, "--webhook-secret-file", secretFile, "--webhook-ca", caFile,
				"--webhook-max-backoff", "300ms")
			waitHealthy(t, tlsDir, verURLs[i])
		}
	}
	before = status(survivor, "host-1").Attestations
	db.Restart(t)
	waitFor("host-1 attesting through a rejoin and a database restart", survivor, "host-1", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+3
	})
	if st := status(verURLs[0], "host-1"); st.State != "attesting" || st.Reason != "" {
		t.Fatalf("host-1 after the rejoin: %s %s", st.State, st.Reason)
	}
	if _, accepted := rcv.snapshot(); len(accepted) != 1 {
		t.Fatalf("events after the rejoin: %+v, want still the one revocation", accepted)
	}
	// host-0 was the rejoined replica's by rendezvous hashing: its lease is
	// handed back to it, and its failure stays as it was.
	deadline = time.Now().Add(15 * time.Second)
	for {
		var now string
		if err := pool.QueryRow(ctx, `SELECT owner FROM verifier_leases WHERE agent_id = 'host-0'`).Scan(&now); err == nil && now == owner {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host-0's lease was not handed back to %s, whom hashing names (%s)", owner, verifier.Owner("host-0", []string{"v1", "v2", "v3"}))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := status(survivor, "host-0"); st.State != "failed" || st.Reason != "policy_violation" {
		t.Fatalf("host-0 after the hand-over: %s %s", st.State, st.Reason)
	}

	// The operator allows the file in a new policy version, stored through
	// one replica, and readmits host-0 through a replica that does not hold
	// it: the readmission is redirected to the holder, which must check
	// host-0 against the new version another replica stored.
	var other string
	for i, id := range []string{"v1", "v2", "v3"} {
		if id != owner {
			other = verURLs[i]
		}
	}
	tenant(verURLs[0], "policy", "add", "rt-0", "--runtime", agenttest.AllowFile(t, filepath.Join(dir, "rt-0.json"), bad))
	tenant(other, "agent", "readmit", "host-0")
	st = waitFor("host-0 attesting after a readmission through another replica", other, "host-0", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting"
	})
	if st.IMAEntries < 5 {
		t.Fatalf("host-0 readmitted with %d IMA entries verified; want its whole list, the allowed file included", st.IMAEntries)
	}
}
