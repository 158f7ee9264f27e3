-- Shared state of the greylist and rate_limit filters (docs/plugins.md): every node reads and
-- writes the same rows, so a client greylisted by one node passes on another when it retries,
-- and a rate limit counts the mail of every node. Times are nanoseconds since the epoch.

-- One row per (client network, sender, recipient) triplet: when it was first seen, when it
-- last came back, and when a retry after the delay passed it (0: not yet).
CREATE TABLE greylist (
    client TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    passed_at BIGINT NOT NULL DEFAULT 0,
    deferrals INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client, sender, recipient)
);

CREATE INDEX greylist_last_seen ON greylist (last_seen);

-- Client networks that passed greylisting: after enough passes they are let through at once.
CREATE TABLE greylist_clients (
    client TEXT PRIMARY KEY,
    passes INTEGER NOT NULL,
    last_pass BIGINT NOT NULL
);

CREATE INDEX greylist_clients_last_pass ON greylist_clients (last_pass);

-- Token buckets: the tokens left in a bucket ("ip:192.0.2.7") when it was last updated.
CREATE TABLE rate_limits (
    bucket TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX rate_limits_updated ON rate_limits (updated_at);
