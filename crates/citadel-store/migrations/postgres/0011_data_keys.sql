-- Citadel schema, version 11 (PostgreSQL): data keys of the key hierarchy, one
-- row per purpose and version, each wrapped by the root key (a key file,
-- an environment variable or an external KMS; root names which). The
-- plaintext keys are never stored. Keep in step with
-- ../sqlite/0011_data_keys.sql.
CREATE TABLE data_keys (
    purpose     TEXT NOT NULL,
    version     BIGINT NOT NULL,
    wrapped     TEXT NOT NULL,
    root        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (purpose, version)
);
