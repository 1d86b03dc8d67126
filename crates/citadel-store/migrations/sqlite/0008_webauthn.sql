-- Citadel schema, version 8 (SQLite): WebAuthn passkeys and ceremonies in
-- progress. Keep in step with ../postgres/0008_webauthn.sql.
CREATE TABLE webauthn_credentials (
    credential_id  TEXT PRIMARY KEY,      -- base64url
    user_id        TEXT NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    passkey        TEXT NOT NULL,         -- webauthn-rs Passkey (public key, counter), JSON
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);

-- Registration and authentication ceremonies between their start and
-- finish (the server-side state holds the challenge); shared by replicas.
CREATE TABLE webauthn_ceremonies (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- registration | authentication
    state       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
