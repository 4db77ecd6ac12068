package agent

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// The agent quotes exactly the selection a challenge names, over several
// banks at once, and sends the values of each bank; the verifier's PCR
// digest check (evidence.PCRDigest) holds across them. A bank the TPM has
// not allocated is left out of the quote rather than failing the
// attestation, so that the verifier sees, and says, what the TPM lacks:
// swtpm and the soft TPM have sha1 and sha256, the simulator sha384 (and
// sha512) too.
func TestQuoteSeveralBanks(t *testing.T) {
	ctx := context.Background()
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	tpms := append(realTPMs(t), tpmUnderTest{"soft", func(context.Context) (TPM, error) { return NewSoftTPM(st), nil }})
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0, 0, 0x01}},      // 16
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 0x04, 0x81}}, // 10, 16, 23
		{Hash: tpm2.TPMAlgSHA384, PCRSelect: []byte{0x01, 0, 0x01}}, // 0, 16
	}}
	for _, tut := range tpms {
		t.Run(tut.name, func(t *testing.T) {
			tpm, err := tut.open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tpm.Close()
			ekAlg := tpm2.TPMAlgRSA
			if tut.name == "soft" {
				ekAlg = tpm2.TPMAlgECC
			}
			ak, err := tpm.CreateAK(ctx, ekAlg, tpm2.TPMAlgECC)
			if err != nil {
				t.Fatal(err)
			}
			has384 := tut.name == "simulator"
			w1, w256, w384 := sha1.Sum([]byte("w")), sha256.Sum256([]byte("w")), sha512.Sum384([]byte("w"))
			digests := map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: w1[:], tpm2.TPMAlgSHA256: w256[:]}
			if has384 {
				digests[tpm2.TPMAlgSHA384] = w384[:]
			}
			if err := tpm.PCRExtend(ctx, 16, digests); err != nil {
				t.Fatal(err)
			}
			nonce := []byte("a nonce of the verifier, 32 byte")
			quote, sig, pcrs, err := quoteConsistent(ctx, tpm, ak, nonce, sel)
			if err != nil {
				t.Fatal(err)
			}

			pub, _ := ak.Public.Contents()
			key, err := evidence.NewAK(*pub)
			if err != nil {
				t.Fatal(err)
			}
			q, err := evidence.ParseQuote(quote.Bytes(), tpm2.Marshal(sig))
			if err != nil {
				t.Fatal(err)
			}
			res, err := key.VerifyQuote(q, evidence.Expect{Nonce: nonce, PCRs: pcrs})
			if err != nil {
				t.Fatalf("the verifier's check of a quote over several banks: %v", err)
			}
			var banks []tpm2.TPMAlgID
			for _, s := range res.Selection.PCRSelections {
				banks = append(banks, s.Hash)
			}
			want := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256}
			if has384 {
				want = append(want, tpm2.TPMAlgSHA384)
			}
			if !slices.Equal(banks, want) {
				t.Fatalf("quoted banks %v, want %v", banks, want)
			}
			if got := len(pcrs[tpm2.TPMAlgSHA256]); got != 3 {
				t.Errorf("%d SHA-256 values sent, want 3", got)
			}
			if v := pcrs[tpm2.TPMAlgSHA1][16]; len(v) != 20 || v[0] == 0 && v[1] == 0 {
				t.Errorf("SHA-1 PCR 16 %x", v)
			}
			if has384 {
				if v := pcrs[tpm2.TPMAlgSHA384][16]; len(v) != 48 {
					t.Errorf("SHA-384 PCR 16 %x", v)
				}
			} else if _, ok := pcrs[tpm2.TPMAlgSHA384]; ok {
				t.Errorf("values sent for a bank the TPM has not")
			}
		})
	}
}
