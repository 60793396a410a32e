//! The [`Hook`] that reads joblib's inline arrays.
//!
//! A joblib file is one pickle in which every plain `numpy.ndarray` is
//! replaced by a `joblib.numpy_pickle.NumpyArrayWrapper` object; right after
//! the wrapper's `BUILD` come the array's raw bytes (for joblib >= 1.2: one
//! padding-length byte and that many `0xFF` bytes first) or, for object
//! dtypes, a complete nested pickle. This module owns recognising the
//! wrapper, reading its state (`shape`, `dtype`, `order`,
//! `numpy_array_alignment_bytes`) from the graph, and computing how many
//! bytes to skip, exactly as `joblib.numpy_pickle` 1.6 reads them. Anything
//! ambiguous (a dtype whose object-ness numpy and this hook could judge
//! differently, odd padding) is refused rather than guessed.

use std::collections::HashMap;

use crate::error::{PickleError, Result};
use crate::graph::{EventKind, Global, Graph, Node, NodeId, NodeKind, NodeSet};
use crate::parser::{BuildContext, Hook, HookAction};

/// Fully qualified names of the wrapper class joblib and scikit-learn's
/// old vendored copy write.
const WRAPPERS: &[&str] = &[
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
];

/// Bound on the nodes visited, over all wrappers of one stream, while
/// looking for object fields in structured dtypes.
const DTYPE_WALK_BUDGET: usize = 1_000_000;

/// joblib writes six state keys; anything much larger is not a wrapper state.
const MAX_STATE_KEYS: usize = 16;

/// numpy's `NPY_MAXDIMS`.
const MAX_DIMS: usize = 64;

/// One array found in a joblib stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoblibArray {
    /// The `NumpyArrayWrapper` node.
    pub wrapper: NodeId,
    /// `shape`.
    pub shape: Vec<u64>,
    /// The dtype descriptor as pickled (`f8`, `U10`, `V16`, `O8`, ...).
    pub descr: String,
    /// The dtype byte order character (`<`, `>`, `|`, `=`), if given.
    pub byteorder: Option<String>,
    /// Bytes per element.
    pub itemsize: u64,
    /// `order`: `C` or `F`.
    pub fortran_order: bool,
    /// Object dtype: the data is a nested pickle, not raw bytes.
    pub object: bool,
    /// Where the raw data (or the nested pickle) starts.
    pub data_offset: u64,
    /// Raw data length (0 for object arrays).
    pub data_len: u64,
    /// Padding bytes skipped before the data (length byte included).
    pub padding: u64,
}

/// Reads joblib `NumpyArrayWrapper` arrays; pass it to [`crate::Parser::hook`].
///
/// ```no_run
/// # let data: Vec<u8> = Vec::new();
/// use amber_pickle::{Parser, joblib::JoblibHook};
/// let mut hook = JoblibHook::new();
/// let pickle = Parser::new(&data).hook(&mut hook).parse()?;
/// for array in hook.arrays() {
///     println!("{:?} {} at {:#x}", array.shape, array.descr, array.data_offset);
/// }
/// # Ok::<(), amber_pickle::PickleError>(())
/// ```
#[derive(Debug)]
pub struct JoblibHook {
    arrays: Vec<JoblibArray>,
    /// Whether [`JoblibHook::arrays`] is kept (else only counted).
    keep: bool,
    count: u64,
    /// Last `BUILD` state per target, for events seen so far.
    builds: Builds,
    /// What the dtype walks share (shared dtypes must not make the work
    /// quadratic).
    walk: DtypeWalk,
    dtypes: DtypeCache,
    known: Known,
}

impl Default for JoblibHook {
    fn default() -> Self {
        JoblibHook {
            arrays: Vec::new(),
            keep: true,
            count: 0,
            builds: Builds::default(),
            walk: DtypeWalk {
                budget: DTYPE_WALK_BUDGET,
                seen: NodeSet::default(),
                last: LastWalk::default(),
            },
            dtypes: DtypeCache::default(),
            known: Known::default(),
        }
    }
}

impl JoblibHook {
    /// A hook with no arrays seen yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A hook that reads and checks every wrapper as [`JoblibHook::new`]
    /// does, and decides the same, but only counts the arrays
    /// ([`JoblibHook::count`]) instead of recording them: what a scan needs,
    /// without an allocation per array.
    #[must_use]
    pub fn counting() -> Self {
        JoblibHook {
            keep: false,
            ..Self::default()
        }
    }

