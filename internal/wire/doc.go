// Package wire defines the messages agents exchange with the registrar and
// the verifier, and their one encoding: CBOR (application/cbor), decoded
// strictly. TPM structures travel as the bytes the TPM produced (marshalled
// TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE, ...), never re-encoded, so what the
// verifier checks is exactly what the TPM signed.
//
// Decoding refuses unknown fields, duplicate keys, trailing data and bodies
// over a size limit, and names the offending field in its error, so a bad
// request gets an HTTP 400 that says what was wrong.
//
// The messages of every attestation (Evidence, Verdict, Challenge) are
// encoded and decoded by hand, to and from the bytes the general
// (reflective) codec would write and read: Marshal and Unmarshal use the
// hand-written paths themselves, and the hand-written decoders leave
// anything unexpected to the general decoder. Callers that attest in a loop
// can use them without allocating: AppendEvidence and EvidenceEncoder
// encode evidence into a reused buffer, ReadVerdictView and
// ReadChallengeView read answers in place.
package wire
