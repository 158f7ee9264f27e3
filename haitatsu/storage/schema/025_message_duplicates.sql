-- The duplicate filter's memory (docs/plugins.md): which Message-IDs each mailbox received within
-- the filter's window, shared by every node. Times are nanoseconds since the epoch.
--
-- One row per (mailbox, Message-ID): message_key is the SHA-256 (hex) of the Message-ID,
-- trace_id the delivery that claimed it first, first_seen when. stored_at is 0 until a later
-- copy found that delivery's message in the mailbox: a claim whose delivery never committed
-- (refused, or the storage failed and the client retried) is not a duplicate, so a retry is
-- never thrown away.
CREATE TABLE message_duplicates (
    mailbox_id TEXT NOT NULL,
    message_key TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    stored_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (mailbox_id, message_key)
);

CREATE INDEX message_duplicates_first_seen ON message_duplicates (first_seen);
