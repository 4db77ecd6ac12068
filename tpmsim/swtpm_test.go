package tpmsim_test

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/vigil-attest/vigil/tpmsim"
	"github.com/vigil-attest/vigil/tpmsim/tpmsimtest"
)

// readNV reads a whole NV index, in chunks the TPM accepts.
func readNV(t *testing.T, tpm transport.TPM, index tpm2.TPMHandle) []byte {
	t.Helper()
	pub, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if err != nil {
		t.Fatalf("NVReadPublic(%#x): %v", index, err)
	}
	contents, err := pub.NVPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for off := uint16(0); off < contents.DataSize; {
		n := min(contents.DataSize-off, 512)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: pub.NVName},
			Size:       n,
			Offset:     off,
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("NVRead(%#x@%d): %v", index, off, err)
		}
		out = append(out, rsp.Data.Buffer...)
		off += n
	}
	return out
}

func TestSwtpmManufacturedWithEKCertificatesFromItsCA(t *testing.T) {
	s := tpmsimtest.NewTestSwtpm(t, "")
	tpm, err := s.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()

	cas, err := s.CACertificates()
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(cas[0])
	inter.AddCert(cas[1])
	for _, index := range []tpm2.TPMHandle{0x01c00002, 0x01c00016} {
		der := readNV(t, tpm, index)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("EK cert at %#x: %v", index, err)
		}
		// The TCG EK profile puts the TPM's identity in a critical
		// subjectAltName holding only a directoryName, which crypto/x509
		// does not interpret; it is expected here.
		cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(oid asn1.ObjectIdentifier) bool {
			return oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17})
		})
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("EK cert at %#x does not chain to the instance's CA: %v", index, err)
		}
	}

	// Both PCR banks were allocated.
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: tpm2.PCClientCompatible.PCRs(0)},
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(0)},
	}}
	rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rsp.PCRValues.Digests); got != 2 {
		t.Fatalf("PCR 0 read in %d banks, want 2 (sha1, sha256)", got)
	}
	if len(rsp.PCRValues.Digests[0].Buffer) != 20 || len(rsp.PCRValues.Digests[1].Buffer) != 32 {
		t.Errorf("PCR digest sizes %d, %d; want 20, 32", len(rsp.PCRValues.Digests[0].Buffer), len(rsp.PCRValues.Digests[1].Buffer))
	}
}

func TestSeveralSwtpmsAtOnceShareACA(t *testing.T) {
	caDir := t.TempDir()
	const n = 3
	tpms := make([]*tpmsim.Swtpm, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tpms[i] = tpmsimtest.NewTestSwtpm(t, caDir)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[string]bool{}
	for _, s := range tpms {
		tpm, err := s.Open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ek := readNV(t, tpm, 0x01c00002)
		tpm.Close()
		seen[string(ek)] = true
		if s.CADir() != caDir {
			t.Errorf("CADir = %s, want %s", s.CADir(), caDir)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct EK certificates from %d TPMs", len(seen), n)
	}
}

func TestSwtpmRestartIsAReboot(t *testing.T) {
	s := tpmsimtest.NewTestSwtpm(t, "")
	ctx := context.Background()
	readClock := func() tpm2.TPMSClockInfo {
		tpm, err := s.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tpm.Close()
		rsp, err := tpm2.ReadClock{}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		return rsp.CurrentTime.ClockInfo
	}
	before := readClock()
	addr := s.Addr()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("address changed across restart: %s -> %s", addr, s.Addr())
	}
	after := readClock()
	if after.ResetCount != before.ResetCount+1 {
		t.Errorf("resetCount %d -> %d across a restart, want +1", before.ResetCount, after.ResetCount)
	}
}
