package simhost_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-eventlog/extract"
	pb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-eventlog/tpmeventlog"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

var bankHashes = map[tpm2.TPMAlgID]crypto.Hash{tpm2.TPMAlgSHA1: crypto.SHA1, tpm2.TPMAlgSHA256: crypto.SHA256}

// eventlogBank is a go-eventlog PCR bank holding the TPM's PCRs 0-9.
func eventlogBank(alg tpm2.TPMAlgID, pcrs map[int][]byte) register.PCRBank {
	bank := register.PCRBank{TCGHashAlgo: pb.HashAlgo(alg)}
	for i := range 10 {
		bank.PCRs = append(bank.PCRs, register.PCR{Index: i, Digest: pcrs[i], DigestAlg: bankHashes[alg]})
	}
	return bank
}

// attestPCRs are the TPM's PCRs 0-9 as go-attestation takes them.
func attestPCRs(tpmPCRs map[tpm2.TPMAlgID]map[int][]byte) []attest.PCR {
	var out []attest.PCR
	for alg, h := range bankHashes {
		for i := range 10 {
			out = append(out, attest.PCR{Index: i, Digest: tpmPCRs[alg][i], DigestAlg: h})
		}
	}
	return out
}

// TestBootReplaysOnTPM runs the simulated boot on real TPM implementations
// and checks, with three independent parsers, that the log it wrote
// replays to the PCRs the TPM holds afterwards and says what was booted.
func TestBootReplaysOnTPM(t *testing.T) {
	for _, be := range backends() {
		for _, sb := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/secureboot=%v", be.name, sb), func(t *testing.T) {
				ctx := context.Background()
				tpm := be.open(t)
				cmdline := "/boot/vmlinuz-6.1.0-test root=UUID=1234 ro console=ttyS0"
				l, err := simhost.NewBootLog(simhost.BootConfig{Seed: "replay-test", SecureBoot: sb, KernelCmdline: cmdline})
				if err != nil {
					t.Fatal(err)
				}
				tpmPCRs, err := l.Boot(ctx, tpm)
				if err != nil {
					t.Fatal(err)
				}
				// Read again, independently of Boot's own check.
				again, err := simhost.ReadPCRs(ctx, tpm, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
				if err != nil {
					t.Fatal(err)
				}
				raw := l.Bytes()

				// go-eventlog: parse and replay each bank against the TPM.
				for alg := range bankHashes {
					if _, err := tcg.ParseAndReplay(raw, eventlogBank(alg, again[alg]).MRs(), tcg.ParseOpts{}); err != nil {
						t.Errorf("go-eventlog replay of the %v bank: %v", alg, err)
					}
				}
				st, err := tpmeventlog.ReplayAndExtract(raw, eventlogBank(tpm2.TPMAlgSHA256, again[tpm2.TPMAlgSHA256]), extract.Opts{Loader: extract.GRUB})
				if err != nil {
					t.Fatalf("go-eventlog extraction: %v", err)
				}
				if st.GetSecureBoot().GetEnabled() != sb {
					t.Errorf("go-eventlog: Secure Boot enabled = %v, want %v", st.GetSecureBoot().GetEnabled(), sb)
				}
				// GRUB logs its strings NUL-terminated, and go-eventlog
				// hands the terminator on.
				if got := strings.TrimSuffix(st.GetLinuxKernel().GetCommandLine(), "\x00"); got != cmdline {
					t.Errorf("go-eventlog: kernel command line %q, want %q", got, cmdline)
				}
				if n := len(st.GetEfi().GetApps()); n != 3 {
					t.Errorf("go-eventlog: %d EFI applications, want 3 (shim, GRUB, kernel)", n)
				}

				// go-attestation: parse, verify against the TPM's PCRs,
				// and read the Secure Boot state.
				el, err := attest.ParseEventLog(raw)
				if err != nil {
					t.Fatalf("go-attestation parse: %v", err)
				}
				events, err := el.Verify(attestPCRs(again))
				if err != nil {
					t.Fatalf("go-attestation verify: %v", err)
				}
				sbState, err := attest.ParseSecurebootState(events)
				if err != nil {
					t.Fatalf("go-attestation Secure Boot state: %v", err)
				}
				if sbState.Enabled != sb {
					t.Errorf("go-attestation: Secure Boot enabled = %v, want %v", sbState.Enabled, sb)
				}
				if sb && len(sbState.PostSeparatorAuthority) != 2 {
					t.Errorf("go-attestation: %d authorities after the separator, want 2 (db for shim, shim's vendor certificate)", len(sbState.PostSeparatorAuthority))
				}

				// Vigil's own boot-log verification and boot state.
				quoted := evidence.PCRValues{}
				for alg := range bankHashes {
					for i, v := range again[alg] {
						quoted.Set(alg, i, v)
					}
				}
				parsed, err := bootlog.Parse(raw)
				if err != nil {
					t.Fatalf("bootlog.Parse: %v", err)
				}
				verified, err := parsed.Verify(quoted)
				if err != nil {
					t.Fatalf("bootlog Verify: %v", err)
				}
				state, err := verified.State(tpm2.TPMAlgSHA256)
				if err != nil {
					t.Fatal(err)
				}
				if state.SecureBoot != sb || state.KernelCmdline != cmdline {
					t.Errorf("bootlog state: secure_boot %v, kernel_cmdline %q; want %v, %q", state.SecureBoot, state.KernelCmdline, sb, cmdline)
				}
				if len(state.Incomplete) > 0 {
					t.Errorf("bootlog state incomplete: %v", state.Incomplete)
				}
				if len(state.BootDigests) != 3 || len(state.GrubFiles) != 3 {
					t.Errorf("bootlog state: %d boot digests, %d GRUB files; want 3 and 3", len(state.BootDigests), len(state.GrubFiles))
				}
				// Boot's own return and the replay agree with the reading.
				for alg := range bankHashes {
					for i := range 10 {
						if !bytes.Equal(tpmPCRs[alg][i], again[alg][i]) || !bytes.Equal(l.PCRs()[alg][i], again[alg][i]) {
							t.Errorf("%v PCR %d: Boot returned %x, replay %x, TPM %x", alg, i, tpmPCRs[alg][i], l.PCRs()[alg][i], again[alg][i])
						}
					}
				}
			})
		}
	}
}

