-- The REST message view's `message` object (API.md 1.7), stored at delivery
-- (haitatsu/storage/views.py): a message row never changes once written, so the list and get
-- splice this JSON into their answers instead of building and encoding ~7 KB a message for
-- every request (docs/benchmarks.md, REST). NULL for messages stored before this version (and
-- any the encoder refused): the API builds their object from the columns, as before.
--
-- Should a row ever be updated, the stored object may no longer match it: an UPDATE that
-- leaves view_json as it was clears it (the read path then builds the object from the row).

ALTER TABLE messages ADD COLUMN view_json TEXT;

CREATE TRIGGER messages_view_stale AFTER UPDATE ON messages
WHEN new.view_json IS NOT NULL AND new.view_json IS old.view_json
BEGIN
    UPDATE messages SET view_json = NULL WHERE id = new.id; END;
