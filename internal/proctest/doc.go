// Package proctest runs programs for tests: services a test starts as
// processes of their own, as they run in production, and must not outlive
// it. Start puts each in a process group of its own (so that stopping it
// stops what it started, such as SPIRE's plugins), has the kernel kill it
// if the test binary dies first, stops the group when the test ends, pass
// or fail, and logs the end of its output when the test failed. It is for
// tests only; both the vigil command's tests and the SPIRE module's
// end-to-end test use it.
package proctest
