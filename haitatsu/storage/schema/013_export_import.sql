-- Export and import jobs (API.md 1.13). Job workers claim due rows with a lease (FOR UPDATE SKIP
-- LOCKED on PostgreSQL); ``attempts`` counts claims and is the lease's fencing token, so a worker
-- whose lease was taken over changes nothing when it reports. ``next_attempt_at`` delays a job
-- put back after a temporary storage failure. An import's ``progress`` is where a retried import
-- resumes; it is written in the same transaction as each imported message, with
-- ``imported_count``. Neither column is shown by the API.

CREATE TABLE export_jobs (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    object_key TEXT NOT NULL DEFAULT '',
    size_bytes BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_by TEXT NOT NULL DEFAULT '',
    locked_until BIGINT,
    last_error TEXT NOT NULL DEFAULT '{}',
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX export_jobs_created ON export_jobs (created_at, id);

CREATE INDEX export_jobs_mailbox ON export_jobs (mailbox_id, created_at, id);

CREATE INDEX export_jobs_due ON export_jobs (status, next_attempt_at);

CREATE INDEX export_jobs_expiry ON export_jobs (expires_at);

CREATE TABLE import_jobs (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL,
    source_type TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued',
    imported_count BIGINT NOT NULL DEFAULT 0,
    skipped_count BIGINT NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_by TEXT NOT NULL DEFAULT '',
    locked_until BIGINT,
    last_error TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX import_jobs_created ON import_jobs (created_at, id);

CREATE INDEX import_jobs_mailbox ON import_jobs (mailbox_id, created_at, id);

CREATE INDEX import_jobs_due ON import_jobs (status, next_attempt_at);

-- Imports skip a message whose bytes the mailbox already holds (API.md 1.13: de-duplicated by
-- sha256 within the mailbox).
CREATE INDEX messages_sha256 ON messages (sha256);
