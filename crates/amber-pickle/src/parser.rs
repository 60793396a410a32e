//! The public face of parsing: [`Parser`] (configuration), [`Pickle`]
//! (the result), [`Stats`], [`GlobalUse`] and the [`Hook`] trait.
//!
//! This module owns what callers configure and get back: the start offset,
//! strict versus lenient handling of bytes after `STOP`, limits, declared
//! out-of-band buffers, the hook, and the summary of globals. Executing the
//! opcodes is the private `machine` module's job; decoding them is
//! [`crate::reader`]'s.

use std::collections::HashMap;

use crate::disasm::Disassembly;
use crate::error::{PickleError, Result};
use crate::graph::{Graph, NodeId, NodeKind};
use crate::limits::Limits;
use crate::machine;
use crate::opcodes::Opcode;

/// Highest protocol this parser (and CPython) knows.
pub const HIGHEST_PROTOCOL: u8 = 5;

/// What a [`Hook`] sees after each `BUILD`.
#[derive(Debug)]
#[non_exhaustive]
pub struct BuildContext<'g, 'a> {
    /// The graph so far (the `BUILD` event is already recorded).
    pub graph: &'g Graph<'a>,
    /// The object `BUILD` applied state to (still on top of the stack).
    pub target: NodeId,
    /// The state.
    pub state: NodeId,
    /// Offset of the `BUILD` opcode.
    pub build_offset: u64,
    /// Offset just after the `BUILD` opcode: where raw data would start.
    pub position: u64,
    /// The whole input.
    pub input: &'a [u8],
    /// 0 in the top-level pickle, 1 inside a pickle nested by a hook, ...
    pub nested_depth: u64,
}

/// What the parser does after a `BUILD`, as decided by a [`Hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookAction {
    /// Nothing special: continue with the next opcode.
    Continue,
    /// `padding + len` raw bytes follow (outside any frame); the object on
    /// top of the stack is replaced by a [`NodeKind::InlineData`] node.
    Data {
        /// Bytes to skip before the data (joblib's length byte and padding).
        padding: u64,
        /// Data bytes.
        len: u64,
    },
    /// A complete pickle follows (outside any frame); it is parsed with a
    /// fresh stack and memo and replaces the object on top of the stack by
    /// a [`NodeKind::NestedPickle`] node.
    NestedPickle,
}

/// Caller-supplied logic run after every `BUILD`.
///
/// This is how formats that interleave raw data with pickle opcodes (joblib)
/// are read; see [`crate::joblib::JoblibHook`].
pub trait Hook {
    /// Decide what follows the `BUILD` described by `ctx`.
    ///
    /// # Errors
    /// Return [`PickleError::Hook`] (see [`PickleError::hook`]) to refuse the stream.
    fn after_build(&mut self, ctx: &BuildContext<'_, '_>) -> Result<HookAction>;
}

/// Counters gathered while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Opcodes executed (nested pickles included).
    pub opcodes: u64,
    /// Deepest stack (items plus marks, all levels).
    pub max_stack_depth: u64,
    /// Deepest node nesting seen.
    pub max_nesting_depth: u64,
    /// Memo writes (`PUT`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE`).
    pub memo_puts: u64,
    /// Memo reads (`GET`, `BINGET`, `LONG_BINGET`).
    pub memo_gets: u64,
    /// Most filled memo slots in one pickle.
    pub max_memo_entries: u64,
    /// `FRAME` opcodes.
    pub frames: u64,
    /// Pickles nested by a hook.
    pub nested_pickles: u64,
    /// Raw bytes declared by a hook (data only, padding excluded).
    pub inline_data_bytes: u64,
    /// Out-of-band buffers referenced (`NEXT_BUFFER`).
    pub buffers: u64,
    /// Approximate heap bytes of the graph ([`Limits::max_graph_bytes`]).
    pub graph_bytes: u64,
    pub(crate) op_counts: Box<[u64; 256]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            opcodes: 0,
            max_stack_depth: 0,
            max_nesting_depth: 0,
            memo_puts: 0,
            memo_gets: 0,
            max_memo_entries: 0,
            frames: 0,
            nested_pickles: 0,
            inline_data_bytes: 0,
            buffers: 0,
            graph_bytes: 0,
            op_counts: Box::new([0; 256]),
        }
    }
}

