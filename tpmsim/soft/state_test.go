package soft

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

func extend256(t testing.TB, tpm *TPM, pcr int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	if err := tpm.PCRExtend(bg, pcr, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:]}); err != nil {
		t.Fatal(err)
	}
}

func readPCR(t testing.TB, tpm *TPM, pcr int) []byte {
	t.Helper()
	v, err := tpm.PCRRead(bg, pcrSel(tpm2.TPMAlgSHA256, pcr))
	if err != nil {
		t.Fatal(err)
	}
	return v[tpm2.TPMAlgSHA256][pcr]
}

func TestSaveLoad(t *testing.T) {
	m := newTestManufacturer(t)
	tpm := newTestTPM(t, Options{Manufacturer: m, FirmwareVersion: 42})
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	extend256(t, tpm, 7, "secure boot")
	if err := tpm.Reboot(bg); err != nil {
		t.Fatal(err)
	}
	extend256(t, tpm, 10, "ima")
	before, err := tpm.Counters(bg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tpm.json")
	if err := tpm.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, %v; want 0600", fi.Mode(), err)
	}

	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		a, _ := tpm.EKPublic(bg, alg)
		b, err := loaded.EKPublic(bg, alg)
		if err != nil || !bytes.Equal(tpm2.Marshal(a), tpm2.Marshal(b)) {
			t.Errorf("%v EK changed through save/load (%v)", alg, err)
		}
		ca, _ := tpm.EKCertificate(bg, alg)
		cb, _ := loaded.EKCertificate(bg, alg)
		if !bytes.Equal(ca, cb) || len(ca) == 0 {
			t.Errorf("%v EK certificate changed through save/load", alg)
		}
	}
	if !bytes.Equal(loaded.EKIssuer(), m.Cert.Raw) {
		t.Error("issuer lost")
	}
	if !bytes.Equal(readPCR(t, loaded, 10), readPCR(t, tpm, 10)) {
		t.Error("PCR 10 changed through save/load")
	}
	after, err := loaded.Counters(bg)
	if err != nil {
		t.Fatal(err)
	}
	if after.ResetCount != 1 || after.RestartCount != 0 || after.Clock < before.Clock {
		t.Errorf("counters %+v after save/load, %+v before", after, before)
	}
	// The secret came along: the old AK blob still loads.
	attest, sig, err := loaded.Quote(bg, ak, []byte("n"), pcrSel(tpm2.TPMAlgSHA256, 10))
	if err != nil {
		t.Fatalf("quote with an AK made before saving: %v", err)
	}
	vals, _ := loaded.PCRRead(bg, pcrSel(tpm2.TPMAlgSHA256, 10))
	got := verifyQuote(t, mustPub(t, ak.Public), attest.Bytes(), sig, []byte("n"), vals)
	if got.FirmwareVersion != 42 {
		t.Errorf("firmware version %d", got.FirmwareVersion)
	}
}

