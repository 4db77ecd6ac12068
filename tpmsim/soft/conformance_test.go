package soft_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

var ctx = context.Background()

// realTPM is a TPM implementation to hold the soft TPM against.
type realTPM struct {
	name string
	// conn opens a connection; the caller closes it.
	conn func(t *testing.T) transport.TPMCloser
	// reboot power-cycles the TPM in an orderly way.
	reboot func(t *testing.T)
}

func (r realTPM) agent(t *testing.T) agent.TPM {
	return agent.NewGoTPM(r.conn(t))
}

func allPCRs() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0xff, 0xff, 0xff}},
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0xff}},
	}}
}

func readAll(t *testing.T, tpm agent.TPM) map[tpm2.TPMAlgID]map[int][]byte {
	t.Helper()
	v, err := tpm.PCRRead(ctx, allPCRs())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func comparePCRs(t *testing.T, when string, real, soft map[tpm2.TPMAlgID]map[int][]byte) {
	t.Helper()
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		for i := range soft_NumPCRs {
			if !bytes.Equal(real[alg][i], soft[alg][i]) {
				t.Errorf("%s: bank %#x PCR %d: real %x, soft %x", when, uint16(alg), i, real[alg][i], soft[alg][i])
			}
		}
	}
}

const soft_NumPCRs = soft.NumPCRs

// extendSequence is a boot's worth of extends: both banks, one bank, PCRs
// in and out of order, the resettable PCRs 16 and 23.
func extendSequence() []struct {
	pcr     int
	digests map[tpm2.TPMAlgID][]byte
} {
	var seq []struct {
		pcr     int
		digests map[tpm2.TPMAlgID][]byte
	}
	for i, pcr := range []int{0, 1, 7, 0, 4, 5, 7, 8, 9, 10, 10, 10, 14, 16, 23, 2, 3, 6} {
		s1, s256 := sha1.Sum([]byte{byte(i), 1}), sha256.Sum256([]byte{byte(i), 2})
		d := map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: s1[:], tpm2.TPMAlgSHA256: s256[:]}
		switch i % 5 {
		case 3:
			delete(d, tpm2.TPMAlgSHA1)
		case 4:
			delete(d, tpm2.TPMAlgSHA256)
		}
		seq = append(seq, struct {
			pcr     int
			digests map[tpm2.TPMAlgID][]byte
		}{pcr, d})
	}
	return seq
}

func withoutUnique(t *testing.T, p tpm2.TPMTPublic) []byte {
	t.Helper()
	switch p.Type {
	case tpm2.TPMAlgRSA:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	case tpm2.TPMAlgECC:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	}
	return tpm2.Marshal(p)
}

// qualifiedSigner is the AK's qualified name per TPM 2.0 Part 1 §16, for an
// AK under a primary EK in the endorsement hierarchy: each level is
// nameAlg || H_nameAlg(parent's QN || name), with the object's own nameAlg
// (SHA-384 for the high-range EKs).
func qualifiedSigner(t *testing.T, ekName, akName []byte) []byte {
	t.Helper()
	qn := func(parent, name []byte) []byte {
		alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
		h, err := alg.Hash()
		if err != nil {
			t.Fatalf("name %x: %v", name, err)
		}
		d := h.New()
		d.Write(parent)
		d.Write(name)
		return d.Sum(bytes.Clone(name[:2]))
	}
	return qn(qn([]byte{0x40, 0x00, 0x00, 0x0b}, ekName), akName)
}

