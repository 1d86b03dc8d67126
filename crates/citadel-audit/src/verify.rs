//! The verifiers: recompute the log from its entries and check everything
//! stored against it — tiles, every signed checkpoint — and check exports.
//!
//! Offline verification trusts nothing in the store but the entries' order
//! as given by their indexes: every leaf hash and tile is recomputed, every
//! checkpoint's signature is checked with the verifier key and its root
//! compared with the root recomputed at its size. All checkpoints being
//! roots of prefixes of one sequence of entries is exactly their mutual
//! consistency. The first problem is reported with the entry index it
//! concerns.

use std::collections::BTreeMap;

use citadel_core::merkle::{self, CompactRange, Hash, TILE_HEIGHT, TILE_WIDTH};
use citadel_store::Store;

use crate::note::{Checkpoint, NoteVerifier};

/// What a successful verification covered.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// Stored tiles checked.
    pub tiles: u64,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    /// Size of the largest checkpoint.
    pub checkpointed_size: u64,
    /// Root of the whole log as recomputed (base64 in JSON).
    #[serde(with = "crate::log::b64")]
    pub root: Hash,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct VerifyFailure {
    /// The first entry index the problem concerns, if it points at one.
    pub index: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl VerifyFailure {
    fn at(index: u64, what: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            what: what.into(),
        }
    }

    fn general(what: impl Into<String>) -> Self {
        Self {
            index: None,
            what: what.into(),
        }
    }
}

/// Streams entries into a tree and compares the tiles it completes.
struct Rebuild {
    range: CompactRange,
    /// Tiles being filled, per tile level: `(index, hashes)`.
    filling: Vec<(u64, Vec<Hash>)>,
    /// Tiles completed since the last comparison.
    done: Vec<(u8, u64, Vec<Hash>)>,
}

impl Rebuild {
    fn new() -> Self {
        Self {
            range: CompactRange::new(),
            filling: Vec::new(),
            done: Vec::new(),
        }
    }

    fn push(&mut self, entry: &[u8]) {
        let filling = &mut self.filling;
        let done = &mut self.done;
        self.range
            .append(merkle::leaf_hash(entry), |level, index, hash| {
                let Some((tile_level, n, _)) = merkle::tile_of(level, index) else {
                    return;
                };
                let slot = usize::from(tile_level);
                if filling.len() <= slot {
                    filling.resize_with(slot + 1, || (0, Vec::new()));
                }
                let tile = &mut filling[slot];
                tile.0 = n;
                tile.1.push(*hash);
                if tile.1.len() == TILE_WIDTH as usize {
                    done.push((tile_level, n, std::mem::take(&mut tile.1)));
                }
            });
    }

    /// The partial tiles at the end.
    fn finish(&mut self) {
        for (level, (n, hashes)) in self.filling.iter_mut().enumerate() {
            if !hashes.is_empty() {
                self.done.push((level as u8, *n, std::mem::take(hashes)));
            }
        }
    }

    /// Compares what was rebuilt so far with the stored tiles, the tiles
    /// still being filled as prefixes. Finds the exact entry behind a
    /// checkpoint that does not match.
    async fn first_tile_problem(&self, store: &Store) -> Option<VerifyFailure> {
        let filling = self
            .filling
            .iter()
            .enumerate()
            .filter(|(_, (_, h))| !h.is_empty())
            .map(|(level, (n, h))| (level as u8, *n, h.clone(), false));
        let done = self.done.iter().map(|(l, n, h)| (*l, *n, h.clone(), true));
        let mut problems = Vec::new();
        for (level, n, want, exact) in done.chain(filling) {
            let stored = store.read_log_tile(level, n).await.ok().flatten();
            if let Err(f) = compare_tile(level, n, &want, stored.as_deref(), exact) {
                problems.push((level, f));
            }
        }
        // The lowest level names the entry itself; higher ones a range.
        problems
            .into_iter()
            .min_by_key(|(level, f)| (*level, f.index))
            .map(|(_, f)| f)
    }
}

