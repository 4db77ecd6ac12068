// Package bootpolicy is Vigil's measured-boot policy: the reference a
// verified boot state (bootlog.BootState) is held to, its JSON format, its
// evaluation and its generation from a known-good host's event log.
//
// A policy is deny by default. Every check is on unless the policy names it
// in "skip", and an allow-list that is empty allows nothing: a policy that
// forgets the boot loader fails every host rather than admitting any. The
// checks:
//
//   - secure_boot: "enabled", "disabled" or "any";
//   - scrtm, firmware_blobs: allowed digests of the S-CRTM version event and
//     of the platform firmware volumes in PCR 0;
//   - pk, kek, db: every entry of the host's database must be allowed
//     (certificates by the SHA-256 of their DER, hashes by their hex);
//   - dbx: every listed revocation must be present on the host, so a host
//     that missed a dbx update fails;
//   - boot_digests: every code digest extended into PCR 4 (shim, GRUB,
//     kernel, any other EFI application) must be allowed;
//   - kernel_cmdline: a regular expression (RE2) the whole command line GRUB
//     measured must match.
//
// Digests are in the policy's bank; the verifier extracts the boot state in
// that bank. Keylime's measured-boot reference state (mb_refstate, from
// create_mb_refstate or keylime-policy create measured-boot) is read too and
// converted. The format is documented in docs/policies.md.
package bootpolicy
