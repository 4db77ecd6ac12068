// Package nodeattestor is the SPIRE NodeAttestor plugin pair named "vigil":
// a SPIRE agent gets its node identity only while Vigil's verifier says its
// host is attesting.
//
// The agent side (Agent) runs inside spire-agent on the host. It asks the
// local Vigil agent, over its proof socket (package nodeproof), for the
// host's agent ID, sends it as the payload, and answers the server's
// challenge with a proof the Vigil agent makes: a TPM quote by the AK Vigil
// enrolled, over a labelled hash of the challenge.
//
// The server side (Server) runs inside spire-server. Before and after it
// challenges, it asks the Vigil verifier for the host's state and refuses
// any host that is not attesting; it checks the quote against the AK the
// Vigil registrar holds for that agent ID. A host it admits gets the SPIFFE
// ID spiffe://<trust domain>/spire/agent/vigil/<agent id> and selectors
// from Vigil's records (see Selectors). The node is re-attestable, so each
// node SVID rotation asks Vigil again; a revocation bans it at once through
// the bridge (package bridge).
package nodeattestor
