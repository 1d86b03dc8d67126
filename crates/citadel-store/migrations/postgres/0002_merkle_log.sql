-- Citadel schema, version 2 (PostgreSQL): the tamper-evident Merkle log over
-- the event store. Keep in step with ../sqlite/0002_merkle_log.sql.

ALTER TABLE events ADD COLUMN log_index BIGINT;
ALTER TABLE events DISABLE TRIGGER events_append_only;
UPDATE events SET log_index = numbered.n
FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) - 1 AS n FROM events) AS numbered
WHERE events.seq = numbered.seq;
ALTER TABLE events ENABLE TRIGGER events_append_only;
ALTER TABLE events ALTER COLUMN log_index SET NOT NULL;
CREATE UNIQUE INDEX events_log_index ON events (log_index);

CREATE TABLE log_tiles (
    level   BIGINT NOT NULL,
    idx     BIGINT NOT NULL,
    hashes  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE FUNCTION citadel_log_tiles_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'tiles are append-only'; END IF;
    IF length(OLD.hashes) = 8192 THEN RAISE EXCEPTION 'full tiles are final'; END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER log_tiles_guard BEFORE UPDATE OR DELETE ON log_tiles
FOR EACH ROW EXECUTE FUNCTION citadel_log_tiles_guard();

CREATE TABLE log_state (
    id           BIGINT PRIMARY KEY,
    size         BIGINT NOT NULL,
    backfill_to  BIGINT NOT NULL
);
INSERT INTO log_state (id, size, backfill_to) VALUES (1, 0, (SELECT COUNT(*) FROM events));

CREATE TABLE log_checkpoints (
    size        BIGINT PRIMARY KEY,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE FUNCTION citadel_log_checkpoints_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'checkpoints are append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE ON log_checkpoints
FOR EACH ROW EXECUTE FUNCTION citadel_log_checkpoints_append_only();
