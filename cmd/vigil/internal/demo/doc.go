// Package demo runs Vigil end to end in one process, on loopback, with
// nothing but Go: a registrar and a verifier with embedded stores in a
// temporary directory, and simulated hosts, each with its own soft TPM
// (tpmsim/soft) whose EK certificate comes from a simulated manufacturer the
// registrar is told to trust. It is what `make demo` shows a newcomer, so its
// output is written for a person.
package demo
