package verifier

import "context"

// The bbolt store's collections, for tests in verifier_test that look at
// what a call reads.
const (
	OutboxCollection    = outboxCollection
	DeliveredCollection = deliveredCollection
)

// DispatchOnce runs one round of v's revocation dispatcher.
func (v *Verifier) DispatchOnce(ctx context.Context) { v.disp.Once(ctx) }
