//! Estimators whose trees index `X` by a feature number only the estimator bounds.
//!
//! A tree's feature indices are checked against the tree's own
//! `n_features` ([`super::tree`]) or only for sign ([`super::hist`]), but
//! `predict` validates `X` against the *estimator's* `n_features_in_` and
//! then lets native code read `X[row, feature]`. A file whose estimator
//! says fewer features than its trees use (or omits `n_features_in_`,
//! which makes scikit-learn skip the check) reads past the end of `X`. So:
//!
//! - a fitted DecisionTree/ExtraTree estimator has `n_features_in_` equal to
//!   its `tree_`'s `n_features` (forests and bagging call each tree
//!   estimator, which checks `X` against its own `n_features_in_`);
//! - GradientBoosting passes `X` straight to every tree in `estimators_`:
//!   each tree's `n_features` equals the ensemble's `n_features_in_`;
//! - HistGradientBoosting's predictors split on `feature_idx` below its
//!   `n_features_in_`.

use amber_pickle::{NodeId, NodeKind};

use super::{Deferred, Found, Issue, Outcome, StateDict, View, int_column, present, tree};
use crate::ndarray::{self, global_is};

/// Tree estimators: one `tree_` each.
pub const TREE_ESTIMATORS: [&str; 4] = [
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._classes.ExtraTreeRegressor",
];

/// Gradient boosting: an object array `estimators_` of tree estimators.
pub const GRADIENT_BOOSTING: [&str; 2] = [
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
];

/// Histogram gradient boosting: `_predictors`, a list of lists of `TreePredictor`s.
pub const HIST_GRADIENT_BOOSTING: [&str; 2] = [
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
];

const CODE: &str = "tree.n_features";

/// `n_features` of the `Tree` made by `id` (`REDUCE(Tree, (n_features, ...))`).
fn tree_features(view: &View<'_, '_>, id: NodeId) -> Result<i64, Issue> {
    let (callable, args) = match view.graph.kind(id) {
        Some(NodeKind::Reduce { callable, args }) => (callable, args),
        _ => return Err(Issue::undecodable(view.offset(id), "`tree_` is not a Tree")),
    };
    if !global_is(view.graph, callable, &[tree::CLASS]) {
        return Err(Issue::undecodable(view.offset(id), "`tree_` is not a Tree"));
    }
    let first = view
        .tuple(args)
        .and_then(|t| t.first().copied())
        .ok_or_else(|| Issue::undecodable(view.offset(id), "a Tree without arguments"))?;
    view.require_int(first, "n_features")
}

/// `n_features_in_`, required once the estimator is fitted.
fn features_in(view: &View<'_, '_>, d: &StateDict<'_>, fitted_by: &str) -> Result<i64, Issue> {
    let id = d.get("n_features_in_").ok_or_else(|| {
        Issue::new(
            CODE,
            d.offset,
            format!("fitted (`{fitted_by}` is set) but `n_features_in_` is missing, so scikit-learn would not check the width of `X`"),
        )
    })?;
    view.require_int(id, "n_features_in_")
}

/// The state node an estimator object was built with.
fn built_state(view: &View<'_, '_>, object: NodeId) -> Result<NodeId, Issue> {
    view.build_state(object).ok_or_else(|| {
        Issue::undecodable(
            view.offset(object),
            "an estimator that is not built before it is used",
        )
    })
}

/// The state a tree estimator object was built with, as a dict.
fn estimator_state<'g>(view: &View<'g, '_>, object: NodeId) -> Result<StateDict<'g>, Issue> {
    StateDict::read(view.graph, built_state(view, object)?)
}

pub(crate) fn check_tree_estimator(view: &View<'_, '_>, state: NodeId) -> Outcome {
    let d = StateDict::read(view.graph, state)?;
    let Some(tree_id) = d.get("tree_") else {
        return Ok(Vec::new());
    };
    let expected = features_in(view, &d, "tree_")?;
    let got = tree_features(view, tree_id)?;
    if got == expected {
        return Ok(Vec::new());
    }
    Ok(vec![Issue::new(
        CODE,
        view.offset(tree_id),
        format!("`tree_` has {got} features but the estimator checks `X` for {expected}"),
    )])
}

pub(crate) fn check_gradient_boosting(view: &View<'_, '_>, state: NodeId) -> Outcome {
    let d = StateDict::read(view.graph, state)?;
    let Some(estimators) = d.get("estimators_") else {
        return Ok(Vec::new());
    };
    let expected = features_in(view, &d, "estimators_")?;
    let items = ndarray::object_items(view.graph, estimators, view.builds)
        .map_err(|e| Issue::undecodable(e.offset(), format!("`estimators_`: {e}")))?;
    view.charge(items.len(), view.offset(estimators), "estimators_")?;
    let mut found = Found::default();
    for &estimator in items {
        let tree_id = estimator_state(view, estimator)?.require("tree_")?;
        let got = tree_features(view, tree_id)?;
        if got != expected {
            found.push(CODE, view.offset(tree_id), || {
                format!(
                    "a stage's tree has {got} features but the ensemble checks `X` for {expected}"
                )
            });
        }
    }
    Ok(found.finish())
}

