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
// Version 2 adds (a version 1 policy keeps meaning what it meant: these
// checks do not apply to it):
//
//   - post_codes: allowed PCR 0 EV_POST_CODE digests (version 1 holds them
//     to firmware_blobs);
//   - vendor_db: every entry of shim's built-in vendor_db the host logged in
//     PCR 7 must be allowed;
//   - mok, mokx: allowed digests of shim's MokList and MokListX
//     measurements in PCR 14 (the Machine Owner Keys enrolled and revoked);
//     one of each must be there when any is listed, and PCR 14 may hold
//     nothing else but MokListTrusted, MokPolicy and a MokSBState that
//     keeps shim's verification on. They need PCR 14 in the quote;
//   - kernels: allowed boot chains, one of which the host must match: the
//     shim, GRUB and kernel Authenticode digests of PCR 4 in order, the
//     initrd and kernel files GRUB measured into PCR 9, and the command
//     line (see Kernel).
//
// Digests are in the policy's bank; the verifier extracts the boot state in
// that bank. Keylime's measured-boot reference state (mb_refstate, from
// create_mb_refstate or keylime-policy create measured-boot) is read too and
// converted, field by field, into a version 2 policy (see fromKeylime); a
// field that cannot be honoured is refused by name, never dropped. The
// format is documented in docs/policies.md.
package bootpolicy
