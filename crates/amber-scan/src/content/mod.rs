//! Content validators for allowed types whose native code trusts its arrays.
//!
//! An allowlist of names is not enough for compiled scikit-learn and SciPy
//! types: `sklearn.tree._tree.Tree.__setstate__` copies node arrays whose
//! child indices `predict` then follows without bounds checks, so a crafted
//! file crashes the process (or loops forever) with only allowed globals.
//! [`check`] reads the `BUILD` state of such an object from the graph,
//! decodes its arrays with [`crate::ndarray`] and returns an [`Issue`] for
//! each thing the native code would trust and the file gets wrong. A state
//! that cannot be read (an unknown array form, missing bytes, an unexpected
//! layout) is an issue too: a validated type whose arrays were not checked
//! is refused, never passed.
//!
//! One module per family: [`tree`] (`Tree`), [`hist`] (HistGradientBoosting
//! `TreePredictor`), [`neighbors`] (`KDTree`, `BallTree`), [`sparse`]
//! (SciPy CSR/CSC/BSR/COO), and [`estimators`] (the estimators whose
//! `n_features_in_` is what bounds their trees' feature indices at
//! `predict`). Each walks its arrays once.
//!
//! Issue codes (stable): `tree.child_out_of_range`, `tree.cycle`,
//! `tree.shared_node`, `tree.feature_out_of_range`, `tree.max_depth`,
//! `tree.node_count`, `tree.value_shape`, `tree.n_classes`,
//! `tree.n_outputs`, `tree.n_features`; `hist.node_out_of_range`,
//! `hist.cycle`, `hist.feature_out_of_range`, `hist.bitset_out_of_range`,
//! `hist.bitset_shape`; `neighbors.index_out_of_range`,
//! `neighbors.node_data`, `neighbors.node_count`, `neighbors.node_bounds`,
//! `neighbors.data_shape`, `neighbors.sample_weight`; `sparse.indptr`,
//! `sparse.indices`, `sparse.coords`, `sparse.data`, `sparse.shape`,
//! `sparse.blocksize`; `content.duplicate_key`, `content.undecodable`,
//! `content.budget` ([`Checker`] only).
//!
//! Everything is read as it is when the validated object's `BUILD` runs: a
//! `BUILD` of an array or dtype after it has not happened yet (ensembles,
//! which keep references to their trees, read each tree's state whenever
//! it was built). [`check`] finds `BUILD`s by a bounded scan,
//! [`check_indexed`] in an [`EventIndex`]; [`Checker`] adds one work budget
//! for the whole file, so arrays shared through the memo by thousands of
//! validated objects cannot multiply the work. Each object's
//! *first* `BUILD` is the one read, so the analyser must refuse a stream
//! that builds one object twice, and must refuse `APPEND`/`SETITEM`-style
//! events on `bytes`/`bytearray`/tuple literals (a `SETITEM` on a
//! `bytearray` rewrites array bytes after they were read here).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use rayon::prelude::*;

use amber_pickle::{Event, EventIndex, EventKind, Graph, Node, NodeId, NodeKind};

use crate::ndarray::{self, ArrayBytes, ArrayError, Builds, DTypeCache, NdArray};

pub mod estimators;
pub mod hist;
mod lending;
pub mod neighbors;
pub mod sparse;
pub mod tree;

/// What a validator sees: the graph and the bytes of its arrays.
#[derive(Clone, Copy)]
pub struct Ctx<'g, 'a> {
    /// The parsed pickle.
    pub graph: &'g amber_pickle::Graph<'a>,
    /// Out-of-band and inline array bytes.
    pub arrays: &'g dyn crate::ndarray::ArrayBytes,
}

impl std::fmt::Debug for Ctx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("nodes", &self.graph.len())
            .finish_non_exhaustive()
    }
}

/// One problem found in an object's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Stable code (`tree.child_out_of_range`, `content.undecodable`, ...).
    pub code: &'static str,
    /// Byte offset of the node the problem is in.
    pub offset: u64,
    /// What is wrong, with the values involved.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(code: &'static str, offset: u64, message: impl Into<String>) -> Self {
        Issue {
            code,
            offset,
            message: message.into(),
        }
    }

    pub(crate) fn undecodable(offset: u64, message: impl Into<String>) -> Self {
        Issue::new(UNDECODABLE, offset, message)
    }
}

