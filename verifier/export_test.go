package verifier

// The bbolt store's collections, for tests in verifier_test that look at
// what a call reads.
const (
	OutboxCollection    = outboxCollection
	DeliveredCollection = deliveredCollection
)
