package nodeattestor

import (
	"strconv"

	"github.com/vigil-attest/vigil/registrar/registrarapi"
	"github.com/vigil-attest/vigil/verifier"
)

// Selectors are the selector values (type "vigil") a node gets, from the
// registrar's record of its TPM and the verifier's record of its admission:
//
//	agent_id:<agent id>
//	ek_sha256:<hex SHA-256 of the EK public key>
//	ek_trust:<how the EK was trusted: the registrar's ek_trust>
//	ak_alg:<rsa|ecc>
//	runtime_policy:<name>   runtime_policy:<name>@<version>
//	boot_policy:<name>      boot_policy:<name>@<version>
//	pcr_policy:<name>       pcr_policy:<name>@<version>
//
// A policy's version is the one the host is pinned to, or else the
// verifier's latest version of that name at attestation time; entries that
// must follow a policy change name the version.
func Selectors(reg registrarapi.AgentView, ag verifier.AgentView, policies map[string]verifier.Policy) []string {
	out := []string{"agent_id:" + reg.AgentID}
	if reg.EKSHA256 != "" {
		out = append(out, "ek_sha256:"+reg.EKSHA256)
	}
	if reg.EKTrust != "" {
		out = append(out, "ek_trust:"+reg.EKTrust)
	}
	if reg.AKAlg != "" {
		out = append(out, "ak_alg:"+reg.AKAlg)
	}
	for _, p := range []struct {
		kind, name string
		pin        int
	}{
		{"runtime_policy", ag.RuntimePolicy, ag.RuntimePolicyVersion},
		{"boot_policy", ag.BootPolicy, ag.BootPolicyVersion},
		{"pcr_policy", ag.PCRPolicy, ag.PCRPolicyVersion},
	} {
		if p.name == "" {
			continue
		}
		out = append(out, p.kind+":"+p.name)
		if p.pin > 0 {
			out = append(out, p.kind+":"+p.name+"@"+strconv.Itoa(p.pin))
		} else if pol, ok := policies[p.name]; ok {
			out = append(out, p.kind+":"+p.name+"@"+strconv.Itoa(pol.Version))
		}
	}
	return out
}
