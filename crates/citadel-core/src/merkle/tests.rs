//! Tests against the RFC 6962 reference vectors of transparency-dev/merkle
//! (`proof/verify_test.go`, `rfc6962/rfc6962_test.go`) and the tlog-tiles
//! path examples of C2SP and golang.org/x/mod/sumdb/tlog.

use super::*;

/// A whole tree in memory: every level's hashes.
struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    fn new(leaves: &[Vec<u8>]) -> Self {
        let mut levels = vec![leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()];
        while levels.last().unwrap().len() > 1 {
            let next = levels
                .last()
                .unwrap()
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect::<Vec<_>>();
            if next.is_empty() {
                break;
            }
            levels.push(next);
        }
        Self { levels }
    }
}

impl HashSource for MemoryTree {
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or(ProofError::MissingTile { level, n: index })
    }
}

fn h(hex_str: &str) -> Hash {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn reference_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| hex::decode(s).unwrap())
    .collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn hashing_matches_rfc6962_vectors() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(
        leaf_hash(b""),
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        leaf_hash(b"L123456"),
        h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
}

#[test]
fn roots_match_the_reference_for_every_size() {
    let leaves = reference_leaves();
    let tree = MemoryTree::new(&leaves);
    let mut range = CompactRange::new();
    assert_eq!(range.root(), empty_root());
    for (size, want) in ROOTS.iter().enumerate() {
        let size = size as u64 + 1;
        assert_eq!(root(&tree, size).unwrap(), h(want), "size {size}");
        range.append(leaf_hash(&leaves[size as usize - 1]), |_, _, _| {});
        assert_eq!(range.root(), h(want), "compact range, size {size}");
        assert_eq!(CompactRange::at(&tree, size).unwrap(), range);
    }
}

#[test]
fn inclusion_proofs_match_the_reference() {
    let leaves = reference_leaves();
    let tree = MemoryTree::new(&leaves);
    let cases: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(inclusion_proof(&tree, index, size).unwrap(), want);
        let leaf = leaf_hash(&leaves[index as usize]);
        let root = h(ROOTS[size as usize - 1]);
        verify_inclusion(index, size, &leaf, &want, &root).unwrap();
        // Any change to the proof, the index or the root is caught.
        let mut bad = want.clone();
        bad[0][0] ^= 1;
        assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
        assert!(verify_inclusion(index ^ 1, size, &leaf, &want, &root).is_err());
        assert!(verify_inclusion(index, size, &leaf, &want[..want.len() - 1], &root).is_err());
        assert!(verify_inclusion(index, size, &leaf, &want, &h(ROOTS[0])).is_err());
    }
    // A single-leaf tree: empty proof, root = leaf.
    assert!(inclusion_proof(&tree, 0, 1).unwrap().is_empty());
    verify_inclusion(0, 1, &leaf_hash(b""), &[], &h(ROOTS[0])).unwrap();
    for (index, size) in [(0, 0), (1, 0), (2, 1)] {
        assert!(verify_inclusion(index, size, &leaf_hash(b""), &[], &h(ROOTS[0])).is_err());
    }
}

#[test]
fn consistency_proofs_match_the_reference() {
    let tree = MemoryTree::new(&reference_leaves());
    let cases: [(u64, u64, &[&str]); 6] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            4,
            7,
            &["837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e"],
        ),
    ];
    for (old, new, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(
            consistency_proof(&tree, old, new).unwrap(),
            want,
            "{old}->{new}"
        );
        let (r1, r2) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
        if old != new {
            assert!(verify_consistency(old, new, &r2, &r1, &want).is_err());
            let mut bad = want.clone();
            bad[0][5] ^= 0x80;
            assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
        }
    }
    let r = h(ROOTS[0]);
    assert!(verify_consistency(0, 0, &r, &r, &[]).is_ok());
    assert!(verify_consistency(0, 1, &r, &h(ROOTS[1]), &[]).is_ok());
    assert!(verify_consistency(1, 1, &r, &h(ROOTS[1]), &[]).is_err());
    assert!(verify_consistency(2, 1, &r, &r, &[]).is_err());
    assert!(verify_consistency(1, 2, &r, &h(ROOTS[1]), &[]).is_err());
    assert!(verify_consistency(1, 1, &r, &r, &[r]).is_err());
}

