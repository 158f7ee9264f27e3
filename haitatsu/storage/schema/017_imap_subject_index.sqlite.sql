-- SEARCH SUBJECT over a whole folder reads every message's subject. In SQLite that column sits
-- behind the headers JSON in the row, often on overflow pages; an index holding (id, subject)
-- answers it without reading the rows (the query names it with INDEXED BY: the planner prefers
-- the primary key's index for an equality lookup). (PostgreSQL: 017_imap_subject_index.postgres.sql.)

CREATE INDEX messages_id_subject ON messages (id, subject);
