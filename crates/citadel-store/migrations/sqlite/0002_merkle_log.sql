-- Citadel schema, version 2 (SQLite): the tamper-evident Merkle log over the
-- event store. Keep in step with ../postgres/0002_merkle_log.sql.

-- Every event is a leaf of the log; its position is assigned by the writer
-- in the same transaction that stores it. In SQLite the position is the row
-- id less one (seq = log_index + 1), so the log needs no index of its own and
-- reading it in order is a scan of the table. Events stored before this
-- version are renumbered without gaps, in the order they were stored.
ALTER TABLE events ADD COLUMN log_index INTEGER;
DROP TRIGGER events_no_update;
UPDATE events SET seq = -seq;
UPDATE events SET seq = numbered.n
FROM (SELECT seq AS old, ROW_NUMBER() OVER (ORDER BY seq DESC) AS n FROM events) AS numbered
WHERE events.seq = numbered.old;
UPDATE events SET log_index = seq - 1;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_need_log_index BEFORE INSERT ON events
WHEN NEW.log_index IS NULL OR NEW.seq IS NULL OR NEW.seq != NEW.log_index + 1
BEGIN SELECT RAISE(ABORT, 'events need a log index, and seq = log_index + 1'); END;

-- C2SP tlog-tiles hash tiles (height 8): tile (level, idx) holds up to 256
-- 32-byte hashes. A partial tile grows in place until it is full; a full
-- tile never changes. Entry bundles are read from `events` by log_index.
CREATE TABLE log_tiles (
    level   INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    hashes  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER log_tiles_full_are_final BEFORE UPDATE ON log_tiles
WHEN length(OLD.hashes) = 8192
BEGIN SELECT RAISE(ABORT, 'full tiles are final'); END;
CREATE TRIGGER log_tiles_no_delete BEFORE DELETE ON log_tiles
BEGIN SELECT RAISE(ABORT, 'tiles are append-only'); END;

-- The number of leaves the tiles cover. Every append locks this row first,
-- so writers (gateway replicas, the CLI) take turns.
CREATE TABLE log_state (
    id    INTEGER PRIMARY KEY,
    size  INTEGER NOT NULL
);
INSERT INTO log_state (id, size) VALUES (1, 0);

-- Signed checkpoints (C2SP tlog-checkpoint bodies in C2SP signed-note form).
CREATE TABLE log_checkpoints (
    size        INTEGER PRIMARY KEY,
    note        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
