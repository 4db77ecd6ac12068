package evidence_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"reflect"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// PCRDigest's second result holds exactly the selected PCRs, whatever else
// was supplied; it is the supplied map itself only when nothing else was.
func TestPCRDigestReturnsOnlyQuotedValues(t *testing.T) {
	v := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	sha := tpm2.TPMAlgSHA256
	sel := func(banks ...tpm2.TPMSPCRSelection) tpm2.TPMLPCRSelection {
		return tpm2.TPMLPCRSelection{PCRSelections: banks}
	}
	bank := func(alg tpm2.TPMAlgID, pcrs ...int) tpm2.TPMSPCRSelection {
		return evidence.Selection(pcrs, alg).PCRSelections[0]
	}
	for _, tc := range []struct {
		name   string
		sel    tpm2.TPMLPCRSelection
		values evidence.PCRValues
		quoted evidence.PCRValues
		same   bool
		digest []byte // of the selected values, in selection order
	}{
		{"exactly the selection", sel(bank(sha, 0, 10)),
			evidence.PCRValues{sha: {0: v(1), 10: v(2)}},
			evidence.PCRValues{sha: {0: v(1), 10: v(2)}}, true, append(v(1), v(2)...)},
		{"an unselected PCR", sel(bank(sha, 10)),
			evidence.PCRValues{sha: {10: v(2), 16: v(3)}},
			evidence.PCRValues{sha: {10: v(2)}}, false, v(2)},
		{"an unselected bank", sel(bank(sha, 10)),
			evidence.PCRValues{sha: {10: v(2)}, tpm2.TPMAlgSHA384: {10: bytes.Repeat([]byte{4}, 48)}},
			evidence.PCRValues{sha: {10: v(2)}}, false, v(2)},
		// Two selections of one bank whose bit counts add up to the number
		// of supplied values, though PCR 5 is not selected.
		{"a bank selected twice", sel(bank(sha, 0), bank(sha, 0)),
			evidence.PCRValues{sha: {0: v(1), 5: v(5)}},
			evidence.PCRValues{sha: {0: v(1)}}, false, append(v(1), v(1)...)},
		{"an empty bank selection", sel(bank(sha), bank(tpm2.TPMAlgSHA1, 10)),
			evidence.PCRValues{sha: {}, tpm2.TPMAlgSHA1: {10: v(7)[:20]}},
			evidence.PCRValues{tpm2.TPMAlgSHA1: {10: v(7)[:20]}}, false, v(7)[:20]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			digest, quoted, err := evidence.PCRDigest(crypto.SHA256, tc.sel, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256(tc.digest); !bytes.Equal(digest, want[:]) {
				t.Errorf("digest %x, want %x", digest, want)
			}
			if !reflect.DeepEqual(quoted, tc.quoted) {
				t.Errorf("quoted %v, want %v", quoted, tc.quoted)
			}
			if same := reflect.ValueOf(quoted).Pointer() == reflect.ValueOf(tc.values).Pointer(); same != tc.same {
				t.Errorf("returned the supplied map: %v, want %v", same, tc.same)
			}
		})
	}
}
