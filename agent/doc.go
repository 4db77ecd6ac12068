// Package agent is the host side of Vigil: it owns the host's TPM, proves to
// the registrar that its attestation key (AK) lives in the same TPM as the
// endorsement key (EK), and, once admitted, keeps proving to the verifier what
// booted and what has run since.
//
// The trust the rest of Vigil places in a host rests on three TPM facts the
// agent cannot fake: the EK's certificate chains to a manufacturer (or the EK
// is on an operator's allowlist); the AK was created by the same TPM, which
// the registrar checks by sealing a secret to the EK that only that TPM can
// unseal for that AK's name (credential activation); and quotes signed by the
// AK carry a verifier nonce, so they are fresh.
//
// The agent reaches the TPM only through the TPM interface, opened afresh for
// each operation and closed after it.
package agent
