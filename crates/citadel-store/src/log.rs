//! The Merkle log's storage: every appended event becomes the next leaf, and
//! the C2SP tlog-tiles hash tiles are brought up to date in the same
//! transaction, so the stored tree always covers exactly the stored events.
//!
//! Writers take turns on the `log_state` row (locked first thing in every
//! append), so gateway replicas and CLI commands sharing a database never
//! interleave their leaves. A writer keeps the right edge of the tree in
//! memory and re-reads it only when another writer moved the tree.

use std::collections::BTreeMap;
use std::sync::Arc;

use citadel_core::merkle::{
    self, CompactRange, FromTiles, Hash, ProofError, TileReader, TILE_HEIGHT, TILE_WIDTH,
};
use sqlx::Row;

use crate::{Backend, Result, Store, StoreError};

/// The right edge of the stored tree: its compact range and the partial
/// tile at each tile level (the only tiles an append can change).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogEdge {
    range: CompactRange,
    /// `partial[L]`: hashes of tile `(L, size >> 8(L+1))`, fewer than 256.
    partial: Vec<Vec<Hash>>,
}

/// Tiles changed by a batch, to be written with it.
type DirtyTiles = BTreeMap<(u8, u64), Vec<Hash>>;

impl LogEdge {
    pub(crate) fn size(&self) -> u64 {
        self.range.size()
    }

    /// Reads the edge of the tree of `size` leaves from the stored tiles.
    pub(crate) async fn load(conn: &mut sqlx::AnyConnection, size: u64) -> Result<Self> {
        let mut partial = Vec::new();
        let mut tiles: BTreeMap<(u8, u64), Arc<[Hash]>> = BTreeMap::new();
        let mut level = 0u8;
        loop {
            let shift = u32::from(level) * u32::from(TILE_HEIGHT);
            if shift >= 64 || size >> shift == 0 {
                break;
            }
            let n = (size >> shift) / TILE_WIDTH;
            let width = ((size >> shift) % TILE_WIDTH) as usize;
            let hashes = if width == 0 {
                Vec::new()
            } else {
                let stored = read_tile_on(conn, level, n).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "log tile {level}/{n} is missing (tree size {size})"
                    ))
                })?;
                if stored.len() < width {
                    return Err(StoreError::Corrupt(format!(
                        "log tile {level}/{n} holds {} hashes, the tree of size {size} needs {width}",
                        stored.len()
                    )));
                }
                stored[..width].to_vec()
            };
            tiles.insert((level, n), hashes.clone().into());
            partial.push(hashes);
            level += 1;
        }
        let range = CompactRange::at(&FromTiles(&MapTiles(&tiles)), size)
            .map_err(|e| StoreError::Corrupt(format!("log edge at size {size}: {e}")))?;
        Ok(Self { range, partial })
    }

    /// Appends one leaf, noting the tiles it changes.
    fn append(&mut self, leaf: Hash, dirty: &mut DirtyTiles) {
        let partial = &mut self.partial;
        self.range.append(leaf, |level, index, hash| {
            if level % TILE_HEIGHT != 0 {
                return;
            }
            let tile_level = level / TILE_HEIGHT;
            let slot = usize::from(tile_level);
            if partial.len() <= slot {
                partial.resize_with(slot + 1, Vec::new);
            }
            let tile = &mut partial[slot];
            tile.push(*hash);
            dirty.insert((tile_level, index / TILE_WIDTH), tile.clone());
            if tile.len() == TILE_WIDTH as usize {
                tile.clear();
            }
        });
    }

    /// The root of the tree so far.
    pub(crate) fn root(&self) -> Hash {
        self.range.root()
    }
}

struct MapTiles<'a>(&'a BTreeMap<(u8, u64), Arc<[Hash]>>);

