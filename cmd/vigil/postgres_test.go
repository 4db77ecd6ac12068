package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/pgtest"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// TestOnPostgreSQLEndToEnd runs the registrar and the verifier on one
// PostgreSQL database (--store) with a host on swtpm: the host enrolls and
// attests; PostgreSQL restarts mid-run and the host goes on attesting; a
// tamper afterwards is failed and revoked exactly once; a verifier restart
// finds the admission and the failure where they were left.
func TestOnPostgreSQLEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	db := pgtest.Start(t)
	d := newDeployment(t, db.NewDatabase(t))
	d.waitFor("attesting on PostgreSQL", 30*time.Second, func(s agentStatus) bool { return s.State == "attesting" && s.Attestations >= 3 })

	db.Restart(t)
	before := d.status().Attestations
	st := d.waitFor("attesting after PostgreSQL restarted", 30*time.Second, func(s agentStatus) bool {
		return s.State == "attesting" && s.Attestations >= before+3
	})
	if st.Reason != "" {
		t.Fatalf("a database restart left reason %q", st.Reason)
	}

	tpm := d.host.TPM(t)
	bad := d.host.Measure(t, tpm, "not-in-policy")
	tpm.Close()
	st = d.waitFor("failure on a file outside the policy", 15*time.Second, func(s agentStatus) bool { return s.State == "failed" })
	if st.Reason != "policy_violation" || !strings.Contains(st.Detail, bad) {
		t.Fatalf("failed with %q %q, want policy_violation naming %s", st.Reason, st.Detail, bad)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(d.events()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no revocation delivered")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The verifier restarts: its admission, the failure and the delivered
	// revocation are in the database, so nothing is raised or sent again.
	d.verifier.Stop()
	d.verifier = startProcess(t, nil, d.verifierArgs...)
	waitHealthy(t, d.tlsDir, d.verURL)
	if st := d.status(); st.State != "failed" || st.Reason != "policy_violation" {
		t.Fatalf("after a verifier restart: %s %s", st.State, st.Reason)
	}
	time.Sleep(time.Second)
	evs := d.events()
	if len(evs) != 1 || evs[0].Type != revocation.TypeRevoked || evs[0].Data.Reason != "policy_violation" {
		t.Fatalf("events delivered: %+v, want the one revocation", evs)
	}
}
