// Package tpmsim provides TPMs and hosts for tests, demos and load: real TPM
// implementations to test against, never mocks of one.
//
// Swtpm runs the swtpm emulator (Debian package swtpm) as a child process on
// loopback TCP, manufactured by swtpm_setup with SHA-1 and SHA-256 PCR banks,
// RSA and ECC EKs, and EK certificates issued by a local CA whose directory the
// caller chooses, so a test can treat that CA as the "manufacturer" root. Each
// instance is a separate process with separate state; many can run at once.
// NewTestSwtpm ties one to a test's lifetime.
//
// The in-process simulator (go-tpm-tools' build of the Microsoft reference
// TPM) needs cgo and is a process-wide singleton; it is opened through
// OpenSimulator, which reports an error in binaries built without cgo.
//
// Subpackage soft is a pure-Go TPM model for simulating thousands of hosts in
// one process.
package tpmsim
