-- Citadel schema, version 1 (PostgreSQL). Keep in step with ../sqlite/0001_init.sql.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    roles       TEXT NOT NULL,
    disabled    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    builtin     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    owner_kind   TEXT NOT NULL,
    owner_id     TEXT NOT NULL,
    owner_name   TEXT NOT NULL,
    roles        TEXT NOT NULL,
    hash         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    rpm          BIGINT,
    tpm          BIGINT
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);

CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    time        BIGINT NOT NULL,
    class_uid   BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    principal   TEXT,
    request_id  TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_principal ON events (principal, time);

CREATE FUNCTION citadel_events_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'events are append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION citadel_events_append_only();

CREATE TABLE enforcement_state (
    id      BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO enforcement_state (id, version) VALUES (1, 1);
