-- IMAP on large folders: a session brings its view of the selected folder up to date by
-- asking for the rows whose MODSEQ is above the one it has reported (and the UIDs vanished
-- since, already indexed by expunged_uids_modseq). This index makes that cost the number of
-- changes, not the number of messages in the folder.

CREATE INDEX mailbox_messages_folder_modseq ON mailbox_messages (folder_id, modseq);