impl From<ArrayError> for Issue {
    fn from(e: ArrayError) -> Self {
        Issue::undecodable(e.offset(), format!("{e} ({})", e.code()))
    }
}

/// Events one check may scan to find BUILDs (without an index).
const SCAN_BUDGET: usize = 2048;
/// Dtypes one array's dtype may be made of (`Tree` nodes: 9).
const MAX_DTYPES: u32 = 64;

/// The code for a validated object whose state or arrays cannot be read.
pub const UNDECODABLE: &str = "content.undecodable";
/// The code for a check refused because the file's validation budget is spent.
pub const BUDGET: &str = "content.budget";
/// The code for a state dict that sets one key twice.
pub const DUPLICATE_KEY: &str = "content.duplicate_key";

/// Validate the state `state` that a `BUILD` gives the object `object` of class `class`.
///
/// `class` is the canonical dotted class name; `object` the node that made
/// the object (REDUCE/NEWOBJ); `state` the BUILD state node. Classes not in
/// [`validated_classes`] give no issues.
#[must_use]
pub fn check(ctx: &Ctx<'_, '_>, class: &str, object: NodeId, state: NodeId) -> Vec<Issue> {
    validate(
        ctx,
        Builds::scan(),
        &Budget::unlimited(),
        None,
        None,
        class,
        object,
        state,
    )
}

/// [`check`], finding `BUILD`s in `index` (`ctx.graph.event_index()`, built
/// once): exact and O(1) per lookup, where [`check`] scans a bounded number
/// of events after each object. Use it when validating many objects.
#[must_use]
pub fn check_indexed(
    ctx: &Ctx<'_, '_>,
    index: &EventIndex,
    class: &str,
    object: NodeId,
    state: NodeId,
) -> Vec<Issue> {
    validate(
        ctx,
        Builds::indexed(index),
        &Budget::unlimited(),
        None,
        None,
        class,
        object,
        state,
    )
}

/// Validates many objects of one graph: [`check_indexed`] with one
/// [`EventIndex`], and one budget of array elements read, shared by every
/// check. Each check reads its own arrays once, but a hostile stream can
/// make thousands of validated objects share one large array through the
/// memo, so the work is bounded over the whole graph: once the budget is
/// spent, a check that must read more gives `content.budget`.
///
/// A budget of twice the elements the file's arrays hold (about its bytes)
/// passes every real model: each array is read by at most two validators.
pub struct Checker<'g, 'a> {
    ctx: Ctx<'g, 'a>,
    index: EventIndex,
    budget: Budget,
    dtypes: DTypeCache,
    hist: HistMemo,
    parallel_from: u64,
    /// The stream's root, when known: tree checks may then lend arrays.
    root: Option<NodeId>,
    sharing: OnceLock<lending::Sharing>,
}

impl std::fmt::Debug for Checker<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("left", &self.budget.left.get())
            .finish_non_exhaustive()
    }
}

impl<'g, 'a> Checker<'g, 'a> {
    /// Index `ctx.graph` (one pass over its events) with a budget of `elements`.
    #[must_use]
    pub fn new(ctx: Ctx<'g, 'a>, elements: u64) -> Self {
        let index = ctx.graph.event_index();
        Checker {
            ctx,
            index,
            budget: Budget::new(elements, false),
            dtypes: DTypeCache::default(),
            hist: HistMemo::default(),
            parallel_from: if ctx.arrays.defers() {
                u64::MAX
            } else {
                PARALLEL_FROM
            },
            root: None,
            sharing: OnceLock::new(),
        }
    }

    /// Names the stream's root, which lets tree checks lend their arrays
    /// ([`ArrayBytes::lend`]) when nothing else can reach them.
    #[must_use]
    pub fn with_root(self, root: NodeId) -> Self {
        Checker {
            root: Some(root),
            ..self
        }
    }

