package soft

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
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

var bg = context.Background()

func newTestTPM(t testing.TB, opts Options) *TPM {
	t.Helper()
	tpm, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tpm
}

func newTestManufacturer(t testing.TB) *Manufacturer {
	t.Helper()
	m, err := NewManufacturer("Test TPM Manufacturer CA")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustPub(t testing.TB, b tpm2.TPM2BPublic) *tpm2.TPMTPublic {
	t.Helper()
	p, err := b.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// withoutUnique returns the marshalled public area with its unique field
// emptied, to compare structure and attributes apart from the key.
func withoutUnique(t testing.TB, p tpm2.TPMTPublic) []byte {
	t.Helper()
	switch p.Type {
	case tpm2.TPMAlgRSA:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	case tpm2.TPMAlgECC:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	default:
		t.Fatalf("unexpected key type %v", p.Type)
	}
	return tpm2.Marshal(p)
}

// atvSET is a relative distinguished name: a SET OF AttributeTypeAndValue.
type atvSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// parseTCGSAN returns the attributes of the directoryName in an EK
// certificate's subjectAltName, by OID.
func parseTCGSAN(t testing.TB, cert *x509.Certificate) map[string]string {
	t.Helper()
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		if !ext.Critical {
			t.Error("subjectAltName is not critical although the subject is empty")
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			t.Fatalf("SAN: %v", err)
		}
		out := map[string]string{}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 4 {
				continue
			}
			var rdns []atvSET
			if _, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil {
				t.Fatalf("SAN directoryName: %v", err)
			}
			for _, rdn := range rdns {
				for _, atv := range rdn {
					out[atv.Type.String()] = string(atv.Value.Bytes)
				}
			}
		}
		return out
	}
	t.Fatal("no subjectAltName")
	return nil
}

