-- Citadel schema, version 1 (SQLite). Keep in step with ../postgres/0001_init.sql:
-- same tables, same columns, same meaning.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    roles       TEXT NOT NULL,            -- JSON array of role names
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    builtin     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    owner_kind   TEXT NOT NULL,           -- user | service_account
    owner_id     TEXT NOT NULL,
    owner_name   TEXT NOT NULL,
    roles        TEXT NOT NULL,           -- JSON array
    hash         TEXT NOT NULL,           -- HMAC-SHA256 of the secret, hex
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    rpm          INTEGER,
    tpm          INTEGER
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);

-- Append-only security event store. Rows are never updated or deleted by Citadel.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    time        INTEGER NOT NULL,
    class_uid   INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    principal   TEXT,
    request_id  TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_principal ON events (principal, time);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- A counter bumped by every change to enforcement state (keys, users, roles),
-- so that every gateway process notices the change within its poll interval.
CREATE TABLE enforcement_state (
    id      INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO enforcement_state (id, version) VALUES (1, 1);
