package bootlog_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

// oracleErrors are the places where tpm2-tools 5.4 is wrong, each checked by
// hand against the TCG PC Client Platform Firmware Profile and an
// independent replay: Vigil's value is the one go-eventlog also accepts.
var oracleErrors = map[string]struct {
	wrongBank tpm2.TPMAlgID // a bank tpm2-tools mislabels
	wrongPCR0 bool          // tpm2-tools ignores how PCR 0 starts
	why       string
}{
	"tpm2-tss-binary_measurements_hcrtm.bin": {tpm2.TPMAlgSHA256, true,
		"the log also carries SM3-256 digests and tpm2-tools prints the SM3 bank as sha256 (its PCR 2 value is SM3(0^32 || SM3(00000000))); " +
			"and it ignores the EV_EFI_HCRTM_EVENT that starts PCR 0 at 0x00..04"},
	"keylime-binary_bios_measurements": {0, true,
		"the log opens PCR 0 with an EV_NO_ACTION StartupLocality event for locality 3 (Intel TXT), so PCR 0 starts at 0x00..03; " +
			"tpm2-tools' PCR 0 matches neither that nor a zero start"},
}

// checkReplay replays every bank the oracle has and compares every PCR it
// lists, then verifies the log against those values as if quoted (a PCR
// the oracle omits has no events, so a TPM would show its reset value).
func checkReplay(t *testing.T, l realLog) *bootlog.Verified {
	t.Helper()
	log, err := bootlog.Parse(l.raw)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	known, hasKnown := oracleErrors[l.name]
	quoted := make(evidence.PCRValues)
	for _, bank := range bankOrder(l.pcrs) {
		got, err := log.Replay(bank)
		if err != nil {
			t.Fatalf("replay %s: %v", evidence.BankName(bank), err)
		}
		if hasKnown && known.wrongBank == bank {
			t.Logf("%s bank not compared: %s", evidence.BankName(bank), known.why)
			continue
		}
		h, _ := evidence.HashOf(bank)
		for _, i := range append(bootlog.BootPCRs, 14) {
			v, ok := l.pcrs[bank][i]
			if !ok {
				v = make([]byte, h.Size())
			}
			if hasKnown && known.wrongPCR0 && i == 0 {
				v = got[0]
			}
			quoted.Set(bank, i, v)
		}
		for _, i := range l.pcrs.Indices(bank) {
			if hasKnown && known.wrongPCR0 && i == 0 {
				t.Logf("%s PCR 0 not compared: %s", evidence.BankName(bank), known.why)
				continue
			}
			want := l.pcrs[bank][i]
			g, ok := got[i]
			if !ok {
				g = make([]byte, len(want))
			}
			if !bytes.Equal(g, want) {
				t.Errorf("%s PCR %d: replayed %x, want %x", evidence.BankName(bank), i, g, want)
			}
		}
	}
	v, err := log.Verify(quoted)
	if err != nil {
		t.Fatalf("verify against its own PCRs: %v", err)
	}
	return v
}

func TestReplayMatchesTPM2Tools(t *testing.T) {
	for _, l := range tpm2ToolsLogs(t) {
		t.Run(l.name, func(t *testing.T) {
			v := checkReplay(t, l)
			st, err := v.State(0)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.BootDigests) == 0 {
				t.Errorf("no boot application digests extracted from PCR 4")
			}
			t.Logf("%s: secure boot %v, %d boot digests, cmdline %q, incomplete %v", st.Bank, st.SecureBoot, len(st.BootDigests), st.KernelCmdline, st.Incomplete)
		})
	}
}

func TestReplayMatchesTPMReadings(t *testing.T) {
	for _, l := range goEventlogLogs(t) {
		t.Run(l.name, func(t *testing.T) {
			checkReplay(t, l)
		})
	}
}

func TestSecureBootStateOfRealLogs(t *testing.T) {
	for _, tc := range []struct {
		file       string
		secureBoot bool
	}{
		{"keylime-binary_bios_measurements", false},
		{"keylime-binary_bios_measurements-secureboot", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(testenv.Data(t, "uefi", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			log, err := bootlog.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			pcrs := make(evidence.PCRValues)
			for _, bank := range log.Banks {
				r, err := log.Replay(bank)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range append(bootlog.BootPCRs, 14) {
					v, ok := r[i]
					if !ok {
						h, _ := evidence.HashOf(bank)
						v = make([]byte, h.Size())
					}
					pcrs.Set(bank, i, v)
				}
			}
			v, err := log.Verify(pcrs)
			if err != nil {
				t.Fatal(err)
			}
			st, err := v.State(tpm2.TPMAlgSHA256)
			if err != nil {
				t.Fatal(err)
			}
			if st.SecureBoot != tc.secureBoot {
				t.Errorf("secure boot %v, want %v (incomplete: %v)", st.SecureBoot, tc.secureBoot, st.Incomplete)
			}
			if tc.secureBoot && (st.DB == nil || len(st.DB.Certs) == 0 || len(st.Authorities) == 0) {
				t.Errorf("secure boot on but db %+v, authorities %v", st.DB, st.Authorities)
			}
			if st.KernelCmdline == "" {
				t.Errorf("no kernel command line (incomplete: %v)", st.Incomplete)
			}
		})
	}
}

// TestWindowsGCPQuoteAndLog checks the whole chain on a real TPM's quote:
// the quote verifies, and the log replays to the PCRs it vouches for.
func TestWindowsGCPQuoteAndLog(t *testing.T) {
	rq := evidencetest.WindowsGCPQuote(t)
	ak, err := evidence.ParseAK(rq.AK)
	if err != nil {
		t.Fatal(err)
	}
	q, err := evidence.ParseQuote(rq.Attest, rq.Sig)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ak.VerifyQuote(q, evidence.Expect{Nonce: rq.Nonce, PCRs: rq.PCRs})
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootlog.Parse(rq.BootLog)
	if err != nil {
		t.Fatal(err)
	}
	v, err := log.Verify(res.PCRs)
	if err != nil {
		t.Fatalf("real log against its real quote: %v", err)
	}
	if len(v.Banks) != 1 || v.Banks[0] != tpm2.TPMAlgSHA1 {
		t.Errorf("verified banks %v, want sha1", v.Banks)
	}
	// The base64 form of the same log is read the same way.
	if _, err := bootlog.Parse([]byte(base64.StdEncoding.EncodeToString(rq.BootLog))); err != nil {
		t.Errorf("base64 log: %v", err)
	}
}

func TestBogusLogRefused(t *testing.T) {
	raw, err := os.ReadFile(testenv.Data(t, "uefi", "keylime-binary_bios_measurements-bogus"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bootlog.Parse(raw); err == nil {
		t.Fatal("bogus log parsed")
	}
}
