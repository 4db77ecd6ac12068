package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// simTPM is a TPM the sim commands reach by --tpm spec, and a way for the
// test to read its PCRs afterwards.
type simTPM struct {
	name string
	spec func(t *testing.T) (spec string, read func() map[tpm2.TPMAlgID]map[int][]byte)
}

func simTPMs() []simTPM {
	return []simTPM{
		{"swtpm", func(t *testing.T) (string, func() map[tpm2.TPMAlgID]map[int][]byte) {
			sw := tpmsimtest.NewTestSwtpm(t, "")
			return sw.Spec(), func() map[tpm2.TPMAlgID]map[int][]byte {
				conn, err := sw.Open(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				tpm := agent.NewGoTPM(conn)
				defer tpm.Close()
				return readAllPCRs(t, tpm)
			}
		}},
		{"soft", func(t *testing.T) (string, func() map[tpm2.TPMAlgID]map[int][]byte) {
			path := filepath.Join(t.TempDir(), "tpm.json")
			if _, err := soft.Create(path, soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}}); err != nil {
				t.Fatal(err)
			}
			return "soft:" + path, func() map[tpm2.TPMAlgID]map[int][]byte {
				tpm, err := soft.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				return readAllPCRs(t, tpm.Conn())
			}
		}},
	}
}

func readAllPCRs(t *testing.T, r simhost.PCRReader) map[tpm2.TPMAlgID]map[int][]byte {
	t.Helper()
	pcrs, err := simhost.ReadPCRs(context.Background(), r, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	if err != nil {
		t.Fatal(err)
	}
	return pcrs
}

// TestSimCLI runs a whole simulated host through the command line: boot,
// IMA init, IMA measure (flags after the paths), and checks the JSON
// reports against the TPM and the files against the TPM, with Vigil's own
// boot-log and IMA code.
func TestSimCLI(t *testing.T) {
	for _, tc := range simTPMs() {
		for _, format := range []string{"", "ascii"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				ctx := context.Background()
				spec, readPCRs := tc.spec(t)
				dir := t.TempDir()
				bootPath := filepath.Join(dir, "binary_bios_measurements")
				imaPath := filepath.Join(dir, "runtime_measurements")

				out, code := run(t, ctx, "sim", "boot", "--tpm", spec, "--out", bootPath, "--kernel-cmdline", "/boot/vmlinuz-x root=/dev/vda1 ro", "--json")
				if code != 0 {
					t.Fatalf("sim boot exited %d: %s", code, out)
				}
				var boot simBootResult
				if err := json.Unmarshal([]byte(out), &boot); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if !boot.SecureBoot || boot.KernelCmdline != "/boot/vmlinuz-x root=/dev/vda1 ro" || boot.Kernel != "/boot/vmlinuz-x" || boot.Events < 30 || boot.Out != bootPath {
					t.Errorf("sim boot report: %+v", boot)
				}

				initArgs := []string{"sim", "ima", "--tpm", spec, "--log", imaPath, "--init", "--json"}
				if format != "" {
					initArgs = append(initArgs, "--format", format)
				}
				out, code = run(t, ctx, initArgs...)
				if code != 0 {
					t.Fatalf("sim ima --init exited %d: %s", code, out)
				}
				var initRes simIMAResult
				if err := json.Unmarshal([]byte(out), &initRes); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				wantFormat := "binary"
				if format != "" {
					wantFormat = format
				}
				if len(initRes.Entries) != 1 || initRes.Entries[0].Path != "boot_aggregate" || initRes.Format != wantFormat {
					t.Errorf("sim ima --init report: %+v", initRes)
				}

				files := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
				for i, f := range files {
					os.WriteFile(f, []byte("file "+strconv.Itoa(i)), 0o755)
				}
				// Flags after the paths, as operators write them; the
				// list's format is detected.
				out, code = run(t, ctx, "sim", "ima", "--tpm", spec, "--log", imaPath, "--measure", files[0], files[1], "--json")
				if code != 0 {
					t.Fatalf("sim ima --measure exited %d: %s", code, out)
				}
				var measured simIMAResult
				if err := json.Unmarshal([]byte(out), &measured); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if len(measured.Entries) != 2 || measured.Format != wantFormat {
					t.Fatalf("sim ima --measure report: %+v", measured)
				}
				for i, e := range measured.Entries {
					c, _ := os.ReadFile(files[i])
					d, _ := ima.Sum(ima.SHA256, c)
					if e.Path != files[i] || e.FileDigest != "sha256:"+hex.EncodeToString(d) || len(e.TemplateHash) != 40 {
						t.Errorf("entry %d: %+v", i, e)
					}
				}

				// The reports tell the TPM's values, and the files replay
				// to them.
				pcrs := readPCRs()
				quoted := evidence.PCRValues{}
				for alg, bank := range pcrs {
					for i, v := range bank {
						quoted.Set(alg, i, v)
					}
				}
				for i := range 10 {
					if got := boot.PCRs["sha256"][strconv.Itoa(i)]; got != hex.EncodeToString(pcrs[tpm2.TPMAlgSHA256][i]) {
						t.Errorf("sim boot reported PCR %d as %s, the TPM has %x", i, got, pcrs[tpm2.TPMAlgSHA256][i])
					}
				}
				if measured.PCR10["sha256"] != hex.EncodeToString(pcrs[tpm2.TPMAlgSHA256][10]) || measured.PCR10["sha1"] != hex.EncodeToString(pcrs[tpm2.TPMAlgSHA1][10]) {
					t.Errorf("sim ima reported PCR 10 %v, the TPM has sha1 %x sha256 %x", measured.PCR10, pcrs[tpm2.TPMAlgSHA1][10], pcrs[tpm2.TPMAlgSHA256][10])
				}
				raw, err := os.ReadFile(bootPath)
				if err != nil {
					t.Fatal(err)
				}
				parsed, err := bootlog.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				verified, err := parsed.Verify(quoted)
				if err != nil {
					t.Fatalf("boot log against the TPM: %v", err)
				}
				st, err := verified.State(tpm2.TPMAlgSHA256)
				if err != nil {
					t.Fatal(err)
				}
				if !st.SecureBoot || st.KernelCmdline != boot.KernelCmdline {
					t.Errorf("boot state: secure boot %v, cmdline %q", st.SecureBoot, st.KernelCmdline)
				}
				list, err := os.ReadFile(imaPath)
				if err != nil {
					t.Fatal(err)
				}
				res, err := ima.Replay(list, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1, ima.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if res.Entries != 3 || !bytes.Equal(res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA256][10]) || !bytes.Equal(res.PCR["sha1"], pcrs[tpm2.TPMAlgSHA1][10]) {
					t.Errorf("IMA list: %d entries replay to %x, TPM PCR 10 is %x", res.Entries, res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA256][10])
				}
			})
		}
	}
}

