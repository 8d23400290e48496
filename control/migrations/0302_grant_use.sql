-- Grant lifecycle (regulation Art. 17): disuse flags and the notices grant holders get.
-- Portable SQL; times are BIGINT unix seconds (UTC). grants.last_used_at (0200) holds the
-- holder's last use as nodes report it.

-- One row per time the disuse sweep found a grant unused for 3 months. It stays open
-- (cleared_at and revoked_at NULL) until the holder uses the grant (cleared) or the notice
-- period ends (the grant is revoked). last_use: the last use the sweep saw (NULL: never used;
-- the grant's age counts from granted_at).
CREATE TABLE grant_disuse (
    grant_id BIGINT NOT NULL,
    flagged_at BIGINT NOT NULL,
    last_use BIGINT,
    revoke_after BIGINT NOT NULL,
    cleared_at BIGINT,
    revoked_at BIGINT,
    PRIMARY KEY (grant_id, flagged_at)
);

-- Notices addressed to a grant holder: kind = disuse-warning | revoked | range-closed.
CREATE TABLE grant_notices (
    id BIGINT PRIMARY KEY,
    dept TEXT NOT NULL,
    grant_id BIGINT NOT NULL,
    dataset TEXT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    deadline BIGINT,
    text TEXT NOT NULL
);
CREATE INDEX grant_notices_by_dept ON grant_notices (dept, at);
