// Package dashboard is `vigil dashboard`: a read-only web view of a fleet,
// for operators, served from the vigil binary.
//
// It holds no state of its own. Each page is rendered on request from the
// verifier's admin API (with an admin client certificate): the fleet at a
// glance (hosts by state, failed hosts first with their reason, failing
// file and since when, the revocations raised for them and whether each
// webhook got them), one page per host with its status and its history as
// a timeline, and the policies with their versions. Pages are plain HTML
// from html/template, styled by one embedded stylesheet; a few lines of
// embedded JavaScript re-fetch the page's content every few seconds, so
// it updates live without a JavaScript toolchain.
//
// With several verifier replicas, any one answers for the fleet (they
// share one store); the dashboard asks them in turn until one does.
package dashboard
