//! `sklearn.tree._tree.Tree`: the tree of every DecisionTree, RandomForest,
//! ExtraTrees, GradientBoosting and IsolationForest model.
//!
//! Pickled as `REDUCE(Tree, (n_features, n_classes, n_outputs))` then `BUILD`
//! with `{max_depth, node_count, nodes, values}`; `nodes` is a structured
//! array (`left_child`, `right_child`, `feature`, `threshold`, ...).
//! scikit-learn 1.9's `__setstate__` checks only the arrays' dtypes and the
//! `values` shape, then `memcpy`s the nodes; `apply`/`predict` follow
//! `left_child`/`right_child` and index `X[:, feature]` without bounds
//! checks, and `decision_path` writes `max_depth + 1` entries per sample.
//! So this checks, in one pass over the nodes: `node_count == len(nodes)`;
//! a leaf has both children `-1`; an internal node's children lie in
//! `(id, node_count)` (pointing forward rules out cycles, so traversal
//! ends) and are reached at most once; its `feature` lies in
//! `[0, n_features)`; no node is deeper than `max_depth`; `values` has shape
//! `(node_count, n_outputs, max(n_classes))`.

use amber_pickle::{NodeId, NodeKind};

use super::{Deferred, Found, Issue, Outcome, StateDict, View, at, int_column, present};
use crate::ndarray::{Column, Kind, Later, NdArray};

/// The class validated here.
pub const CLASS: &str = "sklearn.tree._tree.Tree";

/// `_TREE_LEAF` in scikit-learn.
const LEAF: i64 = -1;

