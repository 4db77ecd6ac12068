package ima

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"reflect"
	"strings"
	"testing"
)

func sampleStates(t testing.TB) []State {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return []State{
		NewState(SHA256),
		NewState(SHA1, SHA256),
		{Entries: 1 << 40, PCR10: map[string]HexBytes{"sha256": bytes.Repeat([]byte{0xaa}, 32)}},
		{Entries: 3, PCR10: map[string]HexBytes{"sha1": bytes.Repeat([]byte{1}, 20), "sha256": bytes.Repeat([]byte{2}, 32)},
			Keys: []StateKey{{Keyring: ".ima", KeyID: 0xdeadbeef, DER: der}, {Keyring: "_evm", KeyID: 1, DER: der}}},
	}
}

func mustBinary(t testing.TB, st State) []byte {
	t.Helper()
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStateBinaryRoundTrip(t *testing.T) {
	for i, st := range sampleStates(t) {
		b := mustBinary(t, st)
		if b[0] != stateV1 {
			t.Fatalf("state %d: first byte %#x", i, b[0])
		}
		var got State
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("state %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("state %d: got %+v, want %+v", i, got, st)
		}
		if again := mustBinary(t, got); !bytes.Equal(again, b) {
			t.Errorf("state %d: encoding is not stable: % x then % x", i, b, again)
		}
	}
}

// A state beyond the binary form's limits is an error, not a silent
// truncation.
func TestStateTooLargeForBinaryForm(t *testing.T) {
	st := State{Entries: 9, PCR10: map[string]HexBytes{}}
	for i := range maxStateBanks + 1 {
		st.PCR10[strings.Repeat("x", i+1)] = []byte{byte(i)}
	}
	if _, err := st.MarshalBinary(); err == nil {
		t.Fatal("a state of too many banks was encoded")
	}
}

func TestStateBinaryBadInput(t *testing.T) {
	good := mustBinary(t, sampleStates(t)[3])
	// Every proper prefix is refused, naming a byte offset.
	for n := range len(good) {
		var st State
		if err := st.UnmarshalBinary(good[:n]); err == nil || !strings.Contains(err.Error(), "byte offset") {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	twice := []byte{stateV1, 0, 2, 4, 's', 'h', 'a', '1', 1, 0, 4, 's', 'h', 'a', '1', 1, 0, 0}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"trailing", append(append([]byte{}, good...), 0), "trailing"},
		{"another version", append([]byte{0x02}, good[1:]...), "format version"},
		{"bank twice", twice, "given twice"},
		{"too many banks", []byte{stateV1, 0, 200}, "at most"},
		{"key count beyond the data", []byte{stateV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "cannot fit"},
		{"keyring longer than the state", []byte{stateV1, 0, 0, 1, 0xff, 0x0f, 0, 0, 0, 0, 0}, "keyring length"},
		{"overlong varint", append([]byte{stateV1}, bytes.Repeat([]byte{0xff}, 11)...), "varint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st State
			if err := st.UnmarshalBinary(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzStateBinary: any stored bytes give a state or an error, never a
// panic; a state that decodes survives a round trip.
func FuzzStateBinary(f *testing.F) {
	for _, st := range sampleStates(f) {
		f.Add(mustBinary(f, st))
	}
	f.Add([]byte{stateV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var st State
		if err := st.UnmarshalBinary(b); err != nil {
			return
		}
		var back State
		if err := back.UnmarshalBinary(mustBinary(t, st)); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalState(back), normalState(st)) {
			t.Fatalf("round trip changed the state: %+v became %+v", st, back)
		}
	})
}

// normalState maps empty and nil slices together: the binary form does
// not tell them apart, and nothing reading a state does either.
func normalState(st State) State {
	out := State{Entries: st.Entries, PCR10: map[string]HexBytes{}}
	for k, v := range st.PCR10 {
		out.PCR10[k] = append(HexBytes{}, v...)
	}
	for _, k := range st.Keys {
		out.Keys = append(out.Keys, StateKey{Keyring: k.Keyring, KeyID: k.KeyID, DER: append(HexBytes{}, k.DER...)})
	}
	return out
}
