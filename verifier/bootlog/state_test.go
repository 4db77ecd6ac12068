package bootlog_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// stateOf verifies a real log against the values it replays to over the
// given PCRs and extracts its SHA-256 boot state.
func stateOf(t *testing.T, name string, pcrs []int) *bootlog.BootState {
	t.Helper()
	raw, err := os.ReadFile(testenv.Data(t, "uefi", name))
	if err != nil {
		t.Fatal(err)
	}
	l := mustParse(t, raw)
	r, err := l.Replay(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	q := evidence.PCRValues{}
	for _, i := range pcrs {
		v, ok := r[i]
		if !ok {
			v = make([]byte, 32)
		}
		q.Set(tpm2.TPMAlgSHA256, i, v)
	}
	v, err := l.Verify(q)
	if err != nil {
		t.Fatal(err)
	}
	st, err := v.State(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStateShimAndBootChain checks, on real logs, the parts Keylime's
// reference states describe: the boot chain without the firmware's own
// applications, shim's MOK measurements (only when PCR 14 is quoted), its
// vendor_db, and PCR 0's POST codes apart from the firmware volumes.
func TestStateShimAndBootChain(t *testing.T) {
	withMOK := append(slices.Clone(bootlog.BootPCRs), 14)

	// A Lenovo laptop, Secure Boot off: its boot menu ran from a firmware
	// volume before the boot option (event 26), then shim and GRUB.
	off := stateOf(t, "keylime-binary_bios_measurements", withMOK)
	if !slices.Equal(off.FirmwareApps, []string{"81231bccdd15c4d25016651fe7d331152c9259f366bd32f01d866e9fe67fae91"}) ||
		!slices.Equal(off.BootChain, []string{"94896c17d49fc8c8df0cc2836611586edab1615ce7cb58cf13fc5798de56b367", "a49a607a61f216cad891ecf467d593df56d472478b957a159e80f38d8bda75c5"}) ||
		len(off.BootDigests) != 3 {
		t.Errorf("boot chain %v, firmware applications %v, boot digests %v", off.BootChain, off.FirmwareApps, off.BootDigests)
	}
	want := []bootlog.MOKEvent{
		{Num: 53, Name: "MokList", Digest: "e8e48e3ad10bc243341b4663c0057aef0ec7894ccc9ecb0598f0830fa57f7220"},
		{Num: 54, Name: "MokListX", Digest: "8d8a3aae50d5d25838c95c034aadce7b548c9a952eb7925e366eda537c59c3b0"},
		{Num: 56, Name: "MokListTrusted", Digest: "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a"},
	}
	if !slices.Equal(off.MOK, want) {
		t.Errorf("MOK %+v, want %+v", off.MOK, want)
	}
	if len(off.PostCodes) != 2 || len(off.FirmwareBlobs) != 6 {
		t.Errorf("%d POST codes, %d firmware volumes; want 2 and 6", len(off.PostCodes), len(off.FirmwareBlobs))
	}
	if off.VendorDB == nil || len(off.VendorDB.Certs)+len(off.VendorDB.Hashes) != 0 {
		t.Errorf("vendor_db %+v, want established and empty", off.VendorDB)
	}

	// A RHEL 9 VM with Secure Boot: shim verified GRUB with its vendor_db.
	on := stateOf(t, "keylime-binary_bios_measurements-secureboot", withMOK)
	if len(on.FirmwareApps) != 0 || len(on.BootChain) != 3 || len(on.MOK) != 3 {
		t.Errorf("boot chain %v, firmware applications %v, MOK %v", on.BootChain, on.FirmwareApps, on.MOK)
	}
	if on.VendorDB == nil || len(on.VendorDB.Certs) != 1 || !strings.Contains(on.VendorDB.Certs[0].Subject, "Red Hat Secure Boot CA 5") {
		t.Errorf("vendor_db %+v, want Red Hat's CA", on.VendorDB)
	}

	// Without PCR 14 in the quote, its events prove nothing.
	if st := stateOf(t, "keylime-binary_bios_measurements-secureboot", bootlog.BootPCRs); st.MOK != nil {
		t.Errorf("MOK %v from a PCR the quote does not cover", st.MOK)
	}
}
