// Package bench is `vigil bench`: it measures what one verifier costs per
// verdict when a fleet attests to it, so that people sizing a deployment can
// run it on their own machine.
//
// The model. A run builds a whole deployment on loopback: a private CA, a
// simulated TPM manufacturer, a registrar (in this process) and the verifier
// under test, then N simulated hosts. Each host is a soft TPM
// (tpmsim/soft) booted with the same simulated measured boot (tpmsim/simhost)
// and an IMA list of its own. Hosts enroll through the agent's own Enroller
// (EK certificate checked against the manufacturer, AK activated) and are
// admitted with one runtime policy listing a pool of files; no boot policy is
// set, so a steady-state verdict is a quote check plus an incremental IMA
// check, which is what a verifier spends its life doing. Each host then
// attests every interval over its own keep-alive HTTPS connection, as a
// fleet of separate machines would, one HTTPS request per attestation, and
// appends K new entries (files in the policy) to its IMA list before each
// quote.
//
// Two load generators make that traffic. The lean one (lean.go, the
// default) is built to cost the machine little, so that one machine can
// drive a verifier to saturation beside it: each host's IMA list is in
// memory (simhost.MemIMALog, entries numbered into one shared table of
// pre-encoded records), quotes come from soft.TPM.QuoteTo (marshalled by
// hand into reused buffers), evidence is encoded and verdicts are read by
// internal/wire's hand-written codec without a copy into wire's types
// (cbor.go), and requests go through a minimal HTTP/1.1
// client on the host's TLS connection (leanhttp.go) whose socket calls are
// raw (rawconn_linux.go: they do not wake the runtime's sysmon thread),
// with few allocations per attestation. The message-independent half of
// each ECDSA quote signature (k·G, k⁻¹) is made before each window
// (soft.TPM.PrepareSignatures). Hosts attest on a shared schedule (host i
// at φᵢ·interval + k·interval, φᵢ a random phase of its own), so the rate
// offered is exactly n ÷ interval and arrivals are those of independent
// machines. The agent generator runs the agent's own
// Attester.Collect and net/http client over IMA lists in files, with only
// the loop around it the bench's; replicas use it, because their failover
// is the agent's. TestLeanEvidenceIsTheAgents holds the two to the same
// evidence and request.
//
// Rates (rate.go). With Options.Rates, a run measures one window per rate,
// pacing the hosts at hosts ÷ rate; Options.Sweep doubles the rate until a
// step falls short of what it offered. Each step reports the verifier's CPU
// per verdict and in cores, the generator's CPU per attestation and in
// cores, the rest of the machine's CPU (/proc/stat), latency, errors, and a
// judgement of what held the rate back (judgeLimit).
//
// Presigning (presign.go, Options.Presign, `--presign`). An RSA-2048
// quote signature costs the soft TPM ~1.1 ms of CPU, more than a verdict
// costs the verifier, so a generator that signs in the window is the
// limit long before the verifier is. With Presign every request of a step
// is made before it: each host fetches from the verifier, in order, the
// challenges it will answer over the step's settling and window (and some
// slack), on the agent's challenge endpoint; then host by host, over
// GOMAXPROCS workers, each attestation's IMA entries are appended, its
// quote signed over its challenge's nonce and its evidence encoded (IMA
// entries from the offset the verifier will be at by then), and the
// request kept as bytes. In the window the hosts send them on the
// schedule and read and count each verdict as the lean loop does; a
// refusal (a replayed or expired nonce, an IMA offset that does not
// match) or a failing verdict is an error. Nonces are stateless and
// ordered, so answering them in the order fetched is valid once each. The
// verifier's work per verdict is unchanged (it still checks everything and
// mints the next challenge, unused); the generator's CPU per attestation is
// the window's only, sending bytes and reading verdicts. So that every
// nonce outlives presigning (up to presignBudget), settling and window, and
// no host falls silent while the fleet presigns, the hosts are admitted
// with an interval of half that span, rounded up to a minute: the
// verifier's nonce lifetime is max(30 s, 2 intervals) and its liveness
// window 3 intervals (the verifier's default interval, which paces its
// background work, is left as it is). A window too long for the
// verifier's longest interval is refused, and so is a step whose requests
// would exceed 2 GiB; after presigning, the time left is checked against
// the lifetime the challenges state. Each step reports how many requests
// were presigned, their size, and how long and how much CPU it took.
// ECDSA nonces are not prepared under it: nothing is signed in the window.
//
// Fleet start-up is cheap: EKs are ECC (tens of microseconds each), AKs ECC
// by default, and RSA AKs come from a soft.KeyCache that survives runs.
// Nothing the registrar or verifier checks is skipped: every EK
// certificate, activation, quote and IMA entry is checked as in
// production.
//
// What is measured, and how honestly. Each host starts attesting once it is
// admitted, at its own phase within one interval; warm-up lasts until every
// host has passed its first attestation (which reads its list from entry 0
// over a new connection), then one interval more, and the window opens. Verdicts and latencies count only inside the window.
// Latency is the agent's evidence round trip; the verifier's own time
// (evidence received to verdict stored) is reported beside it, because on a
// shared machine the difference is the load generator's queueing, not the
// verifier's. The verifier runs as a child process (the hidden
// `vigil bench verifier-process`), so its CPU is its own: utime+stime from
// /proc/PID/stat at both ends of the window, and its peak RSS is VmHWM. The
// load generator (soft TPM signatures, agents, registrar) still shares the
// machine's cores, so verdicts/s and latency are this machine's under both
// loads; CPU per verdict is the figure that transfers. With the verifier in
// this process (tests, --in-process) the CPU reported is the whole process's
// and says so.
//
// The child also serves net/http/pprof on a loopback port, so a run can
// profile the verifier alone over exactly the window (Options.CPUProfile).
//
// External mode (Options.VerifierURL) benchmarks a registrar and verifier
// an operator started, on this machine or another: the bench starts no
// service, only the fleet. It needs what an operator has: the deployment's
// TLS directory (CA, admin certificate) to admit hosts, and a registrar
// that trusts the soft TPMs' EK certificates. The honest way is a
// simulated manufacturer made once (InitEKCA, `vigil bench ek-ca DIR`)
// whose certificate the registrar gets as --ek-roots, so every EK is still
// checked against a chain; a registrar with --ek-policy any also works, as
// a trial. The verifier's CPU is then read from /proc/PID/stat when its
// PID is given, else from process_cpu_seconds_total on its own /metrics
// (client_golang's process collector reads the same /proc file from
// inside), and its peak RSS is VmHWM or the largest
// process_resident_memory_bytes seen. Its own verdict times come from its
// latency histogram, so they are estimates within buckets. Each run names
// its agents and policy with a random prefix, because the deployment
// outlives the run, and deletes them from both services at the end.
package bench
