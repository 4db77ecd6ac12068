package pcrpolicy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

func hexOf(b byte, n int) string { return strings.Repeat(hex.EncodeToString([]byte{b}), n) }

func digestOf(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// Keylime's tpm_policy, as its tenant and verifier store it: SHA-256
// digests (hash_alg sha256), a list per PCR or a lone string, and the mask
// Keylime computes from the keys.
func TestParseKeylimeWithMask(t *testing.T) {
	doc := `{"22": ["` + hexOf(0, 32) + `", "` + hexOf(0xff, 32) + `"], "15": ["` + hexOf(0xAB, 32) + `"], "mask": "0x408000"}`
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !p.FromKeylime() {
		t.Error("not marked as Keylime's")
	}
	if got := p.Banks(); len(got) != 1 || got[0] != tpm2.TPMAlgSHA256 {
		t.Fatalf("banks %v, want sha256 (32-byte digests)", got)
	}
	if got := p.PCRs(tpm2.TPMAlgSHA256); len(got) != 2 || got[0] != 15 || got[1] != 22 {
		t.Fatalf("PCRs %v, want [15 22]", got)
	}
	if got := p.Allowed(tpm2.TPMAlgSHA256, 22); len(got) != 2 || !bytes.Equal(got[1], digestOf(0xff, 32)) {
		t.Fatalf("PCR 22 allows %x", got)
	}
	// Upper-case hex is Keylime's too (it lowercases).
	if got := p.Allowed(tpm2.TPMAlgSHA256, 15); len(got) != 1 || !bytes.Equal(got[0], digestOf(0xab, 32)) {
		t.Fatalf("PCR 15 allows %x", got)
	}
}

func TestParseKeylimeWithoutMask(t *testing.T) {
	// SHA-1 digests (hash_alg sha1), a lone string rather than a list, and
	// a repeated value.
	doc := `{"16": "` + hexOf(1, 20) + `", "23": ["` + hexOf(2, 20) + `", "` + hexOf(2, 20) + `"]}`
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Banks(); len(got) != 1 || got[0] != tpm2.TPMAlgSHA1 {
		t.Fatalf("banks %v, want sha1 (20-byte digests)", got)
	}
	if got := p.Allowed(tpm2.TPMAlgSHA1, 23); len(got) != 1 {
		t.Fatalf("PCR 23 allows %x, want the repeated value once", got)
	}
	if p.Count() != 2 {
		t.Fatalf("count %d", p.Count())
	}
	// SHA-384 and SHA-512 digests decide their banks too.
	for n, bank := range map[int]tpm2.TPMAlgID{48: tpm2.TPMAlgSHA384, 64: tpm2.TPMAlgSHA512} {
		p, err := Parse([]byte(`{"7": ["` + hexOf(3, n) + `"]}`))
		if err != nil || p.Banks()[0] != bank {
			t.Fatalf("%d-byte digests: %v, %v", n, p, err)
		}
	}
}

func TestParseVigilFormat(t *testing.T) {
	doc := `{"version": 1, "pcrs": {
		"sha256": {"16": ["` + hexOf(1, 32) + `", "` + hexOf(2, 32) + `"], "0": ["` + hexOf(3, 32) + `"]},
		"sha1": {"16": ["` + hexOf(4, 20) + `"]},
		"sha384": {"23": ["` + hexOf(5, 48) + `"]},
		"SHA-512": {"8": ["` + hexOf(6, 64) + `"]}}}`
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p.FromKeylime() {
		t.Error("marked as Keylime's")
	}
	want := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512}
	if got := p.Banks(); len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("banks %v, want %v", got, want)
	}
	if got := p.PCRs(tpm2.TPMAlgSHA256); len(got) != 2 || got[0] != 0 || got[1] != 16 {
		t.Fatalf("sha256 PCRs %v", got)
	}
	// Written back in Vigil's format and read again: the same policy.
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	again, _ := json.Marshal(back)
	if !bytes.Equal(out, again) {
		t.Fatalf("round trip:\n%s\n%s", out, again)
	}
	if !strings.HasPrefix(string(out), `{"version":1,"pcrs":{"sha1":{"16":[`) || !strings.Contains(string(out), `"sha256":{"0":[`) {
		t.Fatalf("canonical form %s", out)
	}
	// A Keylime policy written in Vigil's format names its bank.
	k, _ := Parse([]byte(`{"15": ["` + hexOf(7, 32) + `"], "mask": "0x8000"}`))
	kout, _ := json.Marshal(k)
	if string(kout) != `{"version":1,"pcrs":{"sha256":{"15":["`+hexOf(7, 32)+`"]}}}` {
		t.Fatalf("Keylime policy in Vigil's format: %s", kout)
	}
}

