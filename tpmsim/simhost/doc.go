// Package simhost fakes the measurements of a Linux host on a TPM: the
// UEFI measured boot (firmware, Secure Boot, shim, GRUB, kernel) and the
// IMA measurement list, for tests, the demo and people trying Vigil without
// hardware. It is a simulation: nothing here measures real code.
//
// # The model
//
// A real host keeps two accounts of what it ran, and a TPM vouches for
// both. Firmware and boot loaders append events to the UEFI event log and
// extend each event's digests into PCRs 0-9, one digest per PCR bank; the
// kernel appends IMA entries to its measurement list and extends PCR 10
// with each entry's template digest. A verifier believes a log exactly as
// far as replaying its digests gives the quoted PCRs.
//
// The simulated host does what those programs do, byte for byte in the
// structures and in the same order of "log, then extend":
//
//   - NewBootLog builds a crypto-agile TCG PC Client event log (SHA-1 and
//     SHA-256) of a UEFI + shim + GRUB + Linux boot, with real
//     UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST, UEFI_IMAGE_LOAD_EVENT and GRUB
//     events; BootLog.Boot extends its digests into a TPM that has just
//     reset and checks that the PCRs then equal the replay.
//   - IMALog.Init writes the boot_aggregate entry (the SHA-256 of PCRs 0-9,
//     as ima_calc_boot_aggregate computes it for a SHA-256 bank);
//     IMALog.Append appends ima-ng entries for files and extends PCR 10 in
//     both banks with the hash of each entry's template data, as Linux 5.8
//     and later do.
//
// # What is not real
//
// The content of every firmware volume and program is a stand-in derived
// from a seed, and so are the Secure Boot certificates (ECDSA P-256 keys
// derived from the seed, signed deterministically): the same seed gives
// the same log to the byte, so one boot policy fits a whole simulated
// fleet, and the keys are as public as the seed. Image digests stand for
// Authenticode hashes without being ones. Shim's MOK measurements (PCR 14)
// are made only when BootConfig.MOK asks for them; the GPT event is left
// out. The files IMA measures are real files,
// hashed for real.
//
// The TPM is reached through the small interfaces PCRExtender and
// PCRReader, which the agent's TPM satisfies, so that tpmsim does not
// import the agent (the agent imports tpmsim).
package simhost
