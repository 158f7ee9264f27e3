-- Full-text search on PostgreSQL: a stored, GIN-indexed tsvector over subject, addresses and the
-- text/html extracts, computed by the INSERT of the deliver transaction itself.
-- Addresses are indexed with '@' and '.' read as spaces, so "alice" finds alice@example.org;
-- the engine's search_clause translates the query the same way. (SQLite: 003_search.sqlite.sql.)

ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, subject), 'A')
    || to_tsvector('english'::regconfig,
        translate(from_addresses || ' ' || to_addresses || ' ' || cc_addresses, '@.', '  '))
    || to_tsvector('english'::regconfig, text_body_extract || ' ' || html_body_extract)
) STORED;

CREATE INDEX messages_search ON messages USING GIN (search_vector);
