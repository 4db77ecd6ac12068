package soft

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// FuzzParseState feeds the state-file loader arbitrary bytes: it must
// refuse or accept without panicking, and what it accepts must survive a
// save and load unchanged.
func FuzzParseState(f *testing.F) {
	tpm := newTestTPM(f, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, Manufacturer: newTestManufacturer(f)})
	good, err := marshalState(tpm.st, 77, time.Unix(1700000000, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte(`{"format":"vigil-soft-tpm/1"}`))
	f.Add([]byte(`{"format":"vigil-soft-tpm/1","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","pcrs":{"sha1":[],"sha256":[]}}`))
	f.Add([]byte(`[]`))
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data, now)
		if err != nil {
			return
		}
		again, err := marshalState(st, st.clock, now)
		if err != nil {
			t.Fatalf("accepted state does not marshal: %v", err)
		}
		st2, err := parseState(again, now)
		if err != nil {
			t.Fatalf("own output refused: %v", err)
		}
		again2, _ := marshalState(st2, st2.clock, now)
		if !bytes.Equal(again, again2) {
			t.Fatal("state changed through a second save/load")
		}
	})
}

// FuzzActivateCredential feeds TPM2_ActivateCredential's two parsed inputs
// (TPMS_ID_OBJECT and the encrypted seed) to RSA and ECC EKs: never a
// panic, and never a credential out of bytes that were not made for it.
func FuzzActivateCredential(f *testing.F) {
	tpm := newTestTPM(f, Options{})
	type target struct {
		ak     AKBlob
		secret []byte
	}
	var targets []target
	for _, ekAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		ak, err := tpm.CreateAK(bg, ekAlg, tpm2.TPMAlgECC)
		if err != nil {
			f.Fatal(err)
		}
		ekPub, err := tpm.EKPublic(bg, ekAlg)
		if err != nil {
			f.Fatal(err)
		}
		secret := make([]byte, 16)
		rand.Read(secret)
		blob, enc := makeCredential(f, ekPub, akName(f, ak), secret)
		f.Add(uint8(len(targets)), blob.Buffer, enc.Buffer)
		f.Add(uint8(len(targets)), blob.Buffer[:10], enc.Buffer)
		f.Add(uint8(len(targets)), []byte{0, 32}, enc.Buffer[:4])
		targets = append(targets, target{ak, secret})
	}
	f.Fuzz(func(t *testing.T, which uint8, idObject, encSecret []byte) {
		tg := targets[int(which)%len(targets)]
		got, err := tpm.ActivateCredential(bg, tg.ak, tpm2.TPM2BIDObject{Buffer: idObject}, tpm2.TPM2BEncryptedSecret{Buffer: encSecret})
		if err == nil && !bytes.Equal(got, tg.secret) {
			// Only a genuine credential passes the outer HMAC.
			t.Fatalf("activated %x from fuzzed input", got)
		}
	})
}

// FuzzParseECCPoint checks the hand-written TPMS_ECC_POINT reader against
// go-tpm's.
func FuzzParseECCPoint(f *testing.F) {
	f.Add([]byte{0, 1, 7, 0, 1, 9})
	f.Add([]byte{0, 32})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		x, y, err := parseECCPoint(b)
		ref, refErr := tpm2.Unmarshal[tpm2.TPMSECCPoint](b)
		if err != nil {
			return
		}
		if refErr != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", refErr)
		}
		if !bytes.Equal(x, ref.X.Buffer) || !bytes.Equal(y, ref.Y.Buffer) {
			t.Fatal("coordinates differ from go-tpm's")
		}
		if len(tpm2.Marshal(*ref)) != len(b) {
			t.Fatal("accepted trailing bytes")
		}
	})
}
