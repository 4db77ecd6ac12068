-- The verifier's tables. Records are the verifier's own structs in
-- internal/wire's deterministic CBOR, the encoding the embedded store uses,
-- so there is one record format; format says which version of it a row
-- holds, and the columns beside a record copy the fields that SQL selects
-- or indexes on. Times that must keep nanoseconds are Unix nanoseconds
-- (bigint): timestamptz keeps microseconds.

CREATE TABLE verifier_agents (
    id             text PRIMARY KEY,
    state          text NOT NULL,
    runtime_policy text NOT NULL DEFAULT '',
    boot_policy    text NOT NULL DEFAULT '',
    format         smallint NOT NULL,
    record         bytea NOT NULL
);
CREATE INDEX verifier_agents_state ON verifier_agents (state);
-- "Which agents use this policy" is asked before a policy is deleted.
CREATE INDEX verifier_agents_runtime_policy ON verifier_agents (runtime_policy) WHERE runtime_policy <> '';
CREATE INDEX verifier_agents_boot_policy ON verifier_agents (boot_policy) WHERE boot_policy <> '';

-- Every version of every policy is a row; the highest version of a name is
-- the one in force, found by a backward scan of the primary key.
CREATE TABLE verifier_policy_versions (
    name    text NOT NULL,
    version integer NOT NULL,
    kind    text NOT NULL,
    sha256  text NOT NULL,
    format  smallint NOT NULL,
    record  bytea NOT NULL, -- the Policy without its body
    body    bytea NOT NULL, -- apart, so that listing policies never reads bodies
    PRIMARY KEY (name, version)
);

CREATE TABLE verifier_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Ping writes here: a store that cannot be written must say so.
CREATE TABLE verifier_ping (
    id smallint PRIMARY KEY CHECK (id = 1),
    at timestamptz NOT NULL
);

-- The revocation outbox, pending apart from delivered so that the
-- dispatcher's rounds read only what is still to deliver.
CREATE TABLE verifier_outbox (
    id       text PRIMARY KEY,
    agent_id text NOT NULL,
    type     text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    format   smallint NOT NULL,
    event    bytea NOT NULL
);

-- One row per pending event and sink tried; it goes with its event.
CREATE TABLE verifier_outbox_status (
    event_id text NOT NULL REFERENCES verifier_outbox (id) ON DELETE CASCADE,
    sink     text NOT NULL,
    format   smallint NOT NULL,
    status   bytea NOT NULL,
    PRIMARY KEY (event_id, sink)
);

-- Delivered events, kept with their statuses (sinks[i] has statuses[i])
-- until pruned.
CREATE TABLE verifier_outbox_delivered (
    id              text PRIMARY KEY,
    agent_id        text NOT NULL,
    type            text NOT NULL,
    delivered_at_ns bigint NOT NULL,
    format          smallint NOT NULL,
    event           bytea NOT NULL,
    sinks           text[] NOT NULL,
    statuses        bytea[] NOT NULL
);
CREATE INDEX verifier_outbox_delivered_at ON verifier_outbox_delivered (delivered_at_ns);
