-- FETCH of ENVELOPE over a whole folder reads every message's envelope. In SQLite that column
-- sits behind the headers JSON and the text extracts in the row, mostly on overflow pages (a
-- join reading it cost about 6 microseconds a message on 100,000 messages); an index holding
-- (id, envelope) answers it without reading the rows (about 1.4), as 017 does for subjects.
-- (PostgreSQL: 032_imap_envelope_index.postgres.sql.)

CREATE INDEX messages_id_envelope ON messages (id, envelope);