impl Stats {
    /// How many times `op` was executed.
    #[must_use]
    pub fn count(&self, op: Opcode) -> u64 {
        self.op_counts
            .get(usize::from(op.byte()))
            .copied()
            .unwrap_or(0)
    }
}

/// One global as used by the pickle, after canonicalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalUse {
    /// Canonical module (`_compat_pickle` applied for protocol < 3).
    pub module: String,
    /// Canonical qualified name.
    pub name: String,
    /// How many `GLOBAL`/`STACK_GLOBAL`/`INST` opcodes named it.
    pub count: u64,
    /// Offset of the first of them.
    pub first_offset: u64,
    /// The node the first of them created.
    pub first_node: NodeId,
}

/// A parsed pickle: the value graph and facts about the stream.
#[derive(Debug, Clone)]
pub struct Pickle<'a> {
    graph: Graph<'a>,
    root: NodeId,
    start: u64,
    end: u64,
    stats: Stats,
    globals: Vec<GlobalUse>,
    highest_protocol: Option<u8>,
    listing: Option<Disassembly<'a>>,
}

impl<'a> Pickle<'a> {
    /// The value graph.
    #[must_use]
    pub fn graph(&self) -> &Graph<'a> {
        &self.graph
    }

    /// The graph, by value.
    #[must_use]
    pub fn into_graph(self) -> Graph<'a> {
        self.graph
    }

    /// The value `STOP` returned.
    #[must_use]
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// Offset of the first opcode.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just after `STOP`.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every global referenced, canonicalised, in order of first use.
    #[must_use]
    pub fn globals(&self) -> &[GlobalUse] {
        &self.globals
    }

    /// The highest `PROTO` seen, if any.
    #[must_use]
    pub fn highest_protocol(&self) -> Option<u8> {
        self.highest_protocol
    }

    /// The instruction listing, if [`Parser::record_listing`] was set.
    #[must_use]
    pub fn listing(&self) -> Option<&Disassembly<'a>> {
        self.listing.as_ref()
    }
}

/// Parse one pickle that fills `data` exactly, with default limits.
///
/// # Errors
/// Any [`PickleError`]; bytes after `STOP` give [`PickleError::TrailingBytes`].
///
/// ```
/// let p = amber_pickle::parse(b"\x80\x04K\x2a.")?;
/// assert_eq!(p.graph().get(p.root()).and_then(|n| n.as_i64()), Some(42));
/// # Ok::<(), amber_pickle::PickleError>(())
/// ```
pub fn parse(data: &[u8]) -> Result<Pickle<'_>> {
    Parser::new(data).parse()
}

/// Parse one pickle starting at `start` and stop after its `STOP`;
/// [`Pickle::end`] says where the next bytes start.
///
/// # Errors
/// Any [`PickleError`] except trailing bytes.
pub fn parse_prefix(data: &[u8], start: usize) -> Result<Pickle<'_>> {
    Parser::new(data).start(start).allow_trailing(true).parse()
}

/// Configuration for one parse.
pub struct Parser<'a, 'h> {
    data: &'a [u8],
    start: usize,
    limits: Limits,
    allow_trailing: bool,
    buffers: Option<u64>,
    hook: Option<&'h mut dyn Hook>,
    record: bool,
}

impl std::fmt::Debug for Parser<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("len", &self.data.len())
            .field("start", &self.start)
            .field("limits", &self.limits)
            .field("allow_trailing", &self.allow_trailing)
            .field("buffers", &self.buffers)
            .field("hook", &self.hook.is_some())
            .field("record", &self.record)
            .finish()
    }
}

