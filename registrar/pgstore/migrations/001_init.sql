-- The registrar's records and what is derived from them. doc.go explains
-- each table; every derived row changes in the transaction that changes
-- the record it is derived from.

CREATE TABLE registrar_records (
    agent_id  text PRIMARY KEY,
    -- registrar.EncodeRecord: the same versioned CBOR as the bbolt store.
    record    bytea NOT NULL,
    ek_sha256 text NOT NULL,
    -- The active AK's name; NULL unless the record is active.
    active_ak bytea
);

-- The AK feed reads only the active records; a covering partial index
-- keeps that read proportional to the active set, not to every record.
CREATE INDEX registrar_records_active ON registrar_records (agent_id) INCLUDE (active_ak)
    WHERE active_ak IS NOT NULL;

CREATE TABLE registrar_pending (
    agent_id  text NOT NULL REFERENCES registrar_records,
    -- The registration's index in the record's Pending list; the store
    -- does not judge whether two registrations of one record may share an
    -- AK name.
    seq       int NOT NULL,
    ek_sha256 text NOT NULL,
    ak_name   bytea NOT NULL,
    -- Unix nanoseconds: timestamptz keeps microseconds, and a deadline one
    -- nanosecond after now must not read as expired.
    deadline  bigint NOT NULL,
    counted   boolean NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

CREATE INDEX registrar_pending_ek ON registrar_pending (ek_sha256, deadline) WHERE counted;
CREATE INDEX registrar_pending_deadline ON registrar_pending (deadline);

-- One row per EK with pending registrations. Besides its counts it is the
-- lock that orders every transaction counting or changing that EK's
-- registrations, across registrar replicas.
CREATE TABLE registrar_pending_by_ek (
    ek_sha256 text PRIMARY KEY,
    pending   int NOT NULL CHECK (pending >= 0),
    counted   int NOT NULL CHECK (counted >= 0)
);

-- One row: the epoch and generation of the set of active AKs, and the
-- total of counted pending registrations.
CREATE TABLE registrar_state (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Chosen once per database, so that a rebuilt database never repeats
    -- a generation a verifier has seen.
    epoch         text NOT NULL,
    generation    bigint NOT NULL CHECK (generation >= 0),
    pending_total bigint NOT NULL CHECK (pending_total >= 0)
);

INSERT INTO registrar_state (epoch, generation, pending_total)
    VALUES (left(md5(gen_random_uuid()::text), 16), 0, 0);
