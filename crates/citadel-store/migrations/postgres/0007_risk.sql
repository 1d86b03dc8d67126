-- Citadel schema, version 7 (PostgreSQL): per-principal risk scores, which
-- continuous verification reads and detection (and operators) set.
-- Keep in step with ../sqlite/0007_risk.sql.
CREATE TABLE risk_scores (
    principal_id  TEXT PRIMARY KEY,
    score         BIGINT NOT NULL,      -- 0..100 when set; decays with time
    updated_at    BIGINT NOT NULL,
    reason        TEXT NOT NULL
);
