// Package store is Vigil's embedded database: named collections of
// key → value records in one bbolt file, changed only inside transactions.
//
// The registrar and verifier never see this package's types in their logic;
// each defines the small store interface it needs and adapts it here. The
// model is deliberately that of a table per collection with a primary key,
// no ordering, no cursors, so that a PostgreSQL implementation of those
// interfaces is a direct translation: one collection, one table; one Update,
// one SQL transaction.
//
// Batch groups concurrent writers into one commit (one fsync) at the cost of
// a few milliseconds of latency; it is what the verifier uses for verdicts.
package store
