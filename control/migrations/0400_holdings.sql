-- The fleet view (operators' view): what each province node reports it holds, so the ministry
-- sees how far behind the latest publication every province is. Portable SQL; times are BIGINT
-- unix seconds (UTC).

-- One row per reporting node (a province node's certificate: department and node name), with
-- the time of its last report, also when it holds nothing.
CREATE TABLE fleet_nodes (
    dept TEXT NOT NULL,
    node TEXT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (dept, node)
);

-- The latest version of each catalog dataset a node holds, as of its last report. A report
-- replaces the node's rows. held_since: the first report of this version.
CREATE TABLE fleet_holdings (
    dept TEXT NOT NULL,
    node TEXT NOT NULL,
    dataset TEXT NOT NULL,
    version BIGINT NOT NULL,
    held_since BIGINT NOT NULL,
    PRIMARY KEY (dept, node, dataset)
);
CREATE INDEX fleet_holdings_by_dataset ON fleet_holdings (dataset, dept);
