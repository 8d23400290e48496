-- Applications, reviews and grants (regulation Art. 12-17). Portable SQL: runs on SQLite and
-- PostgreSQL. Times are BIGINT unix seconds (UTC); working-day deadlines are calendar dates
-- (TEXT, YYYY-MM-DD, the last day on which the step is still on time). Service methods are
-- stored as their wire names, sorted by wire order and joined by commas ("online-query,download").

-- One row per application. (dept, client_key) makes a re-sent application the same one.
-- state: first-review | provider-review | awaiting-material | granted | refused
-- decider: who takes the decision after the first review: provider | technical-support
-- (delegated, Art. 14) | st-authority (cross-industry data, Art. 13).
CREATE TABLE applications (
    id BIGINT PRIMARY KEY,
    dept TEXT NOT NULL,
    client_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    dataset TEXT NOT NULL,
    provider TEXT NOT NULL,
    catalog_version BIGINT NOT NULL,
    share_type TEXT NOT NULL,
    purpose TEXT NOT NULL,
    methods TEXT NOT NULL,
    columns_json TEXT,
    row_filter TEXT,
    state TEXT NOT NULL,
    decider TEXT NOT NULL,
    due_on TEXT,
    paused_remaining_days BIGINT,
    decided_at BIGINT,
    decided_by TEXT,
    basis TEXT,
    UNIQUE (dept, client_key)
);
CREATE INDEX applications_by_state ON applications (state, due_on);
CREATE INDEX applications_by_dataset ON applications (dataset, dept);

-- Every step taken on an application, in order: submitted, first review passed or refused,
-- material asked for and supplied, decided. Rows are never updated or deleted.
-- step: submitted | first-review | ask-material | supply-material | decision
-- outcome: pass | approve | refuse | asked | supplied | granted-at-once | refused-not-shared
CREATE TABLE application_reviews (
    application BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    step TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor_dept TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    acting_as TEXT NOT NULL,
    delegated BIGINT NOT NULL,
    basis TEXT,
    note TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (application, seq)
);

-- The provider's requests for supporting material; the provider's clock stops from
-- requested_at until supplied_at (remaining_days working days are left when it restarts).
CREATE TABLE material_requests (
    application BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    requested_at BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    what TEXT NOT NULL,
    remaining_days BIGINT NOT NULL,
    supplied_at BIGINT,
    supplied_note TEXT,
    PRIMARY KEY (application, seq)
);

-- A provider's delegation of its reviews to technical support (Art. 14). revoked_at NULL:
-- in force.
CREATE TABLE review_delegations (
    provider TEXT NOT NULL,
    since BIGINT NOT NULL,
    granted_by TEXT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (provider, since)
);

-- Grants: each row carries every field of ferry_proto::policy::PolicyGrant (granted_at and
-- expires_at in unix seconds; the snapshot states them in milliseconds) plus its state.
-- restriction_columns: JSON array of column names, NULL = every column; restriction_rows: the
-- row filter's text, NULL = every row. catalog_to NULL: every later catalog version.
-- state: active | revoked. last_used_at: the holder's last transfer or query (Art. 17).
CREATE TABLE grants (
    id BIGINT PRIMARY KEY,
    application BIGINT NOT NULL UNIQUE,
    dept TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    methods TEXT NOT NULL,
    restriction_columns TEXT,
    restriction_rows TEXT,
    catalog_from BIGINT NOT NULL,
    catalog_to BIGINT,
    granted_at BIGINT NOT NULL,
    expires_at BIGINT,
    state TEXT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT,
    reason TEXT,
    last_used_at BIGINT
);
CREATE INDEX grants_by_holder ON grants (dept, dataset, state);
CREATE INDEX grants_by_dataset ON grants (dataset, state);