pub(crate) fn check(ctx: &View<'_, '_>, object: NodeId, state: NodeId) -> Outcome {
    let object_offset = ctx.offset(object);
    let args = match ctx.graph.kind(object) {
        Some(NodeKind::Reduce { args, .. }) => ctx.tuple(args),
        _ => None,
    };
    let [n_features, n_classes, n_outputs] = args
        .and_then(|t| <[NodeId; 3]>::try_from(t).ok())
        .ok_or_else(|| {
            Issue::undecodable(
                object_offset,
                "a Tree is made by REDUCE(Tree, (n_features, n_classes, n_outputs))",
            )
        })?;
    let n_features = ctx.require_int(n_features, "n_features")?;
    let n_outputs_offset = ctx.offset(n_outputs);
    let n_outputs = ctx.require_int(n_outputs, "n_outputs")?;
    let n_classes = ctx.array(n_classes, "n_classes")?;
    if n_outputs < 1 {
        return Err(Issue::new(
            "tree.n_outputs",
            n_outputs_offset,
            format!("n_outputs is {n_outputs}"),
        ));
    }
    if n_classes.shape.len() != 1
        || i64::try_from(n_classes.len()).ok() != Some(n_outputs)
        || n_classes.dtype.kind != Kind::Int
    {
        return Err(Issue::new(
            "tree.n_classes",
            n_classes.offset,
            format!(
                "n_classes must be {n_outputs} ints, got shape {:?}",
                n_classes.shape
            ),
        ));
    }
    let classes = ctx.int_column(&n_classes, None, "n_classes")?;
    let mut max_n_classes = 0i64;
    for k in 0..classes.len() {
        let c = at(&classes, k, "n_classes", n_classes.offset)?;
        if c < 1 {
            return Err(Issue::new(
                "tree.n_classes",
                n_classes.offset,
                format!("output {k} has {c} classes"),
            ));
        }
        max_n_classes = max_n_classes.max(c);
    }

    let d = StateDict::read(ctx.graph, state)?;
    let max_depth_id = d.require("max_depth")?;
    let max_depth = ctx.require_int(max_depth_id, "max_depth")?;
    let node_count_id = d.require("node_count")?;
    let node_count = ctx.require_int(node_count_id, "node_count")?;
    let nodes_id = d.require("nodes")?;
    let values_id = d.require("values")?;
    // Arrays the load copies later are checked there, on the copy: only
    // what their bytes do not hold is read now.
    let nodes = match ctx.later(nodes_id, "nodes")? {
        Some(later) => Nodes::Later(later),
        None => Nodes::Now(ctx.array(nodes_id, "nodes")?),
    };
    // `Tree.__setstate__` copies both arrays into memory of its own and keeps
    // neither: a load may lend it views of the file, or memory it reuses.
    if let Nodes::Later(later) = &nodes {
        ctx.lend(later, nodes_id, state);
    }
    let values = match ctx.later(values_id, "values")? {
        Some(v) => {
            ctx.lend(&v, values_id, state);
            Meta::of(&v.dtype, &v.shape, v.offset)
        }
        None => {
            let v = ctx.array(values_id, "values")?;
            Meta::of(&v.dtype, &v.shape, v.offset)
        }
    };
    let (nodes_shape, n, nodes_offset) = match &nodes {
        Nodes::Later(l) => (l.shape.as_slice(), l.len(), l.offset),
        Nodes::Now(a) => (a.shape.as_slice(), a.len(), a.offset),
    };

    let mut found = Found::default();
    if max_depth < 0 {
        found.push("tree.max_depth", ctx.offset(max_depth_id), || {
            format!("max_depth is {max_depth}")
        });
    }
    if nodes_shape.len() != 1 {
        return Err(Issue::undecodable(
            nodes_offset,
            format!("`nodes` has shape {nodes_shape:?}, not one dimension"),
        ));
    }
    if i64::try_from(n).ok() != Some(node_count) || n == 0 {
        found.push("tree.node_count", ctx.offset(node_count_id), || {
            format!("node_count is {node_count} but `nodes` holds {n} nodes")
        });
    }
    let expected = [n as u64, n_outputs as u64, max_n_classes as u64];
    if values.shape != expected || values.kind != Kind::Float || values.itemsize != 8 {
        found.push("tree.value_shape", values.offset, || {
            format!(
                "`values` has shape {:?}, expected {expected:?} float64",
                values.shape
            )
        });
    }

    let walk = |nodes| NodeWalk {
        nodes,
        n_features,
        max_depth,
    };
    match nodes {
        Nodes::Later(later) => {
            // The three columns the walk reads, as the walk now would.
            for _ in 0..3 {
                ctx.charge(n, nodes_offset, "nodes")?;
            }
            ctx.defer(Deferred::tree_nodes(walk(later)));
        }
        Nodes::Now(nodes) => {
            let left = ctx.int_column(&nodes, Some("left_child"), "nodes")?;
            let right = ctx.int_column(&nodes, Some("right_child"), "nodes")?;
            let feature = ctx.int_column(&nodes, Some("feature"), "nodes")?;
            walk_columns(
                &[left, right, feature],
                n,
                n_features,
                max_depth,
                nodes.offset,
                &mut found,
            )?;
        }
    }
    Ok(found.finish())
}

/// A tree's node array: read now, or its walk left to the load's copy.
enum Nodes<'g> {
    Later(Later),
    Now(NdArray<'g>),
}

/// The dtype, shape and offset of an array whose bytes are not needed.
struct Meta {
    kind: Kind,
    itemsize: u64,
    shape: Vec<u64>,
    offset: u64,
}

impl Meta {
    fn of(dtype: &crate::ndarray::DType, shape: &[u64], offset: u64) -> Self {
        Meta {
            kind: dtype.kind,
            itemsize: dtype.itemsize,
            shape: shape.to_vec(),
            offset,
        }
    }
}

/// A tree's node walk deferred to the bytes its load copies (see
/// [`super::Deferred`]): everything else about the tree was checked.
#[derive(Debug, Clone)]
pub(crate) struct NodeWalk {
    pub(crate) nodes: Later,
    n_features: i64,
    max_depth: i64,
}

impl NodeWalk {
    /// The walk's issues in `bytes`, the `nodes` buffer as loaded.
    pub(crate) fn run(&self, bytes: &[u8]) -> Result<Vec<Issue>, Issue> {
        let nodes = self.nodes.with_bytes(bytes)?;
        let left = int_column(&nodes, Some("left_child"), "nodes")?;
        let right = int_column(&nodes, Some("right_child"), "nodes")?;
        let feature = int_column(&nodes, Some("feature"), "nodes")?;
        let mut found = Found::default();
        walk_columns(
            &[left, right, feature],
            nodes.len(),
            self.n_features,
            self.max_depth,
            nodes.offset,
            &mut found,
        )?;
        Ok(found.finish())
    }
}

