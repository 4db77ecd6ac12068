// Package evidence decides whether a TPM quote can be believed: it is the
// first, pure step of every attestation, before any event log or policy is
// looked at.
//
// A quote is a TPMS_ATTEST that the TPM built and signed with an attestation
// key (AK). Everything else the verifier learns rests on it:
//
//   - the signature, by the AK the registrar enrolled, proves a TPM holding
//     that key produced the structure (and, because the AK is restricted, that
//     the TPM itself wrote it: a restricted key refuses to sign data that
//     starts with TPM_GENERATED_VALUE);
//   - extraData must be the verifier's fresh nonce, so the quote is not a
//     replay of an older one;
//   - pcrDigest is a hash of the PCR values the TPM held for the quoted
//     selection, so the PCR values an agent sends alongside are trusted only
//     when they hash to it, and only for the PCRs the quote selects;
//   - clockInfo (clock, resetCount, restartCount) moves forward within one
//     boot; a change of resetCount or restartCount is a reboot, which demands
//     a fresh boot log and an IMA list from its start, and a step back is a
//     rollback, which nothing honest produces.
//
// Every failure is a *Failure with a Reason from a fixed vocabulary
// (bad_signature, nonce_mismatch, pcr_digest_mismatch, ...), so callers,
// operators and revocation events can tell one forgery from another. The
// checks never panic on malformed input and never allocate from a length
// field beyond the input's own size.
//
// The AK is created under the endorsement hierarchy: quotes by keys in the
// owner or platform hierarchy carry obfuscated resetCount, restartCount and
// firmwareVersion, which would defeat reboot detection.
package evidence