func TestEKMatchesTCGTemplateAndCertificate(t *testing.T) {
	m := newTestManufacturer(t)
	tpm := newTestTPM(t, Options{Manufacturer: m, FirmwareVersion: 0x20250101_00000007})
	for _, tc := range []struct {
		alg   tpm2.TPMAlgID
		tmpl  tpm2.TPMTPublic
		usage x509.KeyUsage
	}{
		{tpm2.TPMAlgRSA, tpm2.RSAEKTemplate, x509.KeyUsageKeyEncipherment},
		{tpm2.TPMAlgECC, tpm2.ECCEKTemplate, x509.KeyUsageKeyAgreement},
	} {
		t.Run(algName(tc.alg), func(t *testing.T) {
			pub, err := tpm.EKPublic(bg, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := withoutUnique(t, pub), withoutUnique(t, tc.tmpl); !bytes.Equal(got, want) {
				t.Errorf("EK public area differs from the TCG template apart from unique:\n got %x\nwant %x", got, want)
			}
			// Asking again gives the same key, as recreating an EK does.
			again, err := tpm.EKPublic(bg, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(again)) {
				t.Error("EKPublic changed between calls")
			}
			name, err := tpm.EKName(bg, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := tpm2.ObjectName(&pub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(name.Buffer, want.Buffer) {
				t.Errorf("EK name %x, ObjectName of its public area %x", name.Buffer, want.Buffer)
			}
			if len(name.Buffer) != 34 || name.Buffer[0] != 0x00 || name.Buffer[1] != 0x0b {
				t.Errorf("EK name %x is not a SHA-256 name", name.Buffer)
			}

			der, err := tpm.EKCertificate(bg, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			key, err := tpm2.Pub(pub)
			if err != nil {
				t.Fatal(err)
			}
			if !publicKeysEqual(key, cert.PublicKey) {
				t.Error("EK certificate is for another key")
			}
			if len(cert.Subject.Names) != 0 {
				t.Errorf("EK certificate subject %q, want empty", cert.Subject)
			}
			if cert.KeyUsage != tc.usage {
				t.Errorf("key usage %v, want %v", cert.KeyUsage, tc.usage)
			}
			if len(cert.UnknownExtKeyUsage) != 1 || !cert.UnknownExtKeyUsage[0].Equal(oidEKCertificateEKU) {
				t.Errorf("EKU %v, want tcg-kp-EKCertificate", cert.UnknownExtKeyUsage)
			}
			san := parseTCGSAN(t, cert)
			for oid, want := range map[string]string{
				"2.23.133.2.1": "id:5647494C",
				"2.23.133.2.2": "vigil-soft-tpm",
				"2.23.133.2.3": "id:20250101",
			} {
				if san[oid] != want {
					t.Errorf("SAN %s = %q, want %q", oid, san[oid], want)
				}
			}
			// What a registrar does: drop the SAN it cannot interpret from
			// the unhandled critical extensions, verify to the root.
			cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
			roots := x509.NewCertPool()
			roots.AddCert(m.Cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("EK certificate does not verify to the manufacturer: %v", err)
			}
		})
	}
	if !bytes.Equal(tpm.EKIssuer(), m.Cert.Raw) {
		t.Error("EKIssuer is not the manufacturer's certificate")
	}
}

func TestEKWithoutManufactureHasNoCertificate(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgRSA} {
		if _, err := tpm.EKPublic(bg, alg); err != nil {
			t.Fatalf("%v: %v", alg, err)
		}
		der, err := tpm.EKCertificate(bg, alg)
		if err != nil || der != nil {
			t.Errorf("%v: EKCertificate = %d bytes, %v; want none", alg, len(der), err)
		}
	}
	if _, err := tpm.EKPublic(bg, tpm2.TPMAlgSHA256); err == nil {
		t.Error("EKPublic accepted a hash algorithm as key type")
	}
	if _, err := tpm.EKCertificate(bg, tpm2.TPMAlgKeyedHash); err == nil {
		t.Error("EKCertificate accepted an unknown key type")
	}
}

func TestManufacturerPEMRoundTrip(t *testing.T) {
	m := newTestManufacturer(t)
	keyPEM, err := m.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := ParseManufacturer(m.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Cert.Equal(m.Cert) || !publicKeysEqual(m2.Key.Public(), m.Key.Public()) {
		t.Error("manufacturer changed through PEM")
	}
	other := newTestManufacturer(t)
	if _, err := ParseManufacturer(m.CertPEM(), must(other.KeyPEM())); err == nil {
		t.Error("ParseManufacturer accepted another CA's key")
	}
	if _, err := ParseManufacturer([]byte("junk"), keyPEM); err == nil {
		t.Error("ParseManufacturer accepted junk")
	}
}

func algName(a tpm2.TPMAlgID) string {
	switch a {
	case tpm2.TPMAlgRSA:
		return "rsa"
	case tpm2.TPMAlgECC:
		return "ecc"
	}
	return fmt.Sprintf("alg%#x", uint16(a))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCreateAKAttributes(t *testing.T) {
	tpm := newTestTPM(t, Options{})
	for _, ekAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
			t.Run("ek="+algName(ekAlg)+"/ak="+algName(akAlg), func(t *testing.T) {
				blob, err := tpm.CreateAK(bg, ekAlg, akAlg)
				if err != nil {
					t.Fatal(err)
				}
				if blob.EKAlg != ekAlg {
					t.Errorf("blob EKAlg %v", blob.EKAlg)
				}
				pub := mustPub(t, blob.Public)
				tmpl, err := tpmfacts.AKTemplate(akAlg)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := withoutUnique(t, *pub), withoutUnique(t, tmpl); !bytes.Equal(got, want) {
					t.Errorf("AK public area differs from the template:\n got %x\nwant %x", got, want)
				}
				a := pub.ObjectAttributes
				if !a.Restricted || !a.SignEncrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || a.Decrypt {
					t.Errorf("AK attributes %+v", a)
				}
				if pub.NameAlg != tpm2.TPMAlgSHA256 {
					t.Errorf("AK nameAlg %v", pub.NameAlg)
				}
				key, err := tpm2.Pub(*pub)
				if err != nil {
					t.Fatal(err)
				}
				switch k := key.(type) {
				case *rsa.PublicKey:
					if k.N.BitLen() != 2048 || k.E != 65537 {
						t.Errorf("RSA AK %d bits, e=%d", k.N.BitLen(), k.E)
					}
				case *ecdsa.PublicKey:
					if k.Curve.Params().Name != "P-256" {
						t.Errorf("ECC AK on %s", k.Curve.Params().Name)
					}
				}
				// Two AKs are two keys.
				blob2, err := tpm.CreateAK(bg, ekAlg, akAlg)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(blob.Public.Bytes(), blob2.Public.Bytes()) {
					t.Error("two CreateAK calls gave the same key")
				}
			})
		}
	}
	if _, err := tpm.CreateAK(bg, tpm2.TPMAlgRSA, tpm2.TPMAlgSHA1); err == nil {
		t.Error("CreateAK accepted a hash algorithm as key type")
	}
}

// makeCredential is what the registrar does: tpm2.CreateCredential to the
// EK public area over the AK's name.
func makeCredential(t testing.TB, ekPub tpm2.TPMTPublic, akName []byte, secret []byte) (tpm2.TPM2BIDObject, tpm2.TPM2BEncryptedSecret) {
	t.Helper()
	key, err := tpm2.ImportEncapsulationKey(&ekPub)
	if err != nil {
		t.Fatal(err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, key, akName, secret)
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.TPM2BIDObject{Buffer: idObject}, tpm2.TPM2BEncryptedSecret{Buffer: encSecret}
}

func akName(t testing.TB, blob AKBlob) []byte {
	t.Helper()
	n, err := tpm2.ObjectName(mustPub(t, blob.Public))
	if err != nil {
		t.Fatal(err)
	}
	return n.Buffer
}

func TestActivateCredentialRoundTrip(t *testing.T) {
	tpm := newTestTPM(t, Options{})
	other := newTestTPM(t, Options{})
	for _, ekAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
			t.Run("ek="+algName(ekAlg)+"/ak="+algName(akAlg), func(t *testing.T) {
				ak, err := tpm.CreateAK(bg, ekAlg, akAlg)
				if err != nil {
					t.Fatal(err)
				}
				ekPub, err := tpm.EKPublic(bg, ekAlg)
				if err != nil {
					t.Fatal(err)
				}
				secret := make([]byte, 32)
				rand.Read(secret)
				blob, encSecret := makeCredential(t, ekPub, akName(t, ak), secret)
				got, err := tpm.ActivateCredential(bg, ak, blob, encSecret)
				if err != nil {
					t.Fatalf("ActivateCredential: %v", err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("activated %x, sealed %x", got, secret)
				}

				// A credential made for another AK's name.
				ak2, err := tpm.CreateAK(bg, ekAlg, akAlg)
				if err != nil {
					t.Fatal(err)
				}
				blob2, enc2 := makeCredential(t, ekPub, akName(t, ak2), secret)
				if _, err := tpm.ActivateCredential(bg, ak, blob2, enc2); !errors.Is(err, tpm2.TPMRCIntegrity) {
					t.Errorf("credential for another AK: err %v, want TPM_RC_INTEGRITY", err)
				}
				// A credential sealed to another TPM's EK.
				otherEK, err := other.EKPublic(bg, ekAlg)
				if err != nil {
					t.Fatal(err)
				}
				blob3, enc3 := makeCredential(t, otherEK, akName(t, ak), secret)
				if _, err := tpm.ActivateCredential(bg, ak, blob3, enc3); err == nil {
					t.Error("activated a credential sealed to another EK")
				}
				// Every single-byte change to the blob is refused.
				for i := range blob.Buffer {
					bad := tpm2.TPM2BIDObject{Buffer: bytes.Clone(blob.Buffer)}
					bad.Buffer[i] ^= 0x01
					if _, err := tpm.ActivateCredential(bg, ak, bad, encSecret); err == nil {
						t.Fatalf("activated with byte %d of the credential blob altered", i)
					}
				}
				// Truncations are refused without panicking.
				for n := range len(blob.Buffer) {
					if _, err := tpm.ActivateCredential(bg, ak, tpm2.TPM2BIDObject{Buffer: blob.Buffer[:n]}, encSecret); err == nil {
						t.Fatalf("activated with the blob cut to %d bytes", n)
					}
				}
				for n := range len(encSecret.Buffer) {
					if _, err := tpm.ActivateCredential(bg, ak, blob, tpm2.TPM2BEncryptedSecret{Buffer: encSecret.Buffer[:n]}); err == nil {
						t.Fatalf("activated with the secret cut to %d bytes", n)
					}
				}
				// The AK blob works only in the TPM that made it.
				if _, err := other.ActivateCredential(bg, ak, blob, encSecret); !errors.Is(err, tpm2.TPMRCIntegrity) {
					t.Errorf("other TPM loaded the AK: err %v", err)
				}
			})
		}
	}
}

func TestAKBlobBindsTPMParentAndPublic(t *testing.T) {
	tpm := newTestTPM(t, Options{})
	other := newTestTPM(t, Options{})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	ak2, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	sel := pcrSel(tpm2.TPMAlgSHA256, 0)
	for name, blob := range map[string]AKBlob{
		"under another EK":      {EKAlg: tpm2.TPMAlgRSA, Public: ak.Public, Private: ak.Private},
		"with another public":   {EKAlg: ak.EKAlg, Public: ak2.Public, Private: ak.Private},
		"with a cut private":    {EKAlg: ak.EKAlg, Public: ak.Public, Private: tpm2.TPM2BPrivate{Buffer: ak.Private.Buffer[:20]}},
		"with an empty private": {EKAlg: ak.EKAlg, Public: ak.Public},
	} {
		if _, _, err := tpm.Quote(bg, blob, nil, sel); err == nil {
			t.Errorf("quoted with an AK blob %s", name)
		}
	}
	if _, _, err := other.Quote(bg, ak, nil, sel); err == nil {
		t.Error("another TPM quoted with this TPM's AK")
	}
	if _, _, err := tpm.Quote(bg, ak, nil, sel); err != nil {
		t.Errorf("the genuine blob: %v", err)
	}
}

func pcrSel(alg tpm2.TPMAlgID, pcrs ...int) tpm2.TPMLPCRSelection {
	b := make([]byte, 3)
	for _, p := range pcrs {
		b[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: b}}}
}

func allPCRs() tpm2.TPMLPCRSelection {
	all := make([]int, NumPCRs)
	for i := range all {
		all[i] = i
	}
	s1, s256 := pcrSel(tpm2.TPMAlgSHA1, all...), pcrSel(tpm2.TPMAlgSHA256, all...)
	return tpm2.TPMLPCRSelection{PCRSelections: append(s1.PCRSelections, s256.PCRSelections...)}
}

func TestPCRInitialValues(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	vals, err := tpm.PCRRead(bg, allPCRs())
	if err != nil {
		t.Fatal(err)
	}
	for alg, size := range map[tpm2.TPMAlgID]int{tpm2.TPMAlgSHA1: 20, tpm2.TPMAlgSHA256: 32} {
		for i := range NumPCRs {
			want := bytes.Repeat([]byte{0}, size)
			if i >= 17 && i <= 22 {
				want = bytes.Repeat([]byte{0xff}, size)
			}
			if !bytes.Equal(vals[alg][i], want) {
				t.Errorf("%v PCR %d = %x, want %x", alg, i, vals[alg][i], want)
			}
		}
	}
}

func TestPCRExtend(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	d1, d256 := sha1.Sum([]byte("event 1")), sha256.Sum256([]byte("event 1"))
	e1, e256 := sha1.Sum([]byte("event 2")), sha256.Sum256([]byte("event 2"))
	if err := tpm.PCRExtend(bg, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1[:], tpm2.TPMAlgSHA256: d256[:]}); err != nil {
		t.Fatal(err)
	}
	if err := tpm.PCRExtend(bg, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: e256[:]}); err != nil {
		t.Fatal(err)
	}
	// Independently: PCR_new = H(PCR_old || digest) from zero.
	w1 := sha1.Sum(append(make([]byte, 20), d1[:]...))
	w256 := sha256.Sum256(append(make([]byte, 32), d256[:]...))
	w256 = sha256.Sum256(append(w256[:], e256[:]...))
	vals, err := tpm.PCRRead(bg, allPCRs())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vals[tpm2.TPMAlgSHA1][10], w1[:]) || !bytes.Equal(vals[tpm2.TPMAlgSHA256][10], w256[:]) {
		t.Errorf("PCR 10 = %x / %x, want %x / %x", vals[tpm2.TPMAlgSHA1][10], vals[tpm2.TPMAlgSHA256][10], w1, w256)
	}
	if !bytes.Equal(vals[tpm2.TPMAlgSHA256][9], make([]byte, 32)) {
		t.Error("extending PCR 10 changed PCR 9")
	}

	for _, tc := range []struct {
		name    string
		pcr     int
		digests map[tpm2.TPMAlgID][]byte
	}{
		{"pcr -1", -1, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: e256[:]}},
		{"pcr 24", 24, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: e256[:]}},
		{"short digest", 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: e256[:20]}},
		{"sha1 size in sha256", 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: e1[:]}},
		{"unallocated bank", 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA384: make([]byte, 48)}},
		{"one good one bad", 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: e1[:], tpm2.TPMAlgSHA256: e256[:31]}},
	} {
		if err := tpm.PCRExtend(bg, tc.pcr, tc.digests); err == nil {
			t.Errorf("%s: extend accepted", tc.name)
		}
	}
	after, err := tpm.PCRRead(bg, allPCRs())
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range banks {
		for i := range NumPCRs {
			if !bytes.Equal(after[alg][i], vals[alg][i]) {
				t.Errorf("a refused extend changed %v PCR %d", alg, i)
			}
		}
	}

	for name, sel := range map[string]tpm2.TPMLPCRSelection{
		"unallocated bank": pcrSel(tpm2.TPMAlgSHA384, 0),
		"4-byte bitmap":    {PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{1, 0, 0, 1}}}},
	} {
		if _, err := tpm.PCRRead(bg, sel); err == nil {
			t.Errorf("PCRRead accepted a selection with %s", name)
		}
	}
}

