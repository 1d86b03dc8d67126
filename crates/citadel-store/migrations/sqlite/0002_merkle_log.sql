-- Citadel schema, version 2 (SQLite): the tamper-evident Merkle log over the
-- event store. Keep in step with ../postgres/0002_merkle_log.sql.

-- Every event is a leaf of the log; its position is assigned by the writer
-- in the same transaction that stores it. In SQLite the position is the row
-- id less one (seq = log_index + 1, a CHECK constraint), so the log needs no
-- index of its own and reading it in order is a scan of the table. The table
-- is rebuilt for that; events stored before this version are numbered
-- without gaps, in the order they were stored.
CREATE TABLE events_logged (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    time        INTEGER NOT NULL,
    class_uid   INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    principal   TEXT,
    request_id  TEXT,
    body        TEXT NOT NULL,
    log_index   INTEGER NOT NULL CHECK (log_index = seq - 1)
);
INSERT INTO events_logged (seq, id, time, class_uid, outcome, principal, request_id, body, log_index)
SELECT ROW_NUMBER() OVER (ORDER BY seq), id, time, class_uid, outcome, principal, request_id, body,
       ROW_NUMBER() OVER (ORDER BY seq) - 1
FROM events ORDER BY seq;
DROP TABLE events;
ALTER TABLE events_logged RENAME TO events;
CREATE INDEX events_time ON events (time);
CREATE INDEX events_principal ON events (principal, time);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

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
-- backfill_to: how many events this upgrade found stored before the log
-- existed; the first start adds them to the log, and only them.
CREATE TABLE log_state (
    id           INTEGER PRIMARY KEY,
    size         INTEGER NOT NULL,
    backfill_to  INTEGER NOT NULL
);
INSERT INTO log_state (id, size, backfill_to) VALUES (1, 0, (SELECT COUNT(*) FROM events));

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