    /// The arrays found, in stream order (empty for [`JoblibHook::counting`]).
    #[must_use]
    pub fn arrays(&self) -> &[JoblibArray] {
        &self.arrays
    }

    /// How many arrays were found (recorded or not).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    fn record(&mut self, array: impl FnOnce() -> JoblibArray) {
        self.count = self.count.saturating_add(1);
        if self.keep {
            self.arrays.push(array());
        }
    }

    fn catch_up(&mut self, graph: &Graph<'_>) {
        let new = graph.events().get(self.builds.seen..).unwrap_or_default();
        self.builds.record(graph, new);
    }
}

/// The last `BUILD` state of each target: a table by node index for stored
/// nodes (one lookup per wrapper, no hashing), a map for the rare leaves.
///
/// Only `REDUCE` targets (what a `numpy.dtype` is) are recorded until a
/// structured dtype's walk needs the states of any node: then the table is
/// completed from the events seen so far and records every target from
/// there on. So a stream of many wrappers (each one a `BUILD` target) does
/// not grow a table as long as the graph.
#[derive(Debug, Default)]
struct Builds {
    nodes: Vec<Option<NodeId>>,
    leaves: HashMap<NodeId, NodeId>,
    /// Every target is recorded (else only `REDUCE` nodes).
    complete: bool,
    /// Events recorded.
    seen: usize,
}

impl Builds {
    /// Records the `BUILD`s among `events`, the graph's events from
    /// [`Builds::seen`] on.
    fn record(&mut self, graph: &Graph<'_>, events: &[crate::graph::Event]) {
        for e in events {
            if let EventKind::Build { state } = e.kind
                && (self.complete || matches!(graph.kind(e.target), Some(NodeKind::Reduce { .. })))
            {
                self.insert(e.target, state);
            }
        }
        self.seen = self.seen.saturating_add(events.len());
    }

    /// Records every target from now on, and those of the events seen.
    fn complete(&mut self, graph: &Graph<'_>) {
        if self.complete {
            return;
        }
        self.complete = true;
        let seen = self.seen;
        self.seen = 0;
        self.record(graph, graph.events().get(..seen).unwrap_or_default());
    }

    fn insert(&mut self, target: NodeId, state: NodeId) {
        if target.is_leaf() {
            self.leaves.insert(target, state);
            return;
        }
        let i = target.index();
        if i >= self.nodes.len() {
            // Ids grow with the stream: grow the table geometrically.
            let len = i.saturating_add(1).max(self.nodes.len().saturating_mul(2));
            self.nodes.resize(len, None);
        }
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = Some(state);
        }
    }

    fn get(&self, target: NodeId) -> Option<NodeId> {
        if target.is_leaf() {
            return self.leaves.get(&target).copied();
        }
        self.nodes.get(target.index()).copied().flatten()
    }
}

