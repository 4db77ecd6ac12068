-- Verifier replicas sharing this database, and which one owns each agent.
-- A lease is held until expires_ns (Unix nanoseconds, the owners' clocks,
-- which must agree to well within a lease); epoch grows from one sequence
-- every time a lease changes hands, and every write of an agent's record
-- by a replica names the epoch it holds, so a replica that lost the lease
-- writes nothing.

CREATE TABLE verifier_replicas (
    id      text PRIMARY KEY,
    url     text NOT NULL,
    seen_ns bigint NOT NULL
);

CREATE SEQUENCE verifier_lease_epoch;

CREATE TABLE verifier_leases (
    agent_id   text PRIMARY KEY REFERENCES verifier_agents (id) ON DELETE CASCADE,
    owner      text NOT NULL,
    epoch      bigint NOT NULL,
    expires_ns bigint NOT NULL
);
CREATE INDEX verifier_leases_owner ON verifier_leases (owner);
