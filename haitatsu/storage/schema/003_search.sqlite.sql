-- Full-text search on SQLite: an FTS5 table over subject, addresses and the text/html extracts,
-- kept in sync by triggers, so the deliver transaction that inserts a message indexes it.
-- (PostgreSQL: 003_search.postgres.sql. Trigger bodies keep their inner semicolons mid-line.)

CREATE VIRTUAL TABLE message_search USING fts5 (
    message_id UNINDEXED,
    subject,
    addresses,
    body,
    tokenize = 'porter unicode61'
);

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (message_id, subject, addresses, body) VALUES (new.id, new.subject, new.from_addresses || ' ' || new.to_addresses || ' ' || new.cc_addresses, new.text_body_extract || ' ' || new.html_body_extract); END;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE message_id = old.id; END;

INSERT INTO message_search (message_id, subject, addresses, body)
SELECT id, subject, from_addresses || ' ' || to_addresses || ' ' || cc_addresses,
    text_body_extract || ' ' || html_body_extract
FROM messages;
