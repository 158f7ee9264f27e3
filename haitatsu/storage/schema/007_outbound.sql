-- The outbound queue (API.md 5.4): one job per submitted message, one row per recipient, one row
-- per delivery attempt. Submission writes jobs in the same transaction as the Sent copy; queue
-- workers claim due jobs (FOR UPDATE SKIP LOCKED on PostgreSQL) with a lease.

CREATE TABLE outbound_jobs (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id),
    mailbox_id TEXT NOT NULL,
    trace_id TEXT NOT NULL DEFAULT '',
    mail_from TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT 'relay',
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_by TEXT NOT NULL DEFAULT '',
    locked_until BIGINT,
    last_error TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX outbound_jobs_due ON outbound_jobs (status, next_attempt_at);

CREATE INDEX outbound_jobs_mailbox ON outbound_jobs (mailbox_id, created_at);

CREATE TABLE outbound_recipients (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES outbound_jobs (id) ON DELETE CASCADE,
    rcpt TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    code INTEGER NOT NULL DEFAULT 0,
    enhanced_status_code TEXT NOT NULL DEFAULT '',
    response TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    UNIQUE (job_id, rcpt)
);

CREATE TABLE outbound_attempts (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES outbound_jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '{}',
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE INDEX outbound_attempts_job ON outbound_attempts (job_id, attempt);