impl TileReader for MapTiles<'_> {
    fn read_tile(&self, level: u8, n: u64) -> std::result::Result<Arc<[Hash]>, ProofError> {
        self.0
            .get(&(level, n))
            .cloned()
            .ok_or(ProofError::MissingTile { level, n })
    }
}

async fn read_tile_on(
    conn: &mut sqlx::AnyConnection,
    level: u8,
    n: u64,
) -> Result<Option<Vec<Hash>>> {
    let row = sqlx::query("SELECT hashes FROM log_tiles WHERE level = $1 AND idx = $2")
        .bind(i64::from(level))
        .bind(n as i64)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let bytes: Vec<u8> = row.try_get("hashes")?;
            merkle::tile_hashes(&bytes).map(Some).ok_or_else(|| {
                StoreError::Corrupt(format!("log tile {level}/{n} has {} bytes", bytes.len()))
            })
        }
    }
}

/// Locks the log for this transaction and returns its size.
pub(crate) async fn lock_log(conn: &mut sqlx::AnyConnection) -> Result<u64> {
    // The write comes first so that SQLite takes its write lock now (waiting
    // out other writers) rather than failing a read-then-write upgrade later;
    // on PostgreSQL it is a row lock that serializes writers.
    sqlx::query("UPDATE log_state SET size = size WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let size: i64 = sqlx::query_scalar("SELECT size FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(size as u64)
}

/// Assigns log indexes to `bodies` (in order) by appending their leaves to
/// `edge`, writes the changed tiles and the new size. Returns the index of
/// the first. Runs inside the caller's transaction, after [`lock_log`].
pub(crate) async fn extend_log<'b>(
    conn: &mut sqlx::AnyConnection,
    edge: &mut LogEdge,
    bodies: impl Iterator<Item = &'b str>,
) -> Result<u64> {
    let first = edge.size();
    let mut dirty = DirtyTiles::new();
    for body in bodies {
        edge.append(merkle::leaf_hash(body.as_bytes()), &mut dirty);
    }
    for ((level, n), hashes) in dirty {
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        sqlx::query(
            "INSERT INTO log_tiles (level, idx, hashes) VALUES ($1, $2, $3) \
             ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
        )
        .bind(i64::from(level))
        .bind(n as i64)
        .bind(bytes)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE log_state SET size = $1 WHERE id = 1")
        .bind(edge.size() as i64)
        .execute(&mut *conn)
        .await?;
    Ok(first)
}

/// An entry with the columns stored beside it.
#[derive(Debug, Clone)]
pub struct EntryColumns {
    /// Log index.
    pub index: u64,
    /// `id` column.
    pub id: String,
    /// `time` column.
    pub time: i64,
    /// `class_uid` column.
    pub class_uid: i64,
    /// `outcome` column.
    pub outcome: String,
    /// `principal` column.
    pub principal: Option<String>,
    /// `request_id` column.
    pub request_id: Option<String>,
    /// The entry.
    pub body: String,
}

/// The entries of one bundle as read by [`Store::read_log_bundles`].
#[derive(Debug, Clone)]
pub struct BundleText {
    /// Bundle number (entries `256·bundle ..`).
    pub bundle: u64,
    /// The smallest entry index in it.
    pub first: u64,
    /// Entries in it.
    pub count: u64,
    /// Entries whose stored index is not their place (SQLite: row id − 1).
    pub misplaced: u64,
    /// The entries, in order, joined by `\n`.
    pub bodies: String,
}

/// One stored entry of the log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Position in the log.
    pub index: u64,
    /// The entry as stored: the event's OCSF JSON, the bytes its leaf hashes.
    pub body: String,
}

/// A stored signed checkpoint.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Tree size it commits to.
    pub size: u64,
    /// The signed note, as served.
    pub note: String,
    /// When it was made, Unix ms.
    pub created_at: i64,
}

