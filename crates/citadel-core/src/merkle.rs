//! RFC 6962 / RFC 9162 Merkle tree arithmetic for the audit log, and the
//! C2SP tlog-tiles coordinates of its hashes.
//!
//! Pure functions, no I/O: where stored hashes are needed they are asked of
//! a [`HashSource`] (the store's tiles, a verifier's downloads, or memory).
//! Leaves hash as `SHA-256(0x00 || entry)`, interior nodes as
//! `SHA-256(0x01 || left || right)`; the tree of `n` leaves is the RFC 6962
//! Merkle Tree Hash, so any RFC 6962 / tlog client computes the same roots
//! and checks the same proofs.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Tile height of C2SP tlog-tiles: a tile holds 2^8 = 256 hashes.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile (or entry bundle).
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// The hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof could not be made or did not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are outside the tree.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A tile the computation needs is not available (yet).
    #[error("tile {level}/{n} is missing or too short")]
    MissingTile {
        /// Tile level.
        level: u8,
        /// Tile index.
        n: u64,
    },
    /// The proof does not lead to the expected root.
    #[error("the proof does not verify")]
    Mismatch,
    /// The proof has the wrong number of hashes.
    #[error("the proof has the wrong length")]
    BadLength,
}

/// Where stored subtree hashes come from.
pub trait HashSource {
    /// The hash of the complete subtree of height `level` (2^level leaves)
    /// whose leaves start at `index << level`.
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The Merkle Tree Hash of leaves `[lo, hi)`; `lo` must be a multiple of the
/// largest power of two not above `hi - lo` (true of every range a proof
/// or root asks for).
pub fn range_hash<S: HashSource + ?Sized>(src: &S, lo: u64, hi: u64) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return src.subtree(level, lo >> level);
    }
    let k = largest_power_of_two_below(n);
    let left = range_hash(src, lo, lo + k)?;
    let right = range_hash(src, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<Hash, ProofError> {
    range_hash(src, 0, size)
}

/// The RFC 6962 audit path of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!(
            "index {index} is not in a tree of size {size}"
        )));
    }
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<S: HashSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m < lo + k {
        path(src, m, lo, lo + k, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        path(src, m, lo + k, hi, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// The RFC 6962 consistency proof between the trees of `old` and `new` leaves.
pub fn consistency_proof<S: HashSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange(format!(
            "size {old} is larger than size {new}"
        )));
    }
    let mut proof = Vec::new();
    if old == 0 || old == new {
        return Ok(proof);
    }
    subproof(src, old, 0, new, true, &mut proof)?;
    Ok(proof)
}

fn subproof<S: HashSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(range_hash(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(src, m, lo, lo + k, complete, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        subproof(src, m - k, lo + k, hi, false, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!(
            "index {index} is not in a tree of size {size}"
        )));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::BadLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::BadLength);
    }
    if &r != root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2) between the tree of
