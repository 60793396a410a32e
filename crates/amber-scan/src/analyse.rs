//! The rules, applied to a parsed graph.
//!
//! This module owns the decision for each node and event of an
//! [`amber_pickle::Graph`]: every global must be listed; every `REDUCE`
//! must call a listed global whose role allows calling, with arguments of
//! the shape its [`ArgCheck`] demands; every `NEWOBJ` must name a listed
//! class; every `BUILD` must target an object this stream made from a
//! listed class and carry a state its [`StateCheck`] accepts; mutations of
//! non-literal containers need the `items` flag; `INST`, `OBJ`,
//! `NEWOBJ_EX`, `EXT*` and persistent ids are refused. It walks the node
//! arena and the event list once each, never recursing, so its cost is
//! linear in the graph whatever its shape.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use amber_pickle::{EventKind, Graph, Node, NodeId, NodeKind, NodeSet, Opcode};

use crate::content;
use crate::ndarray::ArrayBytes;
use crate::policy::{ArgCheck, Entry, Policy, Role, StateCheck};
use crate::report::{Finding, Findings, Severity};

/// Array classes `_reconstruct` and joblib may instantiate.
const ARRAY_TYPES: &[&str] = &[
    "numpy.ndarray",
    "numpy.matrix",
    "numpy.matrixlib.defmatrix.matrix",
    "numpy.memmap",
];

/// Bit generators numpy's pickle helpers may construct, by class and name.
const BIT_GENERATORS: &[&str] = &[
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM",
    "numpy.random._philox.Philox",
    "numpy.random._sfc64.SFC64",
];
const BIT_GENERATOR_NAMES: &[&str] = &["MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"];
const BIT_GENERATOR_CTOR: &str = "numpy.random._pickle.__bit_generator_ctor";

/// Factories `collections.defaultdict` may be given: they only build an
/// empty value.
const DEFAULTDICT_FACTORIES: &[&str] = &[
    "builtins.list",
    "builtins.dict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.complex",
    "builtins.str",
    "builtins.bytes",
    "builtins.bool",
    "collections.OrderedDict",
    "collections.Counter",
];

/// Functions `functools.partial` may wrap (HistGradientBoosting keeps
/// `partial(check_array, ...)`). A partial is called later with the caller's
/// data plus arguments the file chose, so only functions safe with any
/// arguments belong here.
const PARTIAL_FUNCTIONS: &[&str] = &["sklearn.utils.validation.check_array"];

/// `NumpyArrayWrapper` state keys (joblib 1.6).
const WRAPPER_KEYS: &[&str] = &[
    "subclass",
    "shape",
    "order",
    "dtype",
    "allow_mmap",
    "numpy_array_alignment_bytes",
];
/// `NDArrayWrapper` / `ZNDArrayWrapper` state keys (joblib < 0.10 files).
const LEGACY_WRAPPER_KEYS: &[&str] = &["filename", "subclass", "allow_mmap", "init_args", "state"];

/// Name segments that mark a global as a known way to run code, for severity.
const DANGEROUS_SEGMENTS: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "system",
    "popen",
    "eval",
    "exec",
    "execfile",
    "compile",
    "getattr",
    "setattr",
    "__import__",
    "import_module",
    "open",
    "breakpoint",
    "runpy",
    "pty",
    "ctypes",
    "pickle",
    "_pickle",
    "marshal",
    "loads",
    "load",
    "shutil",
    "socket",
    "webbrowser",
    "pydoc",
    "pkgutil",
    "importlib",
    "code",
    "timeit",
    "cProfile",
    "profile",
    "trace",
    "pdb",
    "sys",
    "builtins",
    "__builtin__",
    "functools",
    "operator",
    "_operator",
    "types",
    "inspect",
    "apply",
    "spawn",
    "asyncio",
    "multiprocessing",
];

/// What the analyser needs besides the graph.
pub(crate) struct Analyser<'x, 'g, 'a> {
    pub(crate) graph: &'g Graph<'a>,
    pub(crate) policy: &'x Policy,
    pub(crate) joblib: bool,
    /// `Some` for amber streams: `NEXT_BUFFER` is theirs.
    pub(crate) buffers_allowed: bool,
    pub(crate) arrays: &'x dyn ArrayBytes,
    pub(crate) findings: &'x mut Findings,
    /// Array elements the content validators may read, over the whole stream.
    pub(crate) content_budget: u64,
    /// The stream's root value (lets the validators lend arrays).
    pub(crate) root: NodeId,
}

/// A resolved global node.
#[derive(Clone)]
struct Resolved<'x> {
    name: Rc<str>,
    entry: Option<&'x Entry>,
}