impl Store {
    /// The number of leaves in the log.
    pub async fn log_size(&self) -> Result<u64> {
        let size: i64 = sqlx::query_scalar("SELECT size FROM log_state WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(size as u64)
    }

    /// The size and root of the log now, read consistently.
    pub async fn log_head(&self) -> Result<(u64, Hash)> {
        let mut tx = self.pool().begin().await?;
        let size: i64 = sqlx::query_scalar("SELECT size FROM log_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let edge = LogEdge::load(&mut tx, size as u64).await?;
        tx.commit().await?;
        Ok((size as u64, edge.root()))
    }

    /// The stored hashes of tile `(level, n)`, if it exists.
    pub async fn read_log_tile(&self, level: u8, n: u64) -> Result<Option<Vec<Hash>>> {
        let mut conn = self.pool().acquire().await?;
        read_tile_on(&mut conn, level, n).await
    }

    /// Several tiles at once (those that exist).
    pub async fn read_log_tiles(
        &self,
        keys: &[(u8, u64)],
    ) -> Result<std::collections::HashMap<(u8, u64), Vec<Hash>>> {
        let mut found = std::collections::HashMap::new();
        let mut by_level: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        for (level, n) in keys {
            by_level.entry(*level).or_default().push(*n);
        }
        for (level, ns) in by_level {
            for chunk in ns.chunks(500) {
                let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT idx, hashes FROM log_tiles WHERE level = $1 AND idx IN ({})",
                    marks.join(",")
                );
                let mut q = sqlx::query(&sql).bind(i64::from(level));
                for n in chunk {
                    q = q.bind(*n as i64);
                }
                for row in q.fetch_all(self.pool()).await? {
                    let n: i64 = row.try_get("idx")?;
                    let bytes: Vec<u8> = row.try_get("hashes")?;
                    let hashes = merkle::tile_hashes(&bytes).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "log tile {level}/{n} has {} bytes",
                            bytes.len()
                        ))
                    })?;
                    found.insert((level, n as u64), hashes);
                }
            }
        }
        Ok(found)
    }

    /// Rows of a range query over log indexes `[from, from + count)`.
    async fn fetch_range(
        &self,
        q: LogSql,
        from: u64,
        count: u64,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        Ok(sqlx::query(sql_for(self.backend(), q))
            .bind(from.min(i64::MAX as u64) as i64)
            .bind(from.saturating_add(count).min(i64::MAX as u64) as i64)
            .bind(count.min(1 << 20) as i64)
            .fetch_all(self.pool())
            .await?)
    }

    /// Entries `[from, from + count)` in index order (fewer if the log is shorter).
    pub async fn read_log_entries(&self, from: u64, count: u64) -> Result<Vec<LogEntry>> {
        let rows = self.fetch_range(ENTRY_RANGE, from, count).await?;
        rows.iter()
            .map(|row| {
                let index = row.try_get::<i64, _>("log_index")? as u64;
                let body: Option<String> = row.try_get("body")?;
                Ok(LogEntry {
                    index,
                    body: body.ok_or_else(|| {
                        StoreError::Corrupt(format!("entry {index} has no stored body"))
                    })?,
                })
            })
            .collect()
    }

    /// Entries in bundles of 256 (`bundle` `from` onwards, `count` of them),
    /// each bundle's entries joined by newlines in one string, for readers
    /// that go through the whole log (the verifier): one row per 256
    /// entries instead of one per entry. A bundle with a hole, an entry out
    /// of place or an entry that contains a newline (none that Citadel
    /// writes do) shows in its counts; the reader then reads it entry by entry.
    pub async fn read_log_bundles(&self, from: u64, count: u64) -> Result<Vec<BundleText>> {
        let mut conn = self.pool().acquire().await?;
        let mut out = Vec::with_capacity(count as usize);
        for bundle in from..from.saturating_add(count) {
            let first = bundle
                .saturating_mul(TILE_WIDTH)
                .min(i64::MAX as u64 - TILE_WIDTH) as i64;
            let row = sqlx::query(sql_for(self.backend(), BUNDLE))
                .bind(first)
                .bind(first + TILE_WIDTH as i64)
                .fetch_one(&mut *conn)
                .await?;
            let n: i64 = row.try_get("n")?;
            if n == 0 {
                continue;
            }
            let first_index = row.try_get::<i64, _>("first")?;
            let seqs: Option<String> = row.try_get("seqs")?;
            // Out of order counts as misplaced: the reader goes entry by entry.
            let in_order = seqs.is_none_or(|seqs| {
                seqs.split(',')
                    .map(|s| s.parse::<i64>().ok())
                    .eq((first_index + 1..first_index + 1 + n).map(Some))
            });
            out.push(BundleText {
                bundle,
                first: first_index as u64,
                count: n as u64,
                misplaced: row.try_get::<i64, _>("misplaced")? as u64 + u64::from(!in_order),
                bodies: row.try_get("bodies")?,
            });
        }
        Ok(out)
    }

    /// The wrapped keys of these subjects: `Some(None)` for a shredded key,
    /// absent for a subject without one.
    pub async fn subject_keys(
        &self,
        refs: &[String],
    ) -> Result<std::collections::HashMap<String, Option<Vec<u8>>>> {
        let mut found = std::collections::HashMap::new();
        for chunk in refs.chunks(256) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT subject_ref, wrapped FROM subject_keys WHERE subject_ref IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(r.as_str());
            }
            for row in q.fetch_all(self.pool()).await? {
                found.insert(row.try_get("subject_ref")?, row.try_get("wrapped")?);
            }
        }
        Ok(found)
    }

    /// Stores a subject's wrapped key unless it has one (another writer's
    /// wins; the caller reads back which).
    pub async fn insert_subject_key(&self, subject_ref: &str, wrapped: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO subject_keys (subject_ref, wrapped, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject_ref) DO NOTHING",
        )
        .bind(subject_ref)
        .bind(wrapped.to_vec())
        .bind(citadel_core::clock::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether the subject's key was destroyed at or after `since` (Unix ms).
    pub async fn subject_erased_since(&self, subject_ref: &str, since: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS erased FROM subject_keys WHERE subject_ref LIKE $1 AND shredded_at >= $2 LIMIT 1",
        )
        .bind(format!("{subject_ref}:shredded:%"))
        .bind(since)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Destroys a subject's key (crypto-shredding). Returns whether there
    /// was one to destroy. A later event about the subject gets a new key.
    pub async fn shred_subject_key(&self, subject_ref: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE subject_keys SET wrapped = NULL, shredded_at = $1, subject_ref = subject_ref || ':shredded:' || $1 \
             WHERE subject_ref = $2 AND wrapped IS NOT NULL",
        )
        .bind(citadel_core::clock::now_ms())
        .bind(subject_ref)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The next log index exporter `name` has to deliver (0 if new).
    pub async fn export_cursor(&self, name: &str) -> Result<u64> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT next_index FROM export_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(next.unwrap_or(0) as u64)
    }

    /// Records that exporter `name` delivered everything before `next`.
    pub async fn set_export_cursor(&self, name: &str, next: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO export_cursors (name, next_index, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET next_index = excluded.next_index, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(next as i64)
        .bind(citadel_core::clock::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The first entry recorded at or after `time` (Unix ms).
    pub async fn log_index_at_time(&self, time: i64) -> Result<Option<u64>> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MIN(log_index) FROM events WHERE time >= $1")
                .bind(time)
                .fetch_one(self.pool())
                .await?;
        Ok(found.map(|n| n as u64))
    }

    /// Entries `[from, from + count)` with the columns the store keeps
    /// beside each (for filtering), so a verifier can check that they say
    /// what the entry says.
    pub async fn read_log_entry_columns(&self, from: u64, count: u64) -> Result<Vec<EntryColumns>> {
        let rows = self.fetch_range(COLUMNS_RANGE, from, count).await?;
        rows.iter()
            .map(|row| {
                Ok(EntryColumns {
                    index: row.try_get::<i64, _>("log_index")? as u64,
                    id: row.try_get("id")?,
                    time: row.try_get("time")?,
                    class_uid: row.try_get("class_uid")?,
                    outcome: row.try_get("outcome")?,
                    principal: row.try_get("principal")?,
                    request_id: row.try_get("request_id")?,
                    body: row
                        .try_get::<Option<String>, _>("body")?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The smallest stored entry index at or after `from`.
    pub async fn next_log_index(&self, from: u64) -> Result<Option<u64>> {
        let next: Option<i64> = sqlx::query_scalar(sql_for(self.backend(), NEXT_INDEX))
            .bind(from.min(i64::MAX as u64) as i64)
            .fetch_optional(self.pool())
            .await?;
        Ok(next.map(|n| n as u64))
    }

    /// Stores a signed checkpoint. A second checkpoint for the same size
    /// (another replica's) is ignored: both commit to the same tree.
    pub async fn insert_checkpoint(&self, size: u64, note: &str, created_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO log_checkpoints (size, note, created_at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING",
        )
        .bind(size as i64)
        .bind(note)
        .bind(created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The checkpoint of the largest size, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, note, created_at FROM log_checkpoints ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| checkpoint_from(&r)).transpose()
    }

    /// Every stored checkpoint, smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        let rows = sqlx::query("SELECT size, note, created_at FROM log_checkpoints ORDER BY size")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(checkpoint_from).collect()
    }

    /// Checks that the stored tree covers exactly the stored events and
    /// brings it up to date with events stored before the log existed (an
    /// upgraded database). Refuses, loudly, a tree that is ahead of its
    /// entries or has a hole: that is a damaged or tampered store, and
    /// `citadel audit verify` says where.
    pub async fn check_log(&self) -> Result<()> {
        let backend = self.backend();
        let mut tx = self.pool().begin().await?;
        let size = lock_log(&mut tx).await?;
        // O(1) at start, whatever the log's length: the last index, and the
        // last entry checked against its tile. Holes and changes further
        // back are `citadel audit verify`'s to find.
        let max: Option<i64> = sqlx::query_scalar(sql_for(backend, LAST_INDEX))
            .fetch_one(&mut *tx)
            .await?;
        let entries = max.map_or(0, |m| m as u64 + 1);
        if entries < size {
            return Err(StoreError::Corrupt(format!(
                "the audit log's tree covers {size} entries but only {entries} are stored"
            )));
        }
        let mut edge = LogEdge::load(&mut tx, size).await?;
        if size > 0 {
            let last = size - 1;
            let body: Option<String> = sqlx::query_scalar(sql_for(backend, ENTRY_AT))
                .bind(last as i64)
                .fetch_optional(&mut *tx)
                .await?;
            let tile = read_tile_on(&mut tx, 0, last / TILE_WIDTH).await?;
            let stored = tile
                .as_ref()
                .and_then(|t| t.get((last % TILE_WIDTH) as usize));
            match body {
                Some(body) if stored == Some(&merkle::leaf_hash(body.as_bytes())) => {}
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "the audit log's last entry ({last}) is missing or does not match its tile"
                    )))
                }
            }
        }
        if entries > size {
            // Only events the upgrade to the log found are taken in; rows
            // that appeared in the table some other way are refused.
            let backfill: i64 =
                sqlx::query_scalar("SELECT backfill_to FROM log_state WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            if entries > backfill as u64 {
                return Err(StoreError::Corrupt(format!(
                    "{} events were stored without being added to the audit log (entries {size}..{entries})",
                    entries - size
                )));
            }
            tracing::warn!(
                from = size,
                to = entries,
                "adding events stored before the audit log existed to the log"
            );
            let rows = sqlx::query(sql_for(backend, ENTRIES_FROM))
                .bind(size as i64)
                .fetch_all(&mut *tx)
                .await?;
            let bodies: Vec<String> = rows
                .iter()
                .map(|r| r.try_get("body"))
                .collect::<std::result::Result<_, _>>()?;
            if bodies.len() as u64 != entries - size {
                return Err(StoreError::Corrupt(format!(
                    "entries {size}..{entries} have holes; run `citadel audit verify`"
                )));
            }
            extend_log(&mut tx, &mut edge, bodies.iter().map(String::as_str)).await?;
            sqlx::query("UPDATE log_state SET backfill_to = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Log queries that differ by backend: in SQLite an entry's row id is its
/// log index plus one (no index of its own); PostgreSQL indexes `log_index`.
#[derive(Clone, Copy)]
struct LogSql {
    sqlite: &'static str,
    postgres: &'static str,
}

fn sql_for(backend: Backend, q: LogSql) -> &'static str {
    match backend {
        Backend::Sqlite => q.sqlite,
        Backend::Postgres => q.postgres,
    }
}

const LAST_INDEX: LogSql = LogSql {
    sqlite: "SELECT MAX(seq) - 1 FROM events",
    postgres: "SELECT MAX(log_index) FROM events",
};
const ENTRY_AT: LogSql = LogSql {
    sqlite: "SELECT body FROM events WHERE seq = $1 + 1",
    postgres: "SELECT body FROM events WHERE log_index = $1",
};
const ENTRIES_FROM: LogSql = LogSql {
    sqlite: "SELECT body FROM events WHERE seq > $1 ORDER BY seq",
    postgres: "SELECT body FROM events WHERE log_index >= $1 ORDER BY log_index",
};
const ENTRY_RANGE: LogSql = LogSql {
    sqlite: "SELECT log_index, body FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    postgres: "SELECT log_index, body FROM events WHERE log_index >= $1 AND log_index < $2 \
               ORDER BY log_index LIMIT $3",
};
const BUNDLE: LogSql = LogSql {
    // Rows come in row-id order from the range scan and group_concat joins
    // them in the order it is fed (an ORDER BY inside the aggregate would
    // buffer and sort, halving the verifier's speed). The row ids joined
    // the same way, in the same pass, prove the order was row-id order.
    // Aggregates skip NULLs, so a row whose body was made NULL (its text
    // moved into a neighbour) would vanish from the join: rows without a
    // body, like rows out of place, send the reader entry by entry.
    sqlite: "SELECT MIN(seq) - 1 AS first, COUNT(*) AS n, \
             COALESCE(SUM(CASE WHEN log_index = seq - 1 AND body IS NOT NULL THEN 0 ELSE 1 END), 0) AS misplaced, \
             group_concat(seq) AS seqs, group_concat(body, char(10)) AS bodies \
             FROM events WHERE seq > $1 AND seq <= $2",
    postgres: "SELECT MIN(log_index) AS first, COUNT(*) AS n, \
               COUNT(*) - COUNT(body) + COUNT(*) - COUNT(DISTINCT log_index) AS misplaced, \
               CAST(NULL AS TEXT) AS seqs, string_agg(body, E'\\n' ORDER BY log_index) AS bodies \
               FROM events WHERE log_index >= $1 AND log_index < $2",
};
const COLUMNS_RANGE: LogSql = LogSql {
    sqlite:
        "SELECT log_index, id, time, class_uid, outcome, principal, request_id, body FROM events \
             WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    postgres:
        "SELECT log_index, id, time, class_uid, outcome, principal, request_id, body FROM events \
               WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index LIMIT $3",
};
const NEXT_INDEX: LogSql = LogSql {
    sqlite: "SELECT log_index FROM events WHERE seq > $1 ORDER BY seq LIMIT 1",
    postgres: "SELECT log_index FROM events WHERE log_index >= $1 ORDER BY log_index LIMIT 1",
};

fn checkpoint_from(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: row.try_get::<i64, _>("size")? as u64,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}
