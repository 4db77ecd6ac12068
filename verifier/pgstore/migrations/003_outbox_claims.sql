-- Replicas share the outbox: each pending event is delivered by the one
-- that holds its claim, until claimed_until_ns, unless renewed. An event
-- never claimed has claimed_by '' and claimed_until_ns 0, so any replica
-- may take it.
ALTER TABLE verifier_outbox
    ADD COLUMN claimed_by       text NOT NULL DEFAULT '',
    ADD COLUMN claimed_until_ns bigint NOT NULL DEFAULT 0;
