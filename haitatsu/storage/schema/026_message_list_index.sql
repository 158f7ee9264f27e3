-- The REST message list of one folder (`?folder_id=`, or `folder:` in `q`) pages newest first,
-- `created_at DESC, id DESC`, with a keyset cursor. mailbox_messages_mailbox serves the whole
-- mailbox; for one folder the list walked it and looked every row up to test the folder: 100 ms
-- a page for a small folder in a mailbox of 100,000 messages. This index makes it a range.
CREATE INDEX mailbox_messages_folder_created ON mailbox_messages (folder_id, created_at, id);