impl<'a, 'h> Parser<'a, 'h> {
    /// Parse `data` from offset 0, strictly, with default limits.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Parser {
            data,
            start: 0,
            limits: Limits::default(),
            allow_trailing: false,
            buffers: None,
            hook: None,
            record: false,
        }
    }

    /// Start at this offset instead of 0.
    #[must_use]
    pub fn start(mut self, offset: usize) -> Self {
        self.start = offset;
        self
    }

    /// Use these limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Accept bytes after `STOP` (lenient mode); [`Pickle::end`] says where they start.
    #[must_use]
    pub fn allow_trailing(mut self, allow: bool) -> Self {
        self.allow_trailing = allow;
        self
    }

    /// Declare how many out-of-band buffers the caller will supply;
    /// a `NEXT_BUFFER` beyond them is an error. Without this, buffers are
    /// only counted ([`Stats::buffers`]).
    #[must_use]
    pub fn out_of_band_buffers(mut self, count: u64) -> Self {
        self.buffers = Some(count);
        self
    }

    /// Run `hook` after every `BUILD`.
    #[must_use]
    pub fn hook(mut self, hook: &'h mut dyn Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Keep an instruction listing ([`Pickle::listing`]); costs memory per opcode.
    #[must_use]
    pub fn record_listing(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Parse.
    ///
    /// # Errors
    /// Any [`PickleError`].
    pub fn parse(self) -> Result<Pickle<'a>> {
        let out = machine::execute(machine::Config {
            data: self.data,
            start: self.start,
            limits: self.limits,
            buffers: self.buffers,
            hook: self.hook,
            record: self.record,
        })?;
        if !self.allow_trailing && out.end_pos != self.data.len() {
            return Err(PickleError::TrailingBytes {
                offset: out.end,
                remaining: to_u64(self.data.len().saturating_sub(out.end_pos)),
            });
        }
        let globals = summarize_globals(&out.graph, out.graph.globals());
        let end = out.end;
        Ok(Pickle {
            graph: out.graph,
            root: out.root,
            start: to_u64(self.start),
            end,
            stats: out.stats,
            globals,
            highest_protocol: out.highest_protocol,
            listing: out.listing,
        })
    }
}

