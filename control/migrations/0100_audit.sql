-- The audit log: an append-only, hash-chained list of entries and signed checkpoints of it.
-- Every field the hash covers is stored as the text that was hashed (see control::audit).
-- seq is the primary key, so two writers (two processes on one PostgreSQL) cannot both append
-- the same place in the chain: the second one's insert fails and it retries.
CREATE TABLE audit_entries (
    seq          BIGINT PRIMARY KEY,
    time_ms      BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    actor_dept   TEXT   NOT NULL,
    actor_role   TEXT   NOT NULL,
    actor_name   TEXT   NOT NULL,
    actor_serial TEXT   NOT NULL,
    dataset      TEXT,
    outcome      TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    detail       TEXT   NOT NULL,
    prev_hash    TEXT   NOT NULL,
    hash         TEXT   NOT NULL
);

CREATE INDEX audit_entries_by_dataset ON audit_entries (dataset, time_ms);
CREATE INDEX audit_entries_by_dept ON audit_entries (actor_dept, time_ms);
CREATE INDEX audit_entries_by_time ON audit_entries (time_ms);

-- signed: the SignedBlob (body, signature, signer chain) as JSON with hex byte strings.
CREATE TABLE audit_checkpoints (
    seq     BIGINT PRIMARY KEY,
    hash    TEXT   NOT NULL,
    time_ms BIGINT NOT NULL,
    signed  TEXT   NOT NULL
);