// TestSimCLIText checks the human output: the IMA entries as
// ascii_runtime_measurements prints them, and a line per PCR 10 bank.
func TestSimCLIText(t *testing.T) {
	ctx := context.Background()
	spec, _ := simTPMs()[1].spec(t)
	dir := t.TempDir()
	out, code := run(t, ctx, "sim", "boot", "--tpm", spec, "--out", filepath.Join(dir, "boot"), "--secure-boot=false")
	if code != 0 || !strings.Contains(out, "Secure Boot off") || !strings.Contains(out, "PCR 9 sha256 ") {
		t.Fatalf("sim boot exited %d:\n%s", code, out)
	}
	f := filepath.Join(dir, "prog")
	os.WriteFile(f, []byte("x"), 0o755)
	out, code = run(t, ctx, "sim", "ima", "--tpm", spec, "--log", filepath.Join(dir, "ima"), "--init", "--measure", f)
	if code != 0 {
		t.Fatalf("sim ima exited %d:\n%s", code, out)
	}
	entries, err := ima.ParseAll([]byte(strings.Join(strings.SplitAfter(out, "\n")[:2], "")), ima.ParseOptions{})
	if err != nil || len(entries) != 2 || string(entries[1].Path()) != f {
		t.Errorf("the first lines are not the two entries in ASCII list form (%v):\n%s", err, out)
	}
	if !strings.Contains(out, "PCR 10 sha1 ") || !strings.Contains(out, "PCR 10 sha256 ") {
		t.Errorf("no PCR 10 lines:\n%s", out)
	}
}

