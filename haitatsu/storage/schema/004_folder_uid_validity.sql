-- The last UIDVALIDITY handed to a folder of each mailbox, so a folder that is deleted and
-- created again (or created under the name a renamed folder left) never reuses one
-- (RFC 3501 2.3.1.1). Folder rows are removed on delete, so the folders table cannot remember.

ALTER TABLE mailboxes ADD COLUMN last_uid_validity BIGINT NOT NULL DEFAULT 0;

UPDATE mailboxes SET last_uid_validity = COALESCE(
    (SELECT MAX(uid_validity) FROM folders WHERE folders.mailbox_id = mailboxes.id), 0);
