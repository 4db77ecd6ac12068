package soft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestQuoteToIsQuote: QuoteTo makes the quote Quote makes (the same
// TPMS_ATTEST but for the clock, a signature by the AK over it in the same
// TPMT_SIGNATURE form) and returns the PCR values the quote covers.
func TestQuoteToIsQuote(t *testing.T) {
	sels := map[string]tpm2.TPMLPCRSelection{
		"sha256 0-10": pcrSel(tpm2.TPMAlgSHA256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
		"sha256 10":   pcrSel(tpm2.TPMAlgSHA256, 10),
		"both banks, sha256 first": {PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0x80}},
			{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x01, 0x04, 0x00}},
		}},
		"empty bitmap": {PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 0, 0}}}},
		"no selection": {},
		"all":          allPCRs(),
	}
	for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		t.Run(algName(akAlg), func(t *testing.T) {
			tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, FirmwareVersion: 0x0102_0304_0506_0708})
			ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, akAlg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 12 {
				d1, d256 := sha1.Sum([]byte{byte(i)}), sha256.Sum256([]byte{byte(i)})
				if err := tpm.PCRExtend(bg, i, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1[:], tpm2.TPMAlgSHA256: d256[:]}); err != nil {
					t.Fatal(err)
				}
			}
			pub := mustPub(t, ak.Public)
			var out QuoteOut // reused across the cases, as a fleet reuses it
			for name, sel := range sels {
				for _, nonce := range [][]byte{nil, []byte("a verifier's nonce, 32 bytes...."), bytes.Repeat([]byte{7}, 64)} {
					if err := tpm.QuoteTo(bg, ak, nonce, sel, &out); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					attestB, sig, err := tpm.Quote(bg, ak, nonce, sel)
					if err != nil {
						t.Fatal(err)
					}
					vals, err := tpm.PCRRead(bg, sel)
					if err != nil {
						t.Fatal(err)
					}
					// The values returned are those read, in quote order.
					got := map[tpm2.TPMAlgID]map[int][]byte{}
					for _, s := range sel.PCRSelections {
						got[s.Hash] = map[int][]byte{}
					}
					var order []PCRValue
					for _, s := range sel.PCRSelections {
						for i, b := range s.PCRSelect {
							for bit := range 8 {
								if b&(1<<bit) != 0 {
									order = append(order, PCRValue{Bank: s.Hash, Index: i*8 + bit})
								}
							}
						}
					}
					if len(out.PCRs) != len(order) {
						t.Fatalf("%s: %d PCR values, want %d", name, len(out.PCRs), len(order))
					}
					for i, v := range out.PCRs {
						if v.Bank != order[i].Bank || v.Index != order[i].Index {
							t.Errorf("%s: value %d is %v/%d, want %v/%d", name, i, v.Bank, v.Index, order[i].Bank, order[i].Index)
						}
						if !bytes.Equal(v.Value, vals[v.Bank][v.Index]) {
							t.Errorf("%s: %v PCR %d = %x, PCRRead says %x", name, v.Bank, v.Index, v.Value, vals[v.Bank][v.Index])
						}
						got[v.Bank][v.Index] = v.Value
					}
					sigT, err := tpm2.Unmarshal[tpm2.TPMTSignature](out.Signature)
					if err != nil {
						t.Fatalf("%s: signature: %v", name, err)
					}
					if !bytes.Equal(tpm2.Marshal(*sigT), out.Signature) {
						t.Errorf("%s: TPMT_SIGNATURE does not re-marshal to itself", name)
					}
					a := verifyQuote(t, pub, out.Attest, *sigT, nonce, got)
					b := verifyQuote(t, pub, attestB.Bytes(), sig, nonce, vals)
					if a.ClockInfo.Clock > b.ClockInfo.Clock {
						t.Errorf("%s: clock went back: %d then %d", name, a.ClockInfo.Clock, b.ClockInfo.Clock)
					}
					a.ClockInfo.Clock = b.ClockInfo.Clock
					if !bytes.Equal(tpm2.Marshal(*a), tpm2.Marshal(*b)) {
						t.Errorf("%s: QuoteTo's TPMS_ATTEST\n%x\nQuote's\n%x", name, tpm2.Marshal(*a), tpm2.Marshal(*b))
					}
				}
			}
		})
	}
}

