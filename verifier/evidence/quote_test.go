package evidence_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

// bootPCRs is the selection the verifier asks for: firmware and boot loader
// PCRs plus IMA's PCR 10, in both banks.
var bootPCRs = evidence.Selection([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14}, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256)

func nonce(t testing.TB) []byte {
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// quoted is one genuine quote with everything needed to check it.
type quoted struct {
	ak          *evidence.AK
	attest, sig []byte
	nonce       []byte
	pcrs        evidence.PCRValues
}

func makeQuote(t *testing.T, h *evidencetest.Host) quoted {
	t.Helper()
	h.Extend(t, 4, []byte("shim"))
	h.Extend(t, 10, []byte("ima entry"))
	n := nonce(t)
	attest, sig := h.Quote(t, n, bootPCRs)
	ak, err := evidence.NewAK(h.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	return quoted{ak: ak, attest: attest, sig: sig, nonce: n, pcrs: h.ReadPCRs(t, bootPCRs)}
}

func (q quoted) verify(ak *evidence.AK, attest, sig, nonce []byte, pcrs evidence.PCRValues) (*evidence.Result, error) {
	parsed, err := evidence.ParseQuote(attest, sig)
	if err != nil {
		return nil, err
	}
	return ak.VerifyQuote(parsed, evidence.Expect{Nonce: nonce, PCRs: pcrs})
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

// attestOffsets finds where the fields of a marshalled TPMS_ATTEST start, so
// forgeries can aim at one field.
func clockOffset(attest []byte) int {
	off := 6 // magic, type
	off += 2 + int(binary.BigEndian.Uint16(attest[off:]))
	off += 2 + int(binary.BigEndian.Uint16(attest[off:]))
	return off
}

func alterPCR(p evidence.PCRValues, bank tpm2.TPMAlgID, i int) evidence.PCRValues {
	out := make(evidence.PCRValues)
	for alg, vals := range p {
		for j, v := range vals {
			if alg == bank && j == i {
				v = flip(v, 0)
			}
			out.Set(alg, j, v)
		}
	}
	return out
}

func withoutPCR(p evidence.PCRValues, bank tpm2.TPMAlgID, i int) evidence.PCRValues {
	out := make(evidence.PCRValues)
	for alg, vals := range p {
		for j, v := range vals {
			if alg != bank || j != i {
				out.Set(alg, j, v)
			}
		}
	}
	return out
}

var akSpecs = []evidencetest.KeySpec{
	evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256),
	evidencetest.RSAKey(tpm2.TPMAlgRSAPSS, tpm2.TPMAlgSHA256),
	evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA1),
	evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA384),
	evidencetest.ECCKey(tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256),
	evidencetest.ECCKey(tpm2.TPMECCNistP384, tpm2.TPMAlgSHA384),
}

func TestQuoteSimulator(t *testing.T) {
	tpm := evidencetest.Simulator(t).Conn()
	for _, spec := range akSpecs {
		t.Run(spec.Name, func(t *testing.T) {
			checkQuoteForgeries(t, tpm, spec)
		})
	}
}

func TestQuoteSwtpm(t *testing.T) {
	tpm := evidencetest.Swtpm(t)
	for _, spec := range []evidencetest.KeySpec{
		evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256),
		evidencetest.ECCKey(tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256),
	} {
		t.Run(spec.Name, func(t *testing.T) {
			checkQuoteForgeries(t, tpm, spec)
		})
	}
}

