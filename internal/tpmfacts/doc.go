// Package tpmfacts holds the facts about TPMs and agents that both sides
// of an attestation rely on and that must therefore be written once: the
// template of an attestation key (the agent asks a TPM for it, the soft TPM
// makes it, the registrar checks what it yields), the rule for agent IDs
// (the registrar enrolls under them, the verifier admits them), and the
// short names of key algorithms and PCR banks. It is a leaf: it imports go-tpm and
// nothing of Vigil's.
package tpmfacts
