package main

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/bootpolicy/keylimetest"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// keylimeRefState writes the reference state Keylime's generator makes
// from a log, edited by edit (when not nil).
func keylimeRefState(t *testing.T, dir, name, logPath string, edit func(ref map[string]any)) string {
	t.Helper()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := keylimetest.RefState(raw)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(ref)
	}
	return writeJSON(t, dir, name, ref)
}

// TestBootPolicyKeylimeRefstate: `vigil policy create boot
// --keylime-refstate` converts a Keylime reference state, and with
// --boot-log checks that log against it.
func TestBootPolicyKeylimeRefstate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	example := testenv.Data(t, "policy", "keylime-example_reference_state.json")
	offLog := testenv.Data(t, "uefi", "keylime-binary_bios_measurements")
	onLog := testenv.Data(t, "uefi", "keylime-binary_bios_measurements-secureboot")
	refOff := keylimeRefState(t, dir, "off.json", offLog, nil)
	refOn := keylimeRefState(t, dir, "on.json", onLog, nil)

	out, code := run(t, ctx, "policy", "create", "boot", "--keylime-refstate", example)
	if code != exitOK {
		t.Fatalf("convert the example: exit %d", code)
	}
	p, err := bootpolicy.Parse([]byte(out))
	if err != nil {
		t.Fatalf("the converted policy does not parse: %v\n%s", err, out)
	}
	if p.Version != 2 || p.SecureBoot != "enabled" || len(p.MOK) != 1 || len(p.MOKX) != 1 || len(p.Kernels) != 1 || p.Kernels[0].Initrd == "" {
		t.Fatalf("converted policy:\n%s", out)
	}

	for _, tc := range []struct {
		name     string
		ref, log string
		want     int
	}{
		{"Secure Boot off, own log", refOff, offLog, exitOK},
		{"Secure Boot on, own log", refOn, onLog, exitOK},
		{"Secure Boot on, the other log", refOn, offLog, exitFailure},
		{"Secure Boot off, the other log", refOff, onLog, exitFailure},
		{"Keylime's example, a real log", example, onLog, exitFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy := filepath.Join(t.TempDir(), "policy.json")
			_, code := run(t, ctx, "policy", "create", "boot", "--keylime-refstate", tc.ref, "--boot-log", tc.log, "--out", policy)
			if code != tc.want {
				t.Fatalf("exit %d, want %d", code, tc.want)
			}
			b, err := os.ReadFile(policy)
			if tc.want != exitOK {
				if err == nil {
					t.Fatalf("a policy was written for a log that does not meet it:\n%s", b)
				}
				return
			}
			if _, err := bootpolicy.Parse(b); err != nil {
				t.Fatalf("written policy: %v", err)
			}
		})
	}

	// The known-good host's PCRs may be given: they must be the log's.
	raw, _ := os.ReadFile(offLog)
	l, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := bootpolicy.LogPCRs(l, tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	pcrFile := writeJSON(t, dir, "pcrs.json", pcrs)
	if _, code := run(t, ctx, "policy", "create", "boot", "--keylime-refstate", refOff, "--boot-log", offLog, "--pcrs", pcrFile); code != exitOK {
		t.Fatalf("with the host's PCRs: exit %d", code)
	}
	pcrs[tpm2.TPMAlgSHA256][14] = make([]byte, 32)
	wrong := writeJSON(t, dir, "wrong-pcrs.json", pcrs)
	if _, code := run(t, ctx, "policy", "create", "boot", "--keylime-refstate", refOff, "--boot-log", offLog, "--pcrs", wrong); code != exitFailure {
		t.Fatalf("with PCRs the log does not replay to: exit %d, want 1", code)
	}

	// Bad input is exit 2.
	vigilPolicy := filepath.Join(dir, "vigil-policy.json")
	if _, code := run(t, ctx, "policy", "create", "boot", "--boot-log", offLog, "--out", vigilPolicy); code != exitOK {
		t.Fatalf("policy create boot --boot-log: exit %d", code)
	}
	unknown := keylimeRefState(t, dir, "unknown.json", offLog, func(r map[string]any) { r["tpm_policy"] = "x" })
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"neither input", nil},
		{"unknown field", []string{"--keylime-refstate", unknown}},
		{"a Vigil policy", []string{"--keylime-refstate", vigilPolicy}},
		{"not JSON", []string{"--keylime-refstate", offLog}},
		{"absent file", []string{"--keylime-refstate", filepath.Join(dir, "absent")}},
		{"other bank", []string{"--keylime-refstate", example, "--bank", "sha1"}},
		{"PCRs without a log", []string{"--keylime-refstate", example, "--pcrs", pcrFile}},
		{"bogus log", []string{"--keylime-refstate", example, "--boot-log", testenv.Data(t, "uefi", "keylime-binary_bios_measurements-bogus")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, code := run(t, ctx, append([]string{"policy", "create", "boot"}, tc.args...)...); code != exitUsage {
				t.Fatalf("exit %d, want %d", code, exitUsage)
			}
		})
	}
}

