package registrarapi

import (
	"testing"

	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// FuzzDecodeAKList feeds arbitrary bytes to the change feed's client-side
// decoder: it refuses or decodes, never panics, and every entry it accepts
// is a valid agent ID with a non-empty AK name.
func FuzzDecodeAKList(f *testing.F) {
	f.Add([]byte(`{"version":1,"etag":"0a0b.3","agents":[{"agent_id":"a","ak_name":"000b01"},{"agent_id":"b","ak_name":"000b02"}]}`))
	f.Add([]byte(`{"version":1,"etag":"0","agents":[]}`))
	f.Add([]byte(`{"version":2,"etag":"0","agents":[]}`))
	f.Add([]byte(`{"version":1,"etag":"0","agents":[{"agent_id":"a","ak_name":"zz"}]}`))
	f.Add([]byte(`{"version":1,"etag":"0","agents":[{"agent_id":"a","ak_name":"00"},{"agent_id":"a","ak_name":"00"}]}`))
	f.Add([]byte(`{"version":1,"etag":"0","agents":null} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		aks, etag, err := DecodeAKList(b)
		if err != nil {
			return
		}
		if etag == "" {
			t.Fatal("accepted an empty etag")
		}
		for id, name := range aks {
			if !tpmfacts.ValidAgentID(id) || len(name) == 0 {
				t.Fatalf("accepted entry %q → %x", id, name)
			}
		}
	})
}