    fn lending(&self) -> Option<lending::Lending<'_>> {
        self.root.map(|root| lending::Lending {
            sharing: &self.sharing,
            root,
        })
    }

    /// Let [`Self::check_many`] use other threads whenever the budget left
    /// is at least `elements` (by default twice the bytes of an 8 MB file,
    /// and never when the arrays defer checks: see [`ArrayBytes::defers`]).
    #[must_use]
    pub fn parallel_from(self, elements: u64) -> Self {
        Checker {
            parallel_from: elements,
            ..self
        }
    }

    /// [`check`] for one object.
    #[must_use]
    pub fn check(&self, class: &str, object: NodeId, state: NodeId) -> Vec<Issue> {
        let builds = Builds::indexed(&self.index).cached(&self.dtypes);
        let memo = Some(&self.hist);
        let lending = self.lending();
        validate(
            &self.ctx,
            builds,
            &self.budget,
            memo,
            lending,
            class,
            object,
            state,
        )
    }

    /// [`Self::check`] for each of `jobs` (class, object, state), in order,
    /// with the same results, the same budget left after, and the work spread
    /// over the threads of the current rayon pool.
    ///
    /// Jobs run in batches; each job of a batch may spend what was left when
    /// its batch began and logs what it spends. The logs are then settled in
    /// order: a job whose spending would have overrun what the jobs before it
    /// left gets the very `content.budget` issue it would have got alone.
    /// So the results never depend on the threads, and a hostile stream makes
    /// the pool read at most one batch's jobs times the budget.
    #[must_use]
    pub fn check_many(&self, jobs: &[(&str, NodeId, NodeId)]) -> Vec<Vec<Issue>> {
        let threads = rayon::current_num_threads();
        if threads < 2 || jobs.len() < 2 || self.budget.left.get() < self.parallel_from {
            return jobs.iter().map(|&(c, o, s)| self.check(c, o, s)).collect();
        }
        let (ctx, index, lending) = (self.ctx, &self.index, self.lending());
        let mut out = Vec::with_capacity(jobs.len());
        for batch in jobs.chunks(threads.saturating_mul(BATCH_PER_THREAD)) {
            let start = self.budget.left.get();
            let runs: Vec<(Vec<Issue>, Budget)> = batch
                .par_iter()
                .map_init(
                    || (DTypeCache::default(), HistMemo::default()),
                    |(dtypes, memo), &(class, object, state)| {
                        let budget = Budget::new(start, true);
                        let builds = Builds::indexed(index).cached(dtypes);
                        let memo = Some(&*memo);
                        let issues =
                            validate(&ctx, builds, &budget, memo, lending, class, object, state);
                        (issues, budget)
                    },
                )
                .collect();
            out.extend(
                runs.into_iter()
                    .map(|(issues, spent)| self.settle(issues, &spent)),
            );
        }
        out
    }

    /// The result of a job run with the budget of its batch, as if it had
    /// run alone after the jobs before it; takes what it spent.
    fn settle(&self, issues: Vec<Issue>, run: &Budget) -> Vec<Issue> {
        let left = self.budget.left.get();
        let mut spent = 0u64;
        for charge in run.log.borrow().iter() {
            spent = spent.saturating_add(charge.cost);
            if spent > left {
                self.budget.left.set(0);
                return vec![budget_issue(charge.offset, &charge.what, charge.cost)];
            }
        }
        if run.stopped.get() {
            // It needed more than its batch's budget, so more than `left`:
            // it stops on the same charge alone.
            self.budget.left.set(0);
        } else {
            self.budget.left.set(left - spent);
        }
        issues
    }

    /// Array elements the remaining checks may still read.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.budget.left.get()
    }
}

/// The budget from which [`Checker::check_many`] uses other threads by
/// default: that of an 8 MB file. Below, waking them costs more than it saves.
const PARALLEL_FROM: u64 = 16 << 20;

/// Jobs per thread in one batch of [`Checker::check_many`].
const BATCH_PER_THREAD: usize = 4;

/// The array elements one validation may still read and, when it runs in a
/// batch, what it read (to settle it in order afterwards).
struct Budget {
    left: Cell<u64>,
    log: RefCell<Vec<Charge>>,
    logging: bool,
    /// Whether a charge was refused.
    stopped: Cell<bool>,
}

