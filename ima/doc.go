// Package ima reads the Linux IMA measurement list, checks it against the
// TPM's PCR 10 and judges it against a Keylime-format runtime policy.
//
// # The model
//
// IMA (the kernel's Integrity Measurement Architecture) measures files
// before they are executed, mapped or read, as its policy says. Each
// measurement appends one entry to a list the kernel exports in two forms,
// /sys/kernel/security/ima/ascii_runtime_measurements and
// binary_runtime_measurements, and extends PCR 10 with the entry's template
// digest. An entry is:
//
//	PCR index | template digest | template name | template data
//
// The template data is a sequence of fields the template names (ima-ng is
// "d-ng|n-ng": the file digest as "<algo>:\0<digest>", then the path with a
// NUL). The template digest is a hash over the template data, each field
// preceded by its 32-bit length; the legacy 'ima' template hashes a bare
// SHA-1 digest and the name zero-padded to 256 bytes instead. The logged
// template digest is SHA-1; the kernel extends each PCR bank with the
// template data hashed by that bank's algorithm (since Linux 5.8; earlier
// kernels zero-padded the SHA-1 digest, see ReplayOptions.PadSHA1).
//
// A violation (a file measured while open for writing, or changed between
// measure and use) is logged with an all-zero template digest and extends
// 0xFF..FF instead: the list then proves that something went unmeasured.
// The first entry, boot_aggregate, digests PCRs 0-7 (SHA-1) or 0-9 (other
// banks) and ties the list to the boot.
//
// Nothing in the list is trusted by itself: replaying the template digests
// from a zero PCR must give the PCR 10 value in a TPM quote. Only then are
// the file digests evidence, and the runtime policy decides whether they are
// allowed.
//
// # Using it
//
// Parser reads either form (detected from the content: ASCII, binary
// little-endian, binary big-endian) one entry at a time, reusing its
// buffers so that the hot path does not allocate. Replayer and Replay
// extend PCR banks. Policy is a compiled Keylime runtime policy (path to
// digests, exclude regexes, keyrings, ima-buf, verification keys) whose
// per-entry lookups are O(1). Verify is what a verifier calls on every
// attestation: from a small State (entry count, PCR 10 per bank, keys learned
// from the list) it checks entries N.., finds where the quoted PCR 10 is
// reached (the list may run ahead of the quote), and returns the new State or
// Failures naming entry, path, digest and rule. A State has a compact,
// versioned binary form (MarshalBinary, UnmarshalBinary) that a verifier
// stores after every verdict.
//
// Policies are written the way Keylime's `keylime-policy create runtime`
// writes them: PolicyFromLogWith (a known-good host's list) and
// PolicyFromRootfsWith (a root filesystem tree) make one, RuntimePolicy.Merge
// unions it into a base policy, ParseExcludeList reads an exclude list,
// ReadVerificationKey an IMA signature key, Normalize sorts the result.
// DiffPolicies says what changed between two policies. A boot_aggregate the
// policy does not list is checked against the quoted PCRs 0-9
// (VerifyOptions.BootPCRs), so a policy made from a root filesystem, which
// cannot know it, needs no boot_aggregate digest.
//
// SM3 (sm3-256) digests are recognised and parsed and match policy digests,
// but Vigil does not compute SM3: a template digest logged in SM3 is reported
// as unchecked, and an SM3 PCR bank cannot be replayed (ErrUnsupportedHash).
package ima
