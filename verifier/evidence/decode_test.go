package evidence

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// A quote made by go-attestation's Windows GCP test TPM (SHA-1 PCRs, all 24
// selected) and an ECDSA TPMT_SIGNATURE shape, as decoder seeds.
const (
	seedAttest = "ff54434780180022000bad427e7fc8821f74c7c6964641f9fa053772122d4b94a6cc3a3fcfccdd55b5ad" +
		"000000000000009c83133e4db9e4310636da0141e4356df966e03500000001000403ffffff0014a610f27bc687ce" +
		"906243287d832706036e79f6e1"
	seedECDSASig = "00180004000b0102030405060708090a0b000b0102030405060708090a0b"
)

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeMatchesGoTPM holds the hand decoder to go-tpm's: whenever both
// accept an input they must agree field by field, and whenever go-tpm
// accepts a quote that it re-encodes byte for byte, so must the hand
// decoder.
func FuzzDecodeMatchesGoTPM(f *testing.F) {
	f.Add(mustHex(f, seedAttest), mustHex(f, seedECDSASig))
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17}, []byte{0x00, 0x14, 0x00, 0x0b, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		mine, err := decodeAttest(attest)
		theirs, terr := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
		if err == nil && terr == nil && mine.Type == tpm2.TPMSTAttestQuote {
			if !bytes.Equal(tpm2.Marshal(mine), tpm2.Marshal(*theirs)) {
				t.Fatalf("decoders disagree on %x", attest)
			}
		}
		if err != nil && terr == nil && theirs.Type == tpm2.TPMSTAttestQuote && bytes.Equal(tpm2.Marshal(*theirs), attest) {
			if q, qerr := theirs.Attested.Quote(); qerr == nil && len(q.PCRSelect.PCRSelections) <= maxPCRBanks {
				t.Fatalf("go-tpm accepts %x, hand decoder refuses: %v", attest, err)
			}
		}
		ms, err := decodeSignature(sig)
		ts, terr := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
		if err == nil && terr == nil {
			switch ms.SigAlg {
			case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS, tpm2.TPMAlgECDSA:
				if !bytes.Equal(tpm2.Marshal(ms), tpm2.Marshal(*ts)) {
					t.Fatalf("signature decoders disagree on %x", sig)
				}
			}
		}
	})
}

func TestDecodeRealQuote(t *testing.T) {
	a, err := decodeAttest(mustHex(t, seedAttest))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := tpm2.Unmarshal[tpm2.TPMSAttest](mustHex(t, seedAttest))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tpm2.Marshal(a), tpm2.Marshal(*theirs)) || !bytes.Equal(tpm2.Marshal(a), mustHex(t, seedAttest)) {
		t.Fatal("hand decoder and go-tpm disagree on a real quote")
	}
}
