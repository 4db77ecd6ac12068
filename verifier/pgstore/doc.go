// Package pgstore is the verifier's Store on PostgreSQL, for a fleet that
// outgrows one machine or must survive one: several verifier replicas share
// one database. It owns the verifier's tables and their migrations
// (component "verifier" in vigil_schema_migrations) and nothing else; the
// rules about what is stored are the verifier's, and the same contract
// suite (verifier/storetest) holds this backend and the embedded bbolt one
// to the same promises.
//
// # Schema
//
// Records are the verifier's own structs in internal/wire's deterministic
// CBOR, the encoding the bbolt store writes, so an agent is one record
// format whichever backend holds it. Each row says which version of the
// format it holds (format); a build refuses a format it does not know
// rather than misread it. Beside each record are copies of the fields SQL
// selects or indexes on:
//
//	verifier_agents            id PK; state, runtime_policy, boot_policy
//	                           (indexed); format, record
//	verifier_policy_versions   (name, version) PK; kind, sha256; format,
//	                           record (the Policy without its body), body.
//	                           The policy in force is the highest version,
//	                           a backward scan of the primary key.
//	verifier_secrets           name PK; value (e.g. the nonce MAC key)
//	verifier_ping              one row Ping rewrites
//	verifier_outbox            pending revocation events: id PK, agent_id,
//	                           type, added_at; format, event
//	verifier_outbox_status     (event_id → verifier_outbox ON DELETE
//	                           CASCADE, sink) PK; format, status: one row
//	                           per pending event and sink tried
//	verifier_outbox_delivered  delivered events until pruned: id PK,
//	                           agent_id, type, delivered_at_ns (indexed);
//	                           format, event, sinks[], statuses[]
//	verifier_history           agents' history entries, kept after the
//	                           agent is deleted, until pruned: seq PK
//	                           (identity: the order written, the entry's
//	                           Seq), agent_id, at; format, entry. Indexed
//	                           on (agent_id, seq) and at
//
// Pending and delivered events are apart so the dispatcher's rounds read
// only what is left to deliver. Times the contract compares to the
// nanosecond (delivered_at_ns) are Unix nanoseconds, as timestamptz keeps
// microseconds; times inside records keep theirs in the CBOR. A history
// entry's at is a timestamptz, for pruning by age and reading since a
// time; History drops the entries its microsecond lets through but the
// entry's own nanoseconds put before since.
//
// # Costs
//
// A verdict (SaveAgent) is one statement, hence one round trip and one
// commit, with or without events and history: a data-modifying WITH
// updates the agent and inserts its events and history entries only if the
// update found it (and the lease named allowed it). Checkpoint writes up
// to 5,000 agents per UPDATE … FROM unnest(…) statement, with the history
// of those agents, one round trip for a typical checkpoint. CreateAgent
// and DeleteAgent write their history in their own statement too.
// UpdateAgent, used off the hot path, is BEGIN, SELECT … FOR UPDATE, the
// write, COMMIT.
//
// # Failures
//
// Every error is returned, none panics; an error other than ErrNotFound
// and ErrExists means nothing was stored. After PostgreSQL restarts or
// fails over, the first operation to meet a connection the server closed
// empties the pool (its other idle connections are as dead) and, as the
// error says it cannot have committed, is tried once more on a fresh
// connection; UpdateAgent is tried again only if fn has not run yet.
package pgstore