// checkQuote is one verifier for both TPMs: the signature over the attest
// bytes by the AK, magic, type, nonce, and the PCR digest recomputed from
// the reported PCR values.
func checkQuote(t *testing.T, akPub *tpm2.TPMTPublic, attestB tpm2.TPM2BAttest, sig tpm2.TPMTSignature, nonce []byte, values map[tpm2.TPMAlgID]map[int][]byte) *tpm2.TPMSAttest {
	t.Helper()
	raw := attestB.Bytes()
	key, err := tpm2.Pub(*akPub)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(raw)
	switch k := key.(type) {
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s.Sig.Buffer); err != nil {
			t.Fatalf("RSASSA signature: %v", err)
		}
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			t.Fatal(err)
		}
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)})
		if !ecdsa.VerifyASN1(k, digest[:], der) {
			t.Fatal("ECDSA signature does not verify")
		}
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](raw)
	if err != nil {
		t.Fatalf("TPMS_ATTEST: %v", err)
	}
	if a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote {
		t.Errorf("magic %#x type %#x", a.Magic, a.Type)
	}
	if !bytes.Equal(a.ExtraData.Buffer, nonce) {
		t.Errorf("extraData %x, nonce %x", a.ExtraData.Buffer, nonce)
	}
	q, err := a.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	want, err := soft.PCRDigest(crypto.SHA256, q.PCRSelect, values)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, q.PCRDigest.Buffer) {
		t.Errorf("pcrDigest %x, recomputed %x", q.PCRDigest.Buffer, want)
	}
	return a
}

func sigShape(t *testing.T, sig tpm2.TPMTSignature) (tpm2.TPMAlgID, tpm2.TPMAlgID, []int) {
	t.Helper()
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			t.Fatal(err)
		}
		return sig.SigAlg, s.Hash, []int{len(s.Sig.Buffer)}
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			t.Fatal(err)
		}
		return sig.SigAlg, s.Hash, []int{len(s.SignatureR.Buffer), len(s.SignatureS.Buffer)}
	}
	t.Fatalf("signature algorithm %#x", sig.SigAlg)
	return 0, 0, nil
}