struct Charge {
    cost: u64,
    offset: u64,
    what: String,
}

impl Budget {
    fn new(elements: u64, logging: bool) -> Self {
        Budget {
            left: Cell::new(elements),
            log: RefCell::new(Vec::new()),
            logging,
            stopped: Cell::new(false),
        }
    }

    fn unlimited() -> Self {
        Budget::new(u64::MAX, false)
    }

    fn charge(&self, cost: u64, offset: u64, what: &str) -> Result<(), Issue> {
        let Some(left) = self.left.get().checked_sub(cost) else {
            self.left.set(0);
            self.stopped.set(true);
            return Err(budget_issue(offset, what, cost));
        };
        self.left.set(left);
        if self.logging {
            self.log.borrow_mut().push(Charge {
                cost,
                offset,
                what: what.to_owned(),
            });
        }
        Ok(())
    }
}

fn budget_issue(offset: u64, what: &str, cost: u64) -> Issue {
    Issue::new(
        BUDGET,
        offset,
        format!("reading `{what}` ({cost} elements) exceeds the budget for validating this file"),
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one check's context, each passed by its callers"
)]
fn validate(
    ctx: &Ctx<'_, '_>,
    builds: Builds<'_>,
    work: &Budget,
    memo: Option<&HistMemo>,
    lending: Option<lending::Lending<'_>>,
    class: &str,
    object: NodeId,
    state: NodeId,
) -> Vec<Issue> {
    if !VALIDATED.contains(&class) {
        return Vec::new();
    }
    let sparse = sparse::format_of(class);
    // Ensembles hold Python references to their trees, so `predict` sees
    // each tree's (single) state whenever it was built; every other type
    // copies or wraps its arrays when built, so it is read as of its BUILD.
    let ensemble = estimators::GRADIENT_BOOSTING.contains(&class)
        || estimators::HIST_GRADIENT_BOOSTING.contains(&class);
    // Bound the work one check does on a hostile stream: events scanned to
    // find BUILDs, and dtypes reached per array (real states need a few
    // dozen of each). Ensembles look up one BUILD per tree.
    let budget = Cell::new(if ensemble { usize::MAX } else { SCAN_BUDGET });
    let builds = builds.scan_budget(&budget).max_dtypes(MAX_DTYPES);
    let (builds, build_at) = if ensemble {
        (builds, None)
    } else {
        let Some(at) = build_offset(ctx.graph, builds, object, state) else {
            return vec![Issue::undecodable(
                ctx.graph.get(state).map_or(0, Node::offset),
                "no BUILD of this object with this state follows the state",
            )];
        };
        (builds.before(at), Some(at))
    };
    let view = View {
        graph: ctx.graph,
        arrays: ctx.arrays,
        builds,
        work,
        memo,
        lending: lending.zip(build_at),
    };
    let result = match (class, sparse) {
        (tree::CLASS, _) => tree::check(&view, object, state),
        (c, _) if estimators::TREE_ESTIMATORS.contains(&c) => {
            estimators::check_tree_estimator(&view, state)
        }
        (c, _) if estimators::GRADIENT_BOOSTING.contains(&c) => {
            estimators::check_gradient_boosting(&view, state)
        }
        (c, _) if estimators::HIST_GRADIENT_BOOSTING.contains(&c) => {
            estimators::check_hist_gradient_boosting(&view, state)
        }
        (hist::CLASS, _) => hist::check(&view, state),
        (_, Some(format)) => sparse::check(&view, format, state),
        (c, None) => neighbors::check(&view, c, state),
    };
    match result {
        Ok(issues) => issues,
        Err(issue) => vec![issue],
    }
}

/// A content check left for later by a validator whose arrays
/// [`ArrayBytes::deferring`] (or [`ArrayBytes::deferring_in_stream`])
/// accepted: a load that copies the array runs it on the copy, and a load
/// that unpickles an in-band array runs it on the stream's bytes, before
/// handing the array to anything. Checks that need no array bytes ran
/// already; this is what remains of one object's check.
#[derive(Debug, Clone)]
pub struct Deferred {
    kind: DeferredKind,
}

