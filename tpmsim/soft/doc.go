// Package soft is a pure-Go model of the part of a TPM 2.0 that remote
// attestation uses, so that one process can stand in for thousands of hosts.
// It is a simulation for tests, demos and load generation: its keys live in
// ordinary memory (and, for a file-backed TPM, in a file), so nothing it
// attests is evidence about real hardware. Never make it a default outside
// the demo and the bench.
//
// What it models, and why each piece looks the way it does:
//
// Endorsement keys. A real TPM derives its EK from the endorsement seed and
// the TCG default template, and the manufacturer signs a certificate for it
// at the factory. A soft TPM is "manufactured" by New (or Create for a file):
// it generates an RSA-2048 and/or ECC P-256 key, fills the unique field of
// tpm2.RSAEKTemplate / tpm2.ECCEKTemplate with it, and lets a Manufacturer
// (a CA the test or demo controls) issue the EK certificate with the TCG
// essentials: empty subject, a critical subjectAltName whose directoryName
// holds TPM manufacturer, model and version, the tcg-kp-EKCertificate EKU and
// the TPM specification in subjectDirectoryAttributes. The EK's name is
// tpm2.ObjectName of that public area, exactly as a TPM computes it.
//
// Attestation keys. CreateAK makes a restricted signing key (RSA-2048
// RSASSA-SHA256 or ECC P-256 ECDSA-SHA256; fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, nameAlg SHA-256) "under" an EK and
// returns it as TPM2_Create does: the public area and an opaque private blob.
// The blob is the key sealed with AES-256-GCM under a key derived from a
// secret only this TPM holds and from the parent EK's name, with the AK's own
// name as additional data. So, as with a real TPM, only the same TPM can load
// it, only under the same EK, and only with the public area it was made with.
//
// Credential activation follows TPM 2.0 Part 1 §24: the registrar's
// tpm2.CreateCredential seals a seed to the EK (RSA-OAEP-SHA256 with label
// "IDENTITY\x00", or ECDH with KDFe for ECC EKs); the TPM recovers the seed,
// checks the outer HMAC (KDFa "INTEGRITY") over the encrypted credential and
// the AK's name, and only then decrypts the credential with AES-128-CFB under
// KDFa("STORAGE", name). A wrong AK, EK or tampered blob is refused.
//
// PCRs and quotes. The TPM has SHA-1 and SHA-256 banks of 24 PCRs, reset as a
// PC-client TPM resets them (0 for PCRs 0-16 and 23, all ones for the D-RTM
// PCRs 17-22). Quote builds the TPMS_ATTEST a TPM builds — magic, type
// TPM_ST_ATTEST_QUOTE, the AK's qualified name, the nonce as extraData, clock
// info, firmware version, the PCR selection and the digest of the selected
// PCRs in selection order — marshals it with tpm2.Marshal and signs the hash
// of those bytes. Because the AK lives in the endorsement hierarchy, the
// clock info and firmware version are not obfuscated, so a verifier can use
// resetCount and restartCount to detect reboots: Reboot moves resetCount on
// (the clock keeps running, as it does on a TPM), Resume moves restartCount.
//
// Connections. A TPM is safe for concurrent use. Conn returns a connection
// object whose methods match the agent's TPM interface; closing it leaves the
// TPM alone, the way closing /dev/tpmrm0 leaves the chip alone.
//
// Persistence. A TPM can be saved to a state file (secret, EKs and their
// certificates, PCRs, counters, clock). Open(path) gives a file-backed TPM
// that reloads the file before and saves it after each operation, under a
// lock, so separate processes (an agent, `vigil sim ima`) share one simulated
// TPM the way they would share a real one.
//
// Fleets. New costs one key generation per EK and per AK. ECC keys take tens
// of microseconds; RSA-2048 keys take tens of milliseconds, so a KeyCache
// hands out pre-generated RSA keys from a directory, deterministically per
// host index and purpose. The keys are real and distinct per host and
// purpose, the certificates and AK blobs are made fresh, and nothing a
// registrar or verifier checks is weakened: only key generation is skipped.
package soft