impl Hook for JoblibHook {
    fn after_build(&mut self, ctx: &BuildContext<'_, '_>) -> Result<HookAction> {
        // joblib reads nested (object-array) pickles with a plain unpickler.
        if ctx.nested_depth > 0 {
            return Ok(HookAction::Continue);
        }
        let graph = ctx.graph;
        if !self.known.is_wrapper(graph, ctx.target) {
            return Ok(HookAction::Continue);
        }
        self.catch_up(graph);
        let at = ctx.position;
        let fail = |what: &str| PickleError::hook(at, format!("joblib array wrapper: {what}"));
        let state = lookup_state(graph, ctx.state, &mut self.known).map_err(|w| fail(&w))?;

        let shape_id = state.shape.ok_or_else(|| fail("no `shape`"))?;
        let (shape, count) = read_shape(graph, shape_id).map_err(|w| fail(&w))?;
        let fortran_order = state
            .order
            .and_then(|id| self.known.order(graph, id))
            .ok_or_else(|| fail("`order` is not `'C'` or `'F'`"))?;
        let dtype_id = state.dtype.ok_or_else(|| fail("no `dtype`"))?;
        let dtype_state = self.builds.get(dtype_id);
        let (itemsize, object) = match self.dtypes.get(dtype_id, dtype_state) {
            Some(hit) => hit,
            None => {
                let d = read_dtype(graph, &mut self.builds, dtype_id, &mut self.walk)
                    .map_err(|w| fail(&w))?;
                if !d.structured {
                    self.dtypes
                        .insert(dtype_id, dtype_state, d.itemsize, d.object);
                }
                (d.itemsize, d.object)
            }
        };
        let aligned = state
            .alignment
            .is_some_and(|id| !matches!(graph.kind(id), Some(NodeKind::None)));

        let count = count.ok_or_else(|| fail("element count overflows"))?;
        let (descr, byteorder) = if self.keep {
            dtype_names(graph, &self.builds, dtype_id).unwrap_or_default()
        } else {
            ("", None)
        };
        let array = |data_offset, data_len, padding| JoblibArray {
            wrapper: ctx.target,
            shape: shape
                .iter()
                .map(|&d| {
                    graph
                        .get(d)
                        .and_then(Node::as_i64)
                        .unwrap_or(0)
                        .unsigned_abs()
                })
                .collect(),
            descr: descr.to_owned(),
            byteorder: byteorder.map(str::to_owned),
            itemsize,
            fortran_order,
            object,
            data_offset,
            data_len,
            padding,
        };
        if object {
            self.record(|| array(at, 0, 0));
            return Ok(HookAction::NestedPickle);
        }
        let len = count
            .checked_mul(itemsize)
            .ok_or_else(|| fail("data length overflows"))?;
        let padding = if aligned {
            let pos = usize::try_from(at).map_err(|_| fail("offset out of range"))?;
            let n = *ctx
                .input
                .get(pos)
                .ok_or_else(|| fail("truncated before the padding byte"))?;
            // joblib writes 1..=16 bytes of 0xFF; refuse anything else.
            if !(1..=16).contains(&n) {
                return Err(fail(&format!("padding length {n} is not in 1..=16")));
            }
            let pad = ctx
                .input
                .get(pos.saturating_add(1)..pos.saturating_add(1).saturating_add(usize::from(n)))
                .ok_or_else(|| fail("truncated padding"))?;
            if pad.iter().any(|&b| b != 0xff) {
                return Err(fail("padding bytes are not `0xff`"));
            }
            1 + u64::from(n)
        } else {
            0
        };
        self.record(|| array(at.saturating_add(padding), len, padding));
        Ok(HookAction::Data { padding, len })
    }
}

/// `module.name` of the class an object was made from, if it is a plain
/// global: `NEWOBJ`, `copyreg._reconstructor` / `__newobj__` (protocols
/// 0–1), `OBJ`, `INST`.
#[must_use]
pub fn class_name(graph: &Graph<'_>, obj: NodeId) -> Option<String> {
    class_global(graph, obj).map(Global::dotted)
}

/// Which of `names` (dotted) [`class_name`] is, without allocating it.
#[must_use]
pub fn class_among(graph: &Graph<'_>, obj: NodeId, names: &[&str]) -> Option<usize> {
    let g = class_global(graph, obj)?;
    names.iter().position(|&n| g.dotted_is(n))
}

/// The global [`class_name`] names.
fn class_global<'g>(graph: &'g Graph<'_>, obj: NodeId) -> Option<&'g Global<'g>> {
    let global_of = |id: NodeId| graph.get(id).and_then(Node::as_global);
    match graph.kind(obj)? {
        NodeKind::NewObj { cls, .. } | NodeKind::Obj { cls, .. } => global_of(cls),
        NodeKind::Inst { class, .. } => global_of(class),
        NodeKind::Reduce { callable, args } => {
            let f = global_of(callable)?;
            if !f.dotted_is("copyreg._reconstructor") && !f.dotted_is("copyreg.__newobj__") {
                return None;
            }
            let first = graph.get(args)?.as_tuple()?.first()?;
            global_of(*first)
        }
        _ => None,
    }
}

