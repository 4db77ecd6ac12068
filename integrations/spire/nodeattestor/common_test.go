package nodeattestor

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/registrar/registrarapi"
	"github.com/vigil-attest/vigil/verifier"
)

func TestParsePayload(t *testing.T) {
	good, _ := json.Marshal(Payload{Version: PayloadVersion, AgentID: "host-1"})
	if p, err := ParsePayload(good); err != nil || p.AgentID != "host-1" {
		t.Fatalf("ParsePayload = %+v, %v", p, err)
	}
	for in, want := range map[string]string{
		`{"version":2,"agent_id":"h"}`:    "version 2",
		`{"version":1,"agent_id":"a:b"}`:  "field agent_id",
		`{"version":1,"agent_id":"../x"}`: "field agent_id",
		`{"version":1`:                    "payload",
	} {
		if _, err := ParsePayload([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePayload(%s) = %v, want an error with %q", in, err, want)
		}
	}
}

func TestSelectors(t *testing.T) {
	reg := registrarapi.AgentView{AgentID: "host-1", EKSHA256: "ab12", EKTrust: "chain:root", AKAlg: "rsa"}
	ag := verifier.AgentView{Agent: verifier.Agent{ID: "host-1", RuntimePolicy: "prod", BootPolicy: "fw", PCRPolicy: "luks", PCRPolicyVersion: 2}}
	got := Selectors(reg, ag, map[string]verifier.Policy{"prod": {Name: "prod", Version: 3}, "luks": {Name: "luks", Version: 5}})
	want := []string{"agent_id:host-1", "ek_sha256:ab12", "ek_trust:chain:root", "ak_alg:rsa",
		"runtime_policy:prod", "runtime_policy:prod@3", "boot_policy:fw", "pcr_policy:luks", "pcr_policy:luks@2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("Selectors = %v, want %v", got, want)
	}
	if AgentSPIFFEID("example.org", "host-1") != "spiffe://example.org/spire/agent/vigil/host-1" {
		t.Fatal(AgentSPIFFEID("example.org", "host-1"))
	}
}

func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(`{"version":1,"agent_id":"host-1"}`))
	f.Add([]byte(`{"version":1,"agent_id":"a:b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePayload(b)
		if err == nil && (p.Version != PayloadVersion || CheckAgentID(p.AgentID) != nil) {
			t.Fatalf("accepted %+v", p)
		}
	})
}