// conform runs one sequence on a real TPM and on a fresh soft TPM, through
// the agent's TPM interface, and compares what they return.
func conform(t *testing.T, r realTPM) {
	m, err := soft.NewManufacturer("conformance CA")
	if err != nil {
		t.Fatal(err)
	}
	st, err := soft.New(soft.Options{Manufacturer: m})
	if err != nil {
		t.Fatal(err)
	}
	// The agent reaches a soft TPM through its own adapter.
	sc := agent.NewSoftTPM(st)
	defer sc.Close()

	// swtpm serves one connection at a time: each connection below is
	// closed before the next is opened.
	first := r.agent(t)
	comparePCRs(t, "initial", readAll(t, first), readAll(t, sc))
	first.Close()

	// EKs: the same template → the same structure and attributes; the
	// TPM's own name is tpm2.ObjectName of its public area, and the soft
	// structure with the real key in it marshals to the real bytes.
	ekNames := map[tpm2.TPMAlgID][]byte{}
	ekBytes := map[tpm2.TPMAlgID][]byte{}
	for _, tc := range []struct {
		alg  tpm2.TPMAlgID
		tmpl tpm2.TPMTPublic
	}{{tpm2.TPMAlgRSA, tpm2.RSAEKTemplate}, {tpm2.TPMAlgECC, tpm2.ECCEKTemplate}} {
		tr := r.conn(t)
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tc.tmpl)}.Execute(tr)
		if err != nil {
			tr.Close()
			t.Fatalf("CreatePrimary(%#x): %v", uint16(tc.alg), err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tr)
		tr.Close()
		realPub, err := rsp.OutPublic.Contents()
		if err != nil {
			t.Fatal(err)
		}
		softPub, err := sc.EKPublic(ctx, tc.alg)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := withoutUnique(t, *realPub), withoutUnique(t, softPub); !bytes.Equal(a, b) {
			t.Errorf("EK %#x public areas differ apart from unique:\nreal %x\nsoft %x", uint16(tc.alg), a, b)
		}
		name, err := tpm2.ObjectName(realPub)
		if err != nil || !bytes.Equal(name.Buffer, rsp.Name.Buffer) {
			t.Errorf("EK %#x: ObjectName %x, TPM's name %x (%v)", uint16(tc.alg), name.Buffer, rsp.Name.Buffer, err)
		}
		softPub.Unique = realPub.Unique
		if !bytes.Equal(tpm2.Marshal(softPub), rsp.OutPublic.Bytes()) {
			t.Errorf("EK %#x: soft structure with the real key does not marshal to the TPM's bytes", uint16(tc.alg))
		}
		ekBytes[tc.alg] = rsp.OutPublic.Bytes()
	}

	real := r.agent(t)
	for alg, b := range ekBytes {
		// The agent may pick another EK of the type: the one the
		// manufacturer certified (swtpm certifies an ECC P-384 EK). The
		// AKs below live under the agent's choice.
		realAgentPub, err := real.EKPublic(ctx, alg)
		if err != nil {
			t.Fatal(err)
		}
		name, err := tpm2.ObjectName(&realAgentPub)
		if err != nil {
			t.Fatal(err)
		}
		ekNames[alg] = name.Buffer
		if !bytes.Equal(tpm2.Marshal(realAgentPub), b) {
			t.Logf("EK %#x: the agent uses another EK than the default template's (curve or persistent key)", uint16(alg))
		}
	}
	for i, e := range extendSequence() {
		if err := real.PCRExtend(ctx, e.pcr, e.digests); err != nil {
			t.Fatalf("real extend %d: %v", i, err)
		}
		if err := sc.PCRExtend(ctx, e.pcr, e.digests); err != nil {
			t.Fatalf("soft extend %d: %v", i, err)
		}
	}
	comparePCRs(t, "after extends", readAll(t, real), readAll(t, sc))

	var realCI, softCI []tpm2.TPMSClockInfo
	for _, k := range []struct{ ek, ak tpm2.TPMAlgID }{
		{tpm2.TPMAlgRSA, tpm2.TPMAlgRSA},
		{tpm2.TPMAlgRSA, tpm2.TPMAlgECC},
		{tpm2.TPMAlgECC, tpm2.TPMAlgECC},
	} {
		realAK, err := real.CreateAK(ctx, k.ek, k.ak)
		if err != nil {
			t.Fatalf("real CreateAK: %v", err)
		}
		softAK, err := sc.CreateAK(ctx, k.ek, k.ak)
		if err != nil {
			t.Fatalf("soft CreateAK: %v", err)
		}
		realAKPub, _ := realAK.Public.Contents()
		softAKPub, _ := softAK.Public.Contents()
		if a, b := withoutUnique(t, *realAKPub), withoutUnique(t, *softAKPub); !bytes.Equal(a, b) {
			t.Errorf("AK (ek %#x, ak %#x) public areas differ apart from unique:\nreal %x\nsoft %x", uint16(k.ek), uint16(k.ak), a, b)
		}

		// Credential activation, as the registrar makes it, on both.
		for _, side := range []struct {
			name string
			tpm  agent.TPM
			ak   agent.AKBlob
		}{{"real", real, realAK}, {"soft", sc, softAK}} {
			ekPub, err := side.tpm.EKPublic(ctx, k.ek)
			if err != nil {
				t.Fatal(err)
			}
			akPub, _ := side.ak.Public.Contents()
			name, _ := tpm2.ObjectName(akPub)
			encap, err := tpm2.ImportEncapsulationKey(&ekPub)
			if err != nil {
				t.Fatal(err)
			}
			secret := make([]byte, 32)
			rand.Read(secret)
			idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, encap, name.Buffer, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := side.tpm.ActivateCredential(ctx, side.ak, tpm2.TPM2BIDObject{Buffer: idObject}, tpm2.TPM2BEncryptedSecret{Buffer: encSecret})
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("%s ActivateCredential (ek %#x, ak %#x): %x, %v", side.name, uint16(k.ek), uint16(k.ak), got, err)
			}
		}

		// The same quote on both: equal field for field apart from keys,
		// clock and firmware.
		sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0x80}},
			{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x81, 0x04, 0x00}},
		}}
		nonce := make([]byte, 32)
		rand.Read(nonce)
		realAttest, realSig, err := real.Quote(ctx, realAK, nonce, sel)
		if err != nil {
			t.Fatalf("real quote: %v", err)
		}
		softAttest, softSig, err := sc.Quote(ctx, softAK, nonce, sel)
		if err != nil {
			t.Fatalf("soft quote: %v", err)
		}
		ra := checkQuote(t, realAKPub, realAttest, realSig, nonce, readAll(t, real))
		sa := checkQuote(t, softAKPub, softAttest, softSig, nonce, readAll(t, sc))
		if len(realAttest.Bytes()) != len(softAttest.Bytes()) {
			t.Errorf("TPMS_ATTEST of %d bytes (real), %d (soft)", len(realAttest.Bytes()), len(softAttest.Bytes()))
		}
		rq, _ := ra.Attested.Quote()
		sq, _ := sa.Attested.Quote()
		if !bytes.Equal(tpm2.Marshal(rq.PCRSelect), tpm2.Marshal(sq.PCRSelect)) {
			t.Errorf("pcrSelect real %x, soft %x", tpm2.Marshal(rq.PCRSelect), tpm2.Marshal(sq.PCRSelect))
		}
		if !bytes.Equal(rq.PCRDigest.Buffer, sq.PCRDigest.Buffer) {
			t.Errorf("pcrDigest real %x, soft %x (same PCRs, so must be equal)", rq.PCRDigest.Buffer, sq.PCRDigest.Buffer)
		}
		if ra.Magic != sa.Magic || ra.Type != sa.Type || !bytes.Equal(ra.ExtraData.Buffer, sa.ExtraData.Buffer) || ra.ClockInfo.Safe != sa.ClockInfo.Safe {
			t.Errorf("header real %+v, soft %+v", ra, sa)
		}
		realAKName, _ := tpm2.ObjectName(realAKPub)
		softAKName, _ := tpm2.ObjectName(softAKPub)
		if want := qualifiedSigner(t, ekNames[k.ek], realAKName.Buffer); !bytes.Equal(ra.QualifiedSigner.Buffer, want) {
			t.Errorf("real qualifiedSigner %x, Part 1 §16 gives %x", ra.QualifiedSigner.Buffer, want)
		}
		softEK, _ := sc.EKPublic(ctx, k.ek)
		softEKName, _ := tpm2.ObjectName(&softEK)
		if want := qualifiedSigner(t, softEKName.Buffer, softAKName.Buffer); !bytes.Equal(sa.QualifiedSigner.Buffer, want) {
			t.Errorf("soft qualifiedSigner %x, Part 1 §16 gives %x", sa.QualifiedSigner.Buffer, want)
		}
		ralg, rhash, rlens := sigShape(t, realSig)
		salg, shash, slens := sigShape(t, softSig)
		if ralg != salg || rhash != shash || len(rlens) != len(slens) || rlens[0] != slens[0] || rlens[len(rlens)-1] != slens[len(slens)-1] {
			t.Errorf("signature real %#x/%#x/%v, soft %#x/%#x/%v", ralg, rhash, rlens, salg, shash, slens)
		}
		if !bytes.Equal(tpm2.Marshal(realSig)[:4], tpm2.Marshal(softSig)[:4]) {
			t.Errorf("TPMT_SIGNATURE headers differ: real %x, soft %x", tpm2.Marshal(realSig)[:4], tpm2.Marshal(softSig)[:4])
		}
		realCI, softCI = append(realCI, ra.ClockInfo), append(softCI, sa.ClockInfo)
	}
	real.Close()

	// Reboot both: PCRs back to the same initial values, resetCount up by
	// one, restartCount zero, clocks not backwards.
	r.reboot(t)
	if err := st.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	real = r.agent(t)
	defer real.Close()
	comparePCRs(t, "after reboot", readAll(t, real), readAll(t, sc))
	realAK, err := real.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	softAK, err := sc.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0x00}}}}
	ra, rs, err := real.Quote(ctx, realAK, nil, sel)
	if err != nil {
		t.Fatal(err)
	}
	sa, ss, err := sc.Quote(ctx, softAK, nil, sel)
	if err != nil {
		t.Fatal(err)
	}
	realAKPub, _ := realAK.Public.Contents()
	softAKPub, _ := softAK.Public.Contents()
	rci := checkQuote(t, realAKPub, ra, rs, nil, readAll(t, real)).ClockInfo
	sci := checkQuote(t, softAKPub, sa, ss, nil, readAll(t, sc)).ClockInfo
	for _, c := range []struct {
		name        string
		before, now tpm2.TPMSClockInfo
	}{{"real", realCI[len(realCI)-1], rci}, {"soft", softCI[len(softCI)-1], sci}} {
		if c.now.ResetCount != c.before.ResetCount+1 || c.now.RestartCount != 0 || c.now.Clock < c.before.Clock {
			t.Errorf("%s: clock info %+v after reboot, %+v before", c.name, c.now, c.before)
		}
	}
}