struct Run<'r, 'x, 'g, 'a> {
    an: &'r mut Analyser<'x, 'g, 'a>,
    /// Every global node, in node order (looked up by binary search: a
    /// stream has few global nodes, each referenced through the memo).
    globals: Vec<(NodeId, Resolved<'x>)>,
    /// Objects that already received a `BUILD`.
    built: NodeSet,
    /// Objects whose content the validators check once the walk is done
    /// (all together, on every thread): class, object, state.
    content_jobs: Vec<(Rc<str>, NodeId, NodeId)>,
    /// The last node [`Run::is_dtype`] found to be a dtype.
    dtype: Cell<Option<NodeId>>,
    /// The last node [`Run::is_order`] found to be an array order.
    order: Cell<Option<NodeId>>,
    /// The keys of the last dict state found to repeat none: the states
    /// of one class share their (memoized) key nodes, and a key's text
    /// never changes, so the same keys need no second look.
    clean_keys: Vec<NodeId>,
    /// The last `NumpyArrayWrapper` state accepted.
    wrapper_keys: RefCell<WrapperKeys>,
    /// The last class found to have no content validator.
    unvalidated: Option<Rc<str>>,
}

/// The keys of an accepted `NumpyArrayWrapper` state, with where its
/// `subclass` value is and that value (accepted as well).
type WrapperKeys = (Vec<NodeId>, Option<(usize, NodeId)>);

impl Analyser<'_, '_, '_> {
    pub(crate) fn run(&mut self) {
        let graph = self.graph;
        let mut run = Run {
            an: self,
            globals: Vec::new(),
            built: NodeSet::default(),
            content_jobs: Vec::new(),
            dtype: Cell::new(None),
            order: Cell::new(None),
            clean_keys: Vec::new(),
            wrapper_keys: RefCell::default(),
            unvalidated: None,
        };
        // Each distinct name is resolved once; every node naming it is
        // still checked (and reported) on its own. Streams name few
        // distinct globals: the first are looked up by comparison, the rest
        // by hash.
        const FEW: usize = 16;
        let mut few: Vec<((&str, &str), Resolved<'_>)> = Vec::with_capacity(FEW);
        let mut many: HashMap<(&str, &str), Resolved<'_>> = HashMap::new();
        for (id, node) in graph
            .globals()
            .iter()
            .filter_map(|&id| Some((id, graph.get(id)?)))
        {
            if let NodeKind::Global(g) = node.kind() {
                let key = g.canonical();
                let resolve = || {
                    let name = g.dotted();
                    let entry = run.an.policy.entry(&name, run.an.joblib);
                    Resolved {
                        name: name.into(),
                        entry,
                    }
                };
                let r = if let Some((_, r)) = few.iter().find(|(k, _)| *k == key) {
                    r.clone()
                } else if few.len() < FEW {
                    let r = resolve();
                    few.push((key, r.clone()));
                    r
                } else {
                    many.entry(key).or_insert_with(resolve).clone()
                };
                if r.entry.is_none() {
                    run.not_allowed(&r.name, node);
                }
                run.globals.push((id, r));
            }
        }
        for (_, node) in graph.iter() {
            run.node(node);
        }
        for event in graph.events() {
            match &event.kind {
                EventKind::Build { state } => run.build(event.target, *state, event.offset),
                _ => run.items(event.target, event.offset, event.opcode),
            }
        }
        run.check_content();
    }
}

impl<'x> Run<'_, 'x, '_, '_> {
    fn push(
        &mut self,
        code: &'static str,
        severity: Severity,
        offset: u64,
        opcode: Opcode,
        global: Option<&str>,
        message: String,
    ) {
        self.an.findings.push(Finding {
            code,
            severity,
            offset: Some(offset),
            opcode: Some(opcode.name()),
            global: global.map(str::to_owned),
            message,
            count: 1,
        });
    }

    fn not_allowed(&mut self, name: &str, node: Node<'_>) {
        let dangerous = name
            .split('.')
            .any(|s| DANGEROUS_SEGMENTS.contains(&s) || (s.starts_with("__") && s.ends_with("__")));
        let (severity, why) = if dangerous {
            (
                Severity::Critical,
                "a known way to run code or reach arbitrary attributes; do not trust it unless you made this file",
            )
        } else {
            (
                Severity::High,
                "loading would import it and let the file use it",
            )
        };
        self.push(
            "global.not_allowed",
            severity,
            node.offset(),
            node.opcode(),
            Some(name),
            format!(
                "global `{name}` is not in the trusted policy ({why}); to allow it, load with trusted=[\"{name}\"]"
            ),
        );
    }

