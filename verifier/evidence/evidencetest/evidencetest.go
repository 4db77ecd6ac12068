// Package evidencetest makes real quotes for tests: it drives a TPM (the
// in-process simulator or swtpm, through tpmsim) with go-tpm's tpm2 API to
// create an endorsement-hierarchy AK, extend PCRs and quote them. It is
// imported only by tests.
package evidencetest

import (
	"context"
	"crypto"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// KeySpec names an AK template.
type KeySpec struct {
	Name     string
	Template tpm2.TPMTPublic
}

func akAttrs() tpm2.TPMAObject {
	return tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true,
	}
}

// RSAKey is an RSA-2048 restricted signing key template.
func RSAKey(scheme, hash tpm2.TPMAlgID) KeySpec {
	var details tpm2.TPMUAsymScheme
	if scheme == tpm2.TPMAlgRSAPSS {
		details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: hash})
	} else {
		details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: hash})
	}
	name := "rsa2048-rsassa-"
	if scheme == tpm2.TPMAlgRSAPSS {
		name = "rsa2048-rsapss-"
	}
	return KeySpec{Name: name + evidence.BankName(hash), Template: tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttrs(),
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme:  tpm2.TPMTRSAScheme{Scheme: scheme, Details: details},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}}
}

// ECCKey is an ECDSA restricted signing key template.
func ECCKey(curve tpm2.TPMECCCurve, hash tpm2.TPMAlgID) KeySpec {
	cname := "p256"
	if curve == tpm2.TPMECCNistP384 {
		cname = "p384"
	}
	return KeySpec{Name: "ecc-" + cname + "-ecdsa-" + evidence.BankName(hash), Template: tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttrs(),
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hash}),
			},
			CurveID: curve,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}}
}

// Host is a TPM with a loaded AK.
type Host struct {
	TPM transport.TPM
	// AKPublic is the AK's public area; AKBytes its marshalled TPM2B_PUBLIC.
	AKPublic tpm2.TPMTPublic
	AKBytes  []byte
	ak       tpm2.NamedHandle
}

// Simulator opens the in-process simulator for the test, skipping when the
// binary has no cgo; Conn gives the TPM, Reset reboots it. Tests using it must
// not run in parallel.
func Simulator(t testing.TB) *tpmsim.Simulator {
	t.Helper()
	sim, err := tpmsim.OpenSimulator()
	if err != nil {
		t.Skipf("in-process simulator unavailable: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// Swtpm starts an swtpm for the test (skipping, or failing in CI, when
// swtpm is not installed) and returns a connection to it.
func Swtpm(t testing.TB) transport.TPM {
	t.Helper()
	s := tpmsimtest.NewTestSwtpm(t, "")
	conn, err := s.Open(context.Background())
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// NewHost creates the RSA EK, an AK from spec under it (the endorsement
// hierarchy, so clock counters are not obfuscated) and leaves only the AK
// loaded; it is flushed when the test ends.
func NewHost(t testing.TB, tpm transport.TPM, spec KeySpec) *Host {
	t.Helper()
	ek, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("create EK: %v", err)
	}
	defer flush(tpm, ek.ObjectHandle)
	ekAuth := func() tpm2.AuthHandle {
		return tpm2.AuthHandle{
			Handle: ek.ObjectHandle, Name: ek.Name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
				_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonce}.Execute(tp)
				return err
			}),
		}
	}
	created, err := tpm2.Create{ParentHandle: ekAuth(), InPublic: tpm2.New2B(spec.Template)}.Execute(tpm)
	if err != nil {
		t.Fatalf("create AK %s: %v", spec.Name, err)
	}
	loaded, err := tpm2.Load{ParentHandle: ekAuth(), InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(tpm)
	if err != nil {
		t.Fatalf("load AK %s: %v", spec.Name, err)
	}
	t.Cleanup(func() { flush(tpm, loaded.ObjectHandle) })
	pub, err := created.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return &Host{
		TPM:      tpm,
		AKPublic: *pub,
		AKBytes:  tpm2.Marshal(created.OutPublic),
		ak:       tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
	}
}

func flush(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}

// Extend measures data into a PCR in the SHA-1 and SHA-256 banks, as
// firmware does: the digest of data in each bank's algorithm.
func (h *Host) Extend(t testing.TB, pcr int, data []byte) {
	t.Helper()
	var vals tpm2.TPMLDigestValues
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		hh, _ := evidence.HashOf(alg)
		vals.Digests = append(vals.Digests, tpm2.TPMTHA{HashAlg: alg, Digest: Digest(hh, data)})
	}
	h.ExtendDigests(t, pcr, vals)
}

// ExtendDigests extends a PCR with the given per-bank digests.
func (h *Host) ExtendDigests(t testing.TB, pcr int, vals tpm2.TPMLDigestValues) {
	t.Helper()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   vals,
	}.Execute(h.TPM)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

// Digest hashes data.
func Digest(h crypto.Hash, data []byte) []byte {
	hh := h.New()
	hh.Write(data)
	return hh.Sum(nil)
}

// Quote signs the selected PCRs with nonce as qualifying data and returns the
// TPMS_ATTEST and TPMT_SIGNATURE as marshalled bytes.
func (h *Host) Quote(t testing.TB, nonce []byte, sel tpm2.TPMLPCRSelection) (attest, sig []byte) {
	t.Helper()
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: h.ak.Handle, Name: h.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      sel,
	}.Execute(h.TPM)
	if err != nil {
		t.Fatalf("quote: %v", err)
	}
	return rsp.Quoted.Bytes(), tpm2.Marshal(rsp.Signature)
}

// ReadPCRs reads the selected PCRs, one at a time (TPM2_PCR_Read returns at
// most eight digests per call).
func (h *Host) ReadPCRs(t testing.TB, sel tpm2.TPMLPCRSelection) evidence.PCRValues {
	t.Helper()
	out := make(evidence.PCRValues)
	for _, s := range sel.PCRSelections {
		for _, i := range evidence.SelectedPCRs(s) {
			one := evidence.Selection([]int{i}, s.Hash)
			rsp, err := tpm2.PCRRead{PCRSelectionIn: one}.Execute(h.TPM)
			if err != nil {
				t.Fatalf("read %s PCR %d: %v", evidence.BankName(s.Hash), i, err)
			}
			if len(rsp.PCRValues.Digests) != 1 {
				t.Fatalf("read %s PCR %d: %d digests returned", evidence.BankName(s.Hash), i, len(rsp.PCRValues.Digests))
			}
			out.Set(s.Hash, i, rsp.PCRValues.Digests[0].Buffer)
		}
	}
	return out
}