pub(crate) fn check_hist_gradient_boosting(view: &View<'_, '_>, state: NodeId) -> Outcome {
    let d = StateDict::read(view.graph, state)?;
    let Some(predictors) = d.get("_predictors") else {
        return Ok(Vec::new());
    };
    let expected = features_in(view, &d, "_predictors")?;
    let list = |id: NodeId| match view.graph.kind(id) {
        Some(NodeKind::List(items)) => Ok(items),
        _ => Err(Issue::undecodable(
            view.offset(id),
            "`_predictors` is not a list of lists",
        )),
    };
    let mut found = Found::default();
    let stages = list(predictors)?;
    view.charge(stages.len(), view.offset(predictors), "_predictors")?;
    for &stage in stages {
        let stage_predictors = list(stage)?;
        view.charge(stage_predictors.len(), view.offset(stage), "_predictors")?;
        for &predictor in stage_predictors {
            let state = built_state(view, predictor)?;
            let known = view.recall(state);
            if let Some(known) = &known
                && let Some(bound) = &known.deferred
            {
                // The predictor's own checks were left to the bytes the load
                // hands over: they check this bound too, in the same pass.
                view.charge(known.len, known.offset, "nodes")?;
                view.charge(known.len, known.offset, "nodes")?;
                bound.fetch_min(expected, std::sync::atomic::Ordering::AcqRel);
                continue;
            }
            if let Some(known) = &known
                && known.top_feature < expected
            {
                // The predictor's check read this very array: charge what
                // decoding it and reading its two columns again would.
                if known.converted {
                    view.charge(known.len, known.offset, "nodes")?;
                }
                view.charge(known.len, known.offset, "nodes")?;
                view.charge(known.len, known.offset, "nodes")?;
                continue;
            }
            let nodes_id = match &known {
                Some(known) => known.nodes,
                None => StateDict::read(view.graph, state)?.require("nodes")?,
            };
            if let Some(nodes) = view.later(nodes_id, "nodes")? {
                defer_bound(view, nodes, expected)?;
                continue;
            }
            let nodes = view.array(nodes_id, "nodes")?;
            let feature = view.int_column(&nodes, Some("feature_idx"), "nodes")?;
            let is_leaf = view.int_column(&nodes, Some("is_leaf"), "nodes")?;
            bound_features(&feature, &is_leaf, &nodes, expected, &mut found)?;
        }
    }
    Ok(found.finish())
}

/// Leaves the bound on a predictor whose node checks were left to the bytes
/// the load hands over to the same bytes, charged as reading its two
/// columns now would be.
fn defer_bound(view: &View<'_, '_>, nodes: ndarray::Later, expected: i64) -> Result<(), Issue> {
    view.charge(nodes.len(), nodes.offset, "nodes")?;
    view.charge(nodes.len(), nodes.offset, "nodes")?;
    view.defer(Deferred::hist_features(FeatureBound { nodes, expected }));
    Ok(())
}

/// A HistGradientBoosting ensemble's bound on the features of one
/// predictor whose node checks were deferred ([`super::Deferred`]).
#[derive(Debug, Clone)]
pub(crate) struct FeatureBound {
    pub(crate) nodes: ndarray::Later,
    expected: i64,
}

impl FeatureBound {
    /// The bound's issues in `bytes`, the `nodes` array's bytes as loaded.
    pub(crate) fn run(&self, bytes: &[u8]) -> Result<Vec<Issue>, Issue> {
        let nodes = self.nodes.with_bytes(bytes)?;
        let feature = int_column(&nodes, Some("feature_idx"), "nodes")?;
        let is_leaf = int_column(&nodes, Some("is_leaf"), "nodes")?;
        let mut found = Found::default();
        bound_features(&feature, &is_leaf, &nodes, self.expected, &mut found)?;
        Ok(found.finish())
    }
}

/// Pushes to `found` each split node of `nodes` (its `feature` and
/// `is_leaf` columns) whose feature is not below `expected`.
pub(crate) fn bound_features(
    feature: &ndarray::Column<'_>,
    is_leaf: &ndarray::Column<'_>,
    nodes: &ndarray::NdArray<'_>,
    expected: i64,
    found: &mut Found,
) -> Result<(), Issue> {
    if within_features(feature, is_leaf, nodes.len(), expected) {
        return Ok(());
    }
    let mut visited = 0;
    for (i, el) in feature.elements().enumerate() {
        visited = i + 1;
        if present(is_leaf.i64_in(el), i, "is_leaf", nodes.offset)? != 0 {
            continue;
        }
        let f = present(feature.i64_in(el), i, "feature_idx", nodes.offset)?;
        if f >= expected {
            found.push("hist.feature_out_of_range", nodes.offset, || {
                format!(
                    "node {i} splits on feature {f} but the estimator checks `X` for {expected}"
                )
            });
        }
    }
    if visited < nodes.len() {
        // Only if the array lied about its length.
        present(None, visited, "is_leaf", nodes.offset)?;
    }
    Ok(())
}

/// Whether every split node of a predictor (`feature`, `is_leaf`: its node
/// columns, `n` nodes) splits on a feature below `expected`, read in one
/// branch-free pass when the columns have the layout scikit-learn writes
/// (`<i8` features, byte flags). `false` means "walk again for the
/// findings": some node is out of range, or the layout is another one.
fn within_features(
    feature: &ndarray::Column<'_>,
    is_leaf: &ndarray::Column<'_>,
    n: usize,
    expected: i64,
) -> bool {
    if !(feature.is_le_i64() && is_leaf.is_byte()) {
        return false;
    }
    let mut bad = false;
    let mut visited = 0;
    for el in feature.elements() {
        let (Some(leaf), Some(f)) = (is_leaf.flag_in(el), feature.le_i64_in(el)) else {
            return false;
        };
        visited += 1;
        bad |= !leaf & (f >= expected);
    }
    !bad && visited == n
}
