-- Retention of what only serves old state (docs/storage.md "Retention").
--
-- QRESYNC (RFC 7162): expunged_uids rows are pruned after a while; each row now says when the
-- UID left (rows from before this version count from the upgrade), and each folder remembers
-- the highest MODSEQ pruned from it. A client asking about a MODSEQ below that horizon is
-- told every UID it may know of that is gone (an over-report RFC 7162 allows), never less.
--
-- Purging messages (API.md 5.7): a message whose outbound job is finished may be purged; the
-- job keeps its recipients and attempts and loses its message (message_id NULL). The soft
-- deleted placements the purge looks for are indexed.
--
-- SQLite cannot drop a NOT NULL: outbound_jobs is rebuilt, and with it the two tables that
-- reference it (dropping the parent first would cascade into them). The new children refer
-- to outbound_jobs_new, which the rename turns into outbound_jobs.

ALTER TABLE folders ADD COLUMN vanished_pruned_modseq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE expunged_uids ADD COLUMN expunged_at BIGINT NOT NULL DEFAULT 0;

UPDATE expunged_uids SET expunged_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000000;

CREATE INDEX expunged_uids_expunged_at ON expunged_uids (expunged_at);

CREATE INDEX mailbox_messages_soft_deleted ON mailbox_messages (deleted_at, id)
    WHERE deleted_at IS NOT NULL;

CREATE TABLE outbound_jobs_new (
    id TEXT PRIMARY KEY,
    message_id TEXT REFERENCES messages (id),
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
    updated_at BIGINT NOT NULL,
    dsn_message_id TEXT NOT NULL DEFAULT ''
);

INSERT INTO outbound_jobs_new (id, message_id, mailbox_id, trace_id, mail_from, route, status,
    attempts, next_attempt_at, locked_by, locked_until, last_error, created_at, updated_at,
    dsn_message_id)
SELECT id, message_id, mailbox_id, trace_id, mail_from, route, status, attempts,
    next_attempt_at, locked_by, locked_until, last_error, created_at, updated_at, dsn_message_id
FROM outbound_jobs;

CREATE TABLE outbound_recipients_new (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES outbound_jobs_new (id) ON DELETE CASCADE,
    rcpt TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    code INTEGER NOT NULL DEFAULT 0,
    enhanced_status_code TEXT NOT NULL DEFAULT '',
    response TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    UNIQUE (job_id, rcpt)
);

INSERT INTO outbound_recipients_new (id, job_id, rcpt, status, code, enhanced_status_code,
    response, updated_at)
SELECT id, job_id, rcpt, status, code, enhanced_status_code, response, updated_at
FROM outbound_recipients;

CREATE TABLE outbound_attempts_new (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES outbound_jobs_new (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '{}',
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);

INSERT INTO outbound_attempts_new (id, job_id, attempt, node, result, started_at, finished_at)
SELECT id, job_id, attempt, node, result, started_at, finished_at FROM outbound_attempts;

DROP TABLE outbound_attempts;

DROP TABLE outbound_recipients;

DROP TABLE outbound_jobs;

ALTER TABLE outbound_jobs_new RENAME TO outbound_jobs;

ALTER TABLE outbound_recipients_new RENAME TO outbound_recipients;

ALTER TABLE outbound_attempts_new RENAME TO outbound_attempts;

CREATE INDEX outbound_jobs_due ON outbound_jobs (status, next_attempt_at);

CREATE INDEX outbound_jobs_mailbox ON outbound_jobs (mailbox_id, created_at);

CREATE INDEX outbound_jobs_message ON outbound_jobs (message_id);

CREATE INDEX outbound_attempts_job ON outbound_attempts (job_id, attempt);
