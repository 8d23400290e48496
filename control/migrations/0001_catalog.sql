-- The versioned catalog (regulation Art. 8, 9, 20). Portable SQL: runs on SQLite and PostgreSQL.
-- Times are BIGINT unix seconds (UTC); documents are the entry's TOML as registered.

-- One row per dataset id: the id is bound to its provider forever.
CREATE TABLE catalog_datasets (
    dataset TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    first_registered_at BIGINT NOT NULL
);

-- Every catalog version of every entry; rows are never updated or deleted.
CREATE TABLE catalog_versions (
    dataset TEXT NOT NULL,
    catalog_version BIGINT NOT NULL,
    provider TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    effective_from BIGINT NOT NULL,
    stage TEXT NOT NULL,
    share_type TEXT NOT NULL,
    items_fingerprint TEXT NOT NULL,
    items_changed BIGINT NOT NULL,
    connection_deadline BIGINT,
    document TEXT NOT NULL,
    PRIMARY KEY (dataset, catalog_version)
);

-- Registrations refused by the compliance check, change control or the provider binding.
CREATE TABLE catalog_refusals (
    dataset TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    dept TEXT NOT NULL,
    refused_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (dataset, attempt)
);

-- Last use of a dataset by a department (fed by completed transfers).
CREATE TABLE dataset_uses (
    dataset TEXT NOT NULL,
    dept TEXT NOT NULL,
    last_used_at BIGINT NOT NULL,
    PRIMARY KEY (dataset, dept)
);

-- Change notices (Art. 9): a consumer is told of a coming change of a dataset's items.
CREATE TABLE change_notices (
    dept TEXT NOT NULL,
    dataset TEXT NOT NULL,
    catalog_version BIGINT NOT NULL,
    previous_version BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    effective_from BIGINT NOT NULL,
    PRIMARY KEY (dept, dataset, catalog_version)
);

-- Published dataset versions and the catalog version each followed (data connected, Art. 20).
CREATE TABLE catalog_publications (
    dataset TEXT NOT NULL,
    version BIGINT NOT NULL,
    catalog_version BIGINT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (dataset, version)
);

-- The facts a receipt states (Art. 20): which kind is due for which catalog version, since when.
CREATE TABLE receipt_facts (
    dataset TEXT NOT NULL,
    catalog_version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    PRIMARY KEY (dataset, catalog_version, kind)
);

-- Bumped by every change of catalog state; policy snapshots carry it.
CREATE TABLE policy_serial (
    id BIGINT PRIMARY KEY,
    serial BIGINT NOT NULL
);
INSERT INTO policy_serial (id, serial) VALUES (1, 0);