func TestConformanceSwtpm(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	conform(t, realTPM{
		name: "swtpm",
		conn: func(t *testing.T) transport.TPMCloser {
			c, err := sw.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		reboot: func(t *testing.T) {
			c, err := sw.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// An orderly shutdown, so the restart is a clean TPM Reset.
			if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}).Execute(c); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			c.Close()
			if err := sw.Restart(); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestAKTemplateIsTheAgents pins the soft TPM's AK public area to the
// template the agent asks real TPMs for.
func TestAKTemplateIsTheAgents(t *testing.T) {
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		want, err := tpmfacts.AKTemplate(alg)
		if err != nil {
			t.Fatal(err)
		}
		ak, err := st.CreateAK(ctx, tpm2.TPMAlgECC, alg)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := ak.Public.Contents()
		if !bytes.Equal(withoutUnique(t, *got), withoutUnique(t, want)) {
			t.Errorf("AK %#x: soft public area %x, agent template %x", uint16(alg), withoutUnique(t, *got), withoutUnique(t, want))
		}
	}
}

// TestEKCertificateLikeSwtpm compares the soft TPM's EK certificate with
// the one swtpm_setup issues, in what a verifier of EK certificates reads:
// a critical subjectAltName holding TPM manufacturer, model
// and version as a directoryName, and the key usage for the key type.
func TestEKCertificateLikeSwtpm(t *testing.T) {
	sw := tpmsimtest.NewTestSwtpm(t, "")
	c, err := sw.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	real := agent.NewGoTPM(c)
	realDER, err := real.EKCertificate(ctx, tpm2.TPMAlgRSA)
	real.Close()
	if err != nil || realDER == nil {
		t.Fatalf("swtpm RSA EK certificate: %v", err)
	}
	m, err := soft.NewManufacturer("soft CA")
	if err != nil {
		t.Fatal(err)
	}
	st, err := soft.New(soft.Options{Manufacturer: m, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgRSA}})
	if err != nil {
		t.Fatal(err)
	}
	softDER, err := st.EKCertificate(ctx, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	realCert, err := x509.ParseCertificate(realDER)
	if err != nil {
		t.Fatal(err)
	}
	softCert, err := x509.ParseCertificate(softDER)
	if err != nil {
		t.Fatal(err)
	}
	realSAN, realCrit := tcgSAN(t, realCert)
	softSAN, softCrit := tcgSAN(t, softCert)
	if realCrit != softCrit {
		t.Errorf("SAN critical: swtpm %v, soft %v", realCrit, softCrit)
	}
	for oid := range realSAN {
		if _, ok := softSAN[oid]; !ok {
			t.Errorf("soft SAN lacks %s (swtpm has %q)", oid, realSAN[oid])
		}
	}
	if len(realSAN) != len(softSAN) {
		t.Errorf("SAN attributes: swtpm %v, soft %v", realSAN, softSAN)
	}
	// The profile wants an empty subject; swtpm writes CN=unknown.
	if len(softCert.Subject.Names) != 0 {
		t.Errorf("soft subject %q, want empty", softCert.Subject)
	}
	t.Logf("subject: swtpm %q, soft %q", realCert.Subject, softCert.Subject)
	if realCert.KeyUsage != softCert.KeyUsage {
		t.Errorf("key usage: swtpm %v, soft %v", realCert.KeyUsage, softCert.KeyUsage)
	}
	have := map[string]bool{}
	for _, e := range softCert.Extensions {
		have[e.Id.String()] = true
	}
	for _, e := range realCert.Extensions {
		if !have[e.Id.String()] {
			t.Logf("swtpm's EK certificate has extension %s, the soft TPM's does not", e.Id)
		}
	}
}

// tcgSAN reads the directoryName attributes of a subjectAltName.
func tcgSAN(t *testing.T, cert *x509.Certificate) (map[string]string, bool) {
	t.Helper()
	type atvSET []struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 4 {
				continue
			}
			var rdns []atvSET
			if _, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil {
				t.Fatal(err)
			}
			for _, rdn := range rdns {
				for _, atv := range rdn {
					out[atv.Type.String()] = string(atv.Value.Bytes)
				}
			}
		}
		return out, ext.Critical
	}
	t.Fatal("no subjectAltName")
	return nil, false
}