// Bad policies are refused with an error naming the member at fault.
func TestParseErrorsNameTheField(t *testing.T) {
	d32, d20 := hexOf(1, 32), hexOf(1, 20)
	for _, tc := range []struct {
		name, doc, field, msg string
	}{
		{"not JSON", `{"16": [`, "16", "not JSON"},
		{"not JSON at all", `{16: []}`, "", "not JSON"},
		{"not an object", `["16"]`, "", "want a JSON object"},
		{"trailing data", `{"16": ["` + d32 + `"]} {}`, "", "trailing"},
		{"no PCRs", `{}`, "", "no PCRs"},
		{"mask alone", `{"mask": "0x10000"}`, "", "no PCRs"},
		{"Keylime: PCR index out of range", `{"24": ["` + d32 + `"]}`, "24", "out of range"},
		{"Keylime: negative PCR index", `{"-1": ["` + d32 + `"]}`, "-1", "unknown member"},
		{"Keylime: unknown member", `{"16": ["` + d32 + `"], "hash_alg": "sha256"}`, "hash_alg", "unknown member"},
		{"Keylime: bad hex", `{"16": ["` + d32 + `", "zz` + d32[2:] + `"]}`, "16[1]", "not hex"},
		{"Keylime: odd hex", `{"16": ["` + d32[1:] + `"]}`, "16[0]", "not hex"},
		{"Keylime: no digest length", `{"16": ["` + hexOf(1, 31) + `"]}`, "16[0]", "31 bytes is no PCR digest"},
		{"Keylime: mixed lengths", `{"15": ["` + d32 + `"], "16": ["` + d20 + `"]}`, "16[0]", "one bank"},
		{"Keylime: empty list", `{"16": []}`, "16", "no allowed values"},
		{"Keylime: not a string", `{"16": [16]}`, "16[0]", "want a hex digest string"},
		{"Keylime: null", `{"16": null}`, "16", "want a hex digest"},
		{"Keylime: given twice", `{"16": ["` + d32 + `"], "16": ["` + d32 + `"]}`, "16", "given twice"},
		{"Keylime: given twice as 016", `{"16": ["` + d32 + `"], "016": ["` + d32 + `"]}`, "016", "given twice"},
		{"Keylime: mask misses a PCR", `{"16": ["` + d32 + `"], "15": ["` + d32 + `"], "mask": "0x10000"}`, "mask", "PCR 15"},
		{"Keylime: mask not a number", `{"16": ["` + d32 + `"], "mask": "0xzz"}`, "mask", "not a hex"},
		{"Keylime: mask past PCR 23", `{"16": ["` + d32 + `"], "mask": "0x1010000"}`, "mask", "above 23"},
		{"Keylime: mask not a string", `{"16": ["` + d32 + `"], "mask": 65536}`, "mask", "want a string"},
		{"Vigil: no version", `{"pcrs": {"sha256": {"16": ["` + d32 + `"]}}}`, "version", "missing"},
		{"Vigil: version 2", `{"version": 2, "pcrs": {"sha256": {"16": ["` + d32 + `"]}}}`, "version", "reads version 1"},
		{"Vigil: no pcrs", `{"version": 1}`, "pcrs", "missing"},
		{"Vigil: unknown member", `{"version": 1, "pcrs": {"sha256": {"16": ["` + d32 + `"]}}, "mask": "0x1"}`, "mask", "unknown member"},
		{"Vigil: unknown bank", `{"version": 1, "pcrs": {"sm3": {"16": ["` + d32 + `"]}}}`, "pcrs.sm3", "unknown PCR bank"},
		{"Vigil: bank twice", `{"version": 1, "pcrs": {"sha256": {"16": ["` + d32 + `"]}, "SHA256": {"16": ["` + d32 + `"]}}}`, "pcrs.SHA256", "given twice"},
		{"Vigil: empty bank", `{"version": 1, "pcrs": {"sha256": {}}}`, "pcrs.sha256", "no PCRs"},
		{"Vigil: no banks", `{"version": 1, "pcrs": {}}`, "", "no PCRs"},
		{"Vigil: PCR index out of range", `{"version": 1, "pcrs": {"sha256": {"99": ["` + d32 + `"]}}}`, "pcrs.sha256.99", "out of range"},
		{"Vigil: PCR index not a number", `{"version": 1, "pcrs": {"sha256": {"x": ["` + d32 + `"]}}}`, "pcrs.sha256.x", "not a PCR index"},
		{"Vigil: wrong length for the bank", `{"version": 1, "pcrs": {"sha256": {"16": ["` + d32 + `", "` + d20 + `"]}}}`, "pcrs.sha256.16[1]", "20 bytes: sha256 digests are 32"},
		{"Vigil: bad hex", `{"version": 1, "pcrs": {"sha1": {"16": ["0x` + d20[2:] + `"]}}}`, "pcrs.sha1.16[0]", "not hex"},
		{"Vigil: a lone string", `{"version": 1, "pcrs": {"sha1": {"16": "` + d20 + `"}}}`, "pcrs.sha1.16", "want a list"},
		{"Vigil: empty list", `{"version": 1, "pcrs": {"sha1": {"16": []}}}`, "pcrs.sha1.16", "no allowed values"},
		{"Vigil: bank not an object", `{"version": 1, "pcrs": {"sha1": ["` + d20 + `"]}}`, "pcrs.sha1", "want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.doc))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%s: %v, %v; want an *Error", tc.doc, p, err)
			}
			if e.Field != tc.field || !strings.Contains(e.Msg, tc.msg) {
				t.Fatalf("error %q (field %q), want field %q and %q", err, e.Field, tc.field, tc.msg)
			}
			if tc.field != "" && !strings.Contains(err.Error(), "field "+tc.field+":") {
				t.Fatalf("error %q does not name field %s", err, tc.field)
			}
		})
	}
}

