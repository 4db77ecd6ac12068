package bootpolicy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/bootpolicy/keylimetest"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

func readData(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Data(t, parts...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keylimeExample is Keylime's own example reference state, as JSON
// objects so that tests can edit it.
func keylimeExample(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readData(t, "policy", "keylime-example_reference_state.json"), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// strip0x is a Keylime 0x-hex value as Vigil writes it.
func strip0x(v any) string { return strings.TrimPrefix(v.(string), "0x") }

// certID names a Keylime signature entry the way the boot state does.
func certID(t *testing.T, sig any) string {
	t.Helper()
	raw, err := hex.DecodeString(strip0x(sig.(map[string]any)["SignatureData"]))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := x509.ParseCertificate(raw); err == nil {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:])
	}
	return hex.EncodeToString(raw)
}

// exampleHost is the boot state of a host exactly as Keylime's example
// reference state describes it.
func exampleHost(t *testing.T, ref map[string]any) *bootlog.BootState {
	t.Helper()
	sigs := func(name string) *bootlog.SigDB {
		db := &bootlog.SigDB{Certs: []bootlog.Cert{}, Hashes: []string{}}
		for _, s := range ref[name].([]any) {
			id := certID(t, s)
			if len(strip0x(s.(map[string]any)["SignatureData"])) == 64 {
				db.Hashes = append(db.Hashes, id)
			} else {
				db.Certs = append(db.Certs, bootlog.Cert{SHA256: id})
			}
		}
		return db
	}
	plat := ref["scrtm_and_bios"].([]any)[0].(map[string]any)
	var blobs []string
	for _, f := range plat["platform_firmware"].([]any) {
		blobs = append(blobs, strip0x(f.(map[string]any)["sha256"]))
	}
	kern := ref["kernels"].([]any)[0].(map[string]any)
	chain := []string{strip0x(kern["shim_authcode_sha256"]), strip0x(kern["grub_authcode_sha256"]), strip0x(kern["kernel_authcode_sha256"])}
	mok := strip0x(ref["mokdig"].([]any)[0].(map[string]any)["sha256"])
	mokx := strip0x(ref["mokxdig"].([]any)[0].(map[string]any)["sha256"])
	return &bootlog.BootState{
		Bank: "sha256", SecureBoot: true,
		SCRTM:         strip0x(plat["scrtm"].(map[string]any)["sha256"]),
		FirmwareBlobs: blobs,
		PK:            sigs("pk"), KEK: sigs("kek"), DB: sigs("db"), DBX: sigs("dbx"),
		VendorDB:     &bootlog.SigDB{Certs: []bootlog.Cert{}, Hashes: []string{}},
		BootDigests:  append([]string{strings.Repeat("f0", 32)}, chain...),
		FirmwareApps: []string{strings.Repeat("f0", 32)},
		BootChain:    chain,
		MOK: []bootlog.MOKEvent{
			{Num: 30, Name: bootlog.MokList, Digest: mok},
			{Num: 31, Name: bootlog.MokListX, Digest: mokx},
			{Num: 33, Name: bootlog.MokListTrusted, Digest: "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a"},
		},
		GrubFiles: []bootlog.GrubFile{
			{Name: "(hd0,gpt1)/EFI/ubuntu/grub.cfg", Digest: strings.Repeat("a1", 32)},
			{Name: "(hd0,gpt2)/boot/grub/grubenv", Digest: strings.Repeat("a2", 32)},
			{Name: "/boot/vmlinuz-5.4.0-81-generic", Digest: strings.Repeat("a3", 32)},
			{Name: "/boot/initrd.img-5.4.0-81-generic", Digest: strip0x(kern["initrd_plain_sha256"])},
		},
		KernelCmdline: kern["kernel_cmdline"].(string),
	}
}

// TestKeylimeExample converts Keylime's example reference state and holds
// a host that is exactly what it describes, and hosts that differ in one
// field each, to it: each difference fails, naming the field.
func TestKeylimeExample(t *testing.T) {
	ref := keylimeExample(t)
	p, err := bootpolicy.Parse(mustJSON(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	kern := ref["kernels"].([]any)[0].(map[string]any)
	cmdline := kern["kernel_cmdline"].(string)
	want := bootpolicy.Kernel{
		Shim: strip0x(kern["shim_authcode_sha256"]), Grub: strip0x(kern["grub_authcode_sha256"]),
		Kernel: strip0x(kern["kernel_authcode_sha256"]), Initrd: strip0x(kern["initrd_plain_sha256"]), Cmdline: &cmdline,
	}
	got := p.Kernels
	if len(got) == 1 {
		got[0] = bootpolicy.Kernel{Shim: got[0].Shim, Grub: got[0].Grub, Kernel: got[0].Kernel, Initrd: got[0].Initrd, Vmlinuz: got[0].Vmlinuz, Cmdline: got[0].Cmdline}
	}
	if p.Version != 2 || p.Bank != "sha256" || p.SecureBoot != "enabled" ||
		len(p.SCRTM) != 1 || len(p.FirmwareBlobs) != 2 || len(p.PK) != 1 || len(p.KEK) != 2 || len(p.DB) != 2 || len(p.DBX) != 1 ||
		len(p.VendorDB) != 0 || len(p.MOK) != 1 || len(p.MOKX) != 1 || !reflect.DeepEqual(got, []bootpolicy.Kernel{want}) ||
		!slices.Contains(p.Skip, bootpolicy.CheckBootDigests) || !slices.Contains(p.Skip, bootpolicy.CheckKernelCmdline) {
		js, _ := json.MarshalIndent(p, "", " ")
		t.Fatalf("conversion:\n%s", js)
	}
	// Parse again: Kernels were overwritten above.
	if p, err = bootpolicy.Parse(mustJSON(t, ref)); err != nil {
		t.Fatal(err)
	}
	if fs := p.Evaluate(exampleHost(t, ref)); fs != nil {
		t.Fatalf("the host the reference state describes fails it: %v", fs)
	}

	other := strings.Repeat("ee", 32)
	for _, tc := range []struct {
		name   string
		mutate func(*bootlog.BootState)
		reason evidence.Reason
		field  string
	}{
		{"other S-CRTM", func(s *bootlog.BootState) { s.SCRTM = other }, bootpolicy.ReasonSCRTM, "scrtm_and_bios[].scrtm"},
		{"other firmware volume", func(s *bootlog.BootState) { s.FirmwareBlobs[1] = other }, bootpolicy.ReasonFirmware, "scrtm_and_bios[].platform_firmware"},
		{"foreign PK", func(s *bootlog.BootState) { s.PK.Certs[0].SHA256 = other }, bootpolicy.ReasonSigDB, "pk entry"},
		{"foreign KEK", func(s *bootlog.BootState) { s.KEK.Hashes = append(s.KEK.Hashes, other) }, bootpolicy.ReasonSigDB, "kek entry"},
		{"foreign db", func(s *bootlog.BootState) { s.DB.Certs = append(s.DB.Certs, bootlog.Cert{SHA256: other}) }, bootpolicy.ReasonSigDB, "db entry"},
		{"stale dbx", func(s *bootlog.BootState) { s.DBX.Hashes = nil }, bootpolicy.ReasonDBXMissing, "dbx"},
		{"vendor_db entry", func(s *bootlog.BootState) { s.VendorDB.Certs = append(s.VendorDB.Certs, bootlog.Cert{SHA256: other}) }, bootpolicy.ReasonSigDB, "vendor_db entry"},
		{"other MOK", func(s *bootlog.BootState) { s.MOK[0].Digest = other }, bootpolicy.ReasonMOK, "mokdig"},
		{"no MokList", func(s *bootlog.BootState) { s.MOK[0].Name = bootlog.MokListTrusted }, bootpolicy.ReasonMOK, "mokdig"},
		{"other PCR 14 event", func(s *bootlog.BootState) {
			s.MOK = append(s.MOK, bootlog.MOKEvent{Num: 35, Name: "MokLost", Digest: other})
		}, bootpolicy.ReasonMOK, "MokLost"},
		{"other MOKX", func(s *bootlog.BootState) { s.MOK[1].Digest = other }, bootpolicy.ReasonMOKX, "mokxdig"},
		{"MOK validation off", func(s *bootlog.BootState) {
			s.MOK = append(s.MOK, bootlog.MOKEvent{Num: 34, Name: bootlog.MokSBState, Digest: "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a"})
		}, bootpolicy.ReasonMOK, "MokSBState"},
		{"PCR 14 not quoted", func(s *bootlog.BootState) { s.MOK = nil }, bootpolicy.ReasonStateMissing, "mokdig"},
		{"other shim", func(s *bootlog.BootState) { s.BootChain[0] = other }, bootpolicy.ReasonShim, "shim_authcode_sha256"},
		{"other GRUB", func(s *bootlog.BootState) { s.BootChain[1] = other }, bootpolicy.ReasonGrub, "grub_authcode_sha256"},
		{"other kernel", func(s *bootlog.BootState) { s.BootChain[2] = other }, bootpolicy.ReasonKernel, "kernel_authcode_sha256"},
		{"no kernel", func(s *bootlog.BootState) { s.BootChain = s.BootChain[:2] }, bootpolicy.ReasonBootChain, "kernel_authcode_sha256"},
		{"application after the kernel", func(s *bootlog.BootState) {
			s.BootChain = append(s.BootChain, s.BootChain[2], other)
		}, bootpolicy.ReasonBootChain, "kernels[0]"},
		{"other initrd", func(s *bootlog.BootState) { s.GrubFiles[3].Digest = other }, bootpolicy.ReasonInitrd, "initrd_plain_sha256"},
		{"no initrd", func(s *bootlog.BootState) { s.GrubFiles = s.GrubFiles[:3] }, bootpolicy.ReasonInitrd, "initrd_plain_sha256"},
		{"extra file", func(s *bootlog.BootState) {
			s.GrubFiles = append(s.GrubFiles, bootlog.GrubFile{Name: "/boot/rootkit.mod", Digest: other})
		}, bootpolicy.ReasonBootFile, "/boot/rootkit.mod"},
		{"other command line", func(s *bootlog.BootState) { s.KernelCmdline += " init=/bin/sh" }, bootpolicy.ReasonKernelCmdline, "kernel_cmdline"},
		{"Secure Boot off", func(s *bootlog.BootState) { s.SecureBoot = false }, bootpolicy.ReasonSecureBoot, "has_secureboot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := exampleHost(t, ref)
			tc.mutate(s)
			fs := p.Evaluate(s)
			if len(fs) != 1 || fs[0].Reason != tc.reason || !strings.Contains(fs[0].Detail, tc.field) {
				t.Fatalf("failures %v, want one %s naming %q", fs, tc.reason, tc.field)
			}
		})
	}
	// Passes: the kernel measured twice, and the firmware's own
	// applications before the boot option, which the chain leaves out.
	s := exampleHost(t, ref)
	s.BootChain = append(s.BootChain, s.BootChain[2])
	if fs := p.Evaluate(s); fs != nil {
		t.Fatalf("kernel measured twice: %v", fs)
	}
}

// TestKeylimeSecureBootOff: has_secureboot false requires Secure Boot off,
// the kernel file digest instead of its Authenticode one, and waives the
// signature databases the reference state leaves empty.
func TestKeylimeSecureBootOff(t *testing.T) {
	ref := keylimeExample(t)
	kern := ref["kernels"].([]any)[0].(map[string]any)
	ref["has_secureboot"] = false
	delete(kern, "kernel_authcode_sha256")
	kern["vmlinuz_plain_sha256"] = "0x" + strings.Repeat("a3", 32)
	for _, db := range []string{"pk", "kek", "db", "dbx"} {
		ref[db] = []any{}
	}
	p, err := bootpolicy.Parse(mustJSON(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	if p.SecureBoot != "disabled" {
		t.Fatalf("secure_boot %q, want disabled", p.SecureBoot)
	}
	host := func() *bootlog.BootState {
		s := exampleHost(t, keylimeExample(t))
		s.SecureBoot = false
		s.BootChain = s.BootChain[:2]
		s.PK, s.KEK, s.DB, s.DBX = &bootlog.SigDB{}, nil, nil, nil // empty or not established: not checked
		return s
	}
	if fs := p.Evaluate(host()); fs != nil {
		t.Fatalf("host without Secure Boot fails: %v", fs)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*bootlog.BootState)
		reason evidence.Reason
		field  string
	}{
		{"Secure Boot on", func(s *bootlog.BootState) { s.SecureBoot = true }, bootpolicy.ReasonSecureBoot, "has_secureboot"},
		{"other kernel file", func(s *bootlog.BootState) { s.GrubFiles[2].Digest = strings.Repeat("ee", 32) }, bootpolicy.ReasonVmlinuz, "vmlinuz_plain_sha256"},
		{"kernel in PCR 4", func(s *bootlog.BootState) { s.BootChain = append(s.BootChain, strings.Repeat("ee", 32)) }, bootpolicy.ReasonBootChain, "kernels[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := host()
			tc.mutate(s)
			fs := p.Evaluate(s)
			if len(fs) != 1 || fs[0].Reason != tc.reason || !strings.Contains(fs[0].Detail, tc.field) {
				t.Fatalf("failures %v, want one %s naming %q", fs, tc.reason, tc.field)
			}
		})
	}
}

// selfQuoted are the values a log replays to over PCRs 0-9 and 14: what a
// TPM that measured exactly this log would quote.
func selfQuoted(t *testing.T, raw []byte) evidence.PCRValues {
	t.Helper()
	l, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Replay(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	q := evidence.PCRValues{}
	for _, i := range append(slices.Clone(bootlog.BootPCRs), 14) {
		v, ok := r[i]
		if !ok {
			v = make([]byte, 32)
		}
		q.Set(tpm2.TPMAlgSHA256, i, v)
	}
	return q
}

// TestKeylimeRealLogs makes the reference states Keylime's generator makes
// from real machines' logs, one with Secure Boot off and one with it on,
// and checks that each admits its machine and refuses the other.
func TestKeylimeRealLogs(t *testing.T) {
	type host struct {
		log    string
		raw    []byte
		sb     bool
		policy *bootpolicy.Policy
	}
	hosts := []*host{
		{log: "keylime-binary_bios_measurements", sb: false},
		{log: "keylime-binary_bios_measurements-secureboot", sb: true},
		{log: "rust-keylime-uefi_log.bin", sb: false},
	}
	for _, h := range hosts {
		h.raw = readData(t, "uefi", h.log)
		ref, err := keylimetest.RefState(h.raw)
		if err != nil {
			t.Fatalf("%s: %v", h.log, err)
		}
		if ref["has_secureboot"] != h.sb {
			t.Fatalf("%s: has_secureboot %v", h.log, ref["has_secureboot"])
		}
		if h.policy, err = bootpolicy.Parse(mustJSON(t, ref)); err != nil {
			t.Fatalf("%s: %v", h.log, err)
		}
		if !h.sb && !slices.Contains(h.policy.Skip, bootpolicy.CheckVendorDB) {
			t.Errorf("%s: an empty vendor_db without Secure Boot should not be checked: skip %v", h.log, h.policy.Skip)
		}
	}
	for _, h := range hosts {
		for _, other := range hosts {
			res, f := verdict.Boot(h.raw, selfQuoted(t, h.raw), other.policy)
			if h == other {
				if f != nil {
					t.Errorf("%s fails the reference state made from its own log: %v", h.log, res.Failures)
				}
				if n := len(res.State.MOK); n == 0 {
					t.Errorf("%s: no MOK measurements in the state", h.log)
				}
				continue
			}
			if f == nil {
				t.Errorf("%s passes the reference state of %s", h.log, other.log)
			}
			if h.sb != other.sb && !slices.ContainsFunc(res.Failures, func(f *evidence.Failure) bool { return f.Reason == bootpolicy.ReasonSecureBoot }) {
				t.Errorf("%s against %s: no %s failure in %v", h.log, other.log, bootpolicy.ReasonSecureBoot, res.Failures)
			}
		}
	}

	// Secure Boot off under has_secureboot true, on the real log: the
	// machine's own reference state with the flag flipped.
	raw := readData(t, "uefi", "keylime-binary_bios_measurements")
	ref, err := keylimetest.RefState(raw)
	if err != nil {
		t.Fatal(err)
	}
	ref["has_secureboot"] = true
	kern := ref["kernels"].([]map[string]string)[0]
	kern["kernel_authcode_sha256"] = kern["vmlinuz_plain_sha256"]
	delete(kern, "vmlinuz_plain_sha256")
	p, err := bootpolicy.Parse(mustJSON(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	res, f := verdict.Boot(raw, selfQuoted(t, raw), p)
	if f == nil || res.Failures[0].Reason != bootpolicy.ReasonSecureBoot || !strings.Contains(res.Failures[0].Detail, "has_secureboot") {
		t.Fatalf("Secure Boot off under has_secureboot true: %v", res.Failures)
	}
}

// TestKeylimeRefuses: a reference state Vigil cannot honour entirely is
// refused with an error naming the field.
func TestKeylimeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(ref map[string]any, kern map[string]any)
		want   string
	}{
		{"unknown field", func(r, _ map[string]any) { r["tpm_policy"] = map[string]any{} }, "unknown field(s) tpm_policy"},
		{"unknown kernels field", func(_, k map[string]any) { k["shim_plain_sha256"] = "0x00" }, "kernels[0]: unknown field(s) shim_plain_sha256"},
		{"no mokdig", func(r, _ map[string]any) { delete(r, "mokdig") }, "lacks mokdig"},
		{"no kernels", func(r, _ map[string]any) { delete(r, "kernels") }, "lacks kernels"},
		{"null dbx", func(r, _ map[string]any) { r["dbx"] = nil }, "dbx is null"},
		{"empty kernels", func(r, _ map[string]any) { r["kernels"] = []any{} }, "kernels is empty"},
		{"empty scrtm_and_bios", func(r, _ map[string]any) { r["scrtm_and_bios"] = []any{} }, "scrtm_and_bios is empty"},
		{"no initrd", func(_, k map[string]any) { delete(k, "initrd_plain_sha256") }, "lacks initrd_plain_sha256"},
		{"no kernel Authenticode digest with Secure Boot", func(_, k map[string]any) { delete(k, "kernel_authcode_sha256") }, "lacks kernel_authcode_sha256"},
		{"kernel Authenticode digest without Secure Boot", func(r, k map[string]any) {
			r["has_secureboot"] = false
			k["vmlinuz_plain_sha256"] = "0x" + strings.Repeat("00", 32)
		}, "kernels[0].kernel_authcode_sha256: with has_secureboot false"},
		{"no vmlinuz without Secure Boot", func(r, k map[string]any) {
			r["has_secureboot"] = false
			delete(k, "kernel_authcode_sha256")
		}, "lacks vmlinuz_plain_sha256"},
		{"has_secureboot not a boolean", func(r, _ map[string]any) { r["has_secureboot"] = "yes" }, "has_secureboot"},
		{"short digest", func(_, k map[string]any) { k["initrd_plain_sha256"] = "0xabcd" }, "kernels[0].initrd (Keylime kernels[0].initrd_plain_sha256)"},
		{"not hex", func(_, k map[string]any) { k["grub_authcode_sha256"] = "0xzz" }, "kernels[0].grub_authcode_sha256"},
		{"digest without sha256", func(r, _ map[string]any) {
			r["mokxdig"] = []any{map[string]any{"sha1": "0x" + strings.Repeat("00", 20)}}
		}, "mokxdig[0] has no sha256 digest"},
		{"unknown digest algorithm", func(r, _ map[string]any) { r["mokdig"] = []any{map[string]any{"md5": "0x00"}} }, "mokdig[0]: unknown digest algorithm"},
		{"signature without owner", func(r, _ map[string]any) { r["dbx"] = []any{map[string]any{"SignatureData": "0x00"}} }, "dbx[0] lacks SignatureOwner"},
		{"unknown signature field", func(r, _ map[string]any) {
			r["dbx"] = []any{map[string]any{"SignatureOwner": "x", "SignatureData": "0x00", "SignatureType": "x"}}
		}, "dbx: json: unknown field"},
		{"Python-only pattern", func(_, k map[string]any) { k["kernel_cmdline"] = "(?!single).*" }, "kernels[0].kernel_cmdline"},
		{"command line not a string", func(_, k map[string]any) { k["kernel_cmdline"] = 1 }, "kernels[0].kernel_cmdline: want a string"},
		{"scrtm_and_bios entry without scrtm", func(r, _ map[string]any) {
			r["scrtm_and_bios"] = []any{map[string]any{"platform_firmware": []any{}}}
		}, "scrtm_and_bios[0] lacks scrtm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := keylimeExample(t)
			tc.mutate(ref, ref["kernels"].([]any)[0].(map[string]any))
			_, err := bootpolicy.Parse(mustJSON(t, ref))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// simHost is a simulated host booted on a soft TPM, quoting its boot PCRs
// and PCR 14 with a fresh AK.
type simHost struct {
	log   []byte
	input verdict.Input
}

func bootSimulated(t *testing.T, cfg simhost.BootConfig, pcrs []int) simHost {
	t.Helper()
	ctx := context.Background()
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	tpm := agent.NewSoftTPM(st)
	bl, err := simhost.NewBootLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Boot(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ak.Public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	key, err := evidence.NewAK(*pub)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	sel := evidence.Selection(pcrs, tpm2.TPMAlgSHA256)
	attest, sig, err := tpm.Quote(ctx, ak, nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	values, err := tpm.PCRRead(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	q, err := evidence.ParseQuote(attest.Bytes(), tpm2.Marshal(sig))
	if err != nil {
		t.Fatal(err)
	}
	return simHost{log: bl.Bytes(), input: verdict.Input{AK: key, Quote: q, Expect: evidence.Expect{Nonce: nonce, PCRs: values}, BootLog: bl.Bytes()}}
}

// TestKeylimeSimulatedBoot holds simulated hosts, booted on a soft TPM and
// quoted, to the reference state Keylime's generator makes from a
// reference host: one that boots the same passes, one that differs in one
// measured part fails naming the part.
func TestKeylimeSimulatedBoot(t *testing.T) {
	bootPCRs := append(slices.Clone(bootlog.BootPCRs), 14)
	mok := &simhost.MOKConfig{Keys: []string{"Vigil Sim Owner Key"}, Revoked: []string{"old shim"}}
	for _, sb := range []bool{true, false} {
		ref := simhost.BootConfig{Seed: "keylime", SecureBoot: sb, MOK: mok, UnverifiedKernel: !sb}
		refState, err := keylimetest.RefState(bootSimulated(t, ref, bootPCRs).log)
		if err != nil {
			t.Fatal(err)
		}
		if refState["has_secureboot"] != sb {
			t.Fatalf("has_secureboot %v, want %v", refState["has_secureboot"], sb)
		}
		pol, err := bootpolicy.Parse(mustJSON(t, refState))
		if err != nil {
			t.Fatal(err)
		}
		with := func(f func(*simhost.BootConfig)) simhost.BootConfig {
			c := ref
			f(&c)
			return c
		}
		type tc struct {
			name   string
			cfg    simhost.BootConfig
			pcrs   []int
			reason evidence.Reason
			field  string
		}
		cases := []tc{
			{"same boot", ref, bootPCRs, "", ""},
			{"other MOK enrolled", with(func(c *simhost.BootConfig) {
				c.MOK = &simhost.MOKConfig{Keys: []string{"Vigil Sim Owner Key", "Somebody Else"}, Revoked: mok.Revoked}
			}), bootPCRs, bootpolicy.ReasonMOK, "mokdig"},
			{"MOK revocation dropped", with(func(c *simhost.BootConfig) { c.MOK = &simhost.MOKConfig{Keys: mok.Keys} }), bootPCRs, bootpolicy.ReasonMOKX, "mokxdig"},
			{"PCR 14 not quoted", ref, bootlog.BootPCRs, bootpolicy.ReasonStateMissing, "mokdig"},
			{"other initrd", with(func(c *simhost.BootConfig) { c.InitrdBuild = "2" }), bootPCRs, bootpolicy.ReasonInitrd, "initrd_plain_sha256"},
			{"other kernel command line", with(func(c *simhost.BootConfig) { c.KernelCmdline = simhost.DefaultKernelCmdline + " init=/bin/sh" }), bootPCRs,
				bootpolicy.ReasonKernelCmdline, "kernel_cmdline"},
		}
		if sb {
			cases = append(cases,
				tc{"other kernel", with(func(c *simhost.BootConfig) { c.KernelBuild = "2" }), bootPCRs, bootpolicy.ReasonKernel, "kernel_authcode_sha256"},
				tc{"Secure Boot off", with(func(c *simhost.BootConfig) { c.SecureBoot = false }), bootPCRs, bootpolicy.ReasonSecureBoot, "has_secureboot"},
			)
		} else {
			cases = append(cases,
				tc{"other kernel", with(func(c *simhost.BootConfig) { c.KernelBuild = "2" }), bootPCRs, bootpolicy.ReasonVmlinuz, "vmlinuz_plain_sha256"},
				tc{"Secure Boot on", with(func(c *simhost.BootConfig) { c.SecureBoot, c.UnverifiedKernel = true, false }), bootPCRs, bootpolicy.ReasonSecureBoot, "has_secureboot"},
			)
		}
		for _, c := range cases {
			t.Run(map[bool]string{true: "secureboot/", false: "no-secureboot/"}[sb]+c.name, func(t *testing.T) {
				h := bootSimulated(t, c.cfg, c.pcrs)
				in := h.input
				in.BootPolicy = pol
				rep := verdict.Judge(in)
				if c.reason == "" {
					if rep.Verdict != nil {
						t.Fatalf("refused: %v", rep.Failures)
					}
					return
				}
				if rep.Verdict == nil || rep.Verdict.Reason != verdict.ReasonPolicyViolation {
					t.Fatalf("verdict %v, want a policy violation", rep.Verdict)
				}
				f := rep.Failures[0]
				if f.Reason != c.reason || !strings.Contains(f.Detail, c.field) {
					t.Fatalf("first failure %v (all: %v), want %s naming %q", f, rep.Failures, c.reason, c.field)
				}
			})
		}
	}
}

// FuzzKeylimeRefState runs any bytes through the reference-state import:
// an error or a policy, never a panic; a policy evaluates, and its own
// JSON (Vigil's format) parses back to a policy that judges alike.
func FuzzKeylimeRefState(f *testing.F) {
	if d := testenv.DataDir(); d != "" {
		if b, err := os.ReadFile(d + "/policy/keylime-example_reference_state.json"); err == nil {
			f.Add(b)
		}
	}
	d := `{"sha256":"0x` + strings.Repeat("ab", 32) + `"}`
	f.Add([]byte(`{"has_secureboot":false,"scrtm_and_bios":[{"scrtm":` + d + `,"platform_firmware":[` + d + `]}],"pk":[],"kek":[],"db":[],"dbx":[],` +
		`"mokdig":[` + d + `],"mokxdig":[],"kernels":[{"shim_authcode_sha256":"0x` + strings.Repeat("01", 32) + `","grub_authcode_sha256":"0x` +
		strings.Repeat("02", 32) + `","vmlinuz_plain_sha256":"0x` + strings.Repeat("03", 32) + `","initrd_plain_sha256":"0x` +
		strings.Repeat("04", 32) + `","kernel_cmdline":"root=\\S+ ro"}]}`))
	f.Add([]byte(`{"mokdig":null}`))
	f.Add([]byte(`{"kernels":[{"kernel_cmdline":"x"}],"vendor_db":[{"SignatureOwner":"","SignatureData":"0x30"}]}`))
	state := &bootlog.BootState{Bank: "sha256", BootChain: []string{strings.Repeat("01", 32)}, MOK: []bootlog.MOKEvent{{Name: "MokList", Digest: strings.Repeat("ab", 32)}},
		GrubFiles: []bootlog.GrubFile{{Name: "/boot/initrd", Digest: strings.Repeat("04", 32)}}, KernelCmdline: "root=/dev/sda ro"}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := bootpolicy.Parse(b)
		if err != nil {
			return
		}
		first := p.Evaluate(state)
		p.Evaluate(&bootlog.BootState{Bank: p.Bank})
		js, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := bootpolicy.Parse(js)
		if err != nil {
			t.Fatalf("a parsed policy's JSON does not parse: %v\n%s", err, js)
		}
		if !slices.Equal(reasons(first), reasons(again.Evaluate(state))) {
			t.Fatalf("the policy judges otherwise after a JSON round trip: %v, then %v", first, again.Evaluate(state))
		}
	})
}
