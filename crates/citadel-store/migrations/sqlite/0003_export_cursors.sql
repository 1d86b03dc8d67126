-- Citadel schema, version 3 (SQLite): where each SIEM exporter is in the log.
-- Keep in step with ../postgres/0003_export_cursors.sql.
CREATE TABLE export_cursors (
    name        TEXT PRIMARY KEY,
    next_index  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
