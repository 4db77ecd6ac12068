package simhost_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// TestBootMOK runs a boot with shim's MOK measurements on each TPM
// implementation: PCR 14 ends where the log replays to, and the boot
// state shows MokList, MokListX and MokListTrusted as shim logs them.
func TestBootMOK(t *testing.T) {
	cfg := simhost.BootConfig{Seed: "mok", SecureBoot: true, MOK: &simhost.MOKConfig{Keys: []string{"Owner Key"}, Revoked: []string{"old"}}}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			tpm := be.open(t)
			l, err := simhost.NewBootLog(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.Boot(ctx, tpm)
			if err != nil {
				t.Fatal(err)
			}
			for alg, pcrs := range l.PCRs() {
				if !bytes.Equal(got[alg][14], pcrs[14]) || bytes.Equal(pcrs[14], make([]byte, len(pcrs[14]))) {
					t.Errorf("%v PCR 14: TPM %x, replay %x", alg, got[alg][14], pcrs[14])
				}
			}
			quoted := evidence.PCRValues{}
			for alg, pcrs := range got {
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
			var names []string
			for _, m := range st.MOK {
				names = append(names, m.Name)
			}
			if !slices.Equal(names, []string{simhost.MokList, simhost.MokListX, simhost.MokListTrusted}) || len(st.Incomplete) > 0 {
				t.Errorf("MOK state %+v, incomplete %v", st.MOK, st.Incomplete)
			}
		})
	}
	// Without MOK the log and PCR 14 are as before.
	l, err := simhost.NewBootLog(simhost.BootConfig{Seed: "mok", SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Events {
		if e.PCR == 14 {
			t.Fatal("a boot without MOK measures PCR 14")
		}
	}
	if _, ok := l.PCRs()[tpm2.TPMAlgSHA256][14]; ok {
		t.Error("a boot without MOK replays PCR 14")
	}
}

// TestBootVariants checks what each knob changes: another kernel build
// changes the kernel's PCR 4 and PCR 9 digests, another initrd build the
// initrd's, an unverified kernel drops the kernel's PCR 4 event, and other
// MOK keys the MokList digest; nothing else.
func TestBootVariants(t *testing.T) {
	type digests struct{ pcr4, pcr9, pcr14 []string }
	of := func(cfg simhost.BootConfig) digests {
		t.Helper()
		l, err := simhost.NewBootLog(cfg)
		if err != nil {
			t.Fatal(err)
		}
		el, err := tcg.ParseEventLog(l.Bytes(), tcg.ParseOpts{})
		if err != nil {
			t.Fatal(err)
		}
		var d digests
		for _, e := range el.Events(register.HashSHA256) {
			s := string(e.Digest)
			switch {
			case e.Index == 4 && e.Type == tcg.EFIBootServicesApplication:
				d.pcr4 = append(d.pcr4, s)
			case e.Index == 9:
				d.pcr9 = append(d.pcr9, s)
			case e.Index == 14:
				d.pcr14 = append(d.pcr14, s)
			}
		}
		return d
	}
	mok := &simhost.MOKConfig{Keys: []string{"a"}}
	base := of(simhost.BootConfig{SecureBoot: true, MOK: mok})
	for _, tc := range []struct {
		name              string
		cfg               simhost.BootConfig
		pcr4, pcr9, pcr14 []int // positions expected to differ
		len4              int
	}{
		{"kernel build", simhost.BootConfig{SecureBoot: true, MOK: mok, KernelBuild: "2"}, []int{2}, []int{1}, nil, 3},
		{"initrd build", simhost.BootConfig{SecureBoot: true, MOK: mok, InitrdBuild: "2"}, nil, []int{2}, nil, 3},
		{"unverified kernel", simhost.BootConfig{SecureBoot: true, MOK: mok, UnverifiedKernel: true}, nil, nil, nil, 2},
		{"other MOK", simhost.BootConfig{SecureBoot: true, MOK: &simhost.MOKConfig{Keys: []string{"b"}}}, nil, nil, []int{0}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := of(tc.cfg)
			if len(d.pcr4) != tc.len4 {
				t.Fatalf("%d PCR 4 applications, want %d", len(d.pcr4), tc.len4)
			}
			for _, c := range []struct {
				name      string
				got, want []string
				differ    []int
			}{{"PCR 4", d.pcr4, base.pcr4, tc.pcr4}, {"PCR 9", d.pcr9, base.pcr9, tc.pcr9}, {"PCR 14", d.pcr14, base.pcr14, tc.pcr14}} {
				for i := range c.got {
					if (c.got[i] != c.want[i]) != slices.Contains(c.differ, i) {
						t.Errorf("%s event %d: differs %v, want %v", c.name, i, c.got[i] != c.want[i], slices.Contains(c.differ, i))
					}
				}
			}
		})
	}
}