#[derive(Debug, Clone)]
enum DeferredKind {
    /// The node walk of a `Tree` ([`tree`]).
    TreeNodes(tree::NodeWalk),
    /// The node checks of a HistGradientBoosting predictor ([`hist`]).
    HistNodes(hist::NodeCheck),
    /// The bound an ensemble sets on its predictor's features ([`estimators`]).
    HistFeatures(estimators::FeatureBound),
}

impl Deferred {
    pub(crate) fn tree_nodes(walk: tree::NodeWalk) -> Self {
        Deferred {
            kind: DeferredKind::TreeNodes(walk),
        }
    }

    pub(crate) fn hist_nodes(check: hist::NodeCheck) -> Self {
        Deferred {
            kind: DeferredKind::HistNodes(check),
        }
    }

    pub(crate) fn hist_features(bound: estimators::FeatureBound) -> Self {
        Deferred {
            kind: DeferredKind::HistFeatures(bound),
        }
    }

    /// Where the bytes it reads lie.
    #[must_use]
    pub fn place(&self) -> ndarray::Place {
        match &self.kind {
            DeferredKind::TreeNodes(walk) => walk.nodes.place,
            DeferredKind::HistNodes(check) => check.nodes.place,
            DeferredKind::HistFeatures(bound) => bound.nodes.place,
        }
    }

    /// What it checks: `"tree nodes"`, `"predictor nodes"` or `"predictor features"`.
    #[must_use]
    pub fn what(&self) -> &'static str {
        match &self.kind {
            DeferredKind::TreeNodes(_) => "tree nodes",
            DeferredKind::HistNodes(_) => "predictor nodes",
            DeferredKind::HistFeatures(_) => "predictor features",
        }
    }

    /// The out-of-band buffer it reads, if it reads one.
    #[must_use]
    pub fn buffer(&self) -> Option<u64> {
        match self.place() {
            ndarray::Place::Buffer(index) => Some(index),
            ndarray::Place::Stream { .. } => None,
        }
    }

    /// Runs the check on `bytes`, the array's bytes as loaded: the issues
    /// the validator would have found in them (none: the check passed).
    #[must_use]
    pub fn run(&self, bytes: &[u8]) -> Vec<Issue> {
        let outcome = match &self.kind {
            DeferredKind::TreeNodes(walk) => walk.run(bytes),
            DeferredKind::HistNodes(check) => check.run(bytes),
            DeferredKind::HistFeatures(bound) => bound.run(bytes),
        };
        match outcome {
            Ok(issues) => issues,
            Err(issue) => vec![issue],
        }
    }
}

/// Whether a finding code is one of the validators' (`tree.*`, `hist.*`,
/// `neighbors.*`, `sparse.*`, `content.*`): such a finding may come from a
/// damaged array as well as from a crafted one, so a reader that did not
/// check the array's CRC first should before calling the file hostile.
#[must_use]
pub fn is_content_code(code: &str) -> bool {
    ["tree.", "hist.", "neighbors.", "sparse.", "content."]
        .iter()
        .any(|family| code.starts_with(family))
}

/// Every class [`check`] validates, by canonical dotted name.
#[must_use]
pub fn validated_classes() -> &'static [&'static str] {
    VALIDATED
}

static VALIDATED: &[&str] = &[
    tree::CLASS,
    hist::CLASS,
    neighbors::CLASSES[0],
    neighbors::CLASSES[1],
    neighbors::CLASSES[2],
    neighbors::CLASSES[3],
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse._csr.csr_array",
    "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._csc.csc_array",
    "scipy.sparse._bsr.bsr_matrix",
    "scipy.sparse._bsr.bsr_array",
    "scipy.sparse._coo.coo_matrix",
    "scipy.sparse._coo.coo_array",
    "scipy.sparse.csr.csr_matrix",
    "scipy.sparse.csc.csc_matrix",
    "scipy.sparse.bsr.bsr_matrix",
    "scipy.sparse.coo.coo_matrix",
    estimators::TREE_ESTIMATORS[0],
    estimators::TREE_ESTIMATORS[1],
    estimators::TREE_ESTIMATORS[2],
    estimators::TREE_ESTIMATORS[3],
    estimators::GRADIENT_BOOSTING[0],
    estimators::GRADIENT_BOOSTING[1],
    estimators::HIST_GRADIENT_BOOSTING[0],
    estimators::HIST_GRADIENT_BOOSTING[1],
];