/// A `str`, or an ASCII Python 2 `str` (joblib under Python 2 wrote the
/// state keys, `order` and dtype descriptors that way; any encoding decodes
/// them to the same text).
pub fn str_of<'g>(graph: &'g Graph<'_>, id: NodeId) -> Option<&'g str> {
    let node = graph.get(id)?;
    if let Some(s) = node.as_str() {
        return Some(s);
    }
    match node.kind() {
        NodeKind::LegacyStr(b) if b.is_ascii() => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// [`str_of`] as bytes, without decoding a `str` again (see
/// [`Graph::str_bytes`]): for comparing keys.
fn text_bytes<'g>(graph: &'g Graph<'_>, id: NodeId) -> Option<&'g [u8]> {
    graph
        .str_bytes(id)
        .or_else(|| str_of(graph, id).map(str::as_bytes))
}

/// The values of the wrapper state keys the hook reads.
#[derive(Default)]
struct WrapperState {
    shape: Option<NodeId>,
    order: Option<NodeId>,
    dtype: Option<NodeId>,
    alignment: Option<NodeId>,
}

/// The wrapper's state dict, read in one pass without allocating: every
/// key must be a `str`; the last of a repeated key wins, as in the dict.
fn lookup_state(
    graph: &Graph<'_>,
    state: NodeId,
    known: &mut Known,
) -> std::result::Result<WrapperState, String> {
    let Some(NodeKind::Dict(pairs)) = graph.kind(state) else {
        return Err("state is not a dict".to_owned());
    };
    if pairs.len() > MAX_STATE_KEYS {
        return Err(format!("state has {} items", pairs.len()));
    }
    // The wrappers of one stream share their key nodes: a state with the
    // keys of the last one has its values where that one had them.
    let value = |at: Option<usize>| at.and_then(|i| pairs.get(i)).map(|&(_, v)| v);
    let last = &known.last_state;
    if !last.keys.is_empty()
        && last.keys.len() == pairs.len()
        && pairs.iter().zip(&last.keys).all(|(p, &k)| p.0 == k)
    {
        let [shape, order, dtype, alignment] = last.at;
        return Ok(WrapperState {
            shape: value(shape),
            order: value(order),
            dtype: value(dtype),
            alignment: value(alignment),
        });
    }
    let mut at: [Option<usize>; 4] = [None; 4];
    for (i, &(k, _)) in pairs.iter().enumerate().rev() {
        let slot = match known.key(graph, k).ok_or("state key is not a `str`")? {
            Key::Shape => 0,
            Key::Order => 1,
            Key::Dtype => 2,
            Key::Alignment => 3,
            Key::Other => continue,
        };
        if let Some(a) = at.get_mut(slot) {
            a.get_or_insert(i);
        }
    }
    known.last_state.keys.clear();
    known.last_state.keys.extend(pairs.iter().map(|&(k, _)| k));
    known.last_state.at = at;
    let [shape, order, dtype, alignment] = at;
    Ok(WrapperState {
        shape: value(shape),
        order: value(order),
        dtype: value(dtype),
        alignment: value(alignment),
    })
}

/// The key nodes of the last wrapper state read, and where in it the
/// values of `shape`, `order`, `dtype` and `numpy_array_alignment_bytes` were.
#[derive(Debug, Default)]
struct LastState {
    keys: Vec<NodeId>,
    at: [Option<usize>; 4],
}

/// A wrapper state key, as far as the hook is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Shape,
    Order,
    Dtype,
    Alignment,
    Other,
}

/// Most nodes each list of [`Known`] remembers (later ones are read each time).
const KNOWN: usize = 16;

/// What the hook decided about nodes that never change once made (globals,
/// strings). joblib memoizes the wrapper class, the state keys and `'C'`,
/// so the wrappers of one stream share those nodes, and each is read once
/// instead of its text being compared again for every array.
#[derive(Debug, Default)]
struct Known {
    /// Globals that are a wrapper class (the `cls` of `NEWOBJ`/`OBJ`/`INST`).
    classes: Vec<NodeId>,
    /// State keys that are `str`, and which key each is.
    keys: Vec<(NodeId, Key)>,
    /// `order` values that are `'C'` (false) or `'F'` (true).
    orders: Vec<(NodeId, bool)>,
    last_state: LastState,
}

impl Known {
    /// Whether `obj` was made from one of [`WRAPPERS`] (as [`class_among`]).
    fn is_wrapper(&mut self, graph: &Graph<'_>, obj: NodeId) -> bool {
        let cls = match graph.kind(obj) {
            Some(NodeKind::NewObj { cls, .. } | NodeKind::Obj { cls, .. }) => Some(cls),
            Some(NodeKind::Inst { class, .. }) => Some(class),
            _ => None,
        };
        if cls.is_some_and(|c| self.classes.contains(&c)) {
            return true;
        }
        let wrapper = class_among(graph, obj, WRAPPERS).is_some();
        if wrapper
            && let Some(c) = cls
            && self.classes.len() < KNOWN
        {
            self.classes.push(c);
        }
        wrapper
    }

    /// Which state key `id` is; `None` if it is not a `str`.
    fn key(&mut self, graph: &Graph<'_>, id: NodeId) -> Option<Key> {
        if let Some(&(_, key)) = self.keys.iter().find(|e| e.0 == id) {
            return Some(key);
        }
        let key = match text_bytes(graph, id)? {
            b"shape" => Key::Shape,
            b"order" => Key::Order,
            b"dtype" => Key::Dtype,
            b"numpy_array_alignment_bytes" => Key::Alignment,
            _ => Key::Other,
        };
        if self.keys.len() < KNOWN {
            self.keys.push((id, key));
        }
        Some(key)
    }

    /// Whether `order` is `'F'`; `None` if it is neither `'C'` nor `'F'`.
    fn order(&mut self, graph: &Graph<'_>, id: NodeId) -> Option<bool> {
        if let Some(&(_, fortran)) = self.orders.iter().find(|e| e.0 == id) {
            return Some(fortran);
        }
        let fortran = match text_bytes(graph, id)? {
            b"C" => false,
            b"F" => true,
            _ => return None,
        };
        if self.orders.len() < KNOWN {
            self.orders.push((id, fortran));
        }
        Some(fortran)
    }
}

/// Checks `shape` (a tuple of at most [`MAX_DIMS`] non-negative ints):
/// its items, and the element count (`None` if it overflows).
fn read_shape<'g>(
    graph: &'g Graph<'_>,
    id: NodeId,
) -> std::result::Result<(&'g [NodeId], Option<u64>), String> {
    let items = graph
        .get(id)
        .and_then(Node::as_tuple)
        .ok_or("`shape` is not a tuple")?;
    if items.len() > MAX_DIMS {
        return Err(format!("`shape` has {} dimensions", items.len()));
    }
    let mut count = Some(1u64);
    for &d in items {
        let v = graph
            .get(d)
            .and_then(Node::as_i64)
            .ok_or("`shape` holds a non-int")?;
        let v = u64::try_from(v).map_err(|_| format!("negative dimension {v}"))?;
        count = count.and_then(|c| c.checked_mul(v));
    }
    Ok((items, count))
}

