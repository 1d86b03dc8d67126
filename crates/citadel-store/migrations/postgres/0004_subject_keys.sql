-- Citadel schema, version 4 (PostgreSQL): per-subject keys. Keep in step
-- with ../sqlite/0004_subject_keys.sql.
CREATE TABLE subject_keys (
    subject_ref  TEXT PRIMARY KEY,
    wrapped      BYTEA,
    created_at   BIGINT NOT NULL,
    shredded_at  BIGINT
);
