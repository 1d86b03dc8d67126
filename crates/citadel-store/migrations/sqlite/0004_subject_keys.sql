-- Citadel schema, version 4 (SQLite): per-subject keys that seal the fields
-- of security events that identify a person. Destroying a subject's key
-- (wrapped = NULL) erases those fields everywhere without touching the
-- Merkle log. Keep in step with ../postgres/0004_subject_keys.sql.
CREATE TABLE subject_keys (
    subject_ref  TEXT PRIMARY KEY,   -- keyed hash of the subject id, never the id
    wrapped      BLOB,               -- the data key wrapped by the key-encryption key; NULL once shredded
    created_at   INTEGER NOT NULL,
    shredded_at  INTEGER
);