func TestMaskForms(t *testing.T) {
	d := hexOf(1, 32)
	for _, mask := range []string{"0x408000", "0X408000", "4227072", "0xffffff"} {
		if _, err := Parse([]byte(`{"15": ["` + d + `"], "22": ["` + d + `"], "mask": "` + mask + `"}`)); err != nil {
			t.Errorf("mask %s: %v", mask, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(map[tpm2.TPMAlgID]map[int][][]byte{tpm2.TPMAlgSHA256: {24: {digestOf(1, 32)}}}); err == nil {
		t.Error("PCR 24 accepted")
	}
	if _, err := New(map[tpm2.TPMAlgID]map[int][][]byte{tpm2.TPMAlgSHA256: {16: {digestOf(1, 20)}}}); err == nil {
		t.Error("a SHA-1 digest accepted in the SHA-256 bank")
	}
	if _, err := New(map[tpm2.TPMAlgID]map[int][][]byte{tpm2.TPMAlgSHA256: {16: nil}}); err == nil {
		t.Error("a PCR with no values accepted")
	}
	if _, err := New(map[tpm2.TPMAlgID]map[int][][]byte{tpm2.TPMAlgSM3256: {16: {digestOf(1, 32)}}}); err == nil {
		t.Error("an unknown bank accepted")
	}
	if _, err := New(nil); err == nil {
		t.Error("an empty policy accepted")
	}
}

// The check: each PCR the policy names must be quoted, in its bank, with
// one of its values; failures name the PCR, the bank and the value, in
// PCR order.
func TestCheck(t *testing.T) {
	p, err := New(map[tpm2.TPMAlgID]map[int][][]byte{
		tpm2.TPMAlgSHA256: {16: {digestOf(1, 32), digestOf(2, 32)}, 23: {digestOf(3, 32)}},
		tpm2.TPMAlgSHA1:   {16: {digestOf(4, 20)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	good := evidence.PCRValues{}
	good.Set(tpm2.TPMAlgSHA256, 16, digestOf(2, 32))
	good.Set(tpm2.TPMAlgSHA256, 23, digestOf(3, 32))
	good.Set(tpm2.TPMAlgSHA1, 16, digestOf(4, 20))
	// PCRs the policy does not name are not its business.
	good.Set(tpm2.TPMAlgSHA256, 10, digestOf(9, 32))
	if fs := p.Check(good); len(fs) != 0 {
		t.Fatalf("good values: %v", fs)
	}

	bad := evidence.PCRValues{}
	bad.Set(tpm2.TPMAlgSHA256, 16, digestOf(0xab, 32))
	bad.Set(tpm2.TPMAlgSHA1, 16, digestOf(0xcd, 20))
	fs := p.Check(bad)
	if len(fs) != 3 {
		t.Fatalf("failures %v, want 3", fs)
	}
	if fs[0].Reason != ReasonNotAllowed || fs[0].Detail != "PCR 16 (sha1) = "+hexOf(0xcd, 20)+", not the allowed value "+hexOf(4, 20) {
		t.Errorf("first failure %v", fs[0])
	}
	if fs[1].Reason != ReasonNotAllowed || fs[1].Detail != "PCR 16 (sha256) = "+hexOf(0xab, 32)+", not one of the 2 allowed values" {
		t.Errorf("second failure %v", fs[1])
	}
	if fs[2].Reason != ReasonNotQuoted || fs[2].Detail != "PCR 23 (sha256) is not in the quote" {
		t.Errorf("third failure %v", fs[2])
	}
}

func TestExactly(t *testing.T) {
	v := evidence.PCRValues{}
	v.Set(tpm2.TPMAlgSHA1, 16, digestOf(1, 20))
	v.Set(tpm2.TPMAlgSHA256, 16, digestOf(2, 32))
	p, err := Exactly(v)
	if err != nil {
		t.Fatal(err)
	}
	if fs := p.Check(v); len(fs) != 0 {
		t.Fatalf("%v", fs)
	}
	v.Set(tpm2.TPMAlgSHA1, 16, digestOf(3, 20))
	if fs := p.Check(v); len(fs) != 1 || fs[0].Reason != ReasonNotAllowed {
		t.Fatalf("%v", fs)
	}
}

// FuzzParse: no input panics the parser; whatever it accepts has at least
// one PCR, PCRs 0-23 in known banks with digests of their bank's length,
// and reads back the same from its Vigil form; and a policy checks the
// values it allows.
func FuzzParse(f *testing.F) {
	d32, d20 := hexOf(1, 32), hexOf(2, 20)
	for _, seed := range []string{
		`{"22": ["` + hexOf(0, 32) + `", "` + hexOf(0xff, 32) + `"], "15": ["` + d32 + `"], "mask": "0x408000"}`,
		`{"16": "` + d20 + `"}`,
		`{"version": 1, "pcrs": {"sha256": {"16": ["` + d32 + `"]}, "sha1": {"16": ["` + d20 + `"]}}}`,
		`{"version": 1, "pcrs": {"sha384": {"0": ["` + hexOf(3, 48) + `"]}}}`,
		`{"16": [], "mask": "0x0"}`,
		`{"version": 1, "pcrs": {"sha256": {"16": ["` + d32 + `"], "16": ["` + d32 + `"]}}}`,
		`{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		if p.Count() == 0 {
			t.Fatal("accepted a policy with no PCRs")
		}
		quoted := evidence.PCRValues{}
		for _, bank := range p.Banks() {
			h, ok := evidence.HashOf(bank)
			if !ok {
				t.Fatalf("accepted bank %v", bank)
			}
			for _, i := range p.PCRs(bank) {
				if i < 0 || i > MaxPCR {
					t.Fatalf("accepted PCR %d", i)
				}
				vals := p.Allowed(bank, i)
				if len(vals) == 0 {
					t.Fatalf("PCR %d (%v) with no values", i, bank)
				}
				for _, v := range vals {
					if len(v) != h.Size() {
						t.Fatalf("PCR %d (%v): %d-byte value", i, bank, len(v))
					}
				}
				quoted.Set(bank, i, vals[len(vals)-1])
			}
		}
		if fs := p.Check(quoted); len(fs) != 0 {
			t.Fatalf("allowed values fail: %v", fs)
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("its own form %s: %v", out, err)
		}
		again, _ := json.Marshal(back)
		if !bytes.Equal(out, again) {
			t.Fatalf("round trip:\n%s\n%s", out, again)
		}
	})
}
