-- Citadel schema, version 12 (SQLite): captured prompts and answers, and
-- the pseudonym vault. Content is sealed under the data subject's key (the
-- subject vault), so erasing the subject leaves nothing readable; rows are
-- filed under the subject's keyed hash, never the name. A purge removes
-- content (sealed := NULL, purged_at set) and, later, the rows.
-- Keep in step with ../postgres/0012_captures.sql.
CREATE TABLE captures (
    id          TEXT PRIMARY KEY,
    request_id  TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    kind        TEXT NOT NULL,
    route       TEXT NOT NULL,
    model       TEXT NOT NULL,
    data_class  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sealed      TEXT,
    purged_at   INTEGER
);
CREATE INDEX captures_by_subject ON captures (subject_ref);
CREATE INDEX captures_by_time ON captures (created_at);

CREATE TABLE pseudonyms (
    token       TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (token, subject_ref)
);
