package bootpolicy_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// A policy made from a known-good log passes the verifier's boot check of
// that log, whatever the PCRs the quote adds (PCR 14, shim's MOK state,
// is checked when quoted), and is the policy the host's own PCRs give.
func TestFromLogPassesTheVerifiersCheck(t *testing.T) {
	sim, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	simMOK, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true, MOK: &simhost.MOKConfig{Keys: []string{"owner"}}})
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string]func(t *testing.T) []byte{
		"simhost":     func(*testing.T) []byte { return sim.Bytes() },
		"simhost-mok": func(*testing.T) []byte { return simMOK.Bytes() },
		"rhel8":       func(*testing.T) []byte { return testdata.Rhel8EventLog },
		"ubuntu2404":  func(*testing.T) []byte { return testdata.Ubuntu2404AmdSevSnpEventLog },
	}
	for _, name := range []string{"keylime-binary_bios_measurements", "keylime-binary_bios_measurements-secureboot", "rust-keylime-uefi_log.bin"} {
		logs[name] = func(t *testing.T) []byte { return readData(t, "uefi", name) }
	}
	for name, read := range logs {
		t.Run(name, func(t *testing.T) {
			raw := read(t)
			pol, err := bootpolicy.FromLog(raw, bootpolicy.LogOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// A log with shim's MOK measurements gives a policy that
			// checks them; one without, a policy that skips them.
			if hasMOK := name != "simhost"; hasMOK == slices.Contains(pol.Skip, bootpolicy.CheckMOK) || hasMOK != (len(pol.MOK) > 0) {
				t.Errorf("MOK: skip %v, mok %v", pol.Skip, pol.MOK)
			}
			if slices.Contains(pol.Skip, bootpolicy.CheckKernels) || len(pol.Kernels) != 1 {
				t.Errorf("no kernels entry: skip %v, kernels %+v", pol.Skip, pol.Kernels)
			}
			l, err := bootlog.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			replayed, err := l.Replay(tpm2.TPMAlgSHA256)
			if err != nil {
				t.Fatal(err)
			}
			quoted := evidence.PCRValues{}
			for _, i := range append(bootlog.BootPCRs, 14) {
				v, ok := replayed[i]
				if !ok {
					v = make([]byte, 32)
				}
				quoted.Set(tpm2.TPMAlgSHA256, i, v)
			}
			if _, f := verdict.Boot(raw, quoted, pol); f != nil {
				t.Fatalf("the verifier fails the log its policy was made from: %v", f)
			}
			fromPCRs, err := bootpolicy.FromLog(raw, bootpolicy.LogOptions{PCRs: quoted})
			if err != nil || !reflect.DeepEqual(fromPCRs, pol) {
				t.Fatalf("with the host's PCRs: %v; policies equal: %v", err, reflect.DeepEqual(fromPCRs, pol))
			}
		})
	}
}

// Unusable input is a plain error; a log that does not replay to the
// host's PCRs is an *evidence.Failure.
func TestFromLogErrors(t *testing.T) {
	raw := testdata.Rhel8EventLog
	for name, opts := range map[string]bootpolicy.LogOptions{"bank the log lacks": {Bank: tpm2.TPMAlgSHA512}} {
		if _, err := bootpolicy.FromLog(raw, opts); err == nil || evidence.ReasonOf(err) != "" {
			t.Errorf("%s: %v, want a plain error", name, err)
		}
	}
	if _, err := bootpolicy.FromLog([]byte("nonsense"), bootpolicy.LogOptions{}); err == nil || evidence.ReasonOf(err) != "" {
		t.Errorf("garbage log: %v, want a plain error", err)
	}
	wrong := evidence.PCRValues{}
	for _, i := range bootlog.BootPCRs {
		wrong.Set(tpm2.TPMAlgSHA256, i, make([]byte, 32))
	}
	_, err := bootpolicy.FromLog(raw, bootpolicy.LogOptions{PCRs: wrong})
	var f *evidence.Failure
	if !errors.As(err, &f) || f.Reason != bootlog.ReasonReplayMismatch {
		t.Fatalf("log against other PCRs: %v, want %s", err, bootlog.ReasonReplayMismatch)
	}
}