// TestAppendQuoteAttestIsMarshal holds the hand-written TPMS_ATTEST
// encoder to go-tpm's for random contents.
func TestAppendQuoteAttestIsMarshal(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	randBytes := func(max int) []byte {
		if r.IntN(8) == 0 {
			return nil
		}
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for range 500 {
		var sel tpm2.TPMLPCRSelection
		for range r.IntN(4) {
			sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgID(r.Uint32()), PCRSelect: randBytes(4)})
		}
		ci := tpm2.TPMSClockInfo{Clock: r.Uint64(), ResetCount: r.Uint32(), RestartCount: r.Uint32(), Safe: r.IntN(2) == 0}
		qn, nonce, digest, fw := randBytes(70), randBytes(64), randBytes(64), r.Uint64()
		want := tpm2.Marshal(tpm2.TPMSAttest{
			Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
			QualifiedSigner: tpm2.TPM2BName{Buffer: qn}, ExtraData: tpm2.TPM2BData{Buffer: nonce},
			ClockInfo: ci, FirmwareVersion: fw,
			Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: digest}}),
		})
		prefix := []byte("kept")
		got := appendQuoteAttest(bytes.Clone(prefix), qn, nonce, ci, fw, sel, digest)
		if !bytes.Equal(got[:4], prefix) || !bytes.Equal(got[4:], want) {
			t.Fatalf("appendQuoteAttest\n%x\ntpm2.Marshal\n%x", got[4:], want)
		}
	}
}

// TestAppendSignatureIsMarshal: the TPMT_SIGNATURE QuoteTo writes is
// go-tpm's encoding of what Quote's signer makes (RSASSA is deterministic,
// so the very bytes).
func TestAppendSignatureIsMarshal(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		blob, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, akAlg)
		if err != nil {
			t.Fatal(err)
		}
		var key *loadedAK
		tpm.do(bg, func(st *state) (bool, error) {
			key, _, err = tpm.loadAK(st, blob)
			return false, err
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			msg := bytes.Repeat([]byte{byte(i)}, i*7)
			got, err := appendSignature(nil, key, msg, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, err := sign(key, msg)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := tpm2.Unmarshal[tpm2.TPMTSignature](got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tpm2.Marshal(*parsed), got) {
				t.Fatalf("%s: not canonical: %x", algName(akAlg), got)
			}
			if akAlg == tpm2.TPMAlgRSA && !bytes.Equal(got, tpm2.Marshal(want)) {
				t.Fatalf("RSA: %x, want %x", got, tpm2.Marshal(want))
			}
			if akAlg == tpm2.TPMAlgECC {
				g, _ := parsed.Signature.ECDSA()
				w, _ := want.Signature.ECDSA()
				if parsed.SigAlg != want.SigAlg || g.Hash != w.Hash || len(g.SignatureR.Buffer) != 32 || len(g.SignatureS.Buffer) != 32 {
					t.Fatalf("ECDSA: %+v, want the form of %+v", parsed, want)
				}
			}
		}
	}
}

