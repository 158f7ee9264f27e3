-- The raw lines of the header fields IMAP clients fetch for their message lists
-- (haitatsu/mime/stored_fields.py: STORED_FIELDS), kept at delivery so that
-- BODY.PEEK[HEADER.FIELDS (...)] naming only those fields is answered without opening the blob.
-- NULL for messages stored before this column (and where the lines could not be kept): FETCH
-- reads their header from the blob. (PostgreSQL: 034_message_header_fields.postgres.sql.)
ALTER TABLE messages ADD COLUMN header_fields BLOB;
