-- Each agent's history: one row per entry, written in the transaction of
-- the record it accompanies and kept after the agent is deleted (no
-- reference to verifier_agents), until pruned. seq orders the entries as
-- written and is the entry's Seq; at copies the entry's At for pruning by
-- age and reading since a time (microseconds: the entry keeps its
-- nanoseconds in the record).

CREATE TABLE verifier_history (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id text NOT NULL,
    at       timestamptz NOT NULL,
    format   smallint NOT NULL,
    entry    bytea NOT NULL
);
CREATE INDEX verifier_history_agent ON verifier_history (agent_id, seq);
CREATE INDEX verifier_history_at ON verifier_history (at);
