-- Citadel schema, version 11 (SQLite): data keys of the key hierarchy, one
-- row per purpose and version, each wrapped by the root key (a key file,
-- an environment variable or an external KMS; root names which). The
-- plaintext keys are never stored. Keep in step with
-- ../postgres/0011_data_keys.sql.
CREATE TABLE data_keys (
    purpose     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    wrapped     TEXT NOT NULL,
    root        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (purpose, version)
);