pub(crate) fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Summarise the global nodes `ids` (in creation order) of `graph`.
fn summarize_globals(graph: &Graph<'_>, ids: &[NodeId]) -> Vec<GlobalUse> {
    let mut out: Vec<GlobalUse> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for &id in ids {
        let Some(node) = graph.get(id) else {
            continue;
        };
        let NodeKind::Global(g) = node.kind() else {
            continue;
        };
        let (m, n) = g.canonical();
        let key = (m.to_owned(), n.to_owned());
        if let Some(&i) = seen.get(&key) {
            if let Some(u) = out.get_mut(i) {
                u.count += 1;
            }
        } else {
            seen.insert(key.clone(), out.len());
            out.push(GlobalUse {
                module: key.0,
                name: key.1,
                count: 1,
                first_offset: node.offset(),
                first_node: id,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]
    use super::*;
    use crate::error::LimitKind;
    use crate::graph::EventKind;

    fn kind<'p>(p: &'p Pickle<'_>, id: NodeId) -> NodeKind<'p> {
        p.graph().kind(id).unwrap()
    }

    #[test]
    fn simple_values() {
        let p = parse(b"\x80\x02]q\x00(K\x01K\x02e.").unwrap();
        let NodeKind::List(items) = kind(&p, p.root()) else {
            panic!("not a list");
        };
        assert_eq!(items.len(), 2);
        assert_eq!(p.highest_protocol(), Some(2));
        assert_eq!(p.end(), 12);
        assert_eq!(p.stats().count(Opcode::APPENDS), 1);
    }

    #[test]
    fn stop_rules() {
        assert_eq!(parse(b"NN.").unwrap_err().code(), "pickle.bad_stop");
        assert_eq!(parse(b"(N.").unwrap_err().code(), "pickle.bad_stop");
        assert_eq!(parse(b".").unwrap_err().code(), "pickle.bad_stop");
        assert_eq!(parse(b"N.N").unwrap_err().code(), "pickle.trailing_bytes");
        let p = parse_prefix(b"N.N.", 0).unwrap();
        assert_eq!(p.end(), 2);
        let p = parse_prefix(b"N.N.", 2).unwrap();
        assert_eq!(p.end(), 4);
        assert_eq!(
            parse_prefix(b"N.", 3).unwrap_err().code(),
            "pickle.bad_start"
        );
    }

    #[test]
    fn marks_fence_the_stack() {
        // APPEND may not reach below a mark.
        assert_eq!(
            parse(b"](Na.").unwrap_err().code(),
            "pickle.stack_underflow"
        );
        // POP on an empty frame pops the mark, as in CPython.
        let p = parse(b"N(0.").unwrap();
        assert!(matches!(kind(&p, p.root()), NodeKind::None));
        assert_eq!(parse(b"0").unwrap_err().code(), "pickle.stack_underflow");
        assert_eq!(parse(b"Nt.").unwrap_err().code(), "pickle.mark_missing");
        assert_eq!(parse(b"(o.").unwrap_err().code(), "pickle.stack_underflow");
    }

    #[test]
    fn memo() {
        assert_eq!(parse(b"h\x00.").unwrap_err().code(), "pickle.memo_missing");
        assert_eq!(
            parse(b"q\x00.").unwrap_err().code(),
            "pickle.stack_underflow"
        );
        let p = parse(b"\x80\x04N\x94h\x00\x86.").unwrap();
        let items = p.graph().get(p.root()).unwrap().as_tuple().unwrap();
        assert_eq!(items[0], items[1]);
        // MEMOIZE uses len(memo), which can collide with an explicit PUT.
        let p = parse(b"Nq\x01K\x05\x94h\x01\x86\x86.").unwrap();
        let items = p.graph().get(p.root()).unwrap().as_tuple().unwrap();
        let inner = p.graph().get(items[1]).unwrap().as_tuple().unwrap();
        assert_eq!(p.graph().get(inner[1]).unwrap().as_i64(), Some(5));
        let e = Parser::new(b"Nr\x0b\x00\x00\x00.")
            .limits(Limits::default().with(LimitKind::MemoIndex, 10))
            .parse()
            .unwrap_err();
        assert_eq!(e.code(), "pickle.limit");
    }

    #[test]
    fn stack_global_needs_str() {
        let p = parse(b"\x80\x04\x8c\x01a\x8c\x01b\x93.").unwrap();
        let g = p.graph().get(p.root()).unwrap().as_global().unwrap();
        assert_eq!((g.module.as_ref(), g.name.as_ref()), ("a", "b"));
        assert_eq!(g.protocol, 4);
        assert!(g.operands.is_some());
        let e = parse(b"\x80\x04\x8c\x01aK\x01\x93.").unwrap_err();
        assert_eq!(e.code(), "pickle.bad_operands");
        assert!(e.to_string().contains("`int`"), "{e}");
    }

    #[test]
    fn mutations_of_non_containers_are_events() {
        // OrderedDict-style: REDUCE then SETITEMS; and APPEND on a tuple.
        let p = parse(b"\x80\x02ccollections\nOrderedDict\n)R(K\x01K\x02u.").unwrap();
        assert_eq!(p.graph().events().len(), 1);
        assert!(matches!(
            p.graph().events()[0].kind,
            EventKind::SetItems { .. }
        ));
        assert_eq!(p.graph().events()[0].target, p.root());
        assert_eq!(p.globals()[0].module, "collections");
        let p = parse(b")Na.").unwrap();
        assert!(matches!(
            p.graph().events()[0].kind,
            EventKind::Append { .. }
        ));
    }

    #[test]
    fn builds_are_recorded_each_time() {
        let p = parse(b"\x80\x02cm\nC\n)\x81q\x00}b0h\x00Nb.").unwrap();
        let builds: Vec<_> = p.graph().events_of(p.root()).collect();
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0].offset, 12);
        assert_eq!(builds[1].offset, 17);
    }

    #[test]
    fn protocol_and_buffers() {
        assert_eq!(
            parse(b"\x80\x06N.").unwrap_err().code(),
            "pickle.unsupported_protocol"
        );
        let p = parse(b"\x80\x05\x97\x98.").unwrap();
        assert!(matches!(kind(&p, p.root()), NodeKind::ReadOnly { .. }));
        assert_eq!(p.stats().buffers, 1);
        let e = Parser::new(b"\x80\x05\x97.")
            .out_of_band_buffers(0)
            .parse()
            .unwrap_err();
        assert_eq!(e.code(), "pickle.buffer_missing");
    }

    #[test]
    fn inst_and_obj() {
        let p = parse(b"(S'x'\nimod\nCls\n.").unwrap();
        let NodeKind::Inst { class, args } = kind(&p, p.root()) else {
            panic!("not inst");
        };
        assert_eq!(args.len(), 1);
        assert!(p.graph().get(class).unwrap().as_global().is_some());
        let p = parse(b"(cmod\nf\nK\x01o.").unwrap();
        assert!(matches!(kind(&p, p.root()), NodeKind::Obj { .. }));
        assert_eq!(p.globals().len(), 1);
    }

    #[test]
    fn ext_codes() {
        let p = parse(b"\x82\x05.").unwrap();
        assert!(matches!(kind(&p, p.root()), NodeKind::Ext { code: 5 }));
        assert_eq!(
            parse(b"\x82\x00.").unwrap_err().code(),
            "pickle.bad_argument"
        );
        assert_eq!(
            parse(b"\x84\xff\xff\xff\xff.").unwrap_err().code(),
            "pickle.bad_argument"
        );
    }
}
