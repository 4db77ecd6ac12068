// Package verifier is the attestation engine: it keeps deciding, for every
// admitted host, whether the host can be trusted right now.
//
// Each admitted agent is a small state machine with named states:
//
//	pending    admitted, no evidence yet
//	attesting  the last evidence was good
//	failed     bad evidence, a policy violation or silence past the liveness
//	           deadline; it stays failed until an operator readmits it, or,
//	           failed only for silence, until it sends complete fresh
//	           evidence that passes (AutoRecover)
//	deleted    removed by an operator
//
// Only three things move an agent between states: evidence signed by its
// activated AK over a nonce this verifier issued to it and that has not
// expired; silence past its liveness window; an operator's action. Every
// other request is refused (a *Refusal, mapped to a 4xx) and changes
// nothing. Nonces are stateless (nonce.go), so no request can disturb the
// challenge an agent is answering. The transitions and the events they
// raise are written once, in transitions.go; the lock order is at the top
// of service.go.
//
// New assembles a verifier from a Config (DefaultConfig holds every
// default): the service, its store, metrics, the revocation dispatcher and
// the HTTP API.
//
// Several verifiers may share one store (PostgreSQL) as replicas: each
// holds the agents it has leases on (lease.go, replica.go), takes over a
// dead replica's, and redirects requests for the others'.
//
// An attestation is one round trip started by the agent (hosts need no
// inbound port): the agent asks for a challenge, the verifier answers with a
// fresh single-use nonce, the PCRs to quote and where to resume the IMA list;
// the agent posts a quote over that nonce with the PCR values and the new log
// entries; the verifier answers with the verdict and the next challenge, so in
// steady state one round trip per interval is all there is.
//
// Checking evidence is pure (Engine.Check: no I/O, tested without servers).
// Its input is the agent's record, its AK, the challenge, the evidence and
// the compiled policies; its output is the agent's next record. The checks
// are package verdict's, the pipeline `vigil quote verify` runs too, so the
// same evidence gets the same verdict offline and online: the quote is
// verified with the AK the registrar activated (package evidence), the
// clock counters show whether the host rebooted, the quoted values of the
// PCRs a static PCR policy names (any PCR, any bank; package pcrpolicy)
// must be among its allowed ones, the boot log is replayed against the
// quoted PCRs 0-9 and held to the boot policy, and the new IMA entries are
// verified incrementally from the stored running PCR 10 against the
// runtime policy. A challenge quotes exactly what the agent's policies
// need, in the banks they name (Selection), and its nonce's MAC covers
// that selection, so evidence is never judged by a policy whose PCRs its
// challenge did not ask for. The service around it owns nonces, per-agent
// ordering, persistence, liveness, and the compiled policies: it reads
// each policy from the store once, compiles it, keeps it by name until a
// new version is stored (or, for a version an agent is pinned to, by
// name@version until the policy is deleted), and hands it to the engine.
//
// An operator may change what an admitted agent is checked with (Update):
// the change is stored before it is answered and applies from the next
// verdict, and never changes the agent's state.
//
// While the verifier runs, each agent's record lives in memory and is the
// truth; the store follows. What must survive a crash the moment it is
// decided — a failure and its revocation event, a change of state, an
// operator's action — is stored before it is answered. The progress of an
// agent that keeps attesting (counters, the last quote's clock, how far its
// IMA list is verified) is written by a checkpoint, all changed records in
// one transaction every CheckpointEvery; a crash loses at most that much
// progress, which the restarted verifier re-verifies from the last stored IMA
// entry. Liveness deadlines and the AKs fetched from the registrar live in
// memory too, so a verdict and the liveness sweep read no store.
//
// Verdicts for different agents run in parallel; evidence from one agent is
// processed in order, under that agent's own lock. There is no global lock on
// the hot path: checkpoints take each dirty agent's lock only to copy its
// record.
package verifier
