// Package tpmsimtest ties the TPMs of package tpmsim to a test's lifetime:
// each is started in the test's temp dir and stopped when the test ends,
// whether it passes or not, and a test that needs swtpm where it is missing
// is skipped, or failed under VIGIL_REQUIRE_SWTPM=1. It imports testing, so
// only tests import it; the vigil binary links none of it.
package tpmsimtest
