package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// tpmUnderTest names a real TPM implementation and how to open it.
type tpmUnderTest struct {
	name string
	open Opener
}

func realTPMs(t *testing.T) []tpmUnderTest {
	t.Helper()
	sw := tpmsimtest.NewTestSwtpm(t, "")
	sim, err := tpmsim.OpenSimulator()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	return []tpmUnderTest{
		{"swtpm", func(ctx context.Context) (TPM, error) {
			c, err := sw.Open(ctx)
			if err != nil {
				return nil, err
			}
			return NewGoTPM(c), nil
		}},
		{"simulator", func(ctx context.Context) (TPM, error) { return NewGoTPM(sim.Conn()), nil }},
	}
}

// TestAKActivatesAndQuotes runs the agent's whole TPM contract on each real
// TPM: the AK it creates is accepted by MakeCredential-based activation for
// its own name only, and its quotes verify with its public key and carry
// the nonce and the PCRs asked for.
func TestAKActivatesAndQuotes(t *testing.T) {
	ctx := context.Background()
	for _, tut := range realTPMs(t) {
		for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
			t.Run(tut.name+"/"+tpmfacts.AlgName(akAlg), func(t *testing.T) {
				tpm, err := tut.open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer tpm.Close()
				ek, err := tpm.EKPublic(ctx, tpm2.TPMAlgRSA)
				if err != nil {
					t.Fatal(err)
				}
				ak, err := tpm.CreateAK(ctx, tpm2.TPMAlgRSA, akAlg)
				if err != nil {
					t.Fatal(err)
				}
				akPub, err := ak.Public.Contents()
				if err != nil {
					t.Fatal(err)
				}
				a := akPub.ObjectAttributes
				if !a.Restricted || !a.SignEncrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || a.Decrypt {
					t.Fatalf("AK attributes %+v", a)
				}

				// Credential activation for the AK's own name.
				name, _ := tpm2.ObjectName(akPub)
				ekKey, err := tpm2.ImportEncapsulationKey(&ek)
				if err != nil {
					t.Fatal(err)
				}
				secret := []byte("0123456789abcdef0123456789abcdef")
				idObj, encSecret, err := tpm2.CreateCredential(rand.Reader, ekKey, name.Buffer, secret)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tpm.ActivateCredential(ctx, ak, tpm2.TPM2BIDObject{Buffer: idObj}, tpm2.TPM2BEncryptedSecret{Buffer: encSecret})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("activated secret %x, want %x", got, secret)
				}
				// Sealed to another name, the TPM refuses.
				other := append([]byte(nil), name.Buffer...)
				other[len(other)-1] ^= 1
				idObj, encSecret, _ = tpm2.CreateCredential(rand.Reader, ekKey, other, secret)
				if _, err := tpm.ActivateCredential(ctx, ak, tpm2.TPM2BIDObject{Buffer: idObj}, tpm2.TPM2BEncryptedSecret{Buffer: encSecret}); err == nil {
					t.Fatal("credential for another name activated")
				}

				// Extend, read, quote.
				digest := sha256.Sum256([]byte("measured thing"))
				if err := tpm.PCRExtend(ctx, 16, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: digest[:]}); err != nil {
					t.Fatal(err)
				}
				sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(0, 16)}}}
				pcrs, err := tpm.PCRRead(ctx, sel)
				if err != nil {
					t.Fatal(err)
				}
				if len(pcrs[tpm2.TPMAlgSHA256]) != 2 {
					t.Fatalf("read %d PCRs, want 2", len(pcrs[tpm2.TPMAlgSHA256]))
				}
				nonce := []byte("fresh nonce from a verifier!")
				attestBlob, sig, err := tpm.Quote(ctx, ak, nonce, sel)
				if err != nil {
					t.Fatal(err)
				}
				attest, err := attestBlob.Contents()
				if err != nil {
					t.Fatal(err)
				}
				if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(attest.ExtraData.Buffer, nonce) {
					t.Fatalf("quote header: magic %x type %x extraData %q", attest.Magic, attest.Type, attest.ExtraData.Buffer)
				}
				q, _ := attest.Attested.Quote()
				h := sha256.New()
				h.Write(pcrs[tpm2.TPMAlgSHA256][0])
				h.Write(pcrs[tpm2.TPMAlgSHA256][16])
				if !bytes.Equal(q.PCRDigest.Buffer, h.Sum(nil)) {
					t.Fatal("quoted PCR digest does not match the PCRs read")
				}
				if err := verifySig(akPub, tpm2.Marshal(attest), sig); err != nil {
					t.Fatalf("quote signature: %v", err)
				}
			})
		}
	}
}

func verifySig(pub *tpm2.TPMTPublic, msg []byte, sig tpm2.TPMTSignature) error {
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return err
	}
	d := sha256.Sum256(msg)
	switch k := key.(type) {
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			return err
		}
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], s.Sig.Buffer)
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return err
		}
		if !ecdsa.Verify(k, d[:], new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
			return errBadSig
		}
		return nil
	}
	return sigError("unexpected AK key type")
}

type sigError string

func (e sigError) Error() string { return string(e) }

const errBadSig = sigError("ECDSA signature does not verify")
