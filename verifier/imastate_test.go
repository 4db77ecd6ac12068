package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/wire"
)

func sampleStates(t testing.TB) []ima.State {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return []ima.State{
		ima.NewState(ima.SHA256),
		ima.NewState(ima.SHA1, ima.SHA256),
		{Entries: 1 << 40, PCR10: map[string]ima.HexBytes{"sha256": bytes.Repeat([]byte{0xaa}, 32)}},
		{Entries: 3, PCR10: map[string]ima.HexBytes{"sha1": bytes.Repeat([]byte{1}, 20), "sha256": bytes.Repeat([]byte{2}, 32)},
			Keys: []ima.StateKey{{Keyring: ".ima", KeyID: 0xdeadbeef, DER: der}, {Keyring: "_evm", KeyID: 1, DER: der}}},
	}
}

func TestIMAStateRoundTrip(t *testing.T) {
	for i, st := range sampleStates(t) {
		b := mustState(t, st)
		if b[0] != imaStateV1 {
			t.Fatalf("state %d: first byte %#x", i, b[0])
		}
		got, err := decodeIMAState(b)
		if err != nil {
			t.Fatalf("state %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("state %d: got %+v, want %+v", i, got, st)
		}
		if again := mustState(t, got); !bytes.Equal(again, b) {
			t.Errorf("state %d: encoding is not stable: % x then % x", i, b, again)
		}
	}
}

// States stored in CBOR before the binary form existed are still read: a
// verifier upgraded in place keeps checking its agents incrementally.
func TestIMAStateReadsStoredCBOR(t *testing.T) {
	for i, st := range sampleStates(t) {
		old, err := wire.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeIMAState(old)
		if err != nil {
			t.Fatalf("state %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("state %d: got %+v, want %+v", i, got, st)
		}
	}
}

// A state beyond the binary form's limits is kept in CBOR, and read back.
func TestIMAStateTooLargeForBinaryForm(t *testing.T) {
	st := ima.State{Entries: 9, PCR10: map[string]ima.HexBytes{}}
	for i := range maxStateBanks + 1 {
		st.PCR10[strings.Repeat("x", i+1)] = []byte{byte(i)}
	}
	b := mustState(t, st)
	if b[0] == imaStateV1 {
		t.Fatal("written in the binary form")
	}
	got, err := decodeIMAState(b)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestIMAStateBadInput(t *testing.T) {
	good := mustState(t, sampleStates(t)[3])
	// Every proper prefix is refused, naming a byte offset.
	for n := range len(good) {
		if _, err := decodeIMAState(good[:n]); err == nil || !strings.Contains(err.Error(), "byte offset") {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	twice := []byte{imaStateV1, 0, 2, 4, 's', 'h', 'a', '1', 1, 0, 4, 's', 'h', 'a', '1', 1, 0, 0}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"trailing", append(append([]byte{}, good...), 0), "trailing"},
		{"another version", append([]byte{0x02}, good[1:]...), "CBOR form"},
		{"bank twice", twice, "given twice"},
		{"too many banks", []byte{imaStateV1, 0, 200}, "at most"},
		{"key count beyond the data", []byte{imaStateV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "cannot fit"},
		{"keyring longer than the state", []byte{imaStateV1, 0, 0, 1, 0xff, 0x0f, 0, 0, 0, 0, 0}, "keyring length"},
		{"overlong varint", append([]byte{imaStateV1}, bytes.Repeat([]byte{0xff}, 11)...), "varint"},
		{"not CBOR either", []byte{0xa1, 0xff}, "CBOR form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeIMAState(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzIMAState: any stored bytes give a state or an error, never a panic;
// a state that decodes survives a round trip through the binary form.
func FuzzIMAState(f *testing.F) {
	for _, st := range sampleStates(f) {
		f.Add(mustState(f, st))
		old, _ := wire.Marshal(st)
		f.Add(old)
	}
	f.Add([]byte{imaStateV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeIMAState(b)
		if err != nil {
			return
		}
		// States the binary form cannot hold come back through CBOR.
		back, err := decodeIMAState(mustState(t, st))
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalState(back), normalState(st)) {
			t.Fatalf("round trip changed the state: %+v became %+v", st, back)
		}
	})
}

func mustState(t testing.TB, st ima.State) []byte {
	t.Helper()
	b, err := appendIMAState(nil, st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// normalState maps empty and nil slices together: the binary form does
// not tell them apart, and nothing reading a state does either.
func normalState(st ima.State) ima.State {
	out := ima.State{Entries: st.Entries, PCR10: map[string]ima.HexBytes{}}
	for k, v := range st.PCR10 {
		out.PCR10[k] = append(ima.HexBytes{}, v...)
	}
	for _, k := range st.Keys {
		out.Keys = append(out.Keys, ima.StateKey{Keyring: k.Keyring, KeyID: k.KeyID, DER: append(ima.HexBytes{}, k.DER...)})
	}
	return out
}

// An agent whose state was stored in CBOR by an older verifier keeps
// attesting incrementally, and its state is rewritten in the binary form.
func TestEngineContinuesFromCBORState(t *testing.T) {
	svc, _ := newTestService(t)
	h := newHotHost(t, svc, tpm2.TPMAlgECC)
	now := time.Now()
	a := h.agent
	for i, form := range []string{"binary", "cbor", "binary"} {
		ask := asked(a, "nonce-"+form+string(rune('0'+i)))
		out, err := verdictOnce(&Engine{}, svc.policies.resolve(context.Background(), svc.Store, a), a, h.key, ask, h.evidence(t, ask, 5), &discard{h: make(map[string][]string)}, now)
		if err != nil {
			t.Fatalf("attestation %d: %v", i, err)
		}
		a = out.Agent
		if a.IMAState[0] != imaStateV1 {
			t.Fatalf("attestation %d stored a state in another form: % x", i, a.IMAState)
		}
		if form == "cbor" {
			st, err := decodeIMAState(a.IMAState)
			if err != nil {
				t.Fatal(err)
			}
			if a.IMAState, err = wire.Marshal(st); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a.IMAEntries != 1+3*5 {
		t.Fatalf("%d entries verified, want 16", a.IMAEntries)
	}
}
