-- Per-domain quotas (our addition to the contract; docs/storage.md "Quota accounting").
-- A domain's usage is not stored: it is the sum of used_bytes over the mailboxes whose
-- primary address is in the domain, so nothing can drift. mailboxes.domain is the lowercased
-- part after the last "@" of primary_address, written once at create (addresses never change).

CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    quota_bytes BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX domains_created ON domains (created_at, name);

ALTER TABLE mailboxes ADD COLUMN domain TEXT NOT NULL DEFAULT '';

-- rtrim(s, <every character of s but "@">) keeps s up to its last "@"; SQLite and PostgreSQL
-- both have rtrim with a character set, so one statement serves both.
UPDATE mailboxes SET domain = substr(address_lower, length(rtrim(address_lower, replace(address_lower, '@', ''))) + 1);

CREATE INDEX mailboxes_domain ON mailboxes (domain);
