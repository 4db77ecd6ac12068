package nodeproof

import (
	"encoding/json"
	"testing"
)

func FuzzParse(f *testing.F) {
	req, _ := json.Marshal(Request{Version: Version, Challenge: make([]byte, 32)})
	proof, _ := json.Marshal(Proof{Version: Version, AgentID: "host-1", Attest: []byte{1}, Signature: []byte{2}})
	f.Add(req)
	f.Add(proof)
	f.Add([]byte(`{"version":1,"challenge":"AAAA"}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseRequest(b); err == nil {
			if CheckChallenge(r.Challenge) != nil || r.Version != Version {
				t.Fatalf("accepted a bad request %+v", r)
			}
		}
		if p, err := ParseProof(b); err == nil {
			if p.Version != Version || len(p.Attest) == 0 || len(p.Signature) == 0 {
				t.Fatalf("accepted a bad proof %+v", p)
			}
		}
	})
}