/// A validator's result: its issues, or the one issue that stopped it.
pub(crate) type Outcome = Result<Vec<Issue>, Issue>;

/// Offset of the `BUILD` that gives `state` to `object`: in the index, or
/// closely after the state's own nodes and events.
fn build_offset(
    graph: &Graph<'_>,
    builds: Builds<'_>,
    object: NodeId,
    state: NodeId,
) -> Option<u64> {
    let events = graph.events();
    let is_it = |e: &&Event| e.target == object && e.kind == EventKind::Build { state };
    if let Some(index) = builds.index() {
        return index
            .of(object)
            .iter()
            .filter_map(|&i| events.get(usize::try_from(i).ok()?))
            .find(is_it)
            .map(|e| e.offset);
    }
    let at = graph.get(state)?.offset();
    let first = events.partition_point(|e| e.offset < at);
    events
        .get(first..)?
        .iter()
        .take(ndarray::MAX_BUILD_SCAN)
        .find(is_it)
        .map(|e| e.offset)
}

/// What a validator reads: the graph and array bytes, as they are when the
/// validated object's `BUILD` runs (builds after it have not happened yet).
pub(crate) struct View<'g, 'a> {
    pub(crate) graph: &'g Graph<'a>,
    arrays: &'g dyn ArrayBytes,
    builds: Builds<'g>,
    /// Array elements this and later checks may still read.
    work: &'g Budget,
    /// What earlier checks of this graph read of predictors' node arrays.
    memo: Option<&'g HistMemo>,
    /// Whether arrays may be lent, and the offset of the validated `BUILD`.
    lending: Option<(lending::Lending<'g>, u64)>,
}

/// What the checks of one graph read of HistGradientBoosting predictors'
/// node arrays, by predictor state: the ensemble's bound on its predictors'
/// features ([`estimators`]) takes it from there instead of reading each
/// state and decoding each array a second time, where the array reads the
/// same for it. (A state dict reads the same whenever it is read.)
#[derive(Debug, Default)]
pub(crate) struct HistMemo {
    map: RefCell<HashMap<NodeId, hist::Summary>>,
}

impl<'g> View<'g, '_> {
    pub(crate) fn offset(&self, id: NodeId) -> u64 {
        self.graph.get(id).map_or(0, Node::offset)
    }

    pub(crate) fn int(&self, id: NodeId) -> Option<i64> {
        self.graph.get(id).and_then(Node::as_i64)
    }

