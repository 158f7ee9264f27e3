-- QRESYNC (RFC 7162): every UID that leaves a folder (expunge, move, POP3 deletion) with the
-- folder's MODSEQ at that moment, so a client that last saw MODSEQ n learns exactly which UIDs
-- vanished since (SELECT ... (QRESYNC ...), UID FETCH ... (CHANGEDSINCE n VANISHED)).
-- Written in the transaction that removes the UID; dropped with the folder.

CREATE TABLE expunged_uids (
    folder_id TEXT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    PRIMARY KEY (folder_id, uid)
);

CREATE INDEX expunged_uids_modseq ON expunged_uids (folder_id, modseq);
