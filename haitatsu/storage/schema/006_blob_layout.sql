-- Deduplicated storage: a message may be a skeleton plus one blob per large part, and blobs
-- carry what garbage collection needs (see docs/storage.md, "Reference counts and garbage
-- collection").

-- NULL: the whole message is the blob named by blob_key. Otherwise a JSON list of segments
-- [[blob_key, offset, length], ...] whose concatenation is the message, byte for byte.
ALTER TABLE messages ADD COLUMN layout TEXT;

-- When a delivery last leased the blob, a reference was last added or dropped, or garbage
-- collection claimed it: collection takes only rows with refcount 0 untouched for the grace
-- period. While collection deletes the object, the row's refcount is -1 (claimed).
ALTER TABLE blobs ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- A fresh random token each time the row is inserted: a delivery commits its reference only to
-- the row it leased, never to one re-created after garbage collection removed the blob.
ALTER TABLE blobs ADD COLUMN generation TEXT NOT NULL DEFAULT '';

UPDATE blobs SET updated_at = created_at;

CREATE INDEX blobs_unreferenced ON blobs (updated_at) WHERE refcount <= 0;