struct Dtype {
    itemsize: u64,
    object: bool,
    /// Has fields or a subarray (its object-ness came from a walk).
    structured: bool,
}

/// What [`read_dtype`] decided for dtypes that are not structured. That
/// depends only on the dtype node and its last `BUILD` state, and neither
/// changes once made (a `REDUCE` node, a tuple state of scalars), so the
/// many wrappers of one stream that share a dtype read it once.
#[derive(Debug, Default)]
struct DtypeCache {
    /// `(dtype, state, itemsize, object)`; a stream has few dtypes.
    entries: Vec<(NodeId, Option<NodeId>, u64, bool)>,
}

/// Most dtypes [`DtypeCache`] remembers (later ones are read each time).
const DTYPE_CACHE: usize = 32;

impl DtypeCache {
    fn get(&self, id: NodeId, state: Option<NodeId>) -> Option<(u64, bool)> {
        self.entries
            .iter()
            .find(|e| e.0 == id && e.1 == state)
            .map(|e| (e.2, e.3))
    }

    fn insert(&mut self, id: NodeId, state: Option<NodeId>, itemsize: u64, object: bool) {
        if self.entries.len() < DTYPE_CACHE {
            self.entries.push((id, state, itemsize, object));
        }
    }
}

/// The descriptor and byte order of a dtype [`read_dtype`] accepted.
fn dtype_names<'g>(
    graph: &'g Graph<'_>,
    builds: &Builds,
    id: NodeId,
) -> Option<(&'g str, Option<&'g str>)> {
    let (descr, state) = dtype_parts(graph, builds, id)?;
    let byteorder = state.and_then(|s| s.get(1)).and_then(|&f| str_of(graph, f));
    Some((descr, byteorder))
}