// verifyQuote is the check a verifier makes, written from the spec rather
// than from this package: signature over the attest bytes by the AK, magic,
// type, nonce, and the PCR digest recomputed from reported PCR values.
func verifyQuote(t testing.TB, akPub *tpm2.TPMTPublic, attestBytes []byte, sig tpm2.TPMTSignature, nonce []byte, values map[tpm2.TPMAlgID]map[int][]byte) *tpm2.TPMSAttest {
	t.Helper()
	key, err := tpm2.Pub(*akPub)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(attestBytes)
	switch k := key.(type) {
	case *rsa.PublicKey:
		if sig.SigAlg != tpm2.TPMAlgRSASSA {
			t.Fatalf("signature algorithm %v for an RSA AK", sig.SigAlg)
		}
		s, err := sig.Signature.RSASSA()
		if err != nil {
			t.Fatal(err)
		}
		if s.Hash != tpm2.TPMAlgSHA256 {
			t.Errorf("signature hash %v", s.Hash)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s.Sig.Buffer); err != nil {
			t.Fatalf("RSASSA signature: %v", err)
		}
	case *ecdsa.PublicKey:
		if sig.SigAlg != tpm2.TPMAlgECDSA {
			t.Fatalf("signature algorithm %v for an ECC AK", sig.SigAlg)
		}
		s, err := sig.Signature.ECDSA()
		if err != nil {
			t.Fatal(err)
		}
		if s.Hash != tpm2.TPMAlgSHA256 {
			t.Errorf("signature hash %v", s.Hash)
		}
		r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		der, err := asn1.Marshal(struct{ R, S *big.Int }{r, ss})
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(k, digest[:], der) {
			t.Fatal("ECDSA signature does not verify")
		}
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](attestBytes)
	if err != nil {
		t.Fatalf("unmarshal TPMS_ATTEST: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(*attest), attestBytes) {
		t.Error("TPMS_ATTEST does not re-marshal to the signed bytes")
	}
	if attest.Magic != tpm2.TPMGeneratedValue {
		t.Errorf("magic %#x", attest.Magic)
	}
	if attest.Type != tpm2.TPMSTAttestQuote {
		t.Errorf("type %v", attest.Type)
	}
	if !bytes.Equal(attest.ExtraData.Buffer, nonce) {
		t.Errorf("extraData %x, nonce %x", attest.ExtraData.Buffer, nonce)
	}
	q, err := attest.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, s := range q.PCRSelect.PCRSelections {
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					h.Write(values[s.Hash][i*8+bit])
				}
			}
		}
	}
	if !bytes.Equal(h.Sum(nil), q.PCRDigest.Buffer) {
		t.Errorf("pcrDigest %x does not match the PCR values", q.PCRDigest.Buffer)
	}
	return attest
}

