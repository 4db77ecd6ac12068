package evidence_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

// BenchmarkQuoteCheck measures one full quote check (parse TPMS_ATTEST and
// TPMT_SIGNATURE, magic, type, signature, nonce, PCR digest over 24 PCRs in
// two banks) on quotes made by the in-process simulator, next to the bare
// signature verification that is its floor.
func BenchmarkQuoteCheck(b *testing.B) {
	tpm := evidencetest.Simulator(b).Conn()
	sel := evidence.Selection([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256)
	for _, spec := range []evidencetest.KeySpec{
		evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256),
		evidencetest.ECCKey(tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256),
	} {
		h := evidencetest.NewHost(b, tpm, spec)
		n := nonce(b)
		attest, sig := h.Quote(b, n, sel)
		pcrs := h.ReadPCRs(b, sel)
		ak, err := evidence.NewAK(h.AKPublic)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(spec.Name+"/full", func(b *testing.B) {
			for b.Loop() {
				q, err := evidence.ParseQuote(attest, sig)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ak.VerifyQuote(q, evidence.Expect{Nonce: n, PCRs: pcrs}); err != nil {
					b.Fatal(err)
				}
			}
		})
		q, _ := evidence.ParseQuote(attest, sig)
		digest := evidencetest.Digest(crypto.SHA256, attest)
		b.Run(spec.Name+"/signature-only", func(b *testing.B) {
			for b.Loop() {
				switch k := ak.PublicKey().(type) {
				case *rsa.PublicKey:
					s, _ := q.Signature.Signature.RSASSA()
					if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, s.Sig.Buffer); err != nil {
						b.Fatal(err)
					}
				case *ecdsa.PublicKey:
					s, _ := q.Signature.Signature.ECDSA()
					if !ecdsa.Verify(k, digest, new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
						b.Fatal("ecdsa")
					}
				}
			}
		})
	}
}