    pub(crate) fn tuple(&self, id: NodeId) -> Option<&'g [NodeId]> {
        self.graph.get(id).and_then(Node::as_tuple)
    }

    pub(crate) fn is_none(&self, id: NodeId) -> bool {
        matches!(self.graph.kind(id), Some(NodeKind::None))
    }

    /// The state of the first `BUILD` on `id`, if it ran before the validated one.
    pub(crate) fn build_state(&self, id: NodeId) -> Option<NodeId> {
        self.builds.state(self.graph, id)
    }

    /// The array made by `id` without its bytes, when its checks may run
    /// later on the bytes the load copies ([`ArrayBytes::deferring`]);
    /// `Ok(None)` when they must run now (decode it with [`Self::array`]).
    pub(crate) fn later(&self, id: NodeId, what: &str) -> Result<Option<ndarray::Later>, Issue> {
        self.later_with(id, what, self.builds)
    }

    /// [`Self::later`], recording in `seen` for which `before` offsets it
    /// reads the same (see [`Builds::tracking`]).
    pub(crate) fn later_tracked(
        &self,
        id: NodeId,
        what: &str,
        seen: &Cell<(u64, u64)>,
    ) -> Result<Option<ndarray::Later>, Issue> {
        self.later_with(id, what, self.builds.tracking(seen))
    }

    fn later_with(
        &self,
        id: NodeId,
        what: &str,
        builds: Builds<'_>,
    ) -> Result<Option<ndarray::Later>, Issue> {
        ndarray::decode_later(self.graph, id, self.arrays, builds)
            .map_err(|e| Issue::undecodable(e.offset(), format!("`{what}`: {e} ({})", e.code())))
    }

    /// Leaves `check` to run on the bytes of its array as they are loaded.
    pub(crate) fn defer(&self, check: Deferred) {
        match check.place() {
            ndarray::Place::Buffer(index) => self.arrays.defer(index, check),
            ndarray::Place::Stream { .. } => self.arrays.defer_in_stream(check),
        }
    }

    /// Lends `later`, made by node `array` and held by the state dict
    /// `state` of the validated `BUILD`, when nothing else can reach its
    /// bytes (see [`lending`] and [`ArrayBytes::lend`]). Out-of-band buffers
    /// only: an in-band array is always the unpickler's own copy.
    pub(crate) fn lend(&self, later: &ndarray::Later, array: NodeId, state: NodeId) {
        if let ndarray::Place::Buffer(index) = later.place
            && let Some((lending, at)) = self.lending
            && lending.may_lend(self.graph, array, index, state, at)
        {
            self.arrays.lend(index);
        }
    }

    /// Decode the array made by `id`, as an issue if it cannot be.
    pub(crate) fn array(&self, id: NodeId, what: &str) -> Result<NdArray<'g>, Issue> {
        self.array_with(id, what, self.builds)
    }

    /// [`Self::array`], recording in `seen` for which `before` offsets it
    /// reads the same (see [`Builds::tracking`]).
    pub(crate) fn array_tracked(
        &self,
        id: NodeId,
        what: &str,
        seen: &Cell<(u64, u64)>,
    ) -> Result<NdArray<'g>, Issue> {
        self.array_with(id, what, self.builds.tracking(seen))
    }

    /// Keeps what [`hist`] read of the node array of the predictor state
    /// `state` for the checks after it.
    pub(crate) fn remember(&self, state: NodeId, summary: hist::Summary) {
        if let Some(memo) = self.memo {
            memo.map.borrow_mut().insert(state, summary);
        }
    }

    /// What [`hist`] read of the node array of the predictor state `state`,
    /// if that array reads the same here.
    pub(crate) fn recall(&self, state: NodeId) -> Option<hist::Summary> {
        let memo = self.memo?.map.borrow();
        let summary = memo.get(&state)?;
        self.builds.reads_as(summary.valid).then(|| summary.clone())
    }

    fn array_with(&self, id: NodeId, what: &str, builds: Builds<'_>) -> Result<NdArray<'g>, Issue> {
        let array = ndarray::decode_with(self.graph, id, self.arrays, builds)
            .map_err(|e| Issue::undecodable(e.offset(), format!("`{what}`: {e} ({})", e.code())))?;
        // Text data (protocols 0-2) is converted on every decode.
        if array.is_converted() {
            self.charge(array.len(), array.offset, what)?;
        }
        Ok(array)
    }

    /// One integer field (or the elements) of an array, charged to the work budget.
    pub(crate) fn int_column<'d>(
        &self,
        array: &'d NdArray<'_>,
        field: Option<&str>,
        what: &str,
    ) -> Result<ndarray::Column<'d>, Issue> {
        let col = int_column(array, field, what)?;
        self.charge(col.len(), array.offset, what)?;
        Ok(col)
    }

    /// Take `elements` from the work budget.
    pub(crate) fn charge(&self, elements: usize, offset: u64, what: &str) -> Result<(), Issue> {
        self.work
            .charge(u64::try_from(elements).unwrap_or(u64::MAX), offset, what)
    }

    /// An int the state must hold.
    pub(crate) fn require_int(&self, id: NodeId, what: &str) -> Result<i64, Issue> {
        self.int(id)
            .ok_or_else(|| Issue::undecodable(self.offset(id), format!("`{what}` is not an int")))
    }
}

/// A state dict by `str` key. A key set twice is refused: the graph records
/// every pair ever set on a literal dict, including any set after the
/// `BUILD` consumed it, so the last value need not be the one the object got.
pub(crate) struct StateDict<'g> {
    offset: u64,
    /// Sorted by key, each key once.
    items: Vec<(&'g str, NodeId)>,
}

