package evidencetest

import (
	"crypto"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// GoAttestationFile finds a file of go-attestation's attest/testdata in the
// Go module cache (the module is a dependency of go-tpm-tools, so it is
// there after a build, but its testdata is not importable). The test is
// skipped when it cannot be found.
func GoAttestationFile(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env GOMODCACHE: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "github.com", "google", "go-attestation@*", "attest", "testdata", name))
	if len(matches) == 0 {
		t.Skipf("go-attestation's attest/testdata/%s is not in the module cache", name)
	}
	return matches[len(matches)-1]
}

// RealQuote is a quote a real TPM produced, with its AK, PCR values and
// boot event log.
type RealQuote struct {
	AK      []byte // TPMT_PUBLIC
	Attest  []byte // TPMS_ATTEST
	Sig     []byte // TPMT_SIGNATURE
	Nonce   []byte
	PCRs    evidence.PCRValues
	BootLog []byte
}

// WindowsGCPQuote loads go-attestation's windows_gcp_shielded_vm.json: a
// quote by a GCP Shielded VM's vTPM under Windows, all 24 SHA-1 PCRs, and
// the event log that produced them.
func WindowsGCPQuote(t testing.TB) RealQuote {
	t.Helper()
	b, err := os.ReadFile(GoAttestationFile(t, "windows_gcp_shielded_vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		AK    struct{ Public []byte }
		Quote struct {
			Nonce     []byte
			Quote     []byte
			Signature []byte
		}
		Log struct {
			PCRs []struct {
				Index     int
				Digest    []byte
				DigestAlg crypto.Hash
			}
			Raw []byte
		}
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	q := RealQuote{
		AK: dump.AK.Public, Attest: dump.Quote.Quote, Sig: dump.Quote.Signature,
		Nonce: dump.Quote.Nonce, PCRs: make(evidence.PCRValues), BootLog: dump.Log.Raw,
	}
	for _, p := range dump.Log.PCRs {
		alg := tpm2.TPMAlgSHA1
		if p.DigestAlg == crypto.SHA256 {
			alg = tpm2.TPMAlgSHA256
		}
		q.PCRs.Set(alg, p.Index, p.Digest)
	}
	return q
}