func TestQuote(t *testing.T) {
	for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		t.Run(algName(akAlg), func(t *testing.T) {
			tpm := newTestTPM(t, Options{FirmwareVersion: 0x1234_5678_9abc_def0})
			ak, err := tpm.CreateAK(bg, tpm2.TPMAlgRSA, akAlg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				d := sha256.Sum256([]byte{byte(i)})
				if err := tpm.PCRExtend(bg, i*2, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:]}); err != nil {
					t.Fatal(err)
				}
			}
			// Selection order matters: sha256 first, then sha1.
			sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0x80}},
				{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x01, 0x04, 0x00}},
			}}
			nonce := []byte("a verifier's nonce, 32 bytes....")
			attestB, sig, err := tpm.Quote(bg, ak, nonce, sel)
			if err != nil {
				t.Fatal(err)
			}
			vals, err := tpm.PCRRead(bg, sel)
			if err != nil {
				t.Fatal(err)
			}
			pub := mustPub(t, ak.Public)
			attest := verifyQuote(t, pub, attestB.Bytes(), sig, nonce, vals)

			q, _ := attest.Attested.Quote()
			if !bytes.Equal(tpm2.Marshal(q.PCRSelect), tpm2.Marshal(sel)) {
				t.Errorf("pcrSelect %x, asked %x", tpm2.Marshal(q.PCRSelect), tpm2.Marshal(sel))
			}
			want, err := PCRDigest(crypto.SHA256, sel, vals)
			if err != nil || !bytes.Equal(want, q.PCRDigest.Buffer) {
				t.Errorf("PCRDigest = %x, %v; quote has %x", want, err, q.PCRDigest.Buffer)
			}
			if attest.FirmwareVersion != 0x1234_5678_9abc_def0 {
				t.Errorf("firmwareVersion %#x", attest.FirmwareVersion)
			}
			// qualifiedSigner, computed here from Part 1 §16 by hand.
			ekName, err := tpm.EKName(bg, tpm2.TPMAlgRSA)
			if err != nil {
				t.Fatal(err)
			}
			ekQN := sha256.Sum256(append([]byte{0x40, 0x00, 0x00, 0x0b}, ekName.Buffer...))
			akQN := sha256.Sum256(append(append([]byte{0x00, 0x0b}, ekQN[:]...), akName(t, ak)...))
			if want := append([]byte{0x00, 0x0b}, akQN[:]...); !bytes.Equal(attest.QualifiedSigner.Buffer, want) {
				t.Errorf("qualifiedSigner %x, want %x", attest.QualifiedSigner.Buffer, want)
			}
			ci := attest.ClockInfo
			if !ci.Safe || ci.ResetCount != 0 || ci.RestartCount != 0 {
				t.Errorf("clock info %+v", ci)
			}

			// Reboot: resetCount moves, restartCount is zero, PCRs are back
			// to their initial values, the clock has not gone backwards.
			if err := tpm.Resume(bg); err != nil {
				t.Fatal(err)
			}
			if err := tpm.Reboot(bg); err != nil {
				t.Fatal(err)
			}
			if err := tpm.Resume(bg); err != nil {
				t.Fatal(err)
			}
			attestB2, sig2, err := tpm.Quote(bg, ak, nil, sel)
			if err != nil {
				t.Fatal(err)
			}
			vals2, err := tpm.PCRRead(bg, sel)
			if err != nil {
				t.Fatal(err)
			}
			attest2 := verifyQuote(t, pub, attestB2.Bytes(), sig2, nil, vals2)
			ci2 := attest2.ClockInfo
			if ci2.ResetCount != 1 || ci2.RestartCount != 1 || ci2.Clock < ci.Clock {
				t.Errorf("after a resume, reboot and resume: clock info %+v, before %+v", ci2, ci)
			}
			if bytes.Equal(vals2[tpm2.TPMAlgSHA256][0], vals[tpm2.TPMAlgSHA256][0]) {
				t.Error("PCR 0 survived a reboot")
			}
		})
	}
}

