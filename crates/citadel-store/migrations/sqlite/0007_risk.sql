-- Citadel schema, version 7 (SQLite): per-principal risk scores, which
-- continuous verification reads and detection (and operators) set.
-- Keep in step with ../postgres/0007_risk.sql.
CREATE TABLE risk_scores (
    principal_id  TEXT PRIMARY KEY,
    score         INTEGER NOT NULL,      -- 0..100 when set; decays with time
    updated_at    INTEGER NOT NULL,
    reason        TEXT NOT NULL
);
