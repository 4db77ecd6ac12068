// Package pgstore is the registrar's Store on PostgreSQL, for a fleet that
// runs several registrar replicas over one database. The replicas keep
// nothing of their own: every record, every index of the records and the
// generation of the set of active AKs are in the database, so any replica
// answers any request and a restarted one has lost nothing.
//
// It owns the registrar's schema (component "registrar" in
// vigil_schema_migrations, migrations/NNN_*.sql, applied by Open through
// internal/pgdb) and nothing else in the database. It decides nothing about
// registrations: which ones count, what expires and which AK is active are
// the Service's decisions, written into the records; this package keeps
// them and indexes them, and passes registrar/storetest like the bbolt
// store does.
//
// # Schema
//
// registrar_records holds one row per agent: the record itself, encoded by
// registrar.EncodeRecord exactly as the bbolt store does (versioned CBOR, so
// a record's format is the registrar's, not this package's), and beside it
// the columns queries need: ek_sha256, and active_ak, the active AK's name
// or NULL. The set of active AKs (the verifiers' feed) is the rows with
// active_ak set, read through a partial covering index.
//
// registrar_pending holds one row per pending registration (agent_id, its
// index seq in the record's Pending list, the EK hash, the AK name, the
// deadline in Unix nanoseconds, and whether it counts against the bounds).
// Expired and PendingCounts.ForEK read it; a record's rows are rewritten
// whenever its registrations change.
//
// registrar_pending_by_ek holds one row per EK with pending registrations:
// how many it has and how many of those count. The row is also the lock
// that serializes the transactions counting or changing that EK's
// registrations, so that two replicas registering hosts with one EK cannot
// both fit under the per-EK bound. It is deleted when its EK has none left.
//
// registrar_state is a single row: the epoch (random, chosen when the
// schema is created), the generation of the set of active AKs, and the
// total of counted pending registrations. Generation returns
// "<epoch>.<generation>", the bbolt store's shape; every replica on the
// database returns the same one, and it survives restarts.
//
// # Transactions
//
// Modify is one READ COMMITTED transaction that locks the agent's row (FOR
// UPDATE), runs fn, writes the record and, in the same transaction, its
// pending rows, the per-EK counts, the total and the generation.
// PendingCounts.ForEK locks the EK's row and Total locks registrar_state,
// so the counts a Modify acts on stay true until it commits. Locks are
// taken in one order (record, EK rows in sorted order, registrar_state);
// the transactions that lose a race which retrying wins (a record created
// by another replica first, a deadlock PostgreSQL broke) run again, fn
// included. A connection found broken is retried once on fresh connections,
// so the first call after a database restart succeeds; an error at COMMIT
// is returned, since whether it committed is unknown.
//
// The price of an exact total bound is that registrations which ask for
// the total (every new one) take turns on registrar_state across the
// fleet, one commit at a time; activations bumping the generation do too.
// Reads (Get, List, Expired, Generation, ActiveAKs) take no locks.
//
// Modify refuses a record that Get could not read back (registrar's
// DecodeRecord checks), rather than store it.
package pgstore
