// Package agenttest gives end-to-end tests a simulated machine for a Vigil
// agent to run on: a TPM (swtpm, or a soft TPM's state file) plus the boot
// log and IMA list a measured boot would leave, in files the agent reads,
// and the measured files themselves. Tests can then measure more files (a
// tamper), reboot, and write runtime policies that allow what they measured.
//
// It imports testing, so only tests import it; the vigil binary never
// links it.
package agenttest
