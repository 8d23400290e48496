-- Receipts issued for catalog entries (Art. 20). envelope is the signed receipt file exactly as
-- handed out; the other columns index it. One receipt per kind, dataset and catalog version.
CREATE TABLE receipts (
    id              TEXT   PRIMARY KEY,
    kind            TEXT   NOT NULL,
    dataset         TEXT   NOT NULL,
    catalog_version BIGINT NOT NULL,
    issued_at_ms    BIGINT NOT NULL,
    envelope        TEXT   NOT NULL
);

CREATE INDEX receipts_by_dataset ON receipts (dataset, issued_at_ms);
