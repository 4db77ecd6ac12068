// Package registrar enrolls hosts: it decides which TPMs may join the fleet
// and which attestation key (AK) speaks for each of them.
//
// Enrollment is two round trips. In Register the agent presents its
// endorsement key (EK), the EK certificate if its TPM has one, and a new AK.
// The registrar checks the EK against the EK policy (a certificate chain to
// manufacturer roots, an allowlist of EK hashes, or, only when asked for,
// anything), checks that the AK is a restricted signing key bound to its TPM,
// and answers with a challenge made by TPM2_MakeCredential: a secret that
// only the TPM holding that EK can recover, and only for an object with the
// AK's name. In Activate the agent returns a proof computed from that secret;
// only then is the AK marked active and handed to verifiers.
//
// The EK public key and certificate are public, so a registration proves
// nothing: it is kept as a pending registration beside the agent's active
// AK and never touches it. Only an activation with the right proof makes a
// pending AK the active one. Pending registrations expire at their challenge
// deadline (Service.Sweep, run by Service.Run, removes them, and the records
// they alone kept) and are bounded per EK and in total.
//
// An agent ID is bound to the first EK that registers under it: another EK
// under the same ID is refused and the stored record is left as it was. The
// same EK may register a new AK (for example after a disk wipe); the old AK
// stays active until the new one is activated.
//
// Verifiers follow the set of active AKs through GET /v1/aks, whose etag is
// a generation the store bumps in the transaction that changes that set.
//
// The logic (Service) talks to storage only through the Store interface in
// this package; BoltStore implements it on the embedded store.
package registrar
