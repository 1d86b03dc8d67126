-- Citadel schema, version 6 (PostgreSQL): devices and workload identities.
-- Keep in step with ../sqlite/0006_devices_workloads.sql.

-- One-time enrolment tokens for devices (only a hash is kept).
CREATE TABLE device_enrollment_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT,                     -- the device's owner, if bound
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    device_id   TEXT
);

-- Enrolled devices: the certificate the internal CA issued them, and the
-- latest posture report they signed.
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    user_id         TEXT,
    fingerprint     TEXT NOT NULL UNIQUE, -- SHA-256 of the certificate, hex
    public_key      TEXT NOT NULL,        -- base64 of the P-256 point
    created_at      BIGINT NOT NULL,
    cert_not_after  BIGINT NOT NULL,
    revoked_at      BIGINT,
    posture         TEXT,                 -- JSON of the latest report
    posture_at      BIGINT,
    compliant       BIGINT NOT NULL DEFAULT 0
);

-- Workload identities (SPIFFE IDs) and the roles they act with.
CREATE TABLE workloads (
    spiffe_id   TEXT PRIMARY KEY,
    roles       TEXT NOT NULL,            -- JSON array
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
