-- The initial schema, shared by SQLite and PostgreSQL.
-- Times are BIGINT nanoseconds since the epoch (UTC); ids are ULID strings; JSON is TEXT.
-- Statements are separated by a semicolon at the end of a line.

CREATE TABLE mailboxes (
    id TEXT PRIMARY KEY,
    primary_address TEXT NOT NULL,
    address_lower TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'active',
    quota_bytes BIGINT NOT NULL DEFAULT 0,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    outbound_limits TEXT NOT NULL DEFAULT '{}',
    spam_thresholds TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE INDEX mailboxes_created ON mailboxes (created_at, id);

CREATE TABLE app_passwords (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    deleted_at BIGINT
);

CREATE INDEX app_passwords_mailbox ON app_passwords (mailbox_id, created_at, id);

CREATE TABLE folders (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    system BOOLEAN NOT NULL DEFAULT FALSE,
    special_use TEXT NOT NULL DEFAULT '',
    uid_validity BIGINT NOT NULL,
    uid_next BIGINT NOT NULL DEFAULT 1,
    highest_modseq BIGINT NOT NULL DEFAULT 1,
    subscribed BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (mailbox_id, name)
);

CREATE TABLE blobs (
    blob_key TEXT PRIMARY KEY,
    size_bytes BIGINT NOT NULL,
    refcount BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL DEFAULT '',
    rfc_message_id TEXT NOT NULL DEFAULT '',
    blob_key TEXT NOT NULL REFERENCES blobs (blob_key),
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    from_addresses TEXT NOT NULL DEFAULT '[]',
    to_addresses TEXT NOT NULL DEFAULT '[]',
    cc_addresses TEXT NOT NULL DEFAULT '[]',
    bcc_addresses TEXT NOT NULL DEFAULT '[]',
    subject TEXT NOT NULL DEFAULT '',
    date BIGINT,
    text_body_extract TEXT NOT NULL DEFAULT '',
    html_body_extract TEXT NOT NULL DEFAULT '',
    attachments TEXT NOT NULL DEFAULT '[]',
    spam_score DOUBLE PRECISION NOT NULL DEFAULT 0,
    auth_results TEXT NOT NULL DEFAULT '{}',
    envelope TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    bodystructure TEXT NOT NULL DEFAULT '',
    header_size BIGINT NOT NULL DEFAULT 0,
    parts TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE TABLE mailbox_messages (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL REFERENCES messages (id),
    folder_id TEXT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    original_rcpt TEXT NOT NULL DEFAULT '',
    base_rcpt TEXT NOT NULL DEFAULT '',
    plus_tag TEXT NOT NULL DEFAULT '',
    resolved_route_id TEXT NOT NULL DEFAULT '',
    read BOOLEAN NOT NULL DEFAULT FALSE,
    flagged BOOLEAN NOT NULL DEFAULT FALSE,
    answered BOOLEAN NOT NULL DEFAULT FALSE,
    draft BOOLEAN NOT NULL DEFAULT FALSE,
    imap_deleted BOOLEAN NOT NULL DEFAULT FALSE,
    keywords TEXT NOT NULL DEFAULT '[]',
    internal_date BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE UNIQUE INDEX mailbox_messages_folder_uid ON mailbox_messages (folder_id, uid);

CREATE INDEX mailbox_messages_mailbox ON mailbox_messages (mailbox_id, created_at, id);

CREATE INDEX mailbox_messages_message ON mailbox_messages (message_id);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    actor_type TEXT NOT NULL DEFAULT 'service',
    actor_id TEXT NOT NULL DEFAULT 'service',
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    mailbox_id TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

CREATE INDEX audit_events_created ON audit_events (created_at, id);
