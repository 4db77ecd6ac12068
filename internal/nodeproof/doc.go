// Package nodeproof is the local protocol by which a process on an
// attesting host (the SPIRE agent's vigil NodeAttestor) asks the host's
// Vigil agent to prove, with a fresh TPM quote, that it runs on the host
// Vigil enrolled.
//
// The model: a remote party (the SPIRE server's vigil plugin) sends a
// random challenge; the local process passes it to the Vigil agent over a
// Unix socket; the agent quotes with its enrolled AK, using as
// qualifyingData not the challenge itself but QualifyingData(challenge), a
// hash under a label of its own. The remote party checks the quote against
// the AK the registrar holds for the claimed agent ID. The label keeps the
// two uses of the AK apart: no quote made for a node proof can answer a
// verifier nonce, and no local caller can obtain a quote over bytes of its
// choosing.
//
// The package holds the wire form (JSON, versioned), its limits and the
// client; the agent serves it and the SPIRE plugins use it. It does no TPM
// work and no verification.
package nodeproof
