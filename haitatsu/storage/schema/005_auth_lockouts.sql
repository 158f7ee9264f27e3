-- Login throttling (API.md 5.3): failed logins per remote IP, shared by every node.
-- One row per IP: the failures counted since window_start, and locked_until (ns) once the IP
-- reached the limit. A success deletes the row; housekeeping prunes rows idle for 24 hours.

CREATE TABLE auth_lockouts (
    remote_ip TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX auth_lockouts_updated ON auth_lockouts (updated_at);
