-- Feedback on grants and quality issues against dataset versions (regulation Art. 15, 17).
-- Portable SQL: runs on SQLite and PostgreSQL. Times are BIGINT unix seconds (UTC); an answer
-- deadline is a calendar date (TEXT, YYYY-MM-DD, the last working day on which it is on time).

-- A holder's feedback on one of its grants: need met (yes | partly | no), quality 1-5, effect.
-- Rows are never updated or deleted; the latest is the holder's current view.
CREATE TABLE grant_feedback (
    id BIGINT PRIMARY KEY,
    grant_id BIGINT NOT NULL,
    dept TEXT NOT NULL,
    dataset TEXT NOT NULL,
    need_met TEXT NOT NULL,
    quality BIGINT NOT NULL,
    effect TEXT NOT NULL,
    given_by TEXT NOT NULL,
    given_at BIGINT NOT NULL
);
CREATE INDEX grant_feedback_by_grant ON grant_feedback (grant_id, given_at);

-- A quality issue filed against one version of a dataset; the provider answers it by due_on.
-- answered_at NULL: unanswered.
CREATE TABLE quality_issues (
    id BIGINT PRIMARY KEY,
    dataset TEXT NOT NULL,
    version BIGINT NOT NULL,
    provider TEXT NOT NULL,
    filed_by_dept TEXT NOT NULL,
    filed_by TEXT NOT NULL,
    filed_at BIGINT NOT NULL,
    text TEXT NOT NULL,
    due_on TEXT NOT NULL,
    answered_at BIGINT,
    answered_by TEXT,
    answer TEXT
);
CREATE INDEX quality_issues_by_provider ON quality_issues (provider, answered_at);
CREATE INDEX quality_issues_by_filer ON quality_issues (filed_by_dept, filed_at);
