//! The tamper-evident log as readers see it: signed checkpoints, C2SP
//! tlog-tiles tiles and entry bundles, inclusion and consistency proofs.
//! The tree itself is grown by the store, in the transaction that stores
//! each batch of events; this room signs what the store built and answers
//! questions about it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use citadel_core::merkle::{self, Hash, ProofError, TILE_HEIGHT, TILE_WIDTH};
use citadel_store::{Store, StoreError, StoredCheckpoint};
use parking_lot::Mutex;

use crate::note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};

/// Why a log question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The request is outside the tree (index, size, tile).
    #[error("{0}")]
    OutOfRange(String),
    /// The addressed tile or bundle does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// The stored log is damaged; `citadel audit verify` says where.
    #[error("the audit log is damaged: {0}")]
    Corrupt(String),
    /// Signing or parsing failed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tiles by `(level, index)`.
type TileMap = HashMap<(u8, u64), Arc<TileTree>>;

/// Bytes a cached tile takes (its 256 hashes and 255 inner nodes).
const TILE_CACHE_BYTES_PER_TILE: usize = 511 * 32;

/// The default bound of the proof cache: 64 MiB.
pub const DEFAULT_PROOF_CACHE_BYTES: usize = 64 << 20;

/// The audit log of one deployment.
pub struct AuditLog {
    store: Store,
    signer: NoteSigner,
    /// Full tiles never change, so they are cached.
    tiles: TileCache,
    /// A size the log is known to have reached (it only grows).
    known_size: AtomicU64,
    /// Serializes checkpoint making within this process.
    checkpointing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.signer.name())
            .finish_non_exhaustive()
    }
}

/// An inclusion proof with what it is checked against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InclusionProof {
    /// Entry index.
    pub index: u64,
    /// Tree size the proof is for.
    pub tree_size: u64,
    /// RFC 6962 leaf hash of the entry (base64).
    #[serde(with = "b64")]
    pub leaf_hash: Hash,
    /// Audit path, leaf to root (base64 each).
    #[serde(with = "b64_list")]
    pub proof: Vec<Hash>,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// The proof hashes (base64 each).
    #[serde(with = "b64_list")]
    pub proof: Vec<Hash>,
}

impl AuditLog {
    /// The log over `store`, signing with `signer` (whose name is the origin).
    pub fn new(store: Store, signer: NoteSigner) -> Arc<Self> {
        Self::with_proof_cache(store, signer, DEFAULT_PROOF_CACHE_BYTES)
    }