/// Walks the nodes given their `[left_child, right_child, feature]` columns.
fn walk_columns(
    [left, right, feature]: &[Column<'_>; 3],
    n: usize,
    n_features: i64,
    max_depth: i64,
    at_nodes: u64,
    found: &mut Found,
) -> Result<(), Issue> {
    let walk = Walk {
        left,
        right,
        feature,
        n,
        n_features,
        max_depth,
        at_nodes,
    };
    // scikit-learn's node fields are `intp`: read without a per-element type dispatch.
    // A valid tree passes the branch-free walk; any other is walked again
    // for its findings, in order.
    let clean = if left.is_le_i64() && right.is_le_i64() && feature.is_le_i64() {
        walk.clean(|c, el| c.le_i64_in(el))
    } else {
        walk.clean(|c, el| c.i64_in(el))
    };
    if !clean {
        walk.run(found, |c, el| c.i64_in(el))?;
    }
    Ok(())
}

/// The node walk over the elements of `nodes` (the three columns are
/// fields of that one array), generic over how a field is read.
struct Walk<'c, 'd> {
    left: &'c Column<'d>,
    right: &'c Column<'d>,
    feature: &'c Column<'d>,
    n: usize,
    n_features: i64,
    max_depth: i64,
    at_nodes: u64,
}

impl Walk<'_, '_> {
    /// Whether [`Walk::run`] would find nothing: the same checks folded
    /// into one flag, with one `u32` per node for "reached, at depth d"
    /// (`d + 1`, 0 if not reached), for trees of fewer than 2^32 nodes.
    #[inline(always)]
    fn clean(&self, read: impl Fn(&Column<'_>, &[u8]) -> Option<i64>) -> bool {
        let (left, right, feature) = (self.left, self.right, self.feature);
        let (n, n_features, max_depth) = (self.n, self.n_features, self.max_depth);
        if u32::try_from(n).is_err() {
            return false;
        }
        let count = i64::try_from(n).unwrap_or(i64::MAX);
        // Depth + 1 of each node reached as a child, 0 for the others.
        let mut reached = vec![0u32; n];
        let mut bad = false;
        let mut visited = 0;
        for (i, el) in left.elements().enumerate() {
            visited = i + 1;
            let (Some(l), Some(r)) = (read(left, el), read(right, el)) else {
                return false;
            };
            if l == LEAF {
                bad |= r != LEAF;
                continue;
            }
            let Some(f) = read(feature, el) else {
                return false;
            };
            let id = i64::try_from(i).unwrap_or(i64::MAX);
            let (Ok(li), Ok(ri)) = (usize::try_from(l), usize::try_from(r)) else {
                return false;
            };
            let own = reached.get(i).copied().unwrap_or(0).saturating_sub(1);
            let child = own.saturating_add(2);
            let (Some(&at_l), Some(&at_r)) = (reached.get(li), reached.get(ri)) else {
                return false;
            };
            bad |= !((0 <= f) & (f < n_features) & (id < l) & (l < count) & (id < r) & (r < count))
                | (at_l != 0)
                | (at_r != 0)
                | (li == ri)
                | (i64::from(own) + 1 > max_depth);
            for c in [li, ri] {
                if let Some(slot) = reached.get_mut(c) {
                    *slot = child;
                }
            }
        }
        !bad && visited == n
    }

    #[inline(always)]
    fn run(
        &self,
        found: &mut Found,
        read: impl Fn(&Column<'_>, &[u8]) -> Option<i64>,
    ) -> Result<(), Issue> {
        let Walk {
            left,
            right,
            feature,
            n,
            n_features,
            max_depth,
            at_nodes,
        } = *self;
        let count = i64::try_from(n).unwrap_or(i64::MAX);
        let mut depth = vec![0i64; n];
        let mut reached = vec![false; n];
        let mut visited = 0;
        for (i, el) in left.elements().enumerate() {
            visited = i + 1;
            let l = present(read(left, el), i, "left_child", at_nodes)?;
            let r = present(read(right, el), i, "right_child", at_nodes)?;
            if l == LEAF {
                if r != LEAF {
                    found.push("tree.child_out_of_range", at_nodes, || {
                        format!("leaf node {i} has right child {r}")
                    });
                }
                continue;
            }
            let f = present(read(feature, el), i, "feature", at_nodes)?;
            if !(0..n_features).contains(&f) {
                found.push("tree.feature_out_of_range", at_nodes, || {
                    format!("node {i} splits on feature {f}; the tree has {n_features} features")
                });
            }
            let id = i64::try_from(i).unwrap_or(i64::MAX);
            let child_depth = depth.get(i).copied().unwrap_or(0).saturating_add(1);
            for (side, c) in [("left", l), ("right", r)] {
                if !(0..count).contains(&c) {
                    found.push("tree.child_out_of_range", at_nodes, || {
                        format!("node {i} has {side} child {c}; there are {n} nodes")
                    });
                    continue;
                }
                if c <= id {
                    found.push("tree.cycle", at_nodes, || {
                        format!("node {i} has {side} child {c}, which does not come after it")
                    });
                    continue;
                }
                let Some(slot) = usize::try_from(c).ok().and_then(|c| reached.get_mut(c)) else {
                    continue;
                };
                if *slot {
                    found.push("tree.shared_node", at_nodes, || {
                        format!("node {c} is a child of more than one node (again of {i})")
                    });
                    continue;
                }
                *slot = true;
                if let Some(d) = usize::try_from(c).ok().and_then(|c| depth.get_mut(c)) {
                    *d = child_depth;
                }
                if child_depth > max_depth {
                    found.push("tree.max_depth", at_nodes, || {
                        format!("node {c} is at depth {child_depth}, past max_depth {max_depth}")
                    });
                }
            }
        }
        if visited < n {
            // Only if the array lied about its length.
            present(None, visited, "left_child", at_nodes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// The one-flag walk passes exactly the trees the full walk finds
    /// nothing in, over many small random node arrays (children, features
    /// and depths near every bound).
    #[test]
    fn clean_agrees_with_the_full_walk() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let (mut clean_trees, mut bad_trees) = (0, 0);
        for _ in 0..20_000 {
            let n = 1 + next(9) as usize;
            let mut data = Vec::new();
            for i in 0..n {
                let leaf = next(3) == 0 || i + 1 == n;
                let child = |r: u64| i64::try_from(r).unwrap() - 2;
                let (l, r) = if leaf && next(8) != 0 {
                    (LEAF, if next(10) == 0 { child(next(12)) } else { LEAF })
                } else if next(4) != 0 {
                    // Forward children (sometimes one node twice).
                    let a = i + 1 + next(2) as usize;
                    let b = if next(6) == 0 {
                        a
                    } else {
                        a + 1 + next(2) as usize
                    };
                    (a as i64, b as i64)
                } else {
                    // One or both children anywhere, backwards included.
                    let forward = (i + 1) as i64;
                    match next(3) {
                        0 => (forward, child(next(14))),
                        1 => (child(next(14)), forward),
                        _ => (child(next(14)), child(next(14))),
                    }
                };
                let f = child(next(7));
                for v in [l, r, f] {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            let [left, right, feature] = [0, 8, 16].map(|o| Column::le_i64_for_tests(&data, 24, o));
            let walk = Walk {
                left: &left,
                right: &right,
                feature: &feature,
                n,
                n_features: 1 + next(4) as i64,
                max_depth: next(5) as i64,
                at_nodes: 0,
            };
            let mut found = Found::default();
            let full =
                walk.run(&mut found, |c, el| c.i64_in(el)).is_ok() && found.finish().is_empty();
            assert_eq!(walk.clean(|c, el| c.le_i64_in(el)), full, "{data:?}");
            assert_eq!(walk.clean(|c, el| c.i64_in(el)), full);
            if full {
                clean_trees += 1;
            } else {
                bad_trees += 1;
            }
        }
        assert!(
            clean_trees > 1000 && bad_trees > 1000,
            "{clean_trees} {bad_trees}"
        );
    }
}