/// `old` leaves with root `old_root` and the tree of `new` leaves with root
/// `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange(format!(
            "size {old} is larger than size {new}"
        )));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::BadLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::BadLength)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::BadLength);
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::BadLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::BadLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The right edge of a tree being built leaf by leaf (a compact range from
/// 0): one hash per set bit of the size, enough to compute the root and to
/// go on appending. Verifiers stream leaves through it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Roots of the complete subtrees, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a range from its size and peaks (as saved by a monitor).
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (size.count_ones() as usize == peaks.len()).then_some(Self { size, peaks })
    }

    /// The range of the first `size` leaves, read from stored hashes.
    pub fn at<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<Self, ProofError> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                peaks.push(src.subtree(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Peaks, largest first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash. `on_complete(level, index, hash)` is told of
    /// every complete subtree the append finishes (the leaf itself at level
    /// 0, then each merge), which is how tiles are filled in.
    pub fn append(&mut self, leaf: Hash, mut on_complete: impl FnMut(u8, u64, &Hash)) {
        let mut hash = leaf;
        let mut level = 0u8;
        let mut index = self.size;
        on_complete(0, index, &hash);
        while (self.size >> level) & 1 == 1 {
            let left = self.peaks.pop().expect("a peak per set bit");
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            on_complete(level, index, &hash);
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The C2SP tlog-tiles coordinates of a stored hash: subtree hashes at tree
/// levels that are multiples of [`TILE_HEIGHT`] live in tiles; level `8·L`
/// subtree `i` is hash `i % 256` of tile `(L, i / 256)`.
pub fn tile_of(level: u8, index: u64) -> Option<(u8, u64, usize)> {
    level.is_multiple_of(TILE_HEIGHT).then_some((
        level / TILE_HEIGHT,
        index / TILE_WIDTH,
        (index % TILE_WIDTH) as usize,
    ))
}

/// The width of tile `(tile_level, n)` in the tree of `size` leaves:
/// 256 if full, 1..255 if partial, 0 if it does not exist yet.
pub fn tile_width(tile_level: u8, n: u64, size: u64) -> u64 {
    let shift = u32::from(tile_level) * u32::from(TILE_HEIGHT);
    let hashes = if shift >= 64 { 0 } else { size >> shift };
    hashes.saturating_sub(n * TILE_WIDTH).min(TILE_WIDTH)
}

/// Encodes a tile index as a tlog-tiles path: `1234067` → `x001/x234/067`.
pub fn tile_index_path(n: u64) -> String {
    let mut parts = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        parts.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    parts.reverse();
    parts.join("/")
}

/// Parses a tlog-tiles index path (`x001/x234/067`), refusing anything
/// that is not the one canonical spelling of a number.
pub fn parse_tile_index_path(path: &str) -> Option<u64> {
    let parts: Vec<&str> = path.split('/').collect();
    let (last, prefix) = parts.split_last()?;
    let digits = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(last) || prefix.len() > 6 {
        return None;
    }
    let mut n: u64 = 0;
    for (i, p) in prefix.iter().enumerate() {
        let d = p.strip_prefix('x').filter(|d| digits(d))?;
        // No leading zero groups: `x000/…` is not canonical.
        if i == 0 && d == "000" {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(d.parse().ok()?)?;
    }
    n.checked_mul(1000)?.checked_add(last.parse().ok()?)
}

/// The root of a complete subtree given its `2^k` leaf-side hashes.
pub fn complete_subtree(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level[0]
}

/// Where hash tiles come from: tile `(level, n)` as its hashes, full or
/// partial. A reader that does not have a tile answers
/// [`ProofError::MissingTile`], which lets an async caller fetch it and retry.
pub trait TileReader {
    /// The hashes of tile `(level, n)`.
    fn read_tile(&self, level: u8, n: u64) -> Result<std::sync::Arc<[Hash]>, ProofError>;
}

/// Subtree hashes computed from tiles: a subtree at tree level `8·L + r`
/// is the root of `2^r` consecutive hashes of a level-`L` tile.
#[derive(Debug)]
pub struct FromTiles<'a, R: ?Sized>(pub &'a R);

impl<R: TileReader + ?Sized> HashSource for FromTiles<'_, R> {
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let (tile_level, r) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
        let first = index << r;
        let n = first / TILE_WIDTH;
        let offset = (first % TILE_WIDTH) as usize;
        let count = 1usize << r;
        let tile = self.0.read_tile(tile_level, n)?;
        let hashes = tile
            .get(offset..offset + count)
            .ok_or(ProofError::MissingTile {
                level: tile_level,
                n,
            })?;
        Ok(if count == 1 {
            hashes[0]
        } else {
            complete_subtree(hashes)
        })
    }
}

/// Splits a tile's bytes into hashes; `None` if the length is not a whole
/// number of hashes (1..=256 of them).
pub fn tile_hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(32) || bytes.len() > 32 * TILE_WIDTH as usize
    {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