// TestBootPolicyFitsFleet checks the point of determinism: a boot policy
// made from one simulated host admits another booted with the same seed,
// and refuses one that differs in what policies check.
func TestBootPolicyFitsFleet(t *testing.T) {
	state := func(t *testing.T, cfg simhost.BootConfig) *bootlog.BootState {
		t.Helper()
		l, err := simhost.NewBootLog(cfg)
		if err != nil {
			t.Fatal(err)
		}
		quoted := evidence.PCRValues{}
		for alg, pcrs := range l.PCRs() {
			for i, v := range pcrs {
				quoted.Set(alg, i, v)
			}
		}
		parsed, err := bootlog.Parse(l.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		v, err := parsed.Verify(quoted)
		if err != nil {
			t.Fatal(err)
		}
		st, err := v.State(tpm2.TPMAlgSHA256)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	ref := simhost.BootConfig{Seed: "fleet", SecureBoot: true}
	pol := bootpolicy.FromState(state(t, ref))
	for _, tc := range []struct {
		name string
		cfg  simhost.BootConfig
		pass bool
	}{
		{"same host", ref, true},
		{"secure boot off", simhost.BootConfig{Seed: "fleet", SecureBoot: false}, false},
		{"other firmware and keys", simhost.BootConfig{Seed: "other", SecureBoot: true}, false},
		{"other kernel command line", simhost.BootConfig{Seed: "fleet", SecureBoot: true, KernelCmdline: "/boot/vmlinuz-6.12.0-vigil-sim init=/bin/sh"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fails := pol.Evaluate(state(t, tc.cfg))
			if tc.pass && len(fails) > 0 {
				t.Errorf("policy refused a host like the reference: %v", fails)
			}
			if !tc.pass && len(fails) == 0 {
				t.Error("policy admitted a host that differs from the reference")
			}
		})
	}
}

func TestBootRefusesExtendedPCRs(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			tpm := be.open(t)
			l, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Boot(ctx, tpm); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Boot(ctx, tpm); !errors.Is(err, simhost.ErrPCRsExtended) {
				t.Fatalf("second boot without a reset: %v, want ErrPCRsExtended", err)
			}
		})
	}
}

