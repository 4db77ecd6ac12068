package agenttest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// Host is a simulated machine.
type Host struct {
	// Swtpm is the host's TPM, unless SoftPath is set.
	Swtpm *tpmsim.Swtpm
	// SoftPath, instead of Swtpm, is the state file of a soft TPM, which
	// the agent opens as soft:SoftPath.
	SoftPath string
	BootLog  string
	IMALog   simhost.IMALog
	// Measured is the directory of the files measured into the IMA list.
	Measured string
}

// NewBootedSwtpmHost is a host on a fresh swtpm (EK from swtpm's own CA)
// whose logs and measured files live in dir, booted once.
func NewBootedSwtpmHost(t testing.TB, dir string) *Host {
	t.Helper()
	h := &Host{
		Swtpm:    tpmsimtest.NewTestSwtpm(t, ""),
		BootLog:  filepath.Join(dir, "binary_bios_measurements"),
		IMALog:   simhost.IMALog{Path: filepath.Join(dir, "binary_runtime_measurements")},
		Measured: filepath.Join(dir, "usr-bin"),
	}
	if err := os.MkdirAll(h.Measured, 0o700); err != nil {
		t.Fatal(err)
	}
	h.Boot(t)
	return h
}

// TPM opens the host's TPM; close it before the agent needs it (swtpm
// serves one connection at a time).
func (h *Host) TPM(t testing.TB) agent.TPM {
	t.Helper()
	if h.SoftPath != "" {
		st, err := soft.Open(h.SoftPath)
		if err != nil {
			t.Fatal(err)
		}
		return agent.NewSoftTPM(st)
	}
	c, err := h.Swtpm.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return agent.NewGoTPM(c)
}

// Boot runs a measured boot: the boot log into PCRs 0-9, then IMA's
// boot_aggregate and three measured files into PCR 10. After the first,
// restart the TPM before each boot.
func (h *Host) Boot(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	tpm := h.TPM(t)
	defer tpm.Close()
	bl, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Boot(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.BootLog, bl.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.IMALog.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		h.Measure(t, tpm, fmt.Sprintf("good-%d", i))
	}
}

// Measure writes a file and appends its measurement to the IMA list, as
// the kernel does when it runs; it returns the file's path.
func (h *Host) Measure(t testing.TB, tpm agent.TPM, name string) string {
	t.Helper()
	path := filepath.Join(h.Measured, name)
	if err := os.WriteFile(path, []byte("contents of "+name), 0o700); err != nil {
		t.Fatal(err)
	}
	e, err := simhost.MeasureFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.IMALog.Append(context.Background(), tpm, e); err != nil {
		t.Fatal(err)
	}
	return path
}

// Spec is the host's TPM as the agent's --tpm names it.
func (h *Host) Spec() string {
	if h.SoftPath != "" {
		return "soft:" + h.SoftPath
	}
	return h.Swtpm.Spec()
}

// AllowFile writes a copy of a Keylime runtime policy that also allows the
// file at path, with its current digest, and returns the copy's path.
func AllowFile(t testing.TB, policyFile, path string) string {
	t.Helper()
	b, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	var pol map[string]any
	if err := json.Unmarshal(b, &pol); err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	digests, _ := pol["digests"].(map[string]any)
	if digests == nil {
		digests = map[string]any{}
		pol["digests"] = digests
	}
	digests[path] = []any{fmt.Sprintf("%x", sum)}
	out := filepath.Join(t.TempDir(), "runtime-allowing-"+filepath.Base(path)+".json")
	b, _ = json.Marshal(pol)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}