    /// Like [`AuditLog::new`], keeping up to `cache_bytes` of tiles in
    /// memory for proofs (a 10-million-entry log's tiles take about 640 MB).
    pub fn with_proof_cache(store: Store, signer: NoteSigner, cache_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            signer,
            tiles: TileCache::new((cache_bytes / TILE_CACHE_BYTES_PER_TILE).max(16)),
            known_size: AtomicU64::new(0),
            checkpointing: tokio::sync::Mutex::new(()),
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The verifier key, in vkey form.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The store the log lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Signs a checkpoint of the log as it is now, unless the latest one
    /// already covers it, and returns the latest.
    pub async fn checkpoint_now(&self) -> Result<StoredCheckpoint, LogError> {
        let _turn = self.checkpointing.lock().await;
        let latest = self.store.latest_checkpoint().await?;
        if let Some(latest) = &latest {
            // Never sign into a log that another key has been signing:
            // checkpoints are append-only, one stray one would stay forever.
            Checkpoint::open(&latest.note, &self.signer.verifier()).map_err(|e| {
                LogError::Corrupt(format!(
                    "the latest checkpoint (size {}) was not signed by this log key: {e}",
                    latest.size
                ))
            })?;
        }
        let (size, root) = self.store.log_head().await?;
        if let Some(latest) = latest.filter(|c| c.size >= size) {
            return Ok(latest);
        }
        let checkpoint = Checkpoint {
            origin: self.origin().to_owned(),
            size,
            root,
        };
        let note = self.signer.sign(&checkpoint.body())?;
        let now = citadel_core::clock::now_ms();
        self.store.insert_checkpoint(size, &note, now).await?;
        Ok(StoredCheckpoint {
            size,
            note,
            created_at: now,
        })
    }

    /// The latest signed checkpoint, making the first if there is none.
    pub async fn latest_checkpoint(&self) -> Result<StoredCheckpoint, LogError> {
        match self.store.latest_checkpoint().await? {
            Some(c) => Ok(c),
            None => self.checkpoint_now().await,
        }
    }

    /// Makes a checkpoint every `interval` while entries arrive, until the
    /// log is dropped. Failures are logged and retried on the next tick.
    pub fn spawn_checkpointer(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { return };
                if let Err(error) = log.checkpoint_now().await {
                    tracing::error!(%error, "could not sign an audit log checkpoint");
                }
            }
        })
    }

    /// The bytes of hash tile `(level, n)`, full or (with `width`) the
    /// partial tile of that width, as tlog-tiles serves them.
    pub async fn tile(&self, level: u8, n: u64, width: Option<u64>) -> Result<Vec<u8>, LogError> {
        let want = width.unwrap_or(TILE_WIDTH) as usize;
        let hashes = self
            .store
            .read_log_tile(level, n)
            .await?
            .filter(|h| h.len() >= want)
            .ok_or_else(|| {
                LogError::NotFound(format!("tile {level}/{n} of width {want} does not exist"))
            })?;
        Ok(hashes[..want].iter().flatten().copied().collect())
    }

    /// Entry bundle `n` (full, or with `width` the partial bundle): each
    /// entry as a big-endian u16 length and the entry's bytes.
    pub async fn entry_bundle(&self, n: u64, width: Option<u64>) -> Result<Vec<u8>, LogError> {
        let want = width.unwrap_or(TILE_WIDTH);
        let from = n
            .checked_mul(TILE_WIDTH)
            .ok_or_else(|| LogError::OutOfRange(format!("entry bundle {n} is out of range")))?;
        let size = self.store.log_size().await?;
        if from.saturating_add(want) > size {
            return Err(LogError::NotFound(format!(
                "entry bundle {n} of width {want} does not exist (log size {size})"
            )));
        }
        let entries = self.store.read_log_entries(from, want).await?;
        if entries.len() as u64 != want {
            return Err(LogError::Corrupt(format!(
                "entries of bundle {n} are missing; run `citadel audit verify`"
            )));
        }
        let mut out = Vec::with_capacity(entries.iter().map(|e| e.body.len() + 2).sum());
        for e in &entries {
            let len = u16::try_from(e.body.len()).map_err(|_| {
                LogError::Corrupt(format!("entry {} is longer than 65535 bytes", e.index))
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(e.body.as_bytes());
        }
        Ok(out)
    }

    /// Computes with the tiles of the tree of `size` leaves, fetching from
    /// the store whatever tile the computation asks for.
    async fn with_tiles<T>(
        &self,
        size: u64,
        compute: impl Fn(&TileView<'_>) -> Result<T, ProofError>,
    ) -> Result<T, LogError> {
        let mut results = self
            .with_tiles_many(size, 1, |_, view| compute(view))
            .await?;
        Ok(results.pop().expect("one result"))
    }

    /// Runs `compute(i, tiles)` for `i` in `0..count`, fetching the tiles
    /// all of them are missing in one query per round (a batch of proofs
    /// costs a few queries, not one per proof).
    async fn with_tiles_many<T>(
        &self,
        size: u64,
        count: usize,
        compute: impl Fn(usize, &TileView<'_>) -> Result<T, ProofError>,
    ) -> Result<Vec<T>, LogError> {
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..count).collect();
        // Every tile fetched for this call stays at hand until it ends,
        // whatever the shared cache evicts meanwhile.
        let mut fetched_here = TileMap::new();
        for _round in 0..16 {
            let mut missing = std::collections::BTreeSet::new();
            let mut still = Vec::new();
            {
                let view = TileView {
                    cache: &self.tiles,
                    local: &fetched_here,
                    size,
                };
                for i in pending {
                    match compute(i, &view) {
                        Ok(v) => results[i] = Some(v),
                        Err(ProofError::MissingTile { level, n }) => {
                            missing.insert((level, n));
                            still.push(i);
                        }
                        Err(ProofError::OutOfRange(why)) => return Err(LogError::OutOfRange(why)),
                        Err(e) => return Err(LogError::Corrupt(e.to_string())),
                    }
                }
            }
            if still.is_empty() {
                return Ok(results.into_iter().map(|r| r.expect("computed")).collect());
            }
            let wanted: Vec<(u8, u64)> = missing.into_iter().collect();
            let mut fetched = self.store.read_log_tiles(&wanted).await?;
            for (level, n) in wanted {
                let width = merkle::tile_width(level, n, size);
                let hashes = fetched
                    .remove(&(level, n))
                    .filter(|h| width > 0 && h.len() as u64 >= width)
                    .ok_or_else(|| {
                        LogError::Corrupt(format!(
                            "tile {level}/{n} is missing; run `citadel audit verify`"
                        ))
                    })?;
                let tree = Arc::new(TileTree::new(&hashes));
                self.tiles.insert((level, n), tree.clone());
                fetched_here.insert((level, n), tree);
            }
            pending = still;
        }
        Err(LogError::Corrupt("tiles keep going missing".into()))
    }

    /// Errors unless the log has at least `size` leaves.
    async fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size <= self.known_size.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = self.store.log_size().await?;
        self.known_size.fetch_max(now, Ordering::Relaxed);
        if size > now {
            return Err(LogError::OutOfRange(format!(
                "tree size {size} is beyond the log (size {now})"
            )));
        }
        Ok(())
    }

    /// The root of the tree of `size` leaves.
    pub async fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.check_size(size).await?;
        self.with_tiles(size, |tiles| merkle::root(tiles, size))
            .await
    }

    /// The inclusion proof of entry `index` in the tree of `size` leaves.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, LogError> {
        let mut proofs = self.inclusion_proofs(&[index], size).await?;
        Ok(proofs.pop().expect("one proof"))
    }

    /// Inclusion proofs of several entries in the tree of `size` leaves,
    /// with the tiles they need read in a few queries.
    pub async fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<InclusionProof>, LogError> {
        self.check_size(size).await?;
        if let Some(index) = indexes.iter().find(|&&i| i >= size) {
            return Err(LogError::OutOfRange(format!(
                "entry {index} is not in the tree of size {size}"
            )));
        }
        self.with_tiles_many(size, indexes.len(), |i, tiles| {
            use merkle::HashSource;
            let index = indexes[i];
            Ok(InclusionProof {
                index,
                tree_size: size,
                leaf_hash: tiles.subtree(0, index)?,
                proof: merkle::inclusion_proof(tiles, index, size)?,
            })
        })
        .await
    }

    /// The consistency proof between the trees of `from` and `to` leaves.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, LogError> {
        self.check_size(to).await?;
        if from > to {
            return Err(LogError::OutOfRange(format!(
                "size {from} is larger than size {to}"
            )));
        }
        let proof = self
            .with_tiles(to, |tiles| merkle::consistency_proof(tiles, from, to))
            .await?;
        Ok(ConsistencyProof { from, to, proof })
    }
}

