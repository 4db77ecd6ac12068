package bootpolicy_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// realState extracts the SHA-256 boot state of a real Secure Boot host from
// its log, verified against the PCR values the log itself replays to.
func realState(t *testing.T) *bootlog.BootState {
	t.Helper()
	raw, err := os.ReadFile(testenv.Data(t, "uefi", "keylime-binary_bios_measurements-secureboot"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Replay(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := make(evidence.PCRValues)
	for _, i := range bootlog.BootPCRs {
		v, ok := r[i]
		if !ok {
			v = make([]byte, 32)
		}
		pcrs.Set(tpm2.TPMAlgSHA256, i, v)
	}
	v, err := l.Verify(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	st, err := v.State(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// clone deep-copies a state through JSON so that mutations stay local.
func clone(t *testing.T, st *bootlog.BootState) *bootlog.BootState {
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out bootlog.BootState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func reasons(fs []*evidence.Failure) []evidence.Reason {
	var out []evidence.Reason
	for _, f := range fs {
		out = append(out, f.Reason)
	}
	return out
}

func TestGeneratedPolicy(t *testing.T) {
	st := realState(t)
	if !st.SecureBoot || st.DB == nil || st.DBX == nil || len(st.BootDigests) == 0 || st.KernelCmdline == "" {
		t.Fatalf("test log does not give a full Secure Boot state: %+v", st)
	}
	p := bootpolicy.FromState(st)
	// The policy survives its own JSON format.
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p, err = bootpolicy.Parse(js)
	if err != nil {
		t.Fatalf("generated policy does not parse: %v\n%s", err, js)
	}
	if fs := p.Evaluate(st); fs != nil {
		t.Fatalf("the host the policy came from fails it: %v", fs)
	}

	tests := []struct {
		name   string
		mutate func(*bootlog.BootState)
		want   evidence.Reason
	}{
		{"secure boot off", func(s *bootlog.BootState) { s.SecureBoot = false }, bootpolicy.ReasonSecureBoot},
		{"other S-CRTM", func(s *bootlog.BootState) { s.SCRTM = strings.Repeat("ab", 32) }, bootpolicy.ReasonSCRTM},
		{"no S-CRTM event", func(s *bootlog.BootState) { s.SCRTM = "" }, bootpolicy.ReasonStateMissing},
		{"other firmware volume", func(s *bootlog.BootState) { s.FirmwareBlobs = append(s.FirmwareBlobs, strings.Repeat("cd", 32)) }, bootpolicy.ReasonFirmware},
		{"foreign PK", func(s *bootlog.BootState) {
			s.PK.Certs = append(s.PK.Certs, bootlog.Cert{SHA256: strings.Repeat("01", 32)})
		}, bootpolicy.ReasonSigDB},
		{"extra db hash", func(s *bootlog.BootState) { s.DB.Hashes = append(s.DB.Hashes, strings.Repeat("02", 32)) }, bootpolicy.ReasonSigDB},
		{"stale dbx", func(s *bootlog.BootState) { s.DBX.Hashes = s.DBX.Hashes[:len(s.DBX.Hashes)-1] }, bootpolicy.ReasonDBXMissing},
		{"dbx not established", func(s *bootlog.BootState) { s.DBX = nil }, bootpolicy.ReasonStateMissing},
		{"other boot loader", func(s *bootlog.BootState) { s.BootDigests[1] = strings.Repeat("03", 32) }, bootpolicy.ReasonBootDigest},
		{"extra EFI application", func(s *bootlog.BootState) { s.BootDigests = append(s.BootDigests, strings.Repeat("04", 32)) }, bootpolicy.ReasonBootDigest},
		{"kernel cmdline changed", func(s *bootlog.BootState) { s.KernelCmdline += " init=/bin/sh" }, bootpolicy.ReasonKernelCmdline},
		{"no kernel cmdline", func(s *bootlog.BootState) {
			s.Incomplete = append(s.Incomplete, "kernel_cmdline: more than one kernel commandline in GRUB commands")
		}, bootpolicy.ReasonStateMissing},
		{"other initrd", func(s *bootlog.BootState) { s.GrubFiles[len(s.GrubFiles)-1].Digest = strings.Repeat("06", 32) }, bootpolicy.ReasonInitrd},
		{"other kernel file", func(s *bootlog.BootState) {
			for i, f := range s.GrubFiles {
				if strings.Contains(f.Name, "/vmlinuz-") {
					s.GrubFiles[i].Digest = strings.Repeat("07", 32)
				}
			}
		}, bootpolicy.ReasonVmlinuz},
		{"file GRUB should not load", func(s *bootlog.BootState) {
			s.GrubFiles = append(s.GrubFiles, bootlog.GrubFile{Name: "(hd0,gpt2)/evil.ko", Digest: strings.Repeat("08", 32)})
		}, bootpolicy.ReasonBootFile},
		{"other bank", func(s *bootlog.BootState) { s.Bank = "sha1" }, bootpolicy.ReasonStateMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := clone(t, st)
			tc.mutate(s)
			got := reasons(p.Evaluate(s))
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("reasons %v, want exactly [%s]", got, tc.want)
			}
		})
	}
}

func TestSkip(t *testing.T) {
	st := realState(t)
	p := bootpolicy.FromState(st)
	p.Skip = append(p.Skip, bootpolicy.CheckBootDigests, bootpolicy.CheckKernelCmdline)
	s := clone(t, st)
	s.BootDigests = append(s.BootDigests, strings.Repeat("05", 32))
	s.KernelCmdline = "anything"
	if fs := p.Evaluate(s); fs != nil {
		t.Fatalf("skipped checks still fail: %v", fs)
	}
}

func TestDenyByDefault(t *testing.T) {
	st := realState(t)
	// A policy that lists nothing fails the host on every allow-list.
	p, err := bootpolicy.Parse([]byte(`{"kind":"vigil-boot-policy","version":1,"bank":"sha256","secure_boot":"any",
		"scrtm":[],"firmware_blobs":[],"pk":[],"kek":[],"db":[],"dbx":[],"boot_digests":[],"kernel_cmdline":""}`))
	if err != nil {
		t.Fatal(err)
	}
	got := reasons(p.Evaluate(st))
	for _, want := range []evidence.Reason{bootpolicy.ReasonSCRTM, bootpolicy.ReasonFirmware, bootpolicy.ReasonSigDB, bootpolicy.ReasonBootDigest, bootpolicy.ReasonKernelCmdline} {
		if !slices.Contains(got, want) {
			t.Errorf("empty policy: no %s failure in %v", want, got)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good := `"kind":"vigil-boot-policy","version":1,"bank":"sha256","secure_boot":"enabled","scrtm":[],"firmware_blobs":[],"pk":[],"kek":[],"db":[],"dbx":[],"boot_digests":[],"kernel_cmdline":""`
	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", `{`, "boot policy"},
		{"unknown field", `{` + good + `,"secureboot":"any"}`, "unknown field"},
		{"wrong kind", `{` + strings.Replace(good, "vigil-boot-policy", "x", 1) + `}`, "kind"},
		{"wrong version", `{` + strings.Replace(good, `"version":1`, `"version":3`, 1) + `}`, "version"},
		{"version 2 field in version 1", `{` + good + `,"mok":[]}`, "mok needs version 2"},
		{"empty kernels entry", `{` + strings.Replace(good, `"version":1`, `"version":2`, 1) + `,"kernels":[{}]}`, "kernels[0] sets nothing"},
		{"short kernels digest", `{` + strings.Replace(good, `"version":1`, `"version":2`, 1) + `,"kernels":[{"initrd":"ab"}]}`, "kernels[0].initrd"},
		{"bad kernels regexp", `{` + strings.Replace(good, `"version":1`, `"version":2`, 1) + `,"kernels":[{"cmdline":"("}]}`, "kernels[0].cmdline"},
		{"short mok digest", `{` + strings.Replace(good, `"version":1`, `"version":2`, 1) + `,"mok":["ab"]}`, "mok[0]"},
		{"bad bank", `{` + strings.Replace(good, `"sha256"`, `"md5"`, 1) + `}`, "bank"},
		{"bad secure_boot", `{` + strings.Replace(good, `"enabled"`, `"yes"`, 1) + `}`, "secure_boot"},
		{"short digest", `{` + strings.Replace(good, `"boot_digests":[]`, `"boot_digests":["abcd"]`, 1) + `}`, "boot_digests[0]"},
		{"uppercase hex", `{` + strings.Replace(good, `"dbx":[]`, `"dbx":["ABCD"]`, 1) + `}`, "dbx[0]"},
		{"bad regexp", `{` + strings.Replace(good, `"kernel_cmdline":""`, `"kernel_cmdline":"("`, 1) + `}`, "kernel_cmdline"},
		{"unknown skip", `{` + good + `,"skip":["everything"]}`, "skip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bootpolicy.Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// FuzzParse: any bytes give a policy or an error, never a panic, and a
// parsed policy evaluates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"kind":"vigil-boot-policy","version":1,"bank":"sha256","secure_boot":"enabled","scrtm":[],"firmware_blobs":[],"pk":[],"kek":[],"db":[],"dbx":[],"boot_digests":[],"kernel_cmdline":"a.*"}`))
	f.Add([]byte(`{"scrtm_and_bios":[{"scrtm":{"sha256":"0x00"}}],"kernels":[{"kernel_cmdline":"x"}]}`))
	f.Add([]byte(`{"kind":"vigil-boot-policy","version":2,"bank":"sha256","secure_boot":"any","scrtm":[],"firmware_blobs":[],"post_codes":[],"pk":[],"kek":[],"db":[],"dbx":[],` +
		`"vendor_db":[],"mok":[],"mokx":[],"boot_digests":[],"kernel_cmdline":"","kernels":[{"grub":"` + strings.Repeat("ab", 32) + `","cmdline":"a.*"}],"skip":["mok"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := bootpolicy.Parse(b)
		if err != nil {
			return
		}
		p.Evaluate(&bootlog.BootState{Bank: p.Bank})
	})
}
