// Package verdict is Vigil's one evidence pipeline: the quote check, the
// static PCR policy, the mapping of TPM banks to IMA's, the choice of boot
// PCRs, the boot-log replay and boot policy, the IMA replay and runtime
// policy, and the classification of every failure (a policy violation, or
// evidence that does not hold together; and, among the latter, what leaves
// open who made the quote).
//
// Both judges of evidence call it, so that the same evidence gets the same
// verdict offline and online. The verifier's engine calls the stages one by
// one for each attestation, around what only a running verifier has: the
// nonce it issued, the agent's last clock, its incremental IMA state. `vigil
// quote verify` calls Judge, which runs every stage once on files and keeps
// every failure for its report; its verdict is the first of them, which is
// the one the engine stops at.
//
// Nothing here reads a store or a clock: compiled policies are inputs.
package verdict