/// The `(args, state)` of a `numpy.dtype` node: `REDUCE(numpy.dtype,
/// (descr, False, True))` plus its last `BUILD` state.
fn dtype_parts<'g>(
    graph: &'g Graph<'_>,
    builds: &Builds,
    id: NodeId,
) -> Option<(&'g str, Option<&'g [NodeId]>)> {
    if id.is_leaf() {
        return None; // a scalar: no need to decode it
    }
    let NodeKind::Reduce { callable, args } = graph.kind(id)? else {
        return None;
    };
    if !graph.get(callable)?.as_global()?.dotted_is("numpy.dtype") {
        return None;
    }
    let descr = str_of(graph, *graph.get(args)?.as_tuple()?.first()?)?;
    let state = builds
        .get(id)
        .and_then(|s| graph.get(s))
        .and_then(Node::as_tuple);
    Some((descr, state))
}

fn read_dtype(
    graph: &Graph<'_>,
    builds: &mut Builds,
    id: NodeId,
    walk: &mut DtypeWalk,
) -> std::result::Result<Dtype, String> {
    let (descr, state) =
        dtype_parts(graph, builds, id).ok_or("`dtype` is not `numpy.dtype(descr, ...)`")?;
    let field = |i: usize| state.and_then(|s| s.get(i)).copied();
    let int_field = |i: usize| field(i).and_then(|f| graph.get(f)).and_then(Node::as_i64);
    let is_none = |i: usize| field(i).is_none_or(|f| matches!(graph.kind(f), Some(NodeKind::None)));
    if state.is_some_and(|s| s.len() < 8) {
        return Err("`dtype` state has fewer than 8 items".to_owned());
    }
    let elsize = int_field(5).unwrap_or(-1);
    let flags = int_field(7).unwrap_or(0);

    let from_descr = size_from_descr(descr);
    let itemsize = match (from_descr, u64::try_from(elsize).ok().filter(|&e| e > 0)) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "`dtype` `{descr}` has element size {b}, expected {a}"
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(format!("no element size for `dtype` `{descr}`")),
    };

    // numpy: builtin dtypes are object iff their type is `O` (the pickled
    // flags are ignored); structured/subarray dtypes take `hasobject` from
    // the pickled flags. Refuse when the flags and the fields disagree.
    let builtin_object = descr.starts_with('O');
    let flag_object = flags & 1 != 0;
    let structured = !is_none(2) || !is_none(4);
    let object = if structured {
        builds.complete(graph);
        let fields_object = subgraph_has_object_dtype(graph, builds, id, walk)?;
        if fields_object != flag_object {
            return Err(format!(
                "`dtype` `{descr}` flags say object={flag_object} but its fields say {fields_object}"
            ));
        }
        flag_object
    } else {
        if flag_object && !builtin_object {
            return Err(format!("`dtype` `{descr}` claims object flags"));
        }
        builtin_object
    };
    Ok(Dtype {
        itemsize,
        object,
        structured,
    })
}

/// Element size implied by a descriptor: trailing digits, times 4 for `U`.
fn size_from_descr(descr: &str) -> Option<u64> {
    let digits_at = descr.find(|c: char| c.is_ascii_digit())?;
    let (kind, digits) = descr.split_at(digits_at);
    let n: u64 = digits.parse().ok()?;
    match kind {
        "U" => n.checked_mul(4),
        "b" | "i" | "u" | "f" | "c" | "O" | "S" | "V" | "M" | "m" => Some(n),
        _ => None,
    }
    .filter(|&n| n > 0)
}

/// The state of the structured-dtype walks of one stream.
#[derive(Debug)]
struct DtypeWalk {
    /// Nodes the walks may still visit, over all wrappers.
    budget: usize,
    /// The nodes one walk has visited.
    seen: NodeSet,
    last: LastWalk,
}

/// What the last structured-dtype walk went through, so that the wrappers
/// sharing that dtype (a model's node records, say) do not walk it again
/// while nothing it depends on has changed.
///
/// A walk's answer depends only on the nodes it visits: their kinds and
/// edges, which never change, except that literal lists, dicts and sets
/// only ever grow in place (`APPENDS`, `SETITEMS`, ... leave no event for
/// them), and on each node's last `BUILD` state. So the walk is the same
/// as long as every node it visited has the same `BUILD` state and every
/// literal container it visited the same length; checking that costs far
/// less than the walk (no names compared, no children listed). A reuse
/// takes from the budget what the walk took, so the budget runs out where
/// it always did.
#[derive(Debug, Default)]
struct LastWalk {
    root: Option<NodeId>,
    object: bool,
    /// Each node visited, its `BUILD` state then and, for literal
    /// containers, their length then.
    visited: Vec<(NodeId, Option<NodeId>, Option<usize>)>,
}

