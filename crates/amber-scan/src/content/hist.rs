//! HistGradientBoosting's `TreePredictor`.
//!
//! Pickled as `NEWOBJ(TreePredictor)` then `BUILD` with `{nodes,
//! binned_left_cat_bitsets, raw_left_cat_bitsets}`; `nodes` has
//! `PREDICTOR_RECORD_DTYPE` (`left`, `right`, `feature_idx`, `is_leaf`,
//! `is_categorical`, `bitset_idx`, ...). The Cython predictors start at
//! `nodes[0]` and follow `left`/`right` of every non-leaf node until a leaf,
//! indexing `X[row, feature_idx]` and, for categorical splits, row
//! `bitset_idx` of the `(n, 8)` bitset arrays, all unchecked. So: at least
//! one node; a non-leaf node's children lie in `(id, len(nodes))` (forward,
//! so the walk ends); `feature_idx >= 0`; a categorical split's
//! `bitset_idx` is a row of both bitset arrays, which have 8 columns.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use amber_pickle::NodeId;

use super::{Deferred, Found, Issue, Outcome, StateDict, View, int_column, present};
use crate::ndarray::{Column, Later, NdArray};

/// The class validated here.
pub const CLASS: &str = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor";

/// `BITSET_DTYPE` columns: 256 categories in 32-bit words.
const BITSET_WORDS: u64 = 8;

/// What a predictor's check read of its node array, for the ensemble's
/// bound on features ([`super::estimators`]): kept only when the array has
/// the layout scikit-learn writes and every node passed.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// The node `nodes` names in the state.
    pub(crate) nodes: NodeId,
    /// The `before` offsets for which the array decodes the same.
    pub(crate) valid: (u64, u64),
    /// Offset of the node that makes the array.
    pub(crate) offset: u64,
    /// Its number of nodes.
    pub(crate) len: usize,
    /// Whether its bytes were converted from text (charged on each decode).
    pub(crate) converted: bool,
    /// The highest `feature_idx` of a split node (`i64::MIN` if none).
    pub(crate) top_feature: i64,
    /// When the array's checks were deferred (`top_feature` is then
    /// unknown): the bound on its features they also check, which the
    /// ensemble lowers to its `n_features_in_` (they run after the analysis).
    pub(crate) deferred: Option<Arc<AtomicI64>>,
}

fn bitset_rows(found: &mut Found, array: &NdArray<'_>, what: &str) -> i64 {
    match array.shape.as_slice() {
        [rows, BITSET_WORDS] if array.dtype.itemsize == 4 => i64::try_from(*rows).unwrap_or(0),
        shape => {
            found.push("hist.bitset_shape", array.offset, || {
                format!("`{what}` has shape {shape:?}, expected (n, 8) uint32")
            });
            0
        }
    }
}

