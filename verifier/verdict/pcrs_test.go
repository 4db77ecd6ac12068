package verdict_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// The PCR policy stage: quoted values in their lists pass; a value out of
// its list is a policy violation naming the PCR, the bank and the value,
// the first of several naming the rest's count; a PCR the quote does not
// cover is evidence that does not hold together. Judge runs it on a
// verified quote's values, after the clock and before the boot log.
func TestPCRPolicyStage(t *testing.T) {
	sha1, sha256 := tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256
	quoted := evidence.PCRValues{}
	quoted.Set(sha1, 16, bytes.Repeat([]byte{1}, 20))
	quoted.Set(sha256, 16, bytes.Repeat([]byte{2}, 32))
	quoted.Set(sha256, 23, bytes.Repeat([]byte{3}, 32))
	pol, err := pcrpolicy.Exactly(quoted)
	if err != nil {
		t.Fatal(err)
	}
	if f := verdict.PCRs(quoted, pol); f != nil {
		t.Fatalf("allowed values: %v", f)
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak, err := evidence.NewAK(evidencetest.SoftPublic(key, sha256))
	if err != nil {
		t.Fatal(err)
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: sha1, PCRSelect: []byte{0, 0, 0x01}}, {Hash: sha256, PCRSelect: []byte{0, 0, 0x81}},
	}}
	judge := func(values evidence.PCRValues, pol *pcrpolicy.Policy) verdict.Report {
		t.Helper()
		nonce := []byte("nonce")
		attest, sig, err := evidencetest.SoftQuote(key, sha256, nonce, evidence.ClockInfo{Clock: 1}, sel, values)
		if err != nil {
			t.Fatal(err)
		}
		q, err := evidence.ParseQuote(attest, sig)
		if err != nil {
			t.Fatal(err)
		}
		// A boot log that does not parse: the PCR policy's failure comes
		// first, as the engine stops at it.
		return verdict.Judge(verdict.Input{AK: ak, Quote: q, Expect: evidence.Expect{Nonce: nonce, PCRs: values}, PCRPolicy: pol, BootLog: []byte("not a log")})
	}
	if r := judge(quoted, pol); len(r.Failures) != 1 || r.Failures[0].Reason != verdict.CheckBootLogMalformed {
		t.Fatalf("allowed values, a bad boot log: %+v", r.Failures)
	}

	moved := evidence.PCRValues{}
	moved.Set(sha1, 16, bytes.Repeat([]byte{0xaa}, 20))
	moved.Set(sha256, 16, bytes.Repeat([]byte{0xbb}, 32))
	moved.Set(sha256, 23, bytes.Repeat([]byte{3}, 32))
	r := judge(moved, pol)
	f := r.Verdict
	if f == nil || f.Reason != verdict.ReasonPolicyViolation || f.Check != "pcr_not_allowed" ||
		f.Detail != "PCR 16 (sha1) = "+strings.Repeat("aa", 20)+", not the allowed value "+strings.Repeat("01", 20)+" (and 1 more)" {
		t.Fatalf("values out of their lists: %+v", f)
	}
	if len(r.Failures) != 3 || !strings.HasPrefix(r.Failures[1].Detail, "PCR 16 (sha256) = bbbb") || r.Failures[2].Reason != verdict.CheckBootLogMalformed {
		t.Fatalf("report %+v", r.Failures)
	}

	more, _ := pcrpolicy.New(map[tpm2.TPMAlgID]map[int][][]byte{sha256: {17: {bytes.Repeat([]byte{4}, 32)}}})
	f = verdict.PCRs(quoted, more)
	if f == nil || f.Reason != verdict.ReasonInvalidEvidence || f.Check != "pcr_not_quoted" || f.Detail != "PCR 17 (sha256) is not in the quote" {
		t.Fatalf("a PCR not quoted: %+v", f)
	}
}
