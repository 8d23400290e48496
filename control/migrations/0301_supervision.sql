-- Supervision (regulation Art. 18, 19, 23, 24): rectification notices the S&T authority issues
-- against findings of the evaluation, and the publish refusals nodes report (data inconsistent
-- with the catalog). Portable SQL; times are BIGINT unix seconds (UTC).

-- finding: a finding code of the evaluation (catalog-not-compiled, data-not-updated, ...).
-- state: open | closed.
CREATE TABLE rectification_notices (
    id BIGINT PRIMARY KEY,
    dept TEXT NOT NULL,
    finding TEXT NOT NULL,
    dataset TEXT,
    text TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT,
    closing_note TEXT
);
CREATE INDEX rectification_notices_by_dept ON rectification_notices (dept, state);

-- A publish a node refused because the data did not match the catalog entry (schema
-- mismatch), as the node reported it; provider is the dataset's provider at the time.
CREATE TABLE publish_refusals (
    dataset TEXT NOT NULL,
    provider TEXT NOT NULL,
    node_dept TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at BIGINT NOT NULL
);
CREATE INDEX publish_refusals_by_provider ON publish_refusals (provider, refused_at);
