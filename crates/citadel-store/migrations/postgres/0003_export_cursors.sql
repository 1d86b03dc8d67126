-- Citadel schema, version 3 (PostgreSQL): where each SIEM exporter is in the log.
-- Keep in step with ../sqlite/0003_export_cursors.sql.
CREATE TABLE export_cursors (
    name        TEXT PRIMARY KEY,
    next_index  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
