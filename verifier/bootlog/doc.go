// Package bootlog reads the UEFI measured-boot event log (the TCG PC Client
// log Linux exposes as binary_bios_measurements), replays it, and extracts
// the boot state it describes, trusting nothing the quote does not vouch for.
//
// The log is the firmware's own account of what it measured into PCRs 0-9
// (and 14, shim's MOK state); each event carries the digest that was
// extended, per PCR bank. The TPM keeps only the running hash, so the log is
// believed exactly as far as replaying its digests reproduces the quoted PCR
// values, PCR by PCR and bank by bank:
//
//   - an edited digest, a dropped event or two events of one PCR swapped
//     changes the replayed value, so the replay fails;
//   - event data and types are not measured at all: edited data is caught
//     only where the digest is defined as the hash of the data (Secure Boot
//     variables, separators, GRUB's command lines), which the boot-state
//     extraction checks before using them;
//   - events for PCRs the quote did not cover prove nothing and are never
//     used.
//
// Parsing and extraction are go-eventlog's (tcg, extract); this package adds
// the replay of every bank to values it can print and compare, the strict
// check that a PCR with no events is still at its reset value, and a flat,
// JSON-friendly BootState for policies. Both the crypto-agile and the older
// SHA-1-only log formats are read, raw or base64-encoded.
package bootlog
