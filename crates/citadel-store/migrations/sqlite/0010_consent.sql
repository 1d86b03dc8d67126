-- Citadel schema, version 10 (SQLite): consent of data subjects to purposes.
-- A subject is stored only as a keyed hash of its id (subject_ref), never
-- the id itself. Each grant is a row; withdrawing closes the open rows, so
-- the history is the receipt. Keep in step with ../postgres/0010_consent.sql.
CREATE TABLE consents (
    id               TEXT PRIMARY KEY,
    subject_ref      TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    version          TEXT NOT NULL,
    text_sha256      TEXT NOT NULL,
    granted_at       INTEGER NOT NULL,
    source           TEXT NOT NULL,
    withdrawn_at     INTEGER,
    withdrawn_source TEXT
);
CREATE INDEX consents_by_subject ON consents (subject_ref, purpose);
-- At most one open grant per subject, purpose and text version.
CREATE UNIQUE INDEX consents_one_open ON consents (subject_ref, purpose, version)
    WHERE withdrawn_at IS NULL;