func TestParseStateRejects(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, Manufacturer: newTestManufacturer(t)})
	good, err := marshalState(tpm.st, 5, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseState(good, time.Now()); err != nil {
		t.Fatalf("own output: %v", err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	otherState, _ := marshalState(other.st, 0, time.Now())
	var otherJSON stateJSON
	json.Unmarshal(otherState, &otherJSON)
	for name, data := range map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)/2],
		"trailing data":  append(bytes.Clone(good), []byte(" {}")...),
		"wrong format":   edit(func(m map[string]any) { m["format"] = "vigil-soft-tpm/0" }),
		"unknown field":  edit(func(m map[string]any) { m["extra"] = 1 }),
		"short secret":   edit(func(m map[string]any) { m["secret"] = "AAAA" }),
		"missing bank":   edit(func(m map[string]any) { delete(m["pcrs"].(map[string]any), "sha1") }),
		"23 PCRs":        edit(func(m map[string]any) { p := m["pcrs"].(map[string]any); p["sha1"] = p["sha1"].([]any)[:23] }),
		"short PCR":      edit(func(m map[string]any) { m["pcrs"].(map[string]any)["sha256"].([]any)[3] = "00" }),
		"bad hex":        edit(func(m map[string]any) { m["pcrs"].(map[string]any)["sha256"].([]any)[3] = "zz" }),
		"EK alg":         edit(func(m map[string]any) { m["eks"].([]any)[0].(map[string]any)["alg"] = "dsa" }),
		"EK key":         edit(func(m map[string]any) { m["eks"].([]any)[0].(map[string]any)["key"] = "AAAA" }),
		"EK cert":        edit(func(m map[string]any) { m["eks"].([]any)[0].(map[string]any)["cert"] = "AAAA" }),
		"cert for other": edit(func(m map[string]any) { m["eks"].([]any)[0].(map[string]any)["key"] = otherJSON.EKs[0].Key }),
		"two ECC EKs":    edit(func(m map[string]any) { m["eks"] = append(m["eks"].([]any), m["eks"].([]any)[0]) }),
		"negative count": edit(func(m map[string]any) { m["ak_count"] = -1 }),
		"bad issuer":     edit(func(m map[string]any) { m["ek_issuer"] = "AAAA" }),
		"huge":           append(bytes.Repeat([]byte(" "), maxStateFile), good...),
	} {
		if _, err := parseState(data, time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestStateClockCarriesForward(t *testing.T) {
	tpm := newTestTPM(t, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	saved := time.Now()
	data, err := marshalState(tpm.st, 1000, saved)
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseState(data, saved.Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.clock != 6000 {
		t.Errorf("clock %d five seconds after saving at 1000, want 6000", st.clock)
	}
	// The wall clock went backwards: the TPM clock does not.
	st, err = parseState(data, saved.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.clock != 1000 {
		t.Errorf("clock %d after the wall clock went back, want 1000", st.clock)
	}
}

func TestOpenSharesOneTPMBetweenHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.tpm")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		der, err := a.EKCertificate(bg, alg)
		if err != nil || len(der) == 0 {
			t.Errorf("a TPM made by Open has no %v EK certificate (%v)", alg, err)
		}
	}
	if len(a.EKIssuer()) == 0 {
		t.Error("a TPM made by Open does not name its EK issuer")
	}
	ak, err := a.CreateAK(bg, tpm2.TPMAlgRSA, tpm2.TPMAlgECC)
	if err != nil {
		t.Fatal(err)
	}
	// A second handle, as another process would have.
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	extend256(t, b, 10, "measured by vigil sim ima")
	if !bytes.Equal(readPCR(t, a, 10), readPCR(t, b, 10)) {
		t.Error("an extend through one handle is not seen through the other")
	}
	if _, _, err := b.Quote(bg, ak, nil, pcrSel(tpm2.TPMAlgSHA256, 10)); err != nil {
		t.Errorf("the other handle cannot use the AK: %v", err)
	}
	if err := a.Reboot(bg); err != nil {
		t.Fatal(err)
	}
	ci, err := b.Counters(bg)
	if err != nil || ci.ResetCount != 1 {
		t.Errorf("reboot through one handle: other sees %+v, %v", ci, err)
	}
	if !bytes.Equal(readPCR(t, b, 10), make([]byte, 32)) {
		t.Error("reboot did not reset PCR 10 for the other handle")
	}

	// Concurrent extends through both handles all land.
	var wg sync.WaitGroup
	d := sha256.Sum256([]byte("x"))
	for _, h := range []*TPM{a, b, a, b} {
		wg.Go(func() {
			for range 10 {
				if err := h.PCRExtend(bg, 11, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d[:]}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	want := make([]byte, 32)
	for range 40 {
		s := sha256.Sum256(append(want, d[:]...))
		want = s[:]
	}
	if !bytes.Equal(readPCR(t, a, 11), want) {
		t.Error("concurrent extends through two handles were lost")
	}

	if _, err := Create(path, Options{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing TPM: %v", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PCRRead(bg, pcrSel(tpm2.TPMAlgSHA256, 0)); err == nil {
		t.Error("a corrupted state file went unnoticed")
	}
}

func TestKeyCache(t *testing.T) {
	dir := t.TempDir()
	c, err := NewKeyCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Prefill(bg, 2, "ek", "ak0"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("%d files after prefilling 2 hosts × 2 purposes", len(entries))
	}
	k1, err := c.RSAKey(1, "ek")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.RSAKey(1, "ek")
	k0, _ := c.RSAKey(0, "ek")
	ak1, _ := c.RSAKey(1, "ak0")
	if !k1.Equal(again) || k1.Equal(k0) || k1.Equal(ak1) {
		t.Error("keys are not one per (host, purpose)")
	}
	for _, bad := range []string{"", "EK", "../x", "a-b"} {
		if _, err := c.RSAKey(0, bad); err == nil {
			t.Errorf("purpose %q accepted", bad)
		}
	}
	if _, err := c.RSAKey(-1, "ek"); err == nil {
		t.Error("negative host accepted")
	}

	// Racing for one missing key, everyone gets the same one.
	var wg sync.WaitGroup
	keys := make([]*rsa.PrivateKey, 4)
	for i := range keys {
		wg.Go(func() {
			k, err := c.RSAKey(7, "ek")
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k == nil || keys[0] == nil || !keys[0].Equal(k) {
			t.Fatal("racing callers got different keys for one slot")
		}
	}

	// A TPM built on the cache uses its keys: EK from "ek", AKs from
	// "ak0", "ak1", ...
	tpm := newTestTPM(t, Options{Keys: c, Host: 1, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgRSA}})
	ek, err := tpm.EKPublic(bg, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	ekKey, _ := tpm2.Pub(ek)
	if !k1.PublicKey.Equal(ekKey) {
		t.Error("EK is not host 1's cached key")
	}
	ak, err := tpm.CreateAK(bg, tpm2.TPMAlgRSA, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	akKey, _ := tpm2.Pub(*mustPub(t, ak.Public))
	if !ak1.PublicKey.Equal(akKey) {
		t.Error("first AK is not host 1's cached ak0 key")
	}
	ak2, err := tpm.CreateAK(bg, tpm2.TPMAlgRSA, tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ak.Public.Bytes(), ak2.Public.Bytes()) {
		t.Error("second AK reused the first AK's key")
	}
	// Two TPMs for one host share keys but not secrets: blobs stay put.
	twin := newTestTPM(t, Options{Keys: c, Host: 1, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgRSA}})
	if _, _, err := twin.Quote(bg, ak, nil, pcrSel(tpm2.TPMAlgSHA256, 0)); err == nil {
		t.Error("a twin TPM loaded another TPM's AK blob")
	}

	if err := os.WriteFile(filepath.Join(dir, "rsa2048-9-ek.der"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RSAKey(9, "ek"); err == nil {
		t.Error("a corrupt cached key was accepted")
	}
}
