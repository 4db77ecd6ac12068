package evidence_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

func softPCRs(sel tpm2.TPMLPCRSelection) evidence.PCRValues {
	p := make(evidence.PCRValues)
	for _, s := range sel.PCRSelections {
		h, _ := evidence.HashOf(s.Hash)
		for _, i := range evidence.SelectedPCRs(s) {
			v := make([]byte, h.Size())
			v[0] = byte(i)
			p.Set(s.Hash, i, v)
		}
	}
	return p
}

// FuzzQuote feeds arbitrary TPMS_ATTEST and TPMT_SIGNATURE bytes through
// parsing and the whole check: any input must give a result or a *Failure,
// never a panic.
func FuzzQuote(f *testing.F) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	pcrs := softPCRs(bootPCRs)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	for _, k := range []crypto.Signer{rsaKey, ecKey} {
		attest, sig, err := evidencetest.SoftQuote(k, tpm2.TPMAlgSHA256, nonce, evidence.ClockInfo{Clock: 1}, bootPCRs, pcrs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(attest, sig)
	}
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0x00, 0x14})
	f.Add([]byte{}, []byte{})
	rsaAK, err := evidence.NewAKFromKey(rsaKey.Public())
	if err != nil {
		f.Fatal(err)
	}
	ecAK, err := evidence.NewAKFromKey(ecKey.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		q, err := evidence.ParseQuote(attest, sig)
		if err != nil {
			if evidence.ReasonOf(err) == "" {
				t.Fatalf("parse error without a reason: %v", err)
			}
			return
		}
		for _, ak := range []*evidence.AK{rsaAK, ecAK} {
			if _, err := ak.VerifyQuote(q, evidence.Expect{Nonce: nonce, PCRs: pcrs}); err != nil && evidence.ReasonOf(err) == "" {
				t.Fatalf("verify error without a reason: %v", err)
			}
		}
	})
}

// FuzzParseAK: any bytes give an AK or an error, never a panic.
func FuzzParseAK(f *testing.F) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	pub := evidencetest.SoftPublic(rsaKey, tpm2.TPMAlgSHA256)
	f.Add(tpm2.Marshal(pub))
	f.Add(tpm2.Marshal(tpm2.New2B(pub)))
	f.Add(pemOf(f, pub))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ak, err := evidence.ParseAK(b)
		if err == nil && ak.PublicKey() == nil {
			t.Fatal("AK without a key")
		}
	})
}
