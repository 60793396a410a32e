//! Content validators for compiled scikit-learn / SciPy types.
//!
//! Placeholder for the merge: the content-validation branch replaces this
//! module with the real validators (Tree, TreePredictor, KDTree/BallTree,
//! sparse matrices). The scanner calls [`check`] after every `BUILD` on an
//! object whose class is in [`validated_classes`] and turns each [`Issue`]
//! into a critical finding.

use amber_pickle::{Graph, NodeId};

use crate::ndarray::ArrayBytes;

/// What a validator may read.
pub struct Ctx<'g, 'a> {
    /// The parsed stream.
    pub graph: &'g Graph<'a>,
    /// Bytes of out-of-band and inline arrays.
    pub arrays: &'g dyn ArrayBytes,
}

/// One problem a validator found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Stable code, e.g. `tree.child_out_of_range`.
    pub code: &'static str,
    /// Byte offset of the offending value.
    pub offset: u64,
    /// What is wrong.
    pub message: String,
}

/// Validate the state `BUILD` gives to `object`, an instance of `class`
/// (canonical dotted name). The placeholder finds nothing.
#[must_use]
pub fn check(ctx: &Ctx<'_, '_>, class: &str, object: NodeId, state: NodeId) -> Vec<Issue> {
    let _ = (ctx.graph, ctx.arrays, class, object, state);
    Vec::new()
}

/// Classes [`check`] validates.
#[must_use]
pub fn validated_classes() -> &'static [&'static str] {
    &[
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "scipy.sparse._csr.csr_matrix",
        "scipy.sparse._csr.csr_array",
        "scipy.sparse._csc.csc_matrix",
        "scipy.sparse._csc.csc_array",
        "scipy.sparse._bsr.bsr_matrix",
        "scipy.sparse._bsr.bsr_array",
        "scipy.sparse._coo.coo_matrix",
        "scipy.sparse._coo.coo_array",
    ]
}