func TestParseECDSASignature(t *testing.T) {
	for _, tc := range []struct {
		der  []byte
		r, s []byte
		bad  bool
	}{
		{der: []byte{0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07}, r: []byte{5}, s: []byte{7}},
		{der: []byte{0x30, 0x08, 0x02, 0x02, 0x00, 0x80, 0x02, 0x02, 0x00, 0xff}, r: []byte{0x80}, s: []byte{0xff}},
		{der: []byte{0x30, 0x81, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07}, r: []byte{5}, s: []byte{7}},
		{der: []byte{0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01}, bad: true},
		{der: []byte{0x31, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07}, bad: true},
		{der: []byte{0x30, 0x07, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07, 0x00}, bad: true},
		{der: []byte{0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07, 0x00}, bad: true},
		{der: nil, bad: true},
	} {
		r, s, err := parseECDSASignature(tc.der)
		if tc.bad {
			if err == nil {
				t.Errorf("% x: accepted", tc.der)
			}
			continue
		}
		if err != nil || !bytes.Equal(r, tc.r) || !bytes.Equal(s, tc.s) {
			t.Errorf("% x: r %x s %x %v", tc.der, r, s, err)
		}
	}
}

func TestQuoteToRefuses(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	var out QuoteOut
	if err := tpm.QuoteTo(bg, ak, make([]byte, 65), pcrSel(tpm2.TPMAlgSHA256, 0), &out); !errors.Is(err, tpm2.TPMRCSize) {
		t.Errorf("65-byte nonce: %v", err)
	}
	if err := tpm.QuoteTo(bg, ak, nil, pcrSel(tpm2.TPMAlgSHA512, 0), &out); !errors.Is(err, tpm2.TPMRCPCR) {
		t.Errorf("unallocated bank: %v", err)
	}
	other := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err := other.QuoteTo(bg, ak, nil, pcrSel(tpm2.TPMAlgSHA256, 0), &out); !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Errorf("another TPM's AK: %v", err)
	}
}

// TestExtendIsHash: the in-place extend is PCR ← H(PCR ‖ digest) in each
// bank, from the reset value on.
func TestExtendIsHash(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	want1, want256 := make([]byte, 20), make([]byte, 32)
	before, err := tpm.PCRRead(bg, pcrSel(tpm2.TPMAlgSHA256, 10))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		d1, d256 := sha1.Sum([]byte{byte(i)}), sha256.Sum256([]byte{byte(i)})
		if err := tpm.PCRExtend(bg, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1[:], tpm2.TPMAlgSHA256: d256[:]}); err != nil {
			t.Fatal(err)
		}
		s1 := sha1.Sum(append(want1, d1[:]...))
		s256 := sha256.Sum256(append(want256, d256[:]...))
		want1, want256 = s1[:], s256[:]
	}
	got, err := tpm.PCRRead(bg, tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0, 4, 0}}, {Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 4, 0}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[tpm2.TPMAlgSHA1][10], want1) || !bytes.Equal(got[tpm2.TPMAlgSHA256][10], want256) {
		t.Errorf("PCR 10 = %x / %x, want %x / %x", got[tpm2.TPMAlgSHA1][10], got[tpm2.TPMAlgSHA256][10], want1, want256)
	}
	// A value read before is a copy: extending did not change it.
	if !bytes.Equal(before[tpm2.TPMAlgSHA256][10], make([]byte, 32)) {
		t.Errorf("a PCR value read earlier changed to %x", before[tpm2.TPMAlgSHA256][10])
	}
}