/// Compares a recomputed tile with the stored one.
fn compare_tile(
    level: u8,
    n: u64,
    want: &[Hash],
    stored: Option<&[Hash]>,
    exact: bool,
) -> Result<(), VerifyFailure> {
    let first_entry =
        |position: u64| (n * TILE_WIDTH + position) << (u32::from(level) * u32::from(TILE_HEIGHT));
    let Some(stored) = stored else {
        return Err(VerifyFailure::at(
            first_entry(0),
            format!("tile {level}/{n} is missing"),
        ));
    };
    for (position, hash) in want.iter().enumerate() {
        match stored.get(position) {
            Some(s) if s == hash => {}
            Some(_) => {
                return Err(VerifyFailure::at(
                    first_entry(position as u64),
                    format!(
                        "tile {level}/{n} hash {position} does not match the entries (entry {})",
                        first_entry(position as u64)
                    ),
                ))
            }
            None => {
                return Err(VerifyFailure::at(
                    first_entry(position as u64),
                    format!("tile {level}/{n} is shorter than the entries need"),
                ))
            }
        }
    }
    if exact && stored.len() > want.len() {
        return Err(VerifyFailure::at(
            first_entry(want.len() as u64),
            format!("tile {level}/{n} covers entries that are not stored"),
        ));
    }
    Ok(())
}

