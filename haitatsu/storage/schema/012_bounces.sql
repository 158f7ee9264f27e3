-- VERP bounces received at the MX (API.md 5.2 step 1): one row per recipient a delivery status
-- notification reports (or one row with an empty recipient when nothing in it parses as a
-- DSN). Nothing is delivered to a mailbox; the report's fields are kept here, with the first
-- bytes of its text for a human to read. Also: an index to find a job by the message its
-- VERP return path names, and when a job's bounce (our DSN) was filed.

CREATE TABLE bounce_events (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    mailbox_id TEXT NOT NULL DEFAULT '',
    verp_address TEXT NOT NULL,
    envelope_from TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    diagnostic TEXT NOT NULL DEFAULT '',
    remote_mta TEXT NOT NULL DEFAULT '',
    reporting_mta TEXT NOT NULL DEFAULT '',
    remote_ip TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    size_bytes BIGINT NOT NULL DEFAULT 0,
    excerpt TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE INDEX bounce_events_message ON bounce_events (message_id, created_at);

CREATE INDEX bounce_events_mailbox ON bounce_events (mailbox_id, created_at, id);

CREATE INDEX outbound_jobs_message ON outbound_jobs (message_id);

ALTER TABLE outbound_jobs ADD COLUMN dsn_message_id TEXT NOT NULL DEFAULT '';
