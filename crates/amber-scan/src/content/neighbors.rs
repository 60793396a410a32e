//! `KDTree` and `BallTree` (`sklearn.neighbors._kd_tree`, `_ball_tree`),
//! also inside tree-based `KNeighbors*`, `RadiusNeighbors*` and `KernelDensity`.
//!
//! Pickled as `REDUCE(newObj, (cls,))` then `BUILD` with the 13-tuple of
//! `_binary_tree.pxi` `__getstate__`: `(data, idx_array, node_data,
//! node_bounds, leaf_size, n_levels, n_nodes, n_trims, n_leaves, n_splits,
//! n_calls, dist_metric, sample_weight)`. `__setstate__` stores the arrays
//! as typed memoryviews and checks nothing; queries then read
//! `data[idx_array[k]]` for `k` in each node's `[idx_start, idx_end)`, visit
//! children `2i+1`/`2i+2` of non-leaf nodes and index `node_bounds[:, i, :]`.
//! So: `data` is `(n_samples, n_features)`; `idx_array` has `n_samples`
//! entries in `[0, n_samples)`; `node_data` has `n_nodes` entries with
//! `0 <= idx_start <= idx_end <= n_samples` and, when not a leaf, both
//! children below `n_nodes`; `node_bounds` is `(2 or 1, n_nodes,
//! n_features)`; `sample_weight` is `None` or `n_samples` long.

use amber_pickle::NodeId;

use super::{Found, Issue, Outcome, View, at};

/// The classes validated here (KD trees first).
pub const CLASSES: [&str; 4] = [
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._kd_tree.KDTree32",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._ball_tree.BallTree32",
];

pub(crate) fn check(ctx: &View<'_, '_>, class: &str, state: NodeId) -> Outcome {
    let state_offset = ctx.offset(state);
    let items = ctx.tuple(state).filter(|t| t.len() == 13).ok_or_else(|| {
        Issue::undecodable(state_offset, "state is not the 13-tuple of `__getstate__`")
    })?;
    let item = |i: usize| {
        items
            .get(i)
            .copied()
            .ok_or_else(|| Issue::undecodable(state_offset, "state is too short"))
    };
    let data = ctx.array(item(0)?, "data")?;
    let idx_array = ctx.array(item(1)?, "idx_array")?;
    let node_data = ctx.array(item(2)?, "node_data")?;
    let node_bounds = ctx.array(item(3)?, "node_bounds")?;
    let n_nodes_id = item(6)?;
    let n_nodes = ctx.require_int(n_nodes_id, "n_nodes")?;
    let sample_weight = item(12)?;

    let [n_samples, n_features] = <[u64; 2]>::try_from(data.shape.as_slice()).map_err(|_| {
        Issue::new(
            "neighbors.data_shape",
            data.offset,
            format!("`data` has shape {:?}, not two dimensions", data.shape),
        )
    })?;
    let mut found = Found::default();
    if idx_array.shape != [n_samples] {
        found.push("neighbors.index_out_of_range", idx_array.offset, || {
            format!(
                "`idx_array` has shape {:?}; there are {n_samples} samples",
                idx_array.shape
            )
        });
    }
    let samples = i64::try_from(n_samples).unwrap_or(i64::MAX);
    let idx = ctx.int_column(&idx_array, None, "idx_array")?;
    for k in 0..idx.len() {
        let v = at(&idx, k, "idx_array", idx_array.offset)?;
        if !(0..samples).contains(&v) {
            found.push("neighbors.index_out_of_range", idx_array.offset, || {
                format!("`idx_array[{k}]` is {v}; there are {n_samples} samples")
            });
        }
    }

    let nodes = node_data.len();
    if node_data.shape.len() != 1 || i64::try_from(nodes).ok() != Some(n_nodes) || nodes == 0 {
        found.push("neighbors.node_count", ctx.offset(n_nodes_id), || {
            format!(
                "n_nodes is {n_nodes} but `node_data` has shape {:?}",
                node_data.shape
            )
        });
    }
    let start = ctx.int_column(&node_data, Some("idx_start"), "node_data")?;
    let end = ctx.int_column(&node_data, Some("idx_end"), "node_data")?;
    let is_leaf = ctx.int_column(&node_data, Some("is_leaf"), "node_data")?;
    let count = i64::try_from(nodes).unwrap_or(i64::MAX);
    let at_nodes = node_data.offset;
    for i in 0..nodes {
        let s = at(&start, i, "idx_start", at_nodes)?;
        let e = at(&end, i, "idx_end", at_nodes)?;
        if !(0 <= s && s <= e && e <= samples) {
            found.push("neighbors.node_data", at_nodes, || {
                format!("node {i} covers [{s}, {e}); there are {n_samples} samples")
            });
        }
        if at(&is_leaf, i, "is_leaf", at_nodes)? == 0 {
            let last_child = i64::try_from(i)
                .unwrap_or(i64::MAX)
                .saturating_mul(2)
                .saturating_add(2);
            if last_child >= count {
                found.push("neighbors.node_data", at_nodes, || {
                    format!("node {i} is not a leaf but child {last_child} does not exist")
                });
            }
        }
    }

    let planes = if class.contains("KDTree") { 2 } else { 1 };
    let expected = [planes, nodes as u64, n_features];
    if node_bounds.shape != expected {
        found.push("neighbors.node_bounds", node_bounds.offset, || {
            format!(
                "`node_bounds` has shape {:?}, expected {expected:?}",
                node_bounds.shape
            )
        });
    }
    if !ctx.is_none(sample_weight) {
        let w = ctx.array(sample_weight, "sample_weight")?;
        if w.shape != [n_samples] {
            found.push("neighbors.sample_weight", w.offset, || {
                format!(
                    "`sample_weight` has shape {:?}; there are {n_samples} samples",
                    w.shape
                )
            });
        }
    }
    Ok(found.finish())
}