pub(crate) fn check(ctx: &View<'_, '_>, state: NodeId) -> Outcome {
    let d = StateDict::read(ctx.graph, state)?;
    let nodes_id = d.require("nodes")?;
    let seen = Cell::new((0, u64::MAX));
    // A node array the load hands over later is checked there, on the
    // bytes handed over: only what its bytes do not hold is read now.
    let nodes = match ctx.later_tracked(nodes_id, "nodes", &seen)? {
        Some(later) => Nodes::Later(later),
        None => Nodes::Now(ctx.array_tracked(nodes_id, "nodes", &seen)?),
    };
    let binned = ctx.array(
        d.require("binned_left_cat_bitsets")?,
        "binned_left_cat_bitsets",
    )?;
    let raw = ctx.array(d.require("raw_left_cat_bitsets")?, "raw_left_cat_bitsets")?;
    let mut found = Found::default();
    let bitsets = bitset_rows(&mut found, &binned, "binned_left_cat_bitsets").min(bitset_rows(
        &mut found,
        &raw,
        "raw_left_cat_bitsets",
    ));
    let (shape, n, at_nodes) = match &nodes {
        Nodes::Later(l) => (l.shape.as_slice(), l.len(), l.offset),
        Nodes::Now(a) => (a.shape.as_slice(), a.len(), a.offset),
    };
    if shape.len() != 1 {
        return Err(Issue::undecodable(
            at_nodes,
            format!("`nodes` has shape {shape:?}, not one dimension"),
        ));
    }
    if n == 0 {
        found.push("hist.node_out_of_range", at_nodes, || {
            "the predictor has no nodes".to_owned()
        });
    }
    let summary = |converted, top_feature, deferred| Summary {
        nodes: nodes_id,
        valid: seen.get(),
        offset: at_nodes,
        len: n,
        converted,
        top_feature,
        deferred,
    };
    let nodes = match nodes {
        Nodes::Later(nodes) => {
            // The six columns the checks read, as reading them now would.
            for _ in 0..6 {
                ctx.charge(n, at_nodes, "nodes")?;
            }
            let features_below = Arc::new(AtomicI64::new(i64::MAX));
            ctx.remember(
                state,
                summary(false, i64::MAX, Some(Arc::clone(&features_below))),
            );
            ctx.defer(Deferred::hist_nodes(NodeCheck {
                nodes,
                bitsets,
                features_below,
            }));
            return Ok(found.finish());
        }
        Nodes::Now(nodes) => nodes,
    };
    let columns = Columns {
        left: ctx.int_column(&nodes, Some("left"), "nodes")?,
        right: ctx.int_column(&nodes, Some("right"), "nodes")?,
        feature: ctx.int_column(&nodes, Some("feature_idx"), "nodes")?,
        is_leaf: ctx.int_column(&nodes, Some("is_leaf"), "nodes")?,
        categorical: ctx.int_column(&nodes, Some("is_categorical"), "nodes")?,
        bitset_idx: ctx.int_column(&nodes, Some("bitset_idx"), "nodes")?,
    };
    if let Some(top_feature) = columns.check(n, bitsets, at_nodes, &mut found)? {
        ctx.remember(state, summary(nodes.is_converted(), top_feature, None));
    }
    Ok(found.finish())
}

/// A predictor's node array: read now, or its checks left to the load.
enum Nodes<'g> {
    Later(Later),
    Now(NdArray<'g>),
}

/// A predictor's node checks deferred to the bytes its load hands over (see
/// [`super::Deferred`]): everything else about the predictor was checked.
#[derive(Debug, Clone)]
pub(crate) struct NodeCheck {
    pub(crate) nodes: Later,
    bitsets: i64,
    /// The bound the ensemble sets on the features of split nodes
    /// (`i64::MAX`: none), set before any deferred check runs.
    features_below: Arc<AtomicI64>,
}

impl NodeCheck {
    /// The checks' issues in `bytes`, the `nodes` array's bytes as loaded.
    pub(crate) fn run(&self, bytes: &[u8]) -> Result<Vec<Issue>, Issue> {
        let nodes = self.nodes.with_bytes(bytes)?;
        let columns = Columns {
            left: int_column(&nodes, Some("left"), "nodes")?,
            right: int_column(&nodes, Some("right"), "nodes")?,
            feature: int_column(&nodes, Some("feature_idx"), "nodes")?,
            is_leaf: int_column(&nodes, Some("is_leaf"), "nodes")?,
            categorical: int_column(&nodes, Some("is_categorical"), "nodes")?,
            bitset_idx: int_column(&nodes, Some("bitset_idx"), "nodes")?,
        };
        let mut found = Found::default();
        let top = columns.check(nodes.len(), self.bitsets, nodes.offset, &mut found)?;
        let bound = self.features_below.load(Ordering::Acquire);
        if bound != i64::MAX && top.is_none_or(|top| top >= bound) {
            let (feature, is_leaf) = (&columns.feature, &columns.is_leaf);
            super::estimators::bound_features(feature, is_leaf, &nodes, bound, &mut found)?;
        }
        Ok(found.finish())
    }
}

