package registrar

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
)

// seedEK is an EK public area as a TPM would produce it from the TCG
// template, with a fresh RSA modulus.
func seedEK(t testing.TB) []byte {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	return tpm2.Marshal(ek)
}

// seedAK is an AK public area from the agent's own template, with a fresh
// RSA modulus.
func seedAK(t testing.TB) []byte {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpmfacts.AKTemplate(tpm2.TPMAlgRSA)
	if err != nil {
		t.Fatal(err)
	}
	ak.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	return tpm2.Marshal(ak)
}

// FuzzRegisterRequest posts arbitrary bodies to the registration endpoint:
// the answer is always a 200, 400 or 403, never a crash or a 500, and a
// refused request stores nothing.
func FuzzRegisterRequest(f *testing.F) {
	ek, ak := seedEK(f), seedAK(f)
	valid, _ := wire.Marshal(wire.RegisterRequest{AgentID: "seed", EKPublic: ek, AKPublic: ak})
	f.Add(valid)
	noID, _ := wire.Marshal(wire.RegisterRequest{EKPublic: ek, AKPublic: ak})
	f.Add(noID)
	swapped, _ := wire.Marshal(wire.RegisterRequest{AgentID: "x", EKPublic: ak, AKPublic: ek})
	f.Add(swapped)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte{0xa1, 0x68, 'a', 'g', 'e', 'n', 't', '_', 'i', 'd', 0x01})
	f.Add([]byte{})

	db, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	st := BoltStore{DB: db}
	h := anyEKRegistrar(f, st).Handler()

	f.Fuzz(func(t *testing.T, body []byte) {
		before, err := st.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, PathRegister, bytes.NewReader(body))
		req.Header.Set("Content-Type", wire.ContentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			return
		case http.StatusBadRequest, http.StatusForbidden:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
		var e wire.Error
		if err := wire.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("refusal without a reason: %v %q", err, rec.Body.Bytes())
		}
		after, err := st.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Fatalf("refused request changed the store: %d -> %d records", len(before), len(after))
		}
	})
}

func TestRegisterRefusesBadInputNamingTheField(t *testing.T) {
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := anyEKRegistrar(t, BoltStore{DB: db}).Handler()
	ek, ak := seedEK(t), seedAK(t)
	unrestricted := func() []byte {
		p, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ak)
		p.ObjectAttributes.Restricted = false
		return tpm2.Marshal(*p)
	}()
	decrypting := func() []byte {
		p, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ak)
		p.ObjectAttributes.Decrypt = true
		return tpm2.Marshal(*p)
	}()
	big := make([]byte, wire.MaxMessage+10)
	wrongType := []byte{0xa1, 0x66, 'e', 'k', '_', 'p', 'u', 'b', 0x05} // ek_pub: 5
	mk := func(r wire.RegisterRequest) []byte { b, _ := wire.Marshal(r); return b }
	for _, tc := range []struct {
		name, want string
		body       []byte
	}{
		{"truncated EK", "ek_pub", mk(wire.RegisterRequest{AgentID: "a", EKPublic: ek[:40], AKPublic: ak})},
		{"AK as EK", "ek_pub", mk(wire.RegisterRequest{AgentID: "a", EKPublic: ak, AKPublic: ak})},
		{"unrestricted AK", "restricted", mk(wire.RegisterRequest{AgentID: "a", EKPublic: ek, AKPublic: unrestricted})},
		{"decrypting AK", "decrypt", mk(wire.RegisterRequest{AgentID: "a", EKPublic: ek, AKPublic: decrypting})},
		{"bad agent ID", "agent_id", mk(wire.RegisterRequest{AgentID: "../etc", EKPublic: ek, AKPublic: ak})},
		{"wrong field type", "ek_pub", wrongType},
		{"over 1 MiB", "too large", big},
		{"not CBOR", "CBOR", []byte("{\"agent_id\":1}")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, PathRegister, bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", wire.ContentType)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var e wire.Error
			wire.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusBadRequest || !bytes.Contains([]byte(e.Error), []byte(tc.want)) {
				t.Errorf("%d %q, want 400 mentioning %q", rec.Code, e.Error, tc.want)
			}
		})
	}
	recs, _ := BoltStore{DB: db}.List(context.Background())
	if len(recs) != 0 {
		t.Errorf("%d records stored by refused requests", len(recs))
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the stored-record decoder: it
// refuses or decodes, never panics, and what it accepts encodes back to a
// record it reads the same.
func FuzzDecodeRecord(f *testing.F) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	rec := Record{
		AgentID: "host-1", EKPublic: seedEK(f), EKSHA256: "ab", EKTrust: "any",
		AKPublic: seedAK(f), AKName: []byte{0, 11, 1, 2}, AKAlg: "rsa", Active: true, ActivatedAt: now,
		ActiveProof: make([]byte, 32), RegisteredAt: now, Enrollments: 1,
		Pending: []Pending{{AKPublic: seedAK(f), AKName: []byte{0, 11, 3}, AKAlg: "rsa", EKTrust: "any", Secret: make([]byte, 32), Deadline: now, RegisteredAt: now}},
	}
	b, err := EncodeRecord(rec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	inactive, _ := EncodeRecord(Record{AgentID: "host-1", RegisteredAt: now})
	f.Add(inactive)
	rec.V = 2
	v2, _ := wire.Marshal(rec)
	f.Add(v2)
	f.Add(b[:len(b)/2])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord("host-1", b)
		if err != nil {
			return
		}
		again, err := EncodeRecord(r)
		if err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
		r2, err := DecodeRecord("host-1", again)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if !reflect.DeepEqual(normalize(r), normalize(r2)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
	})
}

// normalize makes empty and nil byte strings and slices alike, and times
// comparable, for a round-trip comparison.
func normalize(r Record) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// anyEKRegistrar is a registrar over st that takes any EK, so that tests
// of input handling need no EK certificates.
func anyEKRegistrar(t testing.TB, st Store) *Registrar {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Store, cfg.EKPolicy = st, EKPolicy{Mode: EKPolicyAny}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