/// A tile with the roots of its complete subtrees precomputed:
/// `levels[r][j]` is the root of hashes `j·2^r .. (j+1)·2^r`, so a proof
/// reads hashes instead of recomputing up to 255 of them per tile.
#[derive(Debug)]
struct TileTree {
    levels: Vec<Vec<Hash>>,
}

impl TileTree {
    fn new(hashes: &[Hash]) -> Self {
        let mut levels = vec![hashes.to_vec()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let next: Vec<Hash> = levels
                .last()
                .expect("a level")
                .chunks_exact(2)
                .map(|p| merkle::node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        Self { levels }
    }

    fn width(&self) -> usize {
        self.levels[0].len()
    }
}

/// Tiles only grow (a narrower version is a prefix of a wider one), so the
/// widest version seen of each is kept, up to a bound.
struct TileCache {
    trees: Mutex<HashMap<(u8, u64), Arc<TileTree>>>,
    max_tiles: usize,
}

impl TileCache {
    fn new(max_tiles: usize) -> Self {
        Self {
            max_tiles,
            trees: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &(u8, u64)) -> Option<Arc<TileTree>> {
        self.trees.lock().get(key).cloned()
    }

    fn insert(&self, key: (u8, u64), tree: Arc<TileTree>) {
        let mut trees = self.trees.lock();
        if trees.get(&key).is_some_and(|t| t.width() >= tree.width()) {
            return;
        }
        if trees.len() >= self.max_tiles {
            // Evict an arbitrary tile: cheap, and fair enough for access
            // patterns that are either sequential or uniformly random.
            if let Some(victim) = trees.keys().next().copied() {
                trees.remove(&victim);
            }
        }
        trees.insert(key, tree);
    }
}

/// The tiles of one tree size, as a [`merkle::HashSource`].
struct TileView<'a> {
    cache: &'a TileCache,
    local: &'a TileMap,
    size: u64,
}

impl merkle::HashSource for TileView<'_> {
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let (tile_level, r) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
        let first = index << r;
        let n = first / TILE_WIDTH;
        let width = merkle::tile_width(tile_level, n, self.size) as usize;
        let missing = ProofError::MissingTile {
            level: tile_level,
            n,
        };
        let tree = self
            .local
            .get(&(tile_level, n))
            .cloned()
            .or_else(|| self.cache.get(&(tile_level, n)))
            .filter(|t| t.width() >= width)
            .ok_or(missing.clone())?;
        let position = ((first % TILE_WIDTH) >> r) as usize;
        tree.levels
            .get(usize::from(r))
            .and_then(|l| l.get(position))
            .copied()
            .ok_or(missing)
    }
}

pub(crate) mod b64 {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    pub(crate) fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }
}

pub(crate) mod b64_list {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use serde::ser::SerializeSeq;

    pub(crate) fn serialize<S: serde::Serializer>(
        hashes: &[[u8; 32]],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hashes.len()))?;
        for h in hashes {
            seq.serialize_element(&B64.encode(h))?;
        }
        seq.end()
    }
}
