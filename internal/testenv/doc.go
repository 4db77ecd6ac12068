// Package testenv tells tests where the outside world is: the shared
// real-world test data (logs and policies from real machines) and whether
// tests that need external pieces, such as swtpm, may skip or must fail.
//
// CI sets VIGIL_REQUIRE_SWTPM=1. There a missing piece is an error, because a
// skipped test proves nothing; on a developer's machine it is a skip with a
// message saying what to install.
package testenv