/// Verifies the whole log in `store` with `verifier`. `progress(entries)`
/// is called now and then for long runs.
pub async fn verify_store(
    store: &Store,
    verifier: &NoteVerifier,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyFailure> {
    verify_store_pinned(store, verifier, &[], progress).await
}

/// Like [`verify_store`], also holding the log to checkpoints kept outside
/// it (`pinned`, e.g. saved by an auditor earlier): a store that was cut
/// back, or rewritten with its checkpoints deleted, fails against them.
pub async fn verify_store_pinned(
    store: &Store,
    verifier: &NoteVerifier,
    pinned: &[Checkpoint],
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyFailure> {
    let db = |e: citadel_store::StoreError| {
        VerifyFailure::general(format!("cannot read the store: {e}"))
    };
    // Checkpoints: each must carry a valid signature by the log key.
    let mut checkpoints = BTreeMap::new();
    for stored in store.checkpoints().await.map_err(db)? {
        let checkpoint = Checkpoint::open(&stored.note, verifier).map_err(|e| {
            VerifyFailure::general(format!("checkpoint at size {}: {e}", stored.size))
        })?;
        if checkpoint.size != stored.size {
            return Err(VerifyFailure::general(format!(
                "checkpoint stored at size {} says size {}",
                stored.size, checkpoint.size
            )));
        }
        checkpoints.insert(checkpoint.size, checkpoint);
    }
    for p in pinned {
        match checkpoints.get(&p.size) {
            Some(stored) if stored.root != p.root => {
                return Err(VerifyFailure::general(format!(
                    "the stored checkpoint at size {} differs from the pinned one: the log forked",
                    p.size
                )))
            }
            Some(_) => {}
            None => {
                checkpoints.insert(p.size, p.clone());
            }
        }
    }
    let mut report = VerifyReport {
        checkpoints: checkpoints.len() as u64,
        checkpointed_size: checkpoints.keys().next_back().copied().unwrap_or(0),
        ..Default::default()
    };
    let mut rebuild = Rebuild::new();
    let mut pending = checkpoints.values().peekable();
    let mut last_good = 0u64;
    let check_checkpoints = |rebuild: &Rebuild,
                             pending: &mut std::iter::Peekable<
        std::collections::btree_map::Values<'_, u64, Checkpoint>,
    >,
                             last_good: &mut u64|
     -> Result<(), VerifyFailure> {
        while let Some(c) = pending.next_if(|c| c.size == rebuild.range.size()) {
            if c.root != rebuild.range.root() {
                return Err(VerifyFailure::at(
                    *last_good,
                    format!(
                        "the entries from index {} to {} do not match the signed checkpoint at size {}",
                        last_good,
                        c.size.saturating_sub(1),
                        c.size
                    ),
                ));
            }
            *last_good = c.size;
        }
        Ok(())
    };
    check_checkpoints(&rebuild, &mut pending, &mut last_good)?;
    // The log is read a bundle (256 entries) per row, 64 bundles at a time,
    // the next batch while this one is hashed. A bundle whose counts show a
    // hole or a misplaced entry is read again entry by entry, which finds
    // the exact index.
    const BUNDLES: u64 = 64;
    let read = |from_bundle: u64| {
        let (a, b) = (store.clone(), store.clone());
        tokio::spawn(async move {
            // Two connections read halves at once.
            let half = BUNDLES / 2;
            let second =
                tokio::spawn(async move { b.read_log_bundles(from_bundle + half, half).await });
            let mut first = a.read_log_bundles(from_bundle, half).await?;
            let second = second
                .await
                .map_err(|e| citadel_store::StoreError::Corrupt(e.to_string()))??;
            first.extend(second);
            Ok::<_, citadel_store::StoreError>(first)
        })
    };
    let mut next = 0u64;
    let mut bundle = 0u64;
    let mut reading = read(0);
    loop {
        let bundles = reading
            .await
            .map_err(|e| VerifyFailure::general(format!("reader failed: {e}")))?
            .map_err(db)?;
        let got = bundles.len() as u64;
        bundle += BUNDLES;
        reading = read(bundle);
        for b in &bundles {
            // Full bundles in place take the fast path; the partial one at
            // the end, and any that looks wrong, the careful one.
            let whole = b.first == next
                && b.first == b.bundle * TILE_WIDTH
                && b.misplaced == 0
                && b.count == TILE_WIDTH;
            let pieces: Vec<&str> = if whole {
                b.bodies.split('\n').collect()
            } else {
                Vec::new()
            };
            if whole && pieces.len() as u64 == b.count {
                for body in pieces {
                    rebuild.push(body.as_bytes());
                    next += 1;
                    if let Err(failure) = check_checkpoints(&rebuild, &mut pending, &mut last_good)
                    {
                        // The tiles, written with the entries, usually say
                        // exactly which entry changed; the checkpoint only
                        // bounds it.
                        return Err(rebuild.first_tile_problem(store).await.unwrap_or(failure));
                    }
                }
                continue;
            }
            // Entry by entry, to find what is wrong.
            let entries = store
                .read_log_entries(b.bundle * TILE_WIDTH, TILE_WIDTH)
                .await
                .map_err(db)?;
            for entry in &entries {
                if entry.index != next {
                    return Err(VerifyFailure::at(next, format!("entry {next} is missing")));
                }
                rebuild.push(entry.body.as_bytes());
                next += 1;
                if let Err(failure) = check_checkpoints(&rebuild, &mut pending, &mut last_good) {
                    return Err(rebuild.first_tile_problem(store).await.unwrap_or(failure));
                }
            }
        }
        let done = std::mem::take(&mut rebuild.done);
        let keys: Vec<(u8, u64)> = done.iter().map(|(l, n, _)| (*l, *n)).collect();
        let stored = store.read_log_tiles(&keys).await.map_err(db)?;
        for (level, n, want) in done {
            compare_tile(
                level,
                n,
                &want,
                stored.get(&(level, n)).map(Vec::as_slice),
                true,
            )?;
            report.tiles += 1;
        }
        progress(next);
        if got < BUNDLES {
            break;
        }
    }
    reading.abort();
    // An entry stored beyond the last one read (a hole before it).
    if let Some(beyond) = store.next_log_index(next).await.map_err(db)? {
        return Err(VerifyFailure::at(
            next,
            format!("entry {next} is missing (entry {beyond} exists)"),
        ));
    }
    if let Some(c) = pending.next() {
        return Err(VerifyFailure::at(
            next,
            format!(
                "entries from index {next} are missing: the signed checkpoint at size {} covers them",
                c.size
            ),
        ));
    }
    let size = store.log_size().await.map_err(db)?;
    if size != next {
        return Err(VerifyFailure::at(
            next.min(size),
            format!("the tree covers {size} entries but {next} are stored"),
        ));
    }
    rebuild.finish();
    for (level, n, want) in std::mem::take(&mut rebuild.done) {
        let stored = store.read_log_tile(level, n).await.map_err(db)?;
        compare_tile(level, n, &want, stored.as_deref(), true)?;
        report.tiles += 1;
    }
    report.entries = next;
    report.root = rebuild.range.root();
    Ok(report)
}

/// Checks that the columns the store keeps beside each entry for filtering
/// (`id`, `time`, `class_uid`, `outcome`, `principal`, `request_id`) say
/// what the entry itself says, so that nobody hid events from queries by
/// editing them. Run after [`verify_store`] (which proves the entries);
/// returns the number of entries checked.
pub async fn verify_columns(
    store: &Store,
    mut progress: impl FnMut(u64),
) -> Result<u64, VerifyFailure> {
    let db = |e: citadel_store::StoreError| {
        VerifyFailure::general(format!("cannot read the store: {e}"))
    };
    let mut next = 0u64;
    loop {
        let rows = store.read_log_entry_columns(next, 8192).await.map_err(db)?;
        for row in &rows {
            let index = row.index;
            let bad = |what: &str| {
                VerifyFailure::at(
                    index,
                    format!("the stored {what} of entry {index} does not match the entry"),
                )
            };
            let parsed: serde_json::Value = serde_json::from_str(&row.body)
                .map_err(|_| VerifyFailure::at(index, format!("entry {index} is not JSON")))?;
            let event = citadel_core::SecurityEvent::from_body(parsed).ok_or_else(|| {
                VerifyFailure::at(index, format!("entry {index} is not a Citadel event"))
            })?;
            if event.id != row.id {
                return Err(bad("id"));
            }
            if event.time != row.time {
                return Err(bad("time"));
            }
            if event.class.uid() != row.class_uid {
                return Err(bad("class_uid"));
            }
            if event.outcome.as_str() != row.outcome {
                return Err(bad("outcome"));
            }
            if event.principal != row.principal {
                return Err(bad("principal"));
            }
            if event.request_id != row.request_id {
                return Err(bad("request_id"));
            }
        }
        next += rows.len() as u64;
        progress(next);
        if (rows.len() as u64) < 8192 {
            return Ok(next);
        }
    }
}

/// Verifies an export (see `citadel audit export`): its checkpoint's
/// signature, and each entry's inclusion proof against it.
pub fn verify_export(
    lines: impl Iterator<Item = std::io::Result<String>>,
    verifier: &NoteVerifier,
) -> Result<VerifyReport, VerifyFailure> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let mut checkpoint: Option<Checkpoint> = None;
    let mut report = VerifyReport::default();
    // The range the export says it holds, and the next index expected:
    // entries must be complete and in order, so a dropped line is caught.
    let mut range: Option<(u64, u64)> = None;
    let mut next: Option<u64> = None;
    for (number, line) in lines.enumerate() {
        let line =
            line.map_err(|e| VerifyFailure::general(format!("cannot read the export: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| VerifyFailure::general(format!("line {}: {what}", number + 1));
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(&format!("not JSON: {e}")))?;
        if let Some(note) = value.get("checkpoint").and_then(|c| c.as_str()) {
            let c =
                Checkpoint::open(note, verifier).map_err(|e| bad(&format!("checkpoint: {e}")))?;
            report.checkpoints += 1;
            report.checkpointed_size = c.size;
            report.root = c.root;
            checkpoint = Some(c);
            if let (Some(from), Some(to)) = (value["from"].as_u64(), value["to"].as_u64()) {
                range = Some((from, to));
                next = Some(from);
            }
            continue;
        }
        let c = checkpoint
            .as_ref()
            .ok_or_else(|| bad("an entry before the checkpoint"))?;
        let index = value["index"].as_u64().ok_or_else(|| bad("no index"))?;
        match next {
            Some(expected) if index != expected => {
                return Err(VerifyFailure::at(
                    expected,
                    format!(
                        "entry {expected} is missing from the export (line {} holds {index})",
                        number + 1
                    ),
                ))
            }
            _ => next = Some(index + 1),
        }
        let entry = value["entry"].as_str().ok_or_else(|| bad("no entry"))?;
        let proof: Vec<Hash> = value["inclusion_proof"]
            .as_array()
            .ok_or_else(|| bad("no inclusion_proof"))?
            .iter()
            .map(|h| {
                h.as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a proof hash is not 32 bytes of base64"))?;
        merkle::verify_inclusion(
            index,
            c.size,
            &merkle::leaf_hash(entry.as_bytes()),
            &proof,
            &c.root,
        )
        .map_err(|e| VerifyFailure::at(index, format!("entry {index}: {e}")))?;
        report.entries += 1;
    }
    if checkpoint.is_none() {
        return Err(VerifyFailure::general("the export holds no checkpoint"));
    }
    if let Some((from, to)) = range {
        let reached = next.unwrap_or(from);
        if reached != to {
            return Err(VerifyFailure::at(
                reached,
                format!("the export says it holds entries {from}..{to} but ends at {reached}"),
            ));
        }
    }
    Ok(report)
}
