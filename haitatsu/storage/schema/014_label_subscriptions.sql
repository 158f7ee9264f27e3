-- IMAP shows each label as the folder Labels/<name> (docs/imap.md "Labels as folders"); a client
-- may SUBSCRIBE and UNSUBSCRIBE it like any folder, so a label remembers whether it is
-- subscribed. New and existing labels are subscribed (clients that list only subscribed
-- folders show them). The REST label object does not show this column.

ALTER TABLE labels ADD COLUMN subscribed BOOLEAN NOT NULL DEFAULT TRUE;
