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

ALTER TABLE folders ADD COLUMN vanished_pruned_modseq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE expunged_uids ADD COLUMN expunged_at BIGINT NOT NULL DEFAULT 0;

UPDATE expunged_uids SET expunged_at = (EXTRACT(EPOCH FROM now()) * 1000000000)::BIGINT;

CREATE INDEX expunged_uids_expunged_at ON expunged_uids (expunged_at);

CREATE INDEX mailbox_messages_soft_deleted ON mailbox_messages (deleted_at, id)
    WHERE deleted_at IS NOT NULL;

ALTER TABLE outbound_jobs ALTER COLUMN message_id DROP NOT NULL;