// TestPrepareSignatures: quotes signed with precomputed nonces verify as
// any quote does, each nonce signs once, and when they are used up the AK
// signs the usual way.
func TestPrepareSignatures(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	n, err := tpm.PrepareSignatures(bg, ak, 5)
	if err != nil || n != 5 {
		t.Fatalf("prepared %d, %v; want 5", n, err)
	}
	if n, err := tpm.PrepareSignatures(bg, ak, 3); err != nil || n != 8 {
		t.Fatalf("prepared %d in all, %v; want 8", n, err)
	}
	pub := mustPub(t, ak.Public)
	sel := pcrSel(tpm2.TPMAlgSHA256, 0, 10)
	seen := map[string]bool{}
	var out QuoteOut
	for i := range 10 {
		nonce := []byte{byte(i)}
		if err := tpm.QuoteTo(bg, ak, nonce, sel, &out); err != nil {
			t.Fatal(err)
		}
		sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](out.Signature)
		if err != nil {
			t.Fatal(err)
		}
		vals := map[tpm2.TPMAlgID]map[int][]byte{tpm2.TPMAlgSHA256: {}}
		for _, v := range out.PCRs {
			vals[v.Bank][v.Index] = v.Value
		}
		verifyQuote(t, pub, out.Attest, *sig, nonce, vals)
		e, _ := sig.Signature.ECDSA()
		if r := string(e.SignatureR.Buffer); seen[r] {
			t.Fatalf("quote %d: r %x used twice", i, e.SignatureR.Buffer)
		} else {
			seen[r] = true
		}
	}
	// An RSA AK has nothing to prepare.
	rsaAK, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := tpm.PrepareSignatures(bg, rsaAK, 5); err != nil || n != 0 {
		t.Errorf("RSA: prepared %d, %v", n, err)
	}
	other := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if _, err := other.PrepareSignatures(bg, ak, 1); !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Errorf("another TPM's AK: %v", err)
	}
}

// TestSignPresigned: signatures with precomputed nonces verify on every
// curve, with digests shorter and longer than the order.
func TestSignPresigned(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		priv, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pres, err := presign(priv, 20)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pres {
			digest := sha512.Sum512([]byte{byte(i)})
			d := digest[:[]int{20, 32, 48, 64}[i%4]]
			r, s, err := signPresigned(priv, p, d)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.Verify(&priv.PublicKey, d, new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)) {
				t.Fatalf("%s, digest of %d bytes: does not verify", c.Params().Name, len(d))
			}
		}
	}
}

// TestPCRExtendEvents: a sequence of events extended in one call leaves
// the PCRs where PCRExtend event by event does; a bad digest anywhere
// changes nothing.
func TestPCRExtendEvents(t *testing.T) {
	one := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	batch := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	banks := []tpm2.TPMAlgID{tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA1}
	var digests [][]byte
	for i := range 25 {
		d256, d1 := sha256.Sum256([]byte{byte(i)}), sha1.Sum([]byte{byte(i)})
		digests = append(digests, d256[:], d1[:])
		if err := one.PCRExtend(bg, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d256[:], tpm2.TPMAlgSHA1: d1[:]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.PCRExtendEvents(bg, 10, banks, digests); err != nil {
		t.Fatal(err)
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0, 4, 0}}, {Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 4, 0}}}}
	want, _ := one.PCRRead(bg, sel)
	got, _ := batch.PCRRead(bg, sel)
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		if !bytes.Equal(got[alg][10], want[alg][10]) {
			t.Errorf("%v PCR 10: %x in one call, %x event by event", alg, got[alg][10], want[alg][10])
		}
	}
	for name, call := range map[string]func() error{
		"odd count":   func() error { return batch.PCRExtendEvents(bg, 10, banks, digests[:3]) },
		"no banks":    func() error { return batch.PCRExtendEvents(bg, 10, nil, digests) },
		"no such PCR": func() error { return batch.PCRExtendEvents(bg, 24, banks, digests) },
		"unallocated": func() error { return batch.PCRExtendEvents(bg, 10, []tpm2.TPMAlgID{tpm2.TPMAlgSHA384}, digests[:1]) },
		"short last": func() error {
			return batch.PCRExtendEvents(bg, 10, banks, append(digests[:4:4], make([]byte, 32), make([]byte, 19)))
		},
		"closed connection": func() error {
			c := batch.Conn()
			c.Close()
			return c.PCRExtendEvents(bg, 10, banks, digests[:2])
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if after, _ := batch.PCRRead(bg, sel); !bytes.Equal(after[tpm2.TPMAlgSHA256][10], got[tpm2.TPMAlgSHA256][10]) || !bytes.Equal(after[tpm2.TPMAlgSHA1][10], got[tpm2.TPMAlgSHA1][10]) {
		t.Error("a refused call changed PCR 10")
	}
}