// softMeasuredHost is a soft TPM into which a real machine's UEFI log was
// measured (SHA-256 bank), quoted over pcrs.
func softMeasuredHost(t *testing.T, logPath string, pcrs []int) measuredHost {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	events, err := l.Events(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	tpm := agent.NewSoftTPM(st)
	for _, e := range events {
		if e.Type == "EV_NO_ACTION" || e.Type == "No Action" {
			continue
		}
		d, _ := hex.DecodeString(e.Digest)
		if err := tpm.PCRExtend(ctx, e.PCR, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d}); err != nil {
			t.Fatal(err)
		}
	}
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	sel := evidence.Selection(pcrs, tpm2.TPMAlgSHA256)
	m := measuredHost{dir: t.TempDir(), nonce: []byte("fresh nonce from the verifier 02")}
	attest, sig, err := tpm.Quote(ctx, ak, m.nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	values, err := tpm.PCRRead(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	m.ak = writeFile(t, m.dir, "ak.pub", tpm2.Marshal(ak.Public))
	m.quote = writeFile(t, m.dir, "quote.bin", attest.Bytes())
	m.sig = writeFile(t, m.dir, "quote.sig", tpm2.Marshal(sig))
	m.pcrs = writeJSON(t, m.dir, "pcrs.json", evidence.PCRValues(values))
	m.bootLog = logPath
	return m
}

// TestQuoteVerifyKeylimeRefstate: `vigil quote verify --boot-policy` takes
// a Keylime reference state as it is, or converted, and holds a quoted
// real boot to every field of it.
func TestQuoteVerifyKeylimeRefstate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	onLog := testenv.Data(t, "uefi", "keylime-binary_bios_measurements-secureboot")
	bootPCRs := append(slices.Clone(bootlog.BootPCRs), 14)
	m := softMeasuredHost(t, onLog, bootPCRs)

	ref := keylimeRefState(t, dir, "ref.json", onLog, nil)
	converted := filepath.Join(dir, "converted.json")
	if _, code := run(t, ctx, "policy", "create", "boot", "--keylime-refstate", ref, "--out", converted); code != exitOK {
		t.Fatalf("convert: exit %d", code)
	}
	for _, pol := range []string{ref, converted} {
		if r, code := verifyQuote(t, m.args("--boot-log", m.bootLog, "--boot-policy", pol)...); code != exitOK {
			t.Fatalf("%s: exit %d, failures %v", filepath.Base(pol), code, r.Failures)
		}
	}

	other := "0x" + strings.Repeat("ee", 32)
	kernel := func(r map[string]any) map[string]string { return r["kernels"].([]map[string]string)[0] }
	for _, tc := range []struct {
		name  string
		edit  func(map[string]any)
		want  evidence.Reason
		field string
	}{
		{"other MOK", func(r map[string]any) { r["mokdig"] = []map[string]string{{"sha256": other}} }, bootpolicy.ReasonMOK, "mokdig"},
		{"other MOKX", func(r map[string]any) { r["mokxdig"] = []map[string]string{{"sha256": other}} }, bootpolicy.ReasonMOKX, "mokxdig"},
		{"other shim", func(r map[string]any) { kernel(r)["shim_authcode_sha256"] = other }, bootpolicy.ReasonShim, "shim_authcode_sha256"},
		{"other GRUB", func(r map[string]any) { kernel(r)["grub_authcode_sha256"] = other }, bootpolicy.ReasonGrub, "grub_authcode_sha256"},
		{"other kernel", func(r map[string]any) { kernel(r)["kernel_authcode_sha256"] = other }, bootpolicy.ReasonKernel, "kernel_authcode_sha256"},
		{"other initrd", func(r map[string]any) { kernel(r)["initrd_plain_sha256"] = other }, bootpolicy.ReasonInitrd, "initrd_plain_sha256"},
		{"other vmlinuz", func(r map[string]any) { kernel(r)["vmlinuz_plain_sha256"] = other }, bootpolicy.ReasonVmlinuz, "vmlinuz_plain_sha256"},
		{"other command line", func(r map[string]any) { kernel(r)["kernel_cmdline"] = "root=/dev/sda1" }, bootpolicy.ReasonKernelCmdline, "kernel_cmdline"},
		{"no vendor_db", func(r map[string]any) { r["vendor_db"] = []any{} }, bootpolicy.ReasonSigDB, "vendor_db entry"},
		{"Secure Boot off required", func(r map[string]any) {
			r["has_secureboot"] = false
			k := kernel(r)
			k["vmlinuz_plain_sha256"] = k["kernel_authcode_sha256"]
			delete(k, "kernel_authcode_sha256")
		}, bootpolicy.ReasonSecureBoot, "has_secureboot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := keylimeRefState(t, t.TempDir(), "ref.json", onLog, tc.edit)
			r, code := verifyQuote(t, m.args("--boot-log", m.bootLog, "--boot-policy", pol)...)
			if code != exitFailure || len(r.Failures) == 0 || r.Failures[0].Reason != tc.want || !strings.Contains(r.Failures[0].Detail, tc.field) {
				t.Fatalf("exit %d, failures %v; want exit 1, first %s naming %q", code, r.Failures, tc.want, tc.field)
			}
		})
	}

	// A quote without PCR 14 cannot show the MOK state the policy checks.
	m10 := softMeasuredHost(t, onLog, bootlog.BootPCRs)
	r, code := verifyQuote(t, m10.args("--boot-log", m10.bootLog, "--boot-policy", ref)...)
	if code != exitFailure || !slices.ContainsFunc(r.Failures, func(f *evidence.Failure) bool {
		return f.Reason == bootpolicy.ReasonStateMissing && strings.Contains(f.Detail, "PCR 14")
	}) {
		t.Fatalf("quote without PCR 14: exit %d, failures %v", code, r.Failures)
	}
	if r.Boot == nil || r.Boot.MOK != nil {
		t.Fatalf("the report shows a MOK state PCR 14 does not vouch for: %+v", r.Boot)
	}
}
