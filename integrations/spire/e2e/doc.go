// Package e2e tests Vigil's SPIRE integration end to end: real
// spire-server and spire-agent, built from the Go module proxy at the
// release this module pins, with the vigil NodeAttestor and the bridge,
// against a Vigil registrar, verifier and agent on swtpm.
//
// The SPIRE binaries are installed once per machine into the user cache
// directory (go install skips the work when they are up to date), so a
// second run costs seconds, not the minutes of the first build.
package e2e
