-- Sieve (docs/sieve.md): each mailbox's scripts, at most one of them active, and the vacation
-- responses sent (RFC 5230 section 4.2: one response per sender and handle per period).
-- Times are nanoseconds since the epoch.

CREATE TABLE sieve_scripts (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (mailbox_id, name)
);

-- At most one active script per mailbox, enforced by the database.
CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts (mailbox_id) WHERE active;

-- A vacation response sent: to whom, for which handle, and until when no other is sent.
CREATE TABLE sieve_vacation_responses (
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    handle TEXT NOT NULL,
    sender TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, handle, sender)
);

CREATE INDEX sieve_vacation_responses_expires ON sieve_vacation_responses (expires_at);

-- The simple per-mailbox vacation setting the `vacation` filter answers with (docs/sieve.md):
-- the same response a Sieve `vacation` action sends, without writing a script.
CREATE TABLE vacation_settings (
    mailbox_id TEXT PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    enabled BOOLEAN NOT NULL DEFAULT FALSE,
    subject TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    days INTEGER NOT NULL DEFAULT 7,
    from_address TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '[]',
    starts_at BIGINT,
    ends_at BIGINT,
    updated_at BIGINT NOT NULL
);