/// Every proof between every pair of sizes of a larger tree checks, both
/// from a whole tree in memory and from its tiles.
#[test]
fn proofs_from_tiles_agree_with_the_whole_tree() {
    let leaves: Vec<Vec<u8>> = (0..700u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let tree = MemoryTree::new(&leaves);
    // Build tiles the way the store does: from the compact range's
    // completed subtrees at levels 0, 8, 16, ...
    let mut tiles: std::collections::BTreeMap<(u8, u64), Vec<Hash>> = Default::default();
    let mut range = CompactRange::new();
    for leaf in &leaves {
        range.append(leaf_hash(leaf), |level, index, hash| {
            if let Some((tl, n, pos)) = tile_of(level, index) {
                let tile = tiles.entry((tl, n)).or_default();
                assert_eq!(tile.len(), pos);
                tile.push(*hash);
            }
        });
    }
    struct Tiles(std::collections::BTreeMap<(u8, u64), Vec<Hash>>);
    impl TileReader for Tiles {
        fn read_tile(&self, level: u8, n: u64) -> Result<std::sync::Arc<[Hash]>, ProofError> {
            self.0
                .get(&(level, n))
                .map(|t| t.as_slice().into())
                .ok_or(ProofError::MissingTile { level, n })
        }
    }
    let tiles = Tiles(tiles);
    assert_eq!(tiles.0[&(0, 2)].len(), 700 - 512);
    assert_eq!(tiles.0[&(1, 0)].len(), 2);
    let from_tiles = FromTiles(&tiles);
    for size in [1u64, 2, 255, 256, 257, 511, 512, 513, 699, 700] {
        let root_size = root(&tree, size).unwrap();
        assert_eq!(root(&from_tiles, size).unwrap(), root_size);
        for index in [0, size / 3, size - 1] {
            let p = inclusion_proof(&from_tiles, index, size).unwrap();
            assert_eq!(p, inclusion_proof(&tree, index, size).unwrap());
            verify_inclusion(
                index,
                size,
                &leaf_hash(&leaves[index as usize]),
                &p,
                &root_size,
            )
            .unwrap();
        }
        for old in [1u64, size / 2, size - 1] {
            if old == 0 {
                continue;
            }
            let p = consistency_proof(&from_tiles, old, size).unwrap();
            verify_consistency(old, size, &root(&tree, old).unwrap(), &root_size, &p).unwrap();
        }
    }
}

#[test]
fn tile_widths_follow_the_c2sp_example() {
    // tlog-tiles: size 70,000 -> 273 full level-0 tiles and a partial of 112,
    // one full level-1 tile and a partial of 17, a level-2 partial of 1.
    let size = 70_000;
    assert_eq!(tile_width(0, 272, size), 256);
    assert_eq!(tile_width(0, 273, size), 112);
    assert_eq!(tile_width(0, 274, size), 0);
    assert_eq!(tile_width(1, 0, size), 256);
    assert_eq!(tile_width(1, 1, size), 17);
    assert_eq!(tile_width(2, 0, size), 1);
    assert_eq!(tile_width(3, 0, size), 0);
    assert_eq!(tile_width(1, 0, 256), 1);
}

#[test]
fn tile_index_paths_follow_the_spec() {
    for (n, path) in [
        (0u64, "000"),
        (1, "001"),
        (255, "255"),
        (1234067, "x001/x234/067"),
        (123456789, "x123/x456/789"),
        (123456078, "x123/x456/078"),
        (3057500, "x003/x057/500"),
        (123456789000, "x123/x456/x789/000"),
    ] {
        assert_eq!(tile_index_path(n), path);
        assert_eq!(parse_tile_index_path(path), Some(n), "{path}");
    }
    for bad in [
        "",
        "1",
        "0001",
        "123/456/078",
        "x001/",
        "x001",
        "x001/0002",
        "x001/-02",
        "x000/001",
        "x001/x234/",
        "abc",
        "x1/001",
    ] {
        assert_eq!(parse_tile_index_path(bad), None, "{bad:?}");
    }
}
