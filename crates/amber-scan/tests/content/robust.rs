//! Damaged fixtures: validators report issues or nothing, never panic.
//!
//! Bytes of the pickle stream and of the out-of-band array buffers are
//! overwritten at seeded random positions; whatever still parses is
//! validated. Array damage must be caught exactly where it breaks a rule
//! (checked against an independent recount for tree child indices).

use amber_pickle::NodeKind;
use amber_scan::ndarray;

use crate::{Loaded, validate};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FIXTURES: [&str; 6] = [
    "random_forest.p5.oob",
    "hist_gradient_boosting.p5.oob",
    "kdtree.p5.oob",
    "csr_matrix.p5.oob",
    "coo_array.p4.pkl",
    "gradient_boosting.joblib",
];

fn damage(bytes: &mut [u8], rng: &mut Rng) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len());
        bytes[at] = match rng.below(4) {
            0 => 0xff,
            1 => 0,
            2 => bytes[at] ^ (1 << rng.below(8)),
            _ => rng.next() as u8,
        };
    }
}

#[test]
fn damaged_streams_and_buffers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut validated = 0;
    let mut refused = 0;
    for name in FIXTURES {
        let original = Loaded::read(name);
        for round in 0..150 {
            let mut loaded = Loaded {
                pickle: original.pickle.clone(),
                buffers: original.buffers.clone(),
                joblib: original.joblib,
            };
            if round % 2 == 0 || loaded.buffers.is_empty() {
                damage(&mut loaded.pickle, &mut rng);
            } else {
                let i = rng.below(loaded.buffers.len());
                damage(&mut loaded.buffers[i], &mut rng);
            }
            let Some(results) = loaded.try_validate() else {
                continue;
            };
            validated += 1;
            if results.iter().any(|(_, issues)| !issues.is_empty()) {
                refused += 1;
            }
        }
    }
    // Most damage leaves a parseable stream; much of it breaks a rule.
    assert!(validated > 300, "{validated}");
    assert!(refused > 50, "{refused} of {validated}");
}

#[test]
fn every_corrupted_child_index_is_caught() {
    // Overwrite one child index of one node with each value class and
    // check the verdict against what the rule says for that value.
    let original = Loaded::read("decision_tree.p5.oob");
    let (index, offset) = nodes_buffer(&original);
    let nodes = original.buffers[index][offset..].len() / 64;
    for node in 0..nodes {
        for (field, value) in [
            (0usize, -1i64),
            (0, node as i64),
            (8, nodes as i64),
            (8, -7),
            (0, i64::MAX),
        ] {
            let mut loaded = Loaded {
                pickle: original.pickle.clone(),
                buffers: original.buffers.clone(),
                joblib: false,
            };
            let at = offset + node * 64 + field;
            let old = i64::from_le_bytes(loaded.buffers[index][at..at + 8].try_into().unwrap());
            loaded.buffers[index][at..at + 8].copy_from_slice(&value.to_le_bytes());
            let issues: Vec<_> = validate(&loaded).into_iter().flat_map(|(_, i)| i).collect();
            let leaf = old == -1;
            // Setting a leaf's left child to -1 (or an internal node's child to its
            // old value) changes nothing; anything else breaks a rule.
            let unchanged = value == old;
            let expect_ok = unchanged || (leaf && field == 0 && value == -1);
            assert_eq!(
                issues.is_empty(),
                expect_ok,
                "node {node} field {field} {old} -> {value}: {issues:?}"
            );
        }
    }
}

/// Which out-of-band buffer holds the tree's nodes (64 bytes each, from offset 0).
fn nodes_buffer(loaded: &Loaded) -> (usize, usize) {
    loaded.with_graph(|graph, bytes| {
        for (id, node) in graph.iter() {
            let NodeKind::Reduce { args, .. } = node.kind() else {
                continue;
            };
            let Ok(array) = ndarray::decode(graph, id, bytes) else {
                continue;
            };
            if array.dtype.field("left_child").is_none() {
                continue;
            }
            let buf = graph.get(args).and_then(|a| a.as_tuple()).unwrap()[0];
            if let Some(NodeKind::Buffer { index }) = graph.kind(buf) {
                assert_eq!(array.dtype.itemsize, 64);
                return (index as usize, 0);
            }
        }
        panic!("no node buffer");
    })
}