    /// The resolved global of a node, if it is a global.
    fn global(&self, id: NodeId) -> Option<&Resolved<'x>> {
        self.globals
            .binary_search_by_key(&id, |&(g, _)| g)
            .ok()
            .and_then(|i| self.globals.get(i))
            .map(|(_, r)| r)
    }

    fn global_name(&self, id: NodeId) -> Option<&str> {
        self.global(id).map(|r| &*r.name)
    }

    fn node(&mut self, node: Node<'_>) {
        match node.kind() {
            NodeKind::Obj { .. } | NodeKind::Inst { .. } => self.refused(
                node,
                "calls a class or function without REDUCE; real models never use it",
            ),
            NodeKind::PersId { .. } => self.refused(
                node,
                "hands a persistent id to the loader's `persistent_load`",
            ),
            NodeKind::Ext { code } => {
                let why =
                    format!("loads extension-registry code {code}, which bypasses the name check");
                self.refused(node, &why);
            }
            NodeKind::Buffer { .. } if !self.an.buffers_allowed => self.refused(
                node,
                "refers to an out-of-band buffer, which only amber files supply",
            ),
            NodeKind::NewObj {
                kwargs: Some(_), ..
            } => self.refused(node, "calls `cls.__new__` with keyword arguments"),
            NodeKind::NewObj { cls, args, .. } => self.newobj(node, cls, args),
            NodeKind::Reduce { callable, args } => self.reduce(node, callable, args),
            _ => {}
        }
    }

    fn refused(&mut self, node: Node<'_>, why: &str) {
        let op = node.opcode();
        self.push(
            "opcode.refused",
            Severity::High,
            node.offset(),
            op,
            None,
            format!("opcode `{}` is refused: it {why}", op.name()),
        );
    }

    fn newobj(&mut self, node: Node<'_>, cls: NodeId, args: NodeId) {
        let Some(resolved) = self.global(cls) else {
            let kind = self.kind_name(cls);
            self.push(
                "newobj.class",
                Severity::Critical,
                node.offset(),
                node.opcode(),
                None,
                format!("NEWOBJ instantiates a {kind} the stream built, not a listed class"),
            );
            return;
        };
        let Some(entry) = resolved.entry else {
            return; // already reported as not allowed
        };
        let name = Rc::clone(&resolved.name);
        if !entry.new {
            let role = role_name(entry.role);
            self.push(
                "newobj.not_allowed",
                Severity::Critical,
                node.offset(),
                node.opcode(),
                Some(&name),
                format!("`{name}` is listed as {role}; NEWOBJ may not instantiate it"),
            );
            return;
        }
        if entry.role != Role::Trusted && !self.plain_args(args) {
            self.push(
                "newobj.args",
                Severity::Critical,
                node.offset(),
                node.opcode(),
                Some(&name),
                format!(
                    "NEWOBJ gives `{name}.__new__` arguments that are not a tuple of plain values"
                ),
            );
        }
    }

    fn reduce(&mut self, node: Node<'_>, callable: NodeId, args: NodeId) {
        let Some(resolved) = self.global(callable) else {
            let kind = self.kind_name(callable);
            self.push(
                "reduce.callable",
                Severity::Critical,
                node.offset(),
                node.opcode(),
                None,
                format!(
                    "REDUCE calls a {kind} the stream built (a callable-object trampoline), not a listed function"
                ),
            );
            return;
        };
        let Some(entry) = resolved.entry else {
            return;
        };
        let name = Rc::clone(&resolved.name);
        let Some(check) = entry.call else {
            let role = role_name(entry.role);
            self.push(
                "reduce.not_callable",
                Severity::Critical,
                node.offset(),
                node.opcode(),
                Some(&name),
                format!("`{name}` is listed as {role}; REDUCE may not call it"),
            );
            return;
        };
        if let Err((code, why)) = self.check_args(&name, check, args) {
            self.push(
                code,
                Severity::Critical,
                node.offset(),
                node.opcode(),
                Some(&name),
                format!("call of `{name}` refused: {why}"),
            );
        }
    }

    fn kind_name(&self, id: NodeId) -> &'static str {
        self.an.graph.kind(id).map_or("value", NodeKind::name)
    }

    fn get(&self, id: NodeId) -> Option<NodeKind<'_>> {
        self.an.graph.kind(id)
    }

    /// A tuple whose items are not globals.
    fn plain_args(&self, args: NodeId) -> bool {
        self.tuple(args)
            .is_some_and(|items| items.iter().all(|&i| self.global(i).is_none()))
    }

    fn tuple(&self, id: NodeId) -> Option<&[NodeId]> {
        self.an.graph.tuple_items(id)
    }

    fn is_str(&self, id: NodeId) -> bool {
        self.str_of(id).is_some()
    }

    /// A `str`, or a Python 2 `str` of ASCII text: amber unpickles Python 2
    /// streams with `encoding="latin1"`, where both are the same `str`.
    fn str_of(&self, id: NodeId) -> Option<&str> {
        match self.get(id)? {
            NodeKind::Str(s) => Some(s),
            NodeKind::LegacyStr(b) if b.is_ascii() => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// [`Run::str_of`] as bytes, without decoding a `str` again (see
    /// [`amber_pickle::Graph::str_bytes`]): for comparing keys.
    fn key_bytes(&self, id: NodeId) -> Option<&[u8]> {
        self.an
            .graph
            .str_bytes(id)
            .or_else(|| self.str_of(id).map(str::as_bytes))
    }

    fn is_none(&self, id: NodeId) -> bool {
        matches!(self.get(id), Some(NodeKind::None))
    }

    fn is_bool(&self, id: NodeId) -> bool {
        matches!(self.get(id), Some(NodeKind::Bool(_) | NodeKind::Int(0 | 1)))
    }

    fn is_int(&self, id: NodeId) -> bool {
        self.an.graph.is_int(id)
    }

    fn is_int_tuple(&self, id: NodeId) -> bool {
        self.tuple(id)
            .is_some_and(|items| items.iter().all(|&i| self.is_int(i)))
    }

    /// A call of the named global.
    fn is_call_of(&self, id: NodeId, name: &str) -> bool {
        match self.get(id) {
            Some(NodeKind::Reduce { callable, .. }) => self.global_name(callable) == Some(name),
            _ => false,
        }
    }

    /// Arrays of one type share its dtype node (through the memo): the last
    /// node found to be a dtype is remembered (nodes never change kind).
    fn is_dtype(&self, id: NodeId) -> bool {
        if self.dtype.get() == Some(id) {
            return true;
        }
        let yes = self.is_call_of(id, "numpy.dtype");
        if yes {
            self.dtype.set(Some(id));
        }
        yes
    }

    /// An array order (`'C'`, `'F'` or `'A'`); remembered as
    /// [`Run::is_dtype`] remembers dtypes (arrays share it through the memo).
    fn is_order(&self, id: NodeId) -> bool {
        if self.order.get() == Some(id) {
            return true;
        }
        let yes = matches!(self.key_bytes(id), Some(b"C" | b"F" | b"A"));
        if yes {
            self.order.set(Some(id));
        }
        yes
    }

    /// Raw data as pickles spell it: bytes, a Python 2 str, text to be
    /// latin-1 encoded, `_codecs.encode(...)`, an out-of-band buffer.
    fn is_payload(&self, id: NodeId) -> bool {
        if self.an.graph.is_raw_leaf(id) {
            return true;
        }
        match self.get(id) {
            Some(
                NodeKind::Bytes(_)
                | NodeKind::ByteArray(_)
                | NodeKind::LegacyStr(_)
                | NodeKind::Str(_)
                | NodeKind::Buffer { .. },
            ) => true,
            Some(NodeKind::ReadOnly { inner }) => {
                matches!(self.get(inner), Some(NodeKind::Buffer { .. }))
            }
            Some(NodeKind::Reduce { callable, .. }) => {
                self.global_name(callable) == Some("_codecs.encode")
            }
            _ => false,
        }
    }

    fn global_in(&self, id: NodeId, set: &[&str]) -> bool {
        self.global_name(id)
            .is_some_and(|n| set.contains(&crate::policy::alias(n).as_ref()))
    }

    fn check_args(
        &self,
        name: &str,
        check: ArgCheck,
        args: NodeId,
    ) -> Result<(), (&'static str, String)> {
        let bad = |why: &str| Err(("reduce.args", why.to_owned()));
        let tramp = |why: &str| Err(("trampoline", why.to_owned()));
        let Some(items) = self.tuple(args) else {
            return if check == ArgCheck::Any {
                Ok(())
            } else {
                bad("the arguments are not a tuple")
            };
        };
        let arg = |i: usize| items.get(i).copied();
        let n = items.len();
        match check {
            ArgCheck::Any => Ok(()),
            ArgCheck::Empty if n == 0 => Ok(()),
            ArgCheck::Empty => bad("expected no arguments"),
            ArgCheck::Data => match items.iter().find_map(|&i| self.global_name(i)) {
                None => Ok(()),
                Some(g) => tramp(&format!(
                    "`{g}` is passed as an argument; only plain values are accepted"
                )),
            },
            ArgCheck::Reconstructor => {
                let (Some(cls), Some(base), Some(state)) = (arg(0), arg(1), arg(2)) else {
                    return bad("expected (class, builtins.object, None)");
                };
                if n != 3 {
                    return bad("expected (class, builtins.object, None)");
                }
                // Protocols 0-1 spell a dict subclass (`dok_matrix`, `Bunch`) as
                // `_reconstructor(cls, builtins.dict, {...})`: `dict.__init__`
                // only copies the literal's items. Accepted for plain Python container
                // subclasses (not for C types such as OrderedDict).
                let container_base = self.global_in(base, &["builtins.dict", "builtins.list"])
                    && matches!(self.get(state), Some(NodeKind::Dict(_) | NodeKind::List(_)))
                    && self
                        .global(cls)
                        .and_then(|r| r.entry)
                        .is_some_and(|e| e.items && e.new);
                if container_base {
                    return Ok(());
                }
                if self.global_name(base) != Some("builtins.object") || !self.is_none(state) {
                    return Err((
                        "reconstructor.base",
                        "the base is not `builtins.object` with state None (it would call `base.__init__(obj, state)`)"
                            .to_owned(),
                    ));
                }
                self.instantiable(cls, true)
            }
            ArgCheck::NdarrayReconstruct => match (arg(0), arg(1), arg(2)) {
                (Some(cls), Some(shape), Some(code))
                    if n == 3 && self.is_int_tuple(shape) && self.is_payload(code) =>
                {
                    if self.global_in(cls, ARRAY_TYPES) {
                        Ok(())
                    } else {
                        tramp("the array subtype is not a listed NumPy array class")
                    }
                }
                _ => bad("expected (array class, shape, type code)"),
            },
            ArgCheck::MaReconstruct => match (arg(0), arg(1), arg(2), arg(3)) {
                (Some(cls), Some(base), Some(shape), Some(code))
                    if n == 4
                        && self.global_in(
                            cls,
                            &["numpy.ma.core.MaskedArray", "numpy.ma.MaskedArray"],
                        )
                        && self.global_in(base, ARRAY_TYPES)
                        && self.is_int_tuple(shape)
                        && self.is_payload(code) =>
                {
                    Ok(())
                }
                _ => bad("expected (MaskedArray, ndarray, shape, type code)"),
            },
            ArgCheck::Frombuffer => match (arg(0), arg(1), arg(2), arg(3)) {
                (Some(buf), Some(dtype), Some(shape), Some(order))
                    if n == 4
                        && self.is_payload(buf)
                        && self.is_dtype(dtype)
                        && self.is_int_tuple(shape)
                        && self.is_order(order) =>
                {
                    Ok(())
                }
                _ => bad("expected (buffer, dtype, shape, 'C' or 'F')"),
            },
            ArgCheck::Scalar => match (arg(0), arg(1)) {
                (Some(dtype), payload) if n <= 2 && self.is_dtype(dtype) => {
                    match payload.and_then(|p| self.global_name(p)) {
                        None => Ok(()),
                        Some(g) => tramp(&format!("`{g}` is passed as the scalar's payload")),
                    }
                }
                _ => bad("expected (dtype, payload)"),
            },
            ArgCheck::CodecsEncode => match (arg(0), arg(1)) {
                (Some(text), Some(enc))
                    if n == 2
                        && self.is_str(text)
                        && matches!(self.str_of(enc), Some("latin1" | "latin-1")) =>
                {
                    Ok(())
                }
                _ => bad("expected (str, 'latin1')"),
            },
            ArgCheck::Dtype => match (arg(0), arg(1), arg(2)) {
                (Some(code), Some(a), Some(b))
                    if n == 3 && self.is_str(code) && self.is_bool(a) && self.is_bool(b) =>
                {
                    Ok(())
                }
                _ => bad("expected (type code, bool, bool)"),
            },
            ArgCheck::BitGeneratorCtor => match arg(0) {
                Some(bg) if n == 1 && self.is_bit_generator(bg) => Ok(()),
                Some(_) if n == 1 => tramp("the bit generator is not a listed NumPy bit generator"),
                _ => tramp("expected exactly one argument, a NumPy bit generator"),
            },
            ArgCheck::RandomCtor => {
                let first_ok = arg(0).is_some_and(|a| {
                    self.is_bit_generator(a) || self.is_call_of(a, BIT_GENERATOR_CTOR)
                });
                let ctor_ok =
                    arg(1).is_none_or(|c| self.global_name(c) == Some(BIT_GENERATOR_CTOR));
                if n > 2 || !ctor_ok {
                    tramp(&format!(
                        "`{name}` calls its second argument: only `{BIT_GENERATOR_CTOR}` is accepted there"
                    ))
                } else if first_ok {
                    Ok(())
                } else {
                    tramp("the first argument is not a NumPy bit generator")
                }
            }
            ArgCheck::PyxUnpickle => {
                let expected = name.replacen("__pyx_unpickle_", "", 1);
                match (arg(0), arg(1), arg(2)) {
                    (Some(cls), Some(checksum), Some(state))
                        if n == 3 && self.is_int(checksum) && self.global(state).is_none() =>
                    {
                        if self.global_name(cls) == Some(expected.as_str()) {
                            Ok(())
                        } else {
                            tramp(&format!("the class is not `{expected}`"))
                        }
                    }
                    _ => bad("expected (class, checksum, state)"),
                }
            }
            ArgCheck::NewObj => {
                let module = name.rsplit_once('.').map_or("", |(m, _)| m);
                match arg(0) {
                    Some(cls) if n == 1 => {
                        let same_module = self
                            .global_name(cls)
                            .and_then(|c| c.rsplit_once('.'))
                            .is_some_and(|(m, _)| m == module);
                        if same_module {
                            self.instantiable(cls, false)
                        } else {
                            tramp(&format!("the class is not one of `{module}`"))
                        }
                    }
                    _ => bad("expected one argument, a class"),
                }
            }
            ArgCheck::DefaultDict => match arg(0) {
                None if n == 0 => Ok(()),
                Some(f)
                    if n == 1 && (self.is_none(f) || self.global_in(f, DEFAULTDICT_FACTORIES)) =>
                {
                    Ok(())
                }
                Some(_) if n == 1 => tramp(
                    "the default factory is called on every missing key: only plain container and number types are accepted",
                ),
                _ => bad("expected () or (factory,)"),
            },
            ArgCheck::Partial => match arg(0) {
                Some(f) if n == 1 && self.global_in(f, PARTIAL_FUNCTIONS) => Ok(()),
                _ => tramp(&format!(
                    "`functools.partial` may wrap only {}",
                    PARTIAL_FUNCTIONS.join(", ")
                )),
            },
        }
    }

    /// A global naming a listed class the call may instantiate: with
    /// `object.__new__` (`new`, plain Python classes) or with its own
    /// `__new__` (`build`, compiled types made by `newObj`).
    fn instantiable(&self, cls: NodeId, by_object_new: bool) -> Result<(), (&'static str, String)> {
        match self.global(cls) {
            Some(Resolved { entry: Some(e), .. })
                if (by_object_new && e.new) || (!by_object_new && e.build.is_some()) =>
            {
                Ok(())
            }
            Some(Resolved { entry: None, .. }) => Ok(()), // reported as not allowed
            Some(r) => Err((
                "trampoline",
                format!(
                    "`{}` is not a class the stream may instantiate this way",
                    r.name
                ),
            )),
            None => Err((
                "trampoline",
                "the class argument is not a global".to_owned(),
            )),
        }
    }

    fn is_bit_generator(&self, id: NodeId) -> bool {
        self.global_in(id, BIT_GENERATORS)
            || self
                .str_of(id)
                .is_some_and(|s| BIT_GENERATOR_NAMES.contains(&s))
    }

    /// The class an object was made from and its entry: `NEWOBJ(cls)`,
    /// `REDUCE(cls, ...)`, or a reconstructor's first argument.
    fn made_from(&self, target: NodeId) -> Option<(&Rc<str>, Option<&'x Entry>)> {
        match self.get(target)? {
            NodeKind::NewObj {
                cls, kwargs: None, ..
            } => self.global(cls).map(|r| (&r.name, r.entry)),
            NodeKind::Reduce { callable, args } => {
                let f = self.global(callable)?;
                match f.entry {
                    Some(e) if e.call.is_some_and(ArgCheck::makes_first_arg) => {
                        let first = *self.tuple(args)?.first()?;
                        self.global(first).map(|r| (&r.name, r.entry))
                    }
                    entry => Some((&f.name, entry)),
                }
            }
            _ => None,
        }
    }

    /// The first `str` key of `pairs` that repeats an earlier one.
    fn repeated_key(&self, pairs: &[(NodeId, NodeId)]) -> Option<String> {
        // Object states are small: compare pairwise rather than hash.
        const SMALL: usize = 16;
        if pairs.len() <= SMALL {
            let mut seen: [&[u8]; SMALL] = [b""; SMALL];
            let mut n = 0;
            for &(k, _) in pairs {
                let Some(key) = self.key_bytes(k) else {
                    continue;
                };
                let earlier = seen.get(..n).unwrap_or_default();
                if earlier.contains(&key) {
                    return self.str_of(k).map(str::to_owned);
                }
                if let Some(slot) = seen.get_mut(n) {
                    *slot = key;
                    n += 1;
                }
            }
            return None;
        }
        let mut keys = HashSet::new();
        pairs.iter().find_map(|&(k, _)| {
            let key = self.str_of(k)?;
            (!keys.insert(key)).then(|| key.to_owned())
        })
    }

    fn build(&mut self, target: NodeId, state: NodeId, offset: u64) {
        // The graph holds each object's and each dict's final contents; a
        // second BUILD, or a state dict whose key repeats, would let what was
        // validated differ from what `__setstate__` saw at that point.
        if !self.built.insert(target) {
            let global = self.made_from(target).map(|(c, _)| c.to_owned());
            self.push(
                "build.repeated",
                Severity::Critical,
                offset,
                Opcode::BUILD,
                global.as_deref(),
                "a second BUILD on the same object (pickles build each object once)".to_owned(),
            );
            return;
        }
        let graph = self.an.graph;
        if let Some(NodeKind::Dict(pairs)) = graph.kind(state)
            && !same_keys(pairs, &self.clean_keys)
        {
            let repeated = self.repeated_key(pairs);
            if repeated.is_none() {
                self.clean_keys.clear();
                self.clean_keys.extend(pairs.iter().map(|&(k, _)| k));
            }
            if let Some(key) = repeated {
                let global = self.made_from(target).map(|(c, _)| c.to_owned());
                self.push(
                    "build.state",
                    Severity::High,
                    offset,
                    Opcode::BUILD,
                    global.as_deref(),
                    format!("BUILD state sets attribute `{key}` more than once"),
                );
                return;
            }
        }
        let Some((class, entry)) = self.made_from(target) else {
            let kind = self.kind_name(target);
            let what = if self.global(target).is_some() {
                format!(
                    "BUILD on a global (`{}`): it would rewrite a class's or module's attributes process-wide",
                    self.global_name(target).unwrap_or_default()
                )
            } else {
                format!(
                    "BUILD on a {kind}, which is not an object this stream made from a listed class"
                )
            };
            let global = self.global_name(target).map(str::to_owned);
            self.push(
                "build.target",
                Severity::Critical,
                offset,
                Opcode::BUILD,
                global.as_deref(),
                what,
            );
            return;
        };
        let class = Rc::clone(class);
        let Some(entry) = entry else {
            return; // the class was reported as not allowed
        };
        let Some(check) = entry.build else {
            self.push(
                "build.target",
                Severity::Critical,
                offset,
                Opcode::BUILD,
                Some(&class),
                format!("objects made by `{class}` take no BUILD state"),
            );
            return;
        };
        if let Err((code, severity, why)) = self.check_state(check, state) {
            self.push(
                code,
                severity,
                offset,
                Opcode::BUILD,
                Some(&class),
                format!("BUILD state for `{class}` refused: {why}"),
            );
            return;
        }
        if self
            .unvalidated
            .as_ref()
            .is_some_and(|c| Rc::ptr_eq(c, &class))
        {
            return;
        }
        let canonical = crate::policy::alias(&class);
        if content::validated_classes().contains(&canonical.as_ref()) {
            self.content_jobs
                .push((canonical.as_ref().into(), target, state));
        } else {
            self.unvalidated = Some(class);
        }
    }

    /// Runs the content validators on every object the walk queued, with one
    /// event index and one work budget for the whole stream; each issue is a
    /// critical finding.
    fn check_content(&mut self) {
        if self.content_jobs.is_empty() {
            return;
        }
        let (graph, arrays, budget) = (self.an.graph, self.an.arrays, self.an.content_budget);
        let checker =
            content::Checker::new(content::Ctx { graph, arrays }, budget).with_root(self.an.root);
        let jobs: Vec<(&str, NodeId, NodeId)> = self
            .content_jobs
            .iter()
            .map(|(class, object, state)| (class.as_ref(), *object, *state))
            .collect();
        let results = checker.check_many(&jobs);
        for ((class, _, _), issues) in self.content_jobs.iter().zip(results) {
            for issue in issues {
                self.an.findings.push(Finding {
                    code: issue.code,
                    severity: Severity::Critical,
                    offset: Some(issue.offset),
                    opcode: None,
                    global: Some(class.to_string()),
                    message: issue.message,
                    count: 1,
                });
            }
        }
    }

    fn check_state(
        &self,
        check: StateCheck,
        state: NodeId,
    ) -> Result<(), (&'static str, Severity, String)> {
        let high = |why: String| Err(("build.state", Severity::High, why));
        match check {
            StateCheck::Any | StateCheck::Data => Ok(()),
            StateCheck::FunctionTransformer => {
                self.check_state(StateCheck::Attrs, state)?;
                let Some(NodeKind::Dict(pairs)) = self.get(state) else {
                    return Ok(());
                };
                for &(k, v) in pairs {
                    if !matches!(self.str_of(k), Some("func" | "inverse_func")) {
                        continue;
                    }
                    let numpy = self
                        .global_name(v)
                        .is_some_and(|n| n.starts_with("numpy."));
                    if !(numpy || self.is_none(v) || self.is_call_of(v, "functools.partial")) {
                        return Err((
                            "trampoline",
                            Severity::Critical,
                            "FunctionTransformer calls `func`/`inverse_func` on your data with arguments the file chose: only NumPy functions are accepted there"
                                .to_owned(),
                        ));
                    }
                }
                Ok(())
            }
            StateCheck::Attrs => match self.get(state) {
                Some(NodeKind::Dict(pairs)) => {
                    for &(k, _) in pairs {
                        match self.key_bytes(k) {
                            Some(key) if key.starts_with(b"__") && key.ends_with(b"__") => {
                                let key = self.str_of(k).unwrap_or_default();
                                return high(format!("dunder attribute `{key}`"));
                            }
                            Some(_) => {}
                            None => return high("an attribute name is not a str".to_owned()),
                        }
                    }
                    Ok(())
                }
                Some(NodeKind::Tuple(items)) if items.len() == 2 => Err((
                    "build.slot_state",
                    Severity::Critical,
                    "slot-state `(state, slots)` sets arbitrary attributes with setattr (e.g. `__class__`)"
                        .to_owned(),
                )),
                other => high(format!(
                    "expected a dict of attributes, got a {}",
                    other.map_or("value", NodeKind::name)
                )),
            },
            StateCheck::JoblibWrapper | StateCheck::JoblibLegacy => {
                let (keys, legacy) = if check == StateCheck::JoblibWrapper {
                    (WRAPPER_KEYS, false)
                } else {
                    (LEGACY_WRAPPER_KEYS, true)
                };
                let Some(NodeKind::Dict(pairs)) = self.get(state) else {
                    return high("the array wrapper state is not a dict".to_owned());
                };
                if !legacy && self.same_wrapper_state(pairs) {
                    return Ok(());
                }
                let mut subclass = None;
                for (i, &(k, v)) in pairs.iter().enumerate() {
                    let Some(&key) = self
                        .key_bytes(k)
                        .and_then(|k| keys.iter().find(|w| w.as_bytes() == k))
                    else {
                        return high("unknown key in the array wrapper state".to_owned());
                    };
                    if key == "subclass" {
                        if !self.global_in(v, ARRAY_TYPES) {
                            return Err((
                                "trampoline",
                                Severity::Critical,
                                "the array `subclass` is not a listed NumPy array class"
                                    .to_owned(),
                            ));
                        }
                        subclass = Some((i, v));
                    }
                    if legacy && key == "filename" {
                        let bare = self.str_of(v).is_some_and(|f| {
                            !f.is_empty()
                                && f != "."
                                && f != ".."
                                && !f.contains(['/', '\\', '\0'])
                                && !f.contains("..")
                        });
                        if !bare {
                            return Err((
                                "joblib.filename",
                                Severity::Critical,
                                "the array file name is not a bare file name (path traversal)"
                                    .to_owned(),
                            ));
                        }
                    }
                }
                if !legacy {
                    let mut cache = self.wrapper_keys.borrow_mut();
                    cache.0.clear();
                    cache.0.extend(pairs.iter().map(|&(k, _)| k));
                    cache.1 = subclass;
                }
                Ok(())
            }
            StateCheck::Partial => {
                let ok = self.tuple(state).is_some_and(|items| {
                    items.len() == 4
                        && items.first().is_some_and(|&f| self.global_in(f, PARTIAL_FUNCTIONS))
                        && items.get(1).is_some_and(|&a| self.plain_args(a))
                        && items.get(2..).is_some_and(|rest| {
                            rest.iter().all(|&d| {
                                self.is_none(d) || matches!(self.get(d), Some(NodeKind::Dict(_)))
                            })
                        })
                });
                if ok {
                    Ok(())
                } else {
                    Err((
                        "trampoline",
                        Severity::Critical,
                        "`functools.partial` state must wrap a listed function with plain arguments"
                            .to_owned(),
                    ))
                }
            }
        }
    }

    /// Whether a `NumpyArrayWrapper` state has the keys of the last one
    /// accepted and, if it has a `subclass`, the value accepted then.
    fn same_wrapper_state(&self, pairs: &[(NodeId, NodeId)]) -> bool {
        let cache = self.wrapper_keys.borrow();
        same_keys(pairs, &cache.0)
            && cache
                .1
                .is_none_or(|(i, v)| pairs.get(i).is_some_and(|&(_, w)| w == v))
    }

    fn items(&mut self, target: NodeId, offset: u64, opcode: Opcode) {
        let made = self.made_from(target);
        match made {
            Some((_, None)) => {} // reported as not allowed
            Some((_, Some(e))) if e.items => {}
            _ => {
                let class = made.map(|(c, _)| c.to_owned());
                let kind = self.kind_name(target);
                let what = class
                    .as_deref()
                    .map_or_else(|| format!("a {kind}"), |c| format!("an object of `{c}`"));
                self.push(
                    "items.target",
                    Severity::Critical,
                    offset,
                    opcode,
                    class.as_deref(),
                    format!(
                        "`{}` on {what}: it would call the target's append/extend/__setitem__, which only listed containers may receive",
                        opcode.name()
                    ),
                );
            }
        }
    }
}

/// Whether `pairs` has exactly the key nodes `keys`, in order (an empty
/// list is never the same, so a cache starts out matching nothing).
fn same_keys(pairs: &[(NodeId, NodeId)], keys: &[NodeId]) -> bool {
    !keys.is_empty() && pairs.len() == keys.len() && pairs.iter().zip(keys).all(|(p, &k)| p.0 == k)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Reference => "a reference only",
        Role::Call => "a function",
        Role::Class => "a class",
        Role::Trusted => "trusted",
    }
}