impl<'g> StateDict<'g> {
    pub(crate) fn read(graph: &'g Graph<'_>, state: NodeId) -> Result<Self, Issue> {
        let offset = graph.get(state).map_or(0, Node::offset);
        let Some(NodeKind::Dict(pairs)) = graph.kind(state) else {
            return Err(Issue::undecodable(offset, "state is not a dict"));
        };
        let mut items = Vec::with_capacity(pairs.len());
        for &(k, v) in pairs {
            let key = graph
                .get(k)
                .and_then(Node::as_str)
                .ok_or_else(|| Issue::undecodable(offset, "state has a key that is not a str"))?;
            items.push((key, v));
        }
        items.sort_unstable_by_key(|&(k, _)| k);
        if items
            .windows(2)
            .any(|w| matches!(w, [(a, _), (b, _)] if a == b))
        {
            // Name the first key set again, in the order the stream sets them.
            let key = first_repeated(graph, pairs);
            return Err(Issue::new(
                DUPLICATE_KEY,
                offset,
                format!("state sets `{key}` twice"),
            ));
        }
        Ok(StateDict { offset, items })
    }

    pub(crate) fn get(&self, key: &str) -> Option<NodeId> {
        self.items
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .and_then(|i| self.items.get(i))
            .map(|&(_, v)| v)
    }

    pub(crate) fn require(&self, key: &str) -> Result<NodeId, Issue> {
        self.get(key)
            .ok_or_else(|| Issue::undecodable(self.offset, format!("state has no `{key}`")))
    }
}

/// The first key of `pairs` (all `str`) that repeats an earlier one.
fn first_repeated<'g>(graph: &'g Graph<'_>, pairs: &[(NodeId, NodeId)]) -> &'g str {
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs
        .iter()
        .filter_map(|&(k, _)| graph.get(k).and_then(Node::as_str))
        .find(|key| !seen.insert(*key))
        .unwrap_or_default()
}

/// One integer field (or the elements) of an array, read as `i64`s one at a time.
fn int_column<'d>(
    array: &'d NdArray<'_>,
    field: Option<&str>,
    what: &str,
) -> Result<ndarray::Column<'d>, Issue> {
    let col = match field {
        Some(f) => array.field(f),
        None => array.values(),
    }
    .map_err(|e| Issue::undecodable(e.offset(), format!("`{what}`: {e}")))?;
    if col.is_float() {
        return Err(Issue::undecodable(
            array.offset,
            format!(
                "`{what}`: `{}` holds floats, not indices",
                field.unwrap_or("")
            ),
        ));
    }
    Ok(col)
}

/// Element `i` of a column the caller sized; missing only if the array lied.
#[inline(always)]
pub(crate) fn at(
    col: &ndarray::Column<'_>,
    i: usize,
    what: &str,
    offset: u64,
) -> Result<i64, Issue> {
    present(col.i64(i), i, what, offset)
}

/// [`at`] for an element the caller read itself.
#[inline(always)]
pub(crate) fn present(value: Option<i64>, i: usize, what: &str, offset: u64) -> Result<i64, Issue> {
    match value {
        Some(v) => Ok(v),
        None => Err(missing(i, what, offset)),
    }
}

#[cold]
#[inline(never)]
fn missing(i: usize, what: &str, offset: u64) -> Issue {
    Issue::undecodable(offset, format!("`{what}` element {i} is missing"))
}

/// Most issues reported per object; the rest are counted in one last issue.
const MAX_ISSUES: usize = 32;

/// Collects the issues of one object, keeping the first [`MAX_ISSUES`].
#[derive(Debug, Default)]
pub(crate) struct Found {
    issues: Vec<Issue>,
    dropped: u64,
}

impl Found {
    pub(crate) fn push(
        &mut self,
        code: &'static str,
        offset: u64,
        message: impl FnOnce() -> String,
    ) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::new(code, offset, message()));
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Issue> {
        if self.dropped > 0
            && let Some(last) = self.issues.last()
        {
            let (code, offset) = (last.code, last.offset);
            self.issues.push(Issue::new(
                code,
                offset,
                format!("and {} more issues like these", self.dropped),
            ));
        }
        self.issues
    }
}