// TestSimCLIInProcessSimulator runs the commands on --tpm sim. The
// simulator lives as long as one command, so the checks are that the
// reported PCRs are those the written log replays to, and that a fresh
// simulator's boot_aggregate is over ten zero PCRs.
func TestSimCLIInProcessSimulator(t *testing.T) {
	sim, err := tpmsim.OpenSimulator()
	if err != nil {
		testenv.Missing(t, "no in-process simulator: "+err.Error())
	}
	sim.Close()
	ctx := context.Background()
	dir := t.TempDir()
	bootPath := filepath.Join(dir, "boot")
	out, code := run(t, ctx, "sim", "boot", "--tpm", "sim", "--out", bootPath, "--json")
	if code != 0 {
		t.Fatalf("sim boot exited %d: %s", code, out)
	}
	var boot simBootResult
	if err := json.Unmarshal([]byte(out), &boot); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(bootPath)
	parsed, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, bank := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		replayed, err := parsed.Replay(bank)
		if err != nil {
			t.Fatal(err)
		}
		name := map[tpm2.TPMAlgID]string{tpm2.TPMAlgSHA1: "sha1", tpm2.TPMAlgSHA256: "sha256"}[bank]
		for i := range 10 {
			if got := boot.PCRs[name][strconv.Itoa(i)]; got != hex.EncodeToString(replayed[i]) {
				t.Errorf("%s PCR %d: reported %s, the log replays to %x", name, i, got, replayed[i])
			}
		}
	}

	out, code = run(t, ctx, "sim", "ima", "--tpm", "sim", "--log", filepath.Join(dir, "ima"), "--init", "--json")
	if code != 0 {
		t.Fatalf("sim ima exited %d: %s", code, out)
	}
	var res simIMAResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	zero := map[int][]byte{}
	for i := range 10 {
		zero[i] = make([]byte, 32)
	}
	agg, _ := ima.BootAggregate(ima.SHA256, zero)
	if len(res.Entries) != 1 || res.Entries[0].FileDigest != "sha256:"+hex.EncodeToString(agg) {
		t.Errorf("boot_aggregate of a fresh simulator: %+v, want sha256:%x", res.Entries, agg)
	}
}

