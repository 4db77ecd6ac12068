// Package revocation carries a verifier's verdicts to the systems that
// issue workload identities, so that a host that drifts loses them.
//
// The model is a transactional outbox. When an agent fails, the verifier
// writes the failed state and an Event in the same store transaction: either
// both exist or neither, so a crash can never leave a failed host whose
// revocation was forgotten. A Dispatcher then delivers every pending event
// to every configured Sink, retrying with capped, jittered exponential
// backoff until the sink accepts it, and records each attempt, so delivery
// survives restarts and kill -9. Delivery is at least once: an event keeps
// its ID across retries, and receivers deduplicate on it.
//
// The webhook sink posts CloudEvents 1.0 (structured JSON) signed as the
// Standard Webhooks specification says: webhook-id, webhook-timestamp and
// webhook-signature "v1,<base64 HMAC-SHA256 over id.timestamp.body>" with a
// "whsec_" secret. Identity issuers act on dev.vigil.agent.revoked (for
// SPIRE, ban the agent's SPIFFE ID) and dev.vigil.agent.readmitted.
package revocation
