-- The event log, which is also the webhook outbox (API.md 1.10 and 3), and the sender rules
-- (API.md 1.12). Events are written in the same transaction as the mail operation they report;
-- webhook workers claim due rows with a lease (FOR UPDATE SKIP LOCKED on PostgreSQL). Event ids
-- are ULIDs, so they order by creation: Server-Sent Events resume after a Last-Event-ID with them.

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    trace_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    mailbox_id TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    locked_by TEXT NOT NULL DEFAULT '',
    locked_until BIGINT,
    next_attempt_at BIGINT,
    last_error TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX events_created ON events (created_at, id);

CREATE INDEX events_due ON events (status, next_attempt_at);

CREATE INDEX events_mailbox ON events (mailbox_id, id);

-- Every mailbox an event concerns (message.received may name several), so a mailbox's stream
-- can resume from the log even when the row's mailbox_id is empty.
CREATE TABLE event_mailboxes (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    mailbox_id TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, event_id)
);

CREATE TABLE sender_rules (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_ref TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    match_type TEXT NOT NULL,
    value TEXT NOT NULL,
    action TEXT NOT NULL DEFAULT 'junk',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX sender_rules_created ON sender_rules (created_at, id);