// checkQuoteForgeries makes a genuine quote with an AK of the given kind,
// checks it passes, then checks each forgery fails with its own reason.
func checkQuoteForgeries(t *testing.T, tpm transport.TPM, spec evidencetest.KeySpec) {
	q := makeQuote(t, evidencetest.NewHost(t, tpm, spec))
	// A second AK of the same kind on the same TPM plays the attacker's
	// key: same TPM, same PCRs, but not the key the registrar enrolled.
	other := evidencetest.NewHost(t, tpm, spec)
	otherAK, err := evidence.NewAK(other.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	res, err := q.verify(q.ak, q.attest, q.sig, q.nonce, q.pcrs)
	if err != nil {
		t.Fatalf("genuine quote refused: %v", err)
	}
	if !res.PCRs.Equal(q.pcrs) {
		t.Errorf("result PCRs differ from the quoted ones")
	}
	parsed, _ := evidence.ParseQuote(q.attest, q.sig)
	if res.Clock.ResetCount != parsed.Attest.ClockInfo.ResetCount || res.Clock.Clock == 0 {
		t.Errorf("clock info %+v not taken from the quote", res.Clock)
	}

	sigBody := len(q.sig) - 1 // last byte of the signature value (RSA sig or ECDSA S)
	extraPCR := make(evidence.PCRValues)
	for alg, vals := range q.pcrs {
		for i, v := range vals {
			extraPCR.Set(alg, i, v)
		}
	}
	// PCRs the quote does not select are not its business: adding one
	// changes nothing, and it is not reported as quoted.
	extraPCR.Set(tpm2.TPMAlgSHA256, 16, make([]byte, 32))
	if res, err := q.verify(q.ak, q.attest, q.sig, q.nonce, extraPCR); err != nil {
		t.Errorf("unquoted extra PCR made the quote fail: %v", err)
	} else if _, ok := res.PCRs.Get(tpm2.TPMAlgSHA256, 16); ok {
		t.Errorf("unquoted PCR 16 reported as quoted")
	}

	tests := []struct {
		name        string
		ak          *evidence.AK
		attest, sig []byte
		nonce       []byte
		pcrs        evidence.PCRValues
		want        evidence.Reason
	}{
		{"wrong AK", otherAK, q.attest, q.sig, q.nonce, q.pcrs, evidence.ReasonBadSignature},
		{"wrong nonce", q.ak, q.attest, q.sig, flip(q.nonce, 3), q.pcrs, evidence.ReasonNonceMismatch},
		{"no nonce", q.ak, q.attest, q.sig, nil, q.pcrs, evidence.ReasonNonceMismatch},
		{"altered sha256 PCR 4", q.ak, q.attest, q.sig, q.nonce, alterPCR(q.pcrs, tpm2.TPMAlgSHA256, 4), evidence.ReasonPCRDigestMismatch},
		{"altered sha1 PCR 10", q.ak, q.attest, q.sig, q.nonce, alterPCR(q.pcrs, tpm2.TPMAlgSHA1, 10), evidence.ReasonPCRDigestMismatch},
		{"missing PCR 14", q.ak, q.attest, q.sig, q.nonce, withoutPCR(q.pcrs, tpm2.TPMAlgSHA256, 14), evidence.ReasonPCRMissing},
		{"altered clock byte", q.ak, flip(q.attest, clockOffset(q.attest)+7), q.sig, q.nonce, q.pcrs, evidence.ReasonBadSignature},
		{"altered last quote byte", q.ak, flip(q.attest, len(q.attest)-1), q.sig, q.nonce, q.pcrs, evidence.ReasonBadSignature},
		{"altered magic", q.ak, flip(q.attest, 0), q.sig, q.nonce, q.pcrs, evidence.ReasonBadMagic},
		{"altered type", q.ak, flip(q.attest, 5), q.sig, q.nonce, q.pcrs, evidence.ReasonBadType},
		{"altered signature", q.ak, q.attest, flip(q.sig, sigBody), q.nonce, q.pcrs, evidence.ReasonBadSignature},
		{"truncated quote", q.ak, q.attest[:len(q.attest)-3], q.sig, q.nonce, q.pcrs, evidence.ReasonMalformedQuote},
		{"truncated signature", q.ak, q.attest, q.sig[:len(q.sig)-3], q.nonce, q.pcrs, evidence.ReasonMalformedSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := q.verify(tc.ak, tc.attest, tc.sig, tc.nonce, tc.pcrs)
			if got := evidence.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestQuoteAKFormats(t *testing.T) {
	tpm := evidencetest.Simulator(t).Conn()
	h := evidencetest.NewHost(t, tpm, evidencetest.ECCKey(tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256))
	q := makeQuote(t, h)
	pemKey := pemOf(t, h.AKPublic)
	for _, tc := range []struct {
		name     string
		in       []byte
		wantName bool
	}{
		{"TPM2B_PUBLIC", h.AKBytes, true},
		{"TPMT_PUBLIC", h.AKBytes[2:], true},
		{"PEM", pemKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, err := evidence.ParseAK(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if (len(ak.Name) > 0) != tc.wantName {
				t.Errorf("AK name %x, want name known = %v", ak.Name, tc.wantName)
			}
			if _, err := q.verify(ak, q.attest, q.sig, q.nonce, q.pcrs); err != nil {
				t.Errorf("genuine quote refused with AK as %s: %v", tc.name, err)
			}
		})
	}
	// The size-prefixed TPM2B_ATTEST form is accepted too.
	b2 := binary.BigEndian.AppendUint16(nil, uint16(len(q.attest)))
	if _, err := q.verify(q.ak, append(b2, q.attest...), q.sig, q.nonce, q.pcrs); err != nil {
		t.Errorf("TPM2B_ATTEST refused: %v", err)
	}
	// PCR values survive Vigil's JSON format.
	js, err := json.Marshal(q.pcrs)
	if err != nil {
		t.Fatal(err)
	}
	var back evidence.PCRValues
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Equal(q.pcrs) {
		t.Errorf("PCR JSON round trip changed the values")
	}
}

// TestQuoteRealTPM checks a quote a real (cloud) TPM made, from
// go-attestation's test data, and that altering any of it is caught.
func TestQuoteRealTPM(t *testing.T) {
	rq := evidencetest.WindowsGCPQuote(t)
	ak, err := evidence.ParseAK(rq.AK)
	if err != nil {
		t.Fatal(err)
	}
	res, err := quoted{}.verify(ak, rq.Attest, rq.Sig, rq.Nonce, rq.PCRs)
	if err != nil {
		t.Fatalf("real quote refused: %v", err)
	}
	if n := len(res.PCRs[tpm2.TPMAlgSHA1]); n != 24 {
		t.Errorf("%d SHA-1 PCRs quoted, want 24", n)
	}
	if _, err := (quoted{}).verify(ak, rq.Attest, rq.Sig, rq.Nonce, alterPCR(rq.PCRs, tpm2.TPMAlgSHA1, 7)); evidence.ReasonOf(err) != evidence.ReasonPCRDigestMismatch {
		t.Errorf("altered PCR 7: %v", err)
	}
	if _, err := (quoted{}).verify(ak, rq.Attest, rq.Sig, []byte{1}, rq.PCRs); evidence.ReasonOf(err) != evidence.ReasonNonceMismatch {
		t.Errorf("other nonce: %v", err)
	}
	if _, err := (quoted{}).verify(ak, flip(rq.Attest, clockOffset(rq.Attest)), rq.Sig, rq.Nonce, rq.PCRs); evidence.ReasonOf(err) != evidence.ReasonBadSignature {
		t.Errorf("altered clock: %v", err)
	}
}