func TestQuoteRefuses(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tpm.Quote(bg, ak, make([]byte, 65), pcrSel(tpm2.TPMAlgSHA256, 0)); !errors.Is(err, tpm2.TPMRCSize) {
		t.Errorf("65-byte nonce: %v", err)
	}
	if _, _, err := tpm.Quote(bg, ak, nil, pcrSel(tpm2.TPMAlgSHA512, 0)); err == nil {
		t.Error("quoted an unallocated bank")
	}
	if _, _, err := tpm.Quote(bg, ak, make([]byte, 64), pcrSel(tpm2.TPMAlgSHA256)); err != nil {
		t.Errorf("64-byte nonce, empty selection: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, _, err := tpm.Quote(ctx, ak, nil, pcrSel(tpm2.TPMAlgSHA256, 0)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

func TestConnClose(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	c := tpm.Conn()
	if _, err := c.EKPublic(bg, tpm2.TPMAlgECC); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EKPublic(bg, tpm2.TPMAlgECC); err == nil {
		t.Error("closed connection still works")
	}
	if _, err := tpm.Conn().EKPublic(bg, tpm2.TPMAlgECC); err != nil {
		t.Errorf("closing one connection broke the TPM: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("same event everywhere"))
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			c := tpm.Conn()
			defer c.Close()
			for range each {
				if err := c.PCRExtend(bg, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:]}); err != nil {
					errs <- err
				}
				if _, _, err := c.Quote(bg, AKBlob(ak), []byte("n"), pcrSel(tpm2.TPMAlgSHA256, 10)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Extends with one digest commute, so the end value is known.
	want := make([]byte, 32)
	for range workers * each {
		s := sha256.Sum256(append(want, d[:]...))
		want = s[:]
	}
	vals, err := tpm.PCRRead(bg, pcrSel(tpm2.TPMAlgSHA256, 10))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vals[tpm2.TPMAlgSHA256][10], want) {
		t.Errorf("PCR 10 after %d concurrent extends = %x, want %x", workers*each, vals[tpm2.TPMAlgSHA256][10], want)
	}
}