// TestSimCLIExitCodes checks that bad usage and bad input exit 2 with
// nothing changed, and that a TPM that fails or was already booted exits
// 1.
func TestSimCLIExitCodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	list := filepath.Join(dir, "list")
	os.WriteFile(list, simhost.IMAEntry{Path: "boot_aggregate", FileDigest: make([]byte, 32)}.AppendBinary(nil), 0o644)
	unreachable := "swtpm:127.0.0.1:1"
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"boot unknown flag", []string{"sim", "boot", "--tpm", unreachable, "--out", file, "--bogus"}, 2},
		{"boot no --tpm", []string{"sim", "boot", "--out", filepath.Join(dir, "o")}, 2},
		{"boot no --out", []string{"sim", "boot", "--tpm", unreachable}, 2},
		{"boot --out in a missing directory", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "no", "o")}, 2},
		{"boot hardware TPM", []string{"sim", "boot", "--tpm", "/dev/tpmrm0", "--out", filepath.Join(dir, "o")}, 2},
		{"boot bad spec", []string{"sim", "boot", "--tpm", "tpm-over-there", "--out", filepath.Join(dir, "o")}, 2},
		{"boot bad cmdline", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "o"), "--kernel-cmdline", "a\nb"}, 2},
		{"boot --mok-revoked without --mok-key", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "o"), "--mok-revoked", "old"}, 2},
		{"boot empty --mok-key", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "o"), "--mok-key", " "}, 2},
		{"boot arguments", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "o"), "extra"}, 2},
		{"boot unreachable TPM", []string{"sim", "boot", "--tpm", unreachable, "--out", filepath.Join(dir, "o")}, 1},
		{"ima neither --init nor --measure", []string{"sim", "ima", "--tpm", unreachable, "--log", list}, 2},
		{"ima --measure without paths", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--measure"}, 2},
		{"ima paths without --measure", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--init", file}, 2},
		{"ima missing measured file", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--measure", filepath.Join(dir, "absent")}, 2},
		{"ima directory measured", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--measure", dir}, 2},
		{"ima missing list", []string{"sim", "ima", "--tpm", unreachable, "--log", filepath.Join(dir, "absent"), "--measure", file}, 2},
		{"ima no --log", []string{"sim", "ima", "--tpm", unreachable, "--init"}, 2},
		{"ima bad --format", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--init", "--format", "xml"}, 2},
		{"ima unknown flag", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--init", "--bogus"}, 2},
		{"ima unreachable TPM", []string{"sim", "ima", "--tpm", unreachable, "--log", list, "--measure", file}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(list)
			out, code := run(t, ctx, tc.args...)
			if code != tc.want {
				t.Errorf("exit %d, want %d; output: %s", code, tc.want, out)
			}
			if after, _ := os.ReadFile(list); !bytes.Equal(before, after) {
				t.Error("the list changed")
			}
			if _, err := os.Stat(filepath.Join(dir, "o")); err == nil {
				t.Error("an event log was written")
			}
		})
	}
}

// TestSimCLIRefusesSecondBootAndFormatMismatch: a TPM already booted exits
// 1 (its PCRs could never match a new log); appending ASCII to a binary
// list exits 2; neither touches the files.
func TestSimCLIRefusesSecondBootAndFormatMismatch(t *testing.T) {
	ctx := context.Background()
	spec, _ := simTPMs()[1].spec(t)
	dir := t.TempDir()
	bootPath := filepath.Join(dir, "boot")
	if _, code := run(t, ctx, "sim", "boot", "--tpm", spec, "--out", bootPath); code != 0 {
		t.Fatalf("first boot exited %d", code)
	}
	before, _ := os.ReadFile(bootPath)
	if _, code := run(t, ctx, "sim", "boot", "--tpm", spec, "--out", bootPath, "--seed", "other"); code != 1 {
		t.Errorf("second boot exited %d, want 1", code)
	}
	if after, _ := os.ReadFile(bootPath); !bytes.Equal(before, after) {
		t.Error("a refused boot rewrote the log")
	}
	list := filepath.Join(dir, "ima")
	if _, code := run(t, ctx, "sim", "ima", "--tpm", spec, "--log", list, "--init"); code != 0 {
		t.Fatalf("ima --init exited %d", code)
	}
	if _, code := run(t, ctx, "sim", "ima", "--tpm", spec, "--log", list, "--init"); code != 1 {
		t.Errorf("second ima --init exited %d, want 1", code)
	}
	before, _ = os.ReadFile(list)
	if _, code := run(t, ctx, "sim", "ima", "--tpm", spec, "--log", list, "--format", "ascii", "--measure", bootPath); code != 2 {
		t.Errorf("ASCII append to a binary list exited %d, want 2", code)
	}
	if after, _ := os.ReadFile(list); !bytes.Equal(before, after) {
		t.Error("a refused append changed the list")
	}
}

// TestSimBootMOKAndBuilds: shim's MOK state goes into PCR 14 and the log,
// and another kernel or initrd build changes PCRs 4 and 9 only.
func TestSimBootMOKAndBuilds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	boot := func(name string, extra ...string) simBootResult {
		t.Helper()
		args := append([]string{"sim", "boot", "--tpm", "soft:" + filepath.Join(dir, name+".tpm"), "--out", filepath.Join(dir, name+".log"), "--json"}, extra...)
		out, code := run(t, ctx, args...)
		if code != 0 {
			t.Fatalf("vigil %v: exit %d: %s", args, code, out)
		}
		var r simBootResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return r
	}
	plain := boot("plain")
	if _, ok := plain.PCRs["sha256"]["14"]; ok {
		t.Errorf("a boot without --mok-key extended PCR 14: %v", plain.PCRs["sha256"])
	}
	mok := boot("mok", "--mok-key", "alice", "--mok-revoked", "old")
	if mok.PCRs["sha256"]["14"] == "" {
		t.Fatalf("--mok-key did not extend PCR 14: %v", mok.PCRs["sha256"])
	}
	out, code := run(t, ctx, "eventlog", "show", filepath.Join(dir, "mok.log"))
	if code != 0 || !strings.Contains(out, "MokList") || !strings.Contains(out, "MokListX") {
		t.Errorf("eventlog show of the MOK boot: exit %d, no MokList/MokListX events:\n%s", code, out)
	}
	other := boot("kernel", "--kernel-build", "b2", "--initrd-build", "b2")
	for pcr, v := range plain.PCRs["sha256"] {
		changed := other.PCRs["sha256"][pcr] != v
		if want := pcr == "4" || pcr == "9"; changed != want {
			t.Errorf("--kernel-build/--initrd-build: PCR %s changed %v, want %v", pcr, changed, want)
		}
	}
	unverified := boot("unverified", "--secure-boot=false", "--unverified-kernel")
	if unverified.PCRs["sha256"]["4"] == boot("sboff", "--secure-boot=false").PCRs["sha256"]["4"] {
		t.Error("--unverified-kernel left PCR 4 as it was")
	}
}
