-- Citadel schema, version 5 (PostgreSQL): people's credentials, sessions and
-- sign-in throttling. Keep in step with ../sqlite/0005_identity.sql.

-- Argon2id PHC string; NULL for a user who signs in only by other means.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN password_changed_at BIGINT;

-- One TOTP authenticator per user. The seed is sealed (AES-256-GCM) under
-- the installation's authenticator-secrets key, bound to the user id.
CREATE TABLE totp_authenticators (
    user_id      TEXT PRIMARY KEY REFERENCES users (id),
    sealed_seed  TEXT NOT NULL,           -- base64 nonce || ciphertext || tag
    algorithm    TEXT NOT NULL,           -- SHA1 | SHA256 | SHA512
    digits       BIGINT NOT NULL,
    period       BIGINT NOT NULL,        -- seconds
    last_step    BIGINT,                 -- highest time step accepted (replay guard)
    created_at   BIGINT NOT NULL
);

-- Single-use recovery codes, stored as keyed hashes.
CREATE TABLE recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users (id),
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Browser sessions. Only hashes of the cookie and CSRF tokens are kept.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    csrf_hash     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id),
    methods       TEXT NOT NULL,          -- JSON array: pwd, otp, recovery, ...
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    mfa_at        BIGINT,                -- when a second factor was last proved
    source_ip     TEXT NOT NULL,
    user_agent    TEXT,
    revoked_at    BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Failed sign-ins per key (account and address, address, account), with
-- the lock they earned. Shared by every replica.
CREATE TABLE login_throttle (
    key           TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
