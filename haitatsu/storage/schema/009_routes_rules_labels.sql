-- Routes (aliases, patterns, catch-alls), routing rules and labels (API.md 1.4-1.6).
-- source_lower is the lowercased, trimmed source_address: what RCPT resolution and send-as look
-- up. It is unique across every status, as the original's source_address is, so a soft-deleted
-- route keeps its address until it is purged. destinations, conditions and actions are JSON.

CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    source_address TEXT NOT NULL,
    source_lower TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    destinations TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE INDEX routes_created ON routes (created_at, id);

CREATE INDEX routes_type ON routes (type, status);

CREATE TABLE routing_rules (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_ref TEXT NOT NULL DEFAULT '',
    priority BIGINT NOT NULL DEFAULT 0,
    name TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    conditions TEXT NOT NULL DEFAULT '{}',
    actions TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX routing_rules_created ON routing_rules (created_at, id);

CREATE INDEX routing_rules_scope ON routing_rules (scope, scope_ref);

-- A label is a second view of a mailbox's messages (IMAP shows it as Labels/<name>), with its
-- own UIDVALIDITY and UID counter; each link carries the message's UID in that view.
CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    uid_next BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (mailbox_id, name)
);

CREATE TABLE message_labels (
    id TEXT PRIMARY KEY,
    mailbox_message_id TEXT NOT NULL REFERENCES mailbox_messages (id) ON DELETE CASCADE,
    label_id TEXT NOT NULL REFERENCES labels (id) ON DELETE CASCADE,
    uid BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (mailbox_message_id, label_id),
    UNIQUE (label_id, uid)
);

CREATE INDEX message_labels_label ON message_labels (label_id, mailbox_message_id);