/// The length of a literal list, dict or set (what can grow in place).
fn literal_len(graph: &Graph<'_>, id: NodeId) -> Option<usize> {
    match graph.kind(id)? {
        NodeKind::List(items) | NodeKind::Set(items) => Some(items.len()),
        NodeKind::Dict(pairs) => Some(pairs.len()),
        _ => None,
    }
}

impl LastWalk {
    /// The answer of the last walk, if it was from `root` and would be
    /// the same now.
    fn reuse(&self, graph: &Graph<'_>, builds: &Builds, root: NodeId) -> Option<bool> {
        if self.root != Some(root) {
            return None;
        }
        let same = self.visited.iter().all(|&(id, state, len)| {
            builds.get(id) == state && len.is_none_or(|n| literal_len(graph, id) == Some(n))
        });
        same.then_some(self.object)
    }
}

/// Whether any `numpy.dtype` reachable from `root` (fields, subarrays) is
/// an object dtype. Iterative and bounded.
fn subgraph_has_object_dtype(
    graph: &Graph<'_>,
    builds: &Builds,
    root: NodeId,
    walk: &mut DtypeWalk,
) -> std::result::Result<bool, String> {
    let DtypeWalk { budget, seen, last } = walk;
    if last.visited.len() <= *budget
        && let Some(object) = last.reuse(graph, builds, root)
    {
        *budget -= last.visited.len();
        return Ok(object);
    }
    last.root = None;
    last.visited.clear();
    seen.clear();
    let mut work = vec![root];
    let mut object = false;
    while let Some(id) = work.pop() {
        if !seen.insert(id) {
            continue;
        }
        *budget = budget
            .checked_sub(1)
            .ok_or("structured dtypes are too large to inspect")?;
        let state = builds.get(id);
        last.visited.push((id, state, literal_len(graph, id)));
        if id != root
            && let Some((descr, _)) = dtype_parts(graph, builds, id)
            && descr.starts_with('O')
        {
            object = true;
            break;
        }
        work.extend(graph.children(id));
        if let Some(state) = state {
            work.push(state);
        }
    }
    last.root = Some(root);
    last.object = object;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "a test")]
    fn builds_keep_reduce_targets_until_completed() {
        // (mod.W() built with {}, mod.f() built with ()), then STOP.
        let data = b"\x80\x04\x8c\x03mod\x8c\x01W\x93)\x81}b\x8c\x03mod\x8c\x01f\x93)R)b\x86.";
        let pickle = crate::parse(data).unwrap();
        let graph = pickle.graph();
        let items = graph.get(pickle.root()).unwrap().as_tuple().unwrap();
        let (obj, call) = (items[0], items[1]);
        let mut builds = Builds::default();
        builds.record(graph, graph.events());
        assert_eq!(builds.seen, 2);
        assert!(builds.get(obj).is_none(), "a NEWOBJ target is not kept");
        let call_state = builds.get(call).unwrap();
        assert!(matches!(graph.kind(call_state), Some(NodeKind::Tuple(t)) if t.is_empty()));
        builds.complete(graph);
        assert_eq!(builds.seen, 2);
        let obj_state = builds.get(obj).unwrap();
        assert!(matches!(graph.kind(obj_state), Some(NodeKind::Dict(d)) if d.is_empty()));
        assert_eq!(builds.get(call), Some(call_state));
    }

    #[test]
    fn descr_sizes() {
        assert_eq!(size_from_descr("f8"), Some(8));
        assert_eq!(size_from_descr("U10"), Some(40));
        assert_eq!(size_from_descr("c16"), Some(16));
        assert_eq!(size_from_descr("M8"), Some(8));
        assert_eq!(size_from_descr("V0"), None);
        assert_eq!(size_from_descr("x8"), None);
        assert_eq!(size_from_descr("f"), None);
    }
}