/// The fields of a node array the checks read.
struct Columns<'d> {
    left: Column<'d>,
    right: Column<'d>,
    feature: Column<'d>,
    is_leaf: Column<'d>,
    categorical: Column<'d>,
    bitset_idx: Column<'d>,
}

impl Columns<'_> {
    /// Checks the `n` nodes against `bitsets` rows of bitsets, pushing what
    /// is wrong to `found`; the highest feature a split node uses when the
    /// array has the layout scikit-learn writes and every node passed.
    fn check(
        &self,
        n: usize,
        bitsets: i64,
        at_nodes: u64,
        found: &mut Found,
    ) -> Result<Option<i64>, Issue> {
        let Columns {
            left,
            right,
            feature,
            is_leaf,
            categorical,
            bitset_idx,
        } = self;
        let count = i64::try_from(n).unwrap_or(i64::MAX);
        // The record layout every scikit-learn version writes, read without a
        // per-field type dispatch: a predictor that passes this branch-free
        // pass has no findings; any other is walked again for them, in order.
        let native = left.is_le_u32()
            && right.is_le_u32()
            && bitset_idx.is_le_u32()
            && feature.is_le_i64()
            && is_leaf.is_byte()
            && categorical.is_byte();
        if native {
            let mut bad = false;
            let mut visited = 0;
            let mut top_feature = i64::MIN;
            for (i, el) in left.elements().enumerate() {
                visited = i + 1;
                let (Some(leaf), Some(cat)) = (is_leaf.flag_in(el), categorical.flag_in(el)) else {
                    bad = true;
                    break;
                };
                if leaf {
                    continue;
                }
                let (Some(l), Some(r), Some(f), Some(b)) = (
                    left.le_u32_in(el),
                    right.le_u32_in(el),
                    feature.le_i64_in(el),
                    bitset_idx.le_u32_in(el),
                ) else {
                    bad = true;
                    break;
                };
                let id = i64::try_from(i).unwrap_or(i64::MAX);
                bad |= !((id < l) & (l < count) & (id < r) & (r < count) & (f >= 0))
                    | (cat & (b >= bitsets));
                top_feature = top_feature.max(f);
            }
            if !bad && visited == n {
                return Ok(Some(top_feature));
            }
        }
        let mut visited = 0;
        for (i, el) in left.elements().enumerate() {
            visited = i + 1;
            if present(is_leaf.i64_in(el), i, "is_leaf", at_nodes)? != 0 {
                continue;
            }
            let id = i64::try_from(i).unwrap_or(i64::MAX);
            for (side, col) in [("left", left), ("right", right)] {
                let c = present(col.i64_in(el), i, side, at_nodes)?;
                if !(0..count).contains(&c) {
                    found.push("hist.node_out_of_range", at_nodes, || {
                        format!("node {i} has {side} child {c}; there are {n} nodes")
                    });
                } else if c <= id {
                    found.push("hist.cycle", at_nodes, || {
                        format!("node {i} has {side} child {c}, which does not come after it")
                    });
                }
            }
            let f = present(feature.i64_in(el), i, "feature_idx", at_nodes)?;
            if f < 0 {
                found.push("hist.feature_out_of_range", at_nodes, || {
                    format!("node {i} splits on feature {f}")
                });
            }
            if present(categorical.i64_in(el), i, "is_categorical", at_nodes)? != 0 {
                let b = present(bitset_idx.i64_in(el), i, "bitset_idx", at_nodes)?;
                if !(0..bitsets).contains(&b) {
                    found.push("hist.bitset_out_of_range", at_nodes, || {
                        format!("node {i} uses bitset {b}; there are {bitsets}")
                    });
                }
            }
        }
        if visited < n {
            // Only if the array lied about its length.
            present(None, visited, "is_leaf", at_nodes)?;
        }
        Ok(None)
    }
}
