// Package bridge turns Vigil's revocation webhooks into SPIRE bans.
//
// The verifier delivers every revocation event through its durable outbox
// to each webhook, retrying until a receiver answers 2xx. The bridge is such
// a receiver, run beside spire-server: it checks an event's Standard
// Webhooks signature with the shared secret, and only then acts through the
// SPIRE Server API on its local admin socket. On dev.vigil.agent.revoked it
// bans the host's SPIRE agent (spiffe://<td>/spire/agent/vigil/<agent id>),
// so its node SVID is not renewed and its workloads' SVIDs stop being
// renewed; on dev.vigil.agent.readmitted it lifts the ban (SPIRE deletes the
// banned node's record), so the node may attest again, which the vigil
// NodeAttestor allows once Vigil says the host is attesting. It answers 2xx
// only after SPIRE did what the event asks, so a SPIRE server that cannot be
// reached leaves the event in the verifier's outbox to be retried: delivery
// is as durable as any other webhook.
//
// Why a bridge and not a sink inside the verifier: SPIRE's admin socket is
// local to the SPIRE server, while verifier replicas run elsewhere; the
// outbox already gives retries, records and signatures; and SPIRE's API and
// gRPC stay out of the vigil binary.
//
// Events can arrive out of order (a retried revocation after the
// readmission that followed it), so the bridge ignores an event older than
// the last one it applied for that agent. It keeps that order in its data
// directory (StoreApplied), so a restart does not forget it, and handles one
// agent's events one at a time.
package bridge