func TestBootDeterministic(t *testing.T) {
	build := func(cfg simhost.BootConfig) []byte {
		t.Helper()
		l, err := simhost.NewBootLog(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return l.Bytes()
	}
	a := build(simhost.BootConfig{Seed: "x", SecureBoot: true})
	if !bytes.Equal(a, build(simhost.BootConfig{Seed: "x", SecureBoot: true})) {
		t.Error("one seed gave two different logs")
	}
	for _, other := range []simhost.BootConfig{
		{Seed: "y", SecureBoot: true},
		{Seed: "x", SecureBoot: false},
		{Seed: "x", SecureBoot: true, KernelCmdline: "/boot/vmlinuz root=/dev/sda1"},
	} {
		if bytes.Equal(a, build(other)) {
			t.Errorf("%+v gave the same log as seed x with Secure Boot", other)
		}
	}
	if !bytes.Equal(build(simhost.BootConfig{}), build(simhost.BootConfig{Seed: simhost.DefaultSeed, KernelCmdline: simhost.DefaultKernelCmdline})) {
		t.Error("the zero config is not the defaults")
	}
}

// TestBootLogLayout checks, through go-eventlog's parser, that each event
// the firmware profile calls for is where it belongs.
func TestBootLogLayout(t *testing.T) {
	l, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	raw := l.Bytes()
	if !bytes.Equal(raw[32:48], []byte("Spec ID Event03\x00")) {
		t.Fatalf("first event data starts %q, want the Spec ID signature", raw[32:48])
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		t.Fatal(err)
	}
	var algs []string
	for _, a := range el.Algs {
		algs = append(algs, a.String())
	}
	if len(algs) != 2 {
		t.Errorf("log algorithms %v, want SHA-1 and SHA-256", algs)
	}
	events := el.Events(register.HashSHA256)
	if len(events) != len(l.Events) {
		t.Fatalf("go-eventlog sees %d events, the builder made %d", len(events), len(l.Events))
	}
	type key struct {
		pcr int
		typ tcg.EventType
	}
	count := map[key]int{}
	var vars7, grub8, files9 []string
	for _, e := range events {
		count[key{e.Index, e.Type}]++
		switch {
		case e.Index == 7 && (e.Type == tcg.EFIVariableDriverConfig || e.Type == tcg.EFIVariableAuthority):
			v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
			if err != nil {
				t.Errorf("PCR 7 %v: %v", e.Type, err)
				continue
			}
			kind := "config"
			if e.Type == tcg.EFIVariableAuthority {
				kind = "authority"
			}
			vars7 = append(vars7, kind+":"+v.VarName())
		case e.Index == 8:
			grub8 = append(grub8, strings.TrimRight(string(e.Data), "\x00"))
		case e.Index == 9:
			files9 = append(files9, strings.TrimRight(string(e.Data), "\x00"))
		case e.Type == tcg.EFIBootServicesApplication:
			if _, err := tcg.ParseEFIImageLoad(bytes.NewReader(e.Data)); err != nil {
				t.Errorf("image load event: %v", err)
			}
		}
	}
	for _, want := range []struct {
		key
		n int
	}{
		{key{0, tcg.SCRTMVersion}, 1},
		{key{0, tcg.EFIPlatformFirmwareBlob}, 2},
		{key{7, tcg.EFIVariableDriverConfig}, 5},
		{key{7, tcg.EFIVariableAuthority}, 3},
		{key{4, tcg.EFIBootServicesApplication}, 3},
		{key{4, tcg.EFIAction}, 1},
		{key{5, tcg.EFIAction}, 2},
		{key{1, tcg.EFIVariableBoot}, 2},
	} {
		if got := count[want.key]; got != want.n {
			t.Errorf("PCR %d %v: %d events, want %d", want.pcr, want.typ, got, want.n)
		}
	}
	for pcr := range 8 {
		if count[key{pcr, tcg.Separator}] != 1 {
			t.Errorf("PCR %d: %d separators, want 1", pcr, count[key{pcr, tcg.Separator}])
		}
	}
	wantVars := "config:SecureBoot config:PK config:KEK config:db config:dbx authority:db authority:SbatLevel authority:Shim"
	if got := strings.Join(vars7, " "); got != wantVars {
		t.Errorf("PCR 7 variables:\n got %s\nwant %s", got, wantVars)
	}
	if !contains(grub8, "grub_cmd: linux "+simhost.DefaultKernelCmdline) || !contains(grub8, "kernel_cmdline: "+simhost.DefaultKernelCmdline) {
		t.Errorf("PCR 8 lacks the linux command or the kernel command line: %q", grub8)
	}
	wantFiles := []string{"(hd0,gpt2)/boot/grub/grub.cfg", "(hd0,gpt2)" + l.KernelPath, "(hd0,gpt2)" + l.InitrdPath}
	if strings.Join(files9, "|") != strings.Join(wantFiles, "|") {
		t.Errorf("PCR 9 files %q, want %q", files9, wantFiles)
	}
	if l.InitrdPath != "/boot/initrd.img-6.12.0-vigil-sim" {
		t.Errorf("initrd %s", l.InitrdPath)
	}
	sb, err := extract.ParseSecurebootState(events, extract.TPMRegisterConfig, extract.Opts{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.PlatformKeys) != 1 || len(sb.ExchangeKeys) != 1 || len(sb.PermittedKeys) != 2 || len(sb.ForbiddenHashes) != 3 {
		t.Errorf("signature databases: PK %d, KEK %d, db %d certificates, dbx %d hashes; want 1, 1, 2, 3",
			len(sb.PlatformKeys), len(sb.ExchangeKeys), len(sb.PermittedKeys), len(sb.ForbiddenHashes))
	}
	for _, c := range append(append(sb.PlatformKeys, sb.ExchangeKeys...), sb.PermittedKeys...) {
		if !strings.HasPrefix(c.Subject.CommonName, "Vigil Sim ") {
			t.Errorf("certificate %q is not a simulated one", c.Subject)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestBootConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		ok      bool
	}{
		{"", true},
		{"root=/dev/sda1 ro", true},
		{"/vmlinuz", true},
		{"root=/dev/sda1\x00", false},
		{"a\nb", false},
		{" leading", false},
		{strings.Repeat("a", 2049), false},
		{"\xff", false},
	} {
		err := simhost.BootConfig{KernelCmdline: tc.cmdline}.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.cmdline, err, tc.ok)
		}
		if _, err2 := simhost.NewBootLog(simhost.BootConfig{KernelCmdline: tc.cmdline}); (err2 == nil) != tc.ok {
			t.Errorf("NewBootLog(%q) = %v, want ok=%v", tc.cmdline, err2, tc.ok)
		}
	}
}
