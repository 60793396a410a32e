//! The pickle machine: opcode semantics on a stack, marks and a memo.
//!
//! This module owns executing instructions without executing anything:
//! it reproduces exactly what CPython's unpicklers do to the stack, the
//! mark stack and the memo, and where the unpickler would import or call it
//! records a node in the [`Graph`]. Where CPython is lax in a way that lets
//! two readers disagree (`STOP` with leftovers, ops reaching below a mark in
//! `_pickle.c`), the machine refuses. It also owns the resource accounting
//! behind [`Limits`]. [`crate::parser`] is its public face.
//!
//! The machine is a loop over instructions; nested pickles requested by a
//! hook suspend the current machine on an explicit stack. Nothing recurses,
//! so hostile nesting cannot overflow the Rust stack.
//!
//! Most opcodes of a real stream (memo traffic, marks, scalars, tuples,
//! `REDUCE`) are run by the `fast` submodule straight from the input, but
//! only when they are certain to succeed; everything else, and every error,
//! goes through `Run::step`, which stays the reference semantics.

mod fast;

use std::borrow::Cow;

use crate::disasm::{Disassembly, Line};
use crate::error::{LimitKind, PickleError, Result};
use crate::graph::{
    Event, EventKind, Global, Graph, Inline, Items, Kind, Nested, NodeId, SPARE_MEMO, Stored,
    is_leaf_opcode, keep_spare, take_spare,
};
use crate::limits::Limits;
use crate::opcodes::Opcode;
use crate::parser::{BuildContext, HIGHEST_PROTOCOL, Hook, HookAction, Stats, to_u64};
use crate::reader::{Arg, Instruction, NamePair, Reader};

const NO_ENTRY: u32 = u32::MAX;

/// What one parse needs.
pub(crate) struct Config<'a, 'h> {
    pub(crate) data: &'a [u8],
    pub(crate) start: usize,
    pub(crate) limits: Limits,
    pub(crate) buffers: Option<u64>,
    pub(crate) hook: Option<&'h mut dyn Hook>,
    pub(crate) record: bool,
}

/// What one parse produced.
pub(crate) struct Outcome<'a> {
    pub(crate) graph: Graph<'a>,
    pub(crate) root: NodeId,
    /// Offset just after `STOP`.
    pub(crate) end: u64,
    /// The same, as an index into the input.
    pub(crate) end_pos: usize,
    pub(crate) stats: Stats,
    pub(crate) highest_protocol: Option<u8>,
    pub(crate) listing: Option<Disassembly<'a>>,
}

/// Parse one pickle (and any nested ones a hook asks for).
pub(crate) fn execute<'a>(config: Config<'a, '_>) -> Result<Outcome<'a>> {
    let reader = Reader::new(config.data, config.start, config.limits)?;
    let mut run = Run {
        data: config.data,
        limits: config.limits,
        buffers: config.buffers,
        hook: config.hook,
        graph: Graph::new(config.data),
        stats: Stats::default(),
        highest_protocol: None,
        suspended: Vec::new(),
        suspended_depth: 0,
        listing: config.record.then(Disassembly::default),
        graph_bytes: 0,
    };
    // Real streams hold a node per 10-20 bytes: reserve for one per 16
    // (within the node limit; at most one arena chunk).
    let per_16 = to_u64(config.data.len().saturating_sub(config.start) / 16);
    let expected = per_16.min(config.limits.max_nodes);
    run.graph
        .reserve_first(usize::try_from(expected).unwrap_or(0));
    let mut cur = Machine::new(reader, None);
    // Memo slots and tuple items come at about the same rate (protocol 4+
    // memoizes almost every value): reserving for that rate up front saves
    // copying them while they grow. Bounded by the limits and by a fixed
    // cap, and untouched reserved memory costs no pages.
    let cap = |limit: u64| usize::try_from(per_16.min(limit).min(RESERVE_CAP)).unwrap_or(0);
    let slots = cap(config.limits.max_memo_entries);
    cur.memo = take_spare(&SPARE_MEMO, slots);
    cur.memo.reserve(slots);
    run.graph
        .reserve_pool(cap(config.limits.max_graph_bytes / ID_BYTES));
    let ran = run.run(&mut cur);
    // The memo's pages serve the thread's next parse.
    keep_spare(&SPARE_MEMO, std::mem::take(&mut cur.memo));
    let (root, end) = ran?;
    run.stats.graph_bytes = run.graph_bytes;
    let mut listing = run.listing;
    if let Some(l) = listing.as_mut() {
        l.end = Some(end);
    }
    Ok(Outcome {
        graph: run.graph,
        root,
        end,
        end_pos: cur.reader.position(),
        stats: run.stats,
        highest_protocol: run.highest_protocol,
        listing,
    })
}

/// Most memo slots or pooled items reserved before parsing (64 MiB of ids).
const RESERVE_CAP: u64 = 1 << 24;

const NODE_BYTES: u64 = std::mem::size_of::<Stored<'static>>() as u64;
const EVENT_BYTES: u64 = std::mem::size_of::<Event>() as u64;
/// What the allocator adds to each heap block, roughly.
const ALLOC_OVERHEAD: u64 = 16;
/// A boxed [`Global`] plus allocator overhead.
const GLOBAL_BYTES: u64 = std::mem::size_of::<Global<'static>>() as u64 + ALLOC_OVERHEAD;
const ID_BYTES: u64 = std::mem::size_of::<NodeId>() as u64;

/// Heap bytes of a payload: nothing when borrowed from the input.
#[expect(clippy::ptr_arg, reason = "whether the `Cow` borrows is the point")]
fn owned_len<T: ?Sized + ToOwned + AsRef<[u8]>>(c: &Cow<'_, T>) -> u64 {
    if matches!(c, Cow::Borrowed(_)) {
        0
    } else {
        to_u64(c.as_ref().as_ref().len()).saturating_add(ALLOC_OVERHEAD)
    }
}

fn items_bytes(n: usize, per: u64) -> u64 {
    to_u64(n).saturating_mul(per)
}

/// A boxed payload header (`Cow`, `Vec`, ...) plus allocator overhead.
const BOX_BYTES: u64 = 24 + ALLOC_OVERHEAD;

/// Heap bytes a new node accounts for: the node plus what it owns.
fn node_bytes(kind: &Kind<'_>) -> u64 {
    let extra = match kind {
        Kind::BigInt(b) | Kind::Bytes(b) | Kind::ByteArray(b) | Kind::LegacyStr(b) => {
            BOX_BYTES.saturating_add(owned_len(b))
        }
        Kind::Str(s) => BOX_BYTES.saturating_add(owned_len(s)),
        Kind::Tuple(items) | Kind::FrozenSet(items) => items_bytes(items.len(), ID_BYTES),
        Kind::Obj { args, .. } | Kind::Inst { args, .. } => items_bytes(args.len(), ID_BYTES),
        Kind::List(items) | Kind::Set(items) => {
            BOX_BYTES.saturating_add(items_bytes(items.len(), ID_BYTES))
        }
        Kind::Dict(pairs) => BOX_BYTES.saturating_add(items_bytes(pairs.len(), 2 * ID_BYTES)),
        Kind::PooledDict(pairs) => BOX_BYTES.saturating_add(items_bytes(pairs.len(), 2 * ID_BYTES)),
        Kind::Global(g) => GLOBAL_BYTES
            .saturating_add(owned_len(&g.module))
            .saturating_add(owned_len(&g.name)),
        Kind::InlineData(_) | Kind::NestedPickle(_) => BOX_BYTES.saturating_add(8),
        _ => 0,
    };
    NODE_BYTES.saturating_add(extra)
}

/// Heap bytes the items of a mutation account for.
fn mutation_bytes(kind: &EventKind) -> u64 {
    match kind {
        EventKind::Build { .. } | EventKind::Append { .. } => ID_BYTES,
        EventKind::Extend { items } | EventKind::AddItems { items } => {
            items_bytes(items.len(), ID_BYTES)
        }
        EventKind::SetItems { pairs } => items_bytes(pairs.len(), 2 * ID_BYTES),
    }
}

/// Move the argument out of an instruction (payloads are not copied).
fn take_arg<'a>(ins: &mut Instruction<'a>) -> Arg<'a> {
    std::mem::replace(&mut ins.arg, Arg::None)
}

/// One pickle being parsed: its reader, stack, marks and memo.
struct Machine<'a> {
    reader: Reader<'a>,
    stack: Vec<NodeId>,
    marks: Vec<usize>,
    memo: Vec<u32>,
    memo_len: u64,
    proto: u8,
    start: usize,
    /// For a nested pickle: the object it replaces in the parent.
    wrapper: Option<NodeId>,
}

impl<'a> Machine<'a> {
    fn new(reader: Reader<'a>, wrapper: Option<NodeId>) -> Self {
        let start = reader.position();
        Machine {
            reader,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_len: 0,
            proto: 0,
            start,
            wrapper,
        }
    }

    fn depth(&self) -> u64 {
        to_u64(self.stack.len().saturating_add(self.marks.len()))
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn above_fence(&self) -> usize {
        self.stack.len().saturating_sub(self.fence())
    }
}

/// What the loop does after one instruction.
enum Step {
    Continue,
    Stop(NodeId),
    Nested,
}

/// State shared by all machines of one parse.
struct Run<'a, 'h> {
    data: &'a [u8],
    limits: Limits,
    buffers: Option<u64>,
    hook: Option<&'h mut dyn Hook>,
    graph: Graph<'a>,
    stats: Stats,
    highest_protocol: Option<u8>,
    suspended: Vec<Machine<'a>>,
    suspended_depth: u64,
    listing: Option<Disassembly<'a>>,
    graph_bytes: u64,
}

impl<'a> Run<'a, '_> {
    /// Run until the top-level `STOP`; returns the root and the end offset.
    fn run(&mut self, cur: &mut Machine<'a>) -> Result<(NodeId, u64)> {
        // Without a listing to record, common opcodes take the fast path.
        let fast = self.listing.is_none();
        loop {
            if fast && self.fast_step(cur) {
                continue;
            }
            cur.reader.set_graph_used(self.graph_bytes);
            let mut ins = cur.reader.next_instruction()?;
            self.stats.opcodes = self.stats.opcodes.saturating_add(1);
            self.limits
                .check(LimitKind::Opcodes, self.stats.opcodes, ins.offset)?;
            if let Some(c) = self.stats.op_counts.get_mut(usize::from(ins.opcode.byte())) {
                *c = c.saturating_add(1);
            }
            if let Some(listing) = self.listing.as_mut() {
                let marks = cur.marks.len();
                let marks = if ins.opcode.pops_mark() {
                    marks.saturating_sub(1)
                } else {
                    marks
                };
                listing.lines.push(Line::Op {
                    instruction: ins.clone(),
                    marks,
                    nested: self.suspended.len(),
                });
            }
            match self.step(cur, &mut ins)? {
                Step::Continue => {}
                Step::Stop(root) => {
                    let end = to_u64(cur.reader.position());
                    let Some(mut parent) = self.suspended.pop() else {
                        return Ok((root, end));
                    };
                    self.suspended_depth = self.suspended_depth.saturating_sub(parent.depth());
                    let wrapper = cur.wrapper.ok_or(PickleError::Internal {
                        offset: end,
                        what: "nested pickle without a wrapper",
                    })?;
                    let start = to_u64(cur.start);
                    let depth = self.nest(&[wrapper, root], end)?;
                    let id = self.add(
                        Kind::NestedPickle(Box::new(Nested {
                            wrapper,
                            root,
                            start,
                            end,
                        })),
                        start,
                        Opcode::STOP,
                        depth,
                    )?;
                    let top = parent.stack.last_mut().ok_or(PickleError::Internal {
                        offset: end,
                        what: "parent stack empty after nested pickle",
                    })?;
                    *top = id;
                    parent.reader.resume_at(cur.reader.position());
                    *cur = parent;
                }
                Step::Nested => {
                    let pos = cur.reader.position();
                    let wrapper = cur.stack.last().copied();
                    let reader = Reader::new(self.data, pos, self.limits)?;
                    let child = Machine::new(reader, wrapper);
                    let parent = std::mem::replace(cur, child);
                    self.suspended_depth = self.suspended_depth.saturating_add(parent.depth());
                    self.suspended.push(parent);
                    self.stats.nested_pickles = self.stats.nested_pickles.saturating_add(1);
                }
            }
        }
    }

    fn add(&mut self, kind: Kind<'a>, offset: u64, opcode: Opcode, depth: u32) -> Result<NodeId> {
        let count = self.values().saturating_add(1);
        self.limits.check(LimitKind::Nodes, count, offset)?;
        // Leaves are not stored: they cost no graph bytes.
        if is_leaf_opcode(opcode)
            && let Some(id) = usize::try_from(offset)
                .ok()
                .and_then(|o| self.graph.push_leaf(o))
        {
            return Ok(id);
        }
        self.charge(node_bytes(&kind), offset)?;
        let global = matches!(kind, Kind::Global(_));
        let id = self
            .graph
            .push(Stored {
                kind,
                offset,
                opcode,
                depth,
            })
            .ok_or_else(|| PickleError::Limit {
                offset,
                limit: LimitKind::Nodes,
                value: count,
                max: u64::from(NO_ENTRY >> 1),
            })?;
        if global {
            self.graph.globals.push(id);
        }
        Ok(id)
    }

    /// Values created so far: stored nodes and leaves (the node limit's count).
    #[inline]
    fn values(&self) -> u64 {
        to_u64(self.graph.len().saturating_add(self.graph.leaves()))
    }

    /// Put the items of an immutable sequence in the graph's pool.
    fn intern(&mut self, items: &[NodeId], offset: u64) -> Result<Items> {
        self.graph.intern(items).ok_or(PickleError::Limit {
            offset,
            limit: LimitKind::GraphBytes,
            value: u64::MAX,
            max: self.limits.max_graph_bytes,
        })
    }

    /// Account for `bytes` more of graph memory.
    fn charge(&mut self, bytes: u64, offset: u64) -> Result<()> {
        self.graph_bytes = self.graph_bytes.saturating_add(bytes);
        self.limits
            .check(LimitKind::GraphBytes, self.graph_bytes, offset)
    }

    fn depth_of(&self, id: NodeId) -> u32 {
        self.graph.depth(id)
    }

    /// Depth of a node holding `children`: one more than the deepest.
    fn holder_depth(&self, children: &[NodeId]) -> u32 {
        let deepest = children
            .iter()
            .map(|&c| self.depth_of(c))
            .max()
            .unwrap_or(0);
        deepest.saturating_add(1)
    }

    /// [`Run::holder_depth`], checked against the nesting limit.
    fn nest(&mut self, children: &[NodeId], offset: u64) -> Result<u32> {
        let depth = self.holder_depth(children);
        self.note_depth(depth, offset)?;
        Ok(depth)
    }

    fn note_depth(&mut self, depth: u32, offset: u64) -> Result<()> {
        let d = u64::from(depth);
        self.limits.check(LimitKind::NestingDepth, d, offset)?;
        self.stats.max_nesting_depth = self.stats.max_nesting_depth.max(d);
        Ok(())
    }

    fn check_stack(&mut self, cur: &Machine<'a>, offset: u64) -> Result<()> {
        let total = self.suspended_depth.saturating_add(cur.depth());
        self.limits.check(LimitKind::StackDepth, total, offset)?;
        self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
        Ok(())
    }

    fn push(&mut self, cur: &mut Machine<'a>, id: NodeId, offset: u64) -> Result<()> {
        cur.stack.push(id);
        self.check_stack(cur, offset)
    }

    fn push_new(
        &mut self,
        cur: &mut Machine<'a>,
        kind: Kind<'a>,
        ins: &Instruction<'_>,
        depth: u32,
    ) -> Result<NodeId> {
        let id = self.add(kind, ins.offset, ins.opcode, depth)?;
        self.push(cur, id, ins.offset)?;
        Ok(id)
    }

    fn need(cur: &Machine<'a>, n: usize, ins: &Instruction<'_>) -> Result<()> {
        let found = cur.above_fence();
        if found < n {
            return Err(PickleError::StackUnderflow {
                offset: ins.offset,
                opcode: ins.opcode,
                needed: n,
                found,
            });
        }
        Ok(())
    }

    fn pop(cur: &mut Machine<'a>, ins: &Instruction<'_>) -> Result<NodeId> {
        Self::need(cur, 1, ins)?;
        cur.stack.pop().ok_or(PickleError::Internal {
            offset: ins.offset,
            what: "stack empty after check",
        })
    }

    fn top(cur: &Machine<'a>, ins: &Instruction<'_>) -> Result<NodeId> {
        Self::need(cur, 1, ins)?;
        cur.stack.last().copied().ok_or(PickleError::Internal {
            offset: ins.offset,
            what: "stack empty after check",
        })
    }

    fn pop_mark(cur: &mut Machine<'a>, ins: &Instruction<'_>) -> Result<Vec<NodeId>> {
        let mark = cur.marks.pop().ok_or(PickleError::MarkMissing {
            offset: ins.offset,
            opcode: ins.opcode,
        })?;
        if mark > cur.stack.len() {
            return Err(PickleError::Internal {
                offset: ins.offset,
                what: "mark above the stack top",
            });
        }
        Ok(cur.stack.split_off(mark))
    }

    fn pairs(items: Vec<NodeId>, ins: &Instruction<'_>) -> Result<Vec<(NodeId, NodeId)>> {
        if !items.len().is_multiple_of(2) {
            return Err(PickleError::BadOperands {
                offset: ins.offset,
                opcode: ins.opcode,
                reason: format!("odd number of items ({}) for key/value pairs", items.len()),
            });
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    /// `APPEND(S)`, `SETITEM(S)`, `ADDITEMS` on `target`: literal containers
    /// of the matching type grow, anything else gets an event.
    fn mutate(&mut self, target: NodeId, ins: &Instruction<'_>, kind: EventKind) -> Result<()> {
        let child_depth = match &kind {
            EventKind::Append { item } => self.depth_of(*item),
            EventKind::Extend { items } | EventKind::AddItems { items } => {
                items.iter().map(|&c| self.depth_of(c)).max().unwrap_or(0)
            }
            EventKind::SetItems { pairs } => pairs
                .iter()
                .map(|&(k, v)| self.depth_of(k).max(self.depth_of(v)))
                .max()
                .unwrap_or(0),
            EventKind::Build { state } => self.depth_of(*state),
        };
        let new_depth = child_depth.saturating_add(1);
        self.charge(mutation_bytes(&kind), ins.offset)?;
        let unknown = PickleError::Internal {
            offset: ins.offset,
            what: "stack holds an unknown node",
        };
        let depth = self
            .graph
            .raise_depth(target, new_depth)
            .ok_or(unknown.clone())?;
        if matches!(kind, EventKind::SetItems { .. }) {
            self.graph.unpool(target);
        }
        let literal = match self.graph.get_mut(target) {
            Some(node) => Some(&mut node.kind),
            None if target.is_leaf() => None,
            None => return Err(unknown),
        };
        let leftover = match (literal, kind) {
            (Some(Kind::List(list)), EventKind::Append { item }) => {
                list.push(item);
                None
            }
            (Some(Kind::List(list)), EventKind::Extend { items }) => {
                list.extend_from_slice(&items);
                None
            }
            (Some(Kind::Dict(dict)), EventKind::SetItems { pairs }) => {
                dict.extend_from_slice(&pairs);
                None
            }
            (Some(Kind::Set(set)), EventKind::AddItems { items }) => {
                set.extend_from_slice(&items);
                None
            }
            (_, other) => Some(other),
        };
        // Events cost their header too (items were charged above).
        if leftover.is_some() {
            self.graph_bytes = self.graph_bytes.saturating_add(EVENT_BYTES);
        }
        if let Some(kind) = leftover {
            self.graph.events.push(Event {
                target,
                offset: ins.offset,
                opcode: ins.opcode,
                kind,
            });
        }
        self.note_depth(depth, ins.offset)
    }

    fn memo_set(&mut self, cur: &mut Machine<'a>, index: u64, ins: &Instruction<'_>) -> Result<()> {
        let value = Self::top(cur, ins)?;
        self.limits.check(LimitKind::MemoIndex, index, ins.offset)?;
        let idx = usize::try_from(index).map_err(|_| PickleError::Limit {
            offset: ins.offset,
            limit: LimitKind::MemoIndex,
            value: index,
            max: self.limits.max_memo_index,
        })?;
        if idx == cur.memo.len() {
            // MEMOIZE, and PUTs numbered in order: grow by one.
            cur.memo.push(NO_ENTRY);
        } else if idx > cur.memo.len() {
            let new_len = idx.checked_add(1).ok_or(PickleError::Internal {
                offset: ins.offset,
                what: "memo index overflow",
            })?;
            cur.memo.resize(new_len, NO_ENTRY);
        }
        let slot = cur.memo.get_mut(idx).ok_or(PickleError::Internal {
            offset: ins.offset,
            what: "memo slot missing after resize",
        })?;
        if *slot == NO_ENTRY {
            cur.memo_len = cur.memo_len.saturating_add(1);
            self.limits
                .check(LimitKind::MemoEntries, cur.memo_len, ins.offset)?;
            self.stats.max_memo_entries = self.stats.max_memo_entries.max(cur.memo_len);
        }
        *slot = value.0;
        self.stats.memo_puts = self.stats.memo_puts.saturating_add(1);
        Ok(())
    }

    fn memo_get(&mut self, cur: &mut Machine<'a>, index: u64, ins: &Instruction<'_>) -> Result<()> {
        self.stats.memo_gets = self.stats.memo_gets.saturating_add(1);
        self.limits
            .check(LimitKind::MemoGets, self.stats.memo_gets, ins.offset)?;
        let missing = PickleError::MemoMissing {
            offset: ins.offset,
            opcode: ins.opcode,
            index,
        };
        let idx = usize::try_from(index).map_err(|_| missing.clone())?;
        match cur.memo.get(idx) {
            Some(&v) if v != NO_ENTRY => self.push(cur, NodeId(v), ins.offset),
            _ => Err(missing),
        }
    }

    fn bad_arg(ins: &Instruction<'_>) -> PickleError {
        PickleError::Internal {
            offset: ins.offset,
            what: "opcode argument of unexpected type",
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one match arm per opcode reads best as a single table"
    )]
    fn step(&mut self, cur: &mut Machine<'a>, ins: &mut Instruction<'a>) -> Result<Step> {
        use Opcode as O;
        let offset = ins.offset;
        match ins.opcode {
            O::PROTO => {
                let Arg::Uint(v) = ins.arg else {
                    return Err(Self::bad_arg(ins));
                };
                let protocol = u8::try_from(v).unwrap_or(u8::MAX);
                if protocol > HIGHEST_PROTOCOL {
                    return Err(PickleError::UnsupportedProtocol { offset, protocol });
                }
                cur.proto = protocol;
                self.highest_protocol =
                    Some(self.highest_protocol.map_or(protocol, |p| p.max(protocol)));
            }
            O::FRAME => {
                self.stats.frames = self.stats.frames.saturating_add(1);
            }
            O::STOP => {
                if cur.stack.len() != 1 || !cur.marks.is_empty() {
                    return Err(PickleError::BadStop {
                        offset,
                        stack_len: cur.stack.len(),
                        marks: cur.marks.len(),
                    });
                }
                cur.reader.finish_at_stop(offset)?;
                let root = Self::pop(cur, ins)?;
                return Ok(Step::Stop(root));
            }

            // Scalars.
            O::NONE => {
                self.push_new(cur, Kind::None, ins, 0)?;
            }
            O::NEWTRUE | O::NEWFALSE => {
                self.push_new(cur, Kind::Bool(ins.opcode == O::NEWTRUE), ins, 0)?;
            }
            O::INT | O::BININT | O::BININT1 | O::BININT2 | O::LONG | O::LONG1 | O::LONG4 => {
                let kind = match take_arg(ins) {
                    Arg::Int(v) => Kind::Int(v),
                    Arg::Uint(v) => Kind::Int(i64::try_from(v).map_err(|_| Self::bad_arg(ins))?),
                    Arg::Bool(b) => Kind::Bool(b),
                    Arg::BigInt(b) => Kind::BigInt(Box::new(b)),
                    _ => return Err(Self::bad_arg(ins)),
                };
                self.push_new(cur, kind, ins, 0)?;
            }
            O::FLOAT | O::BINFLOAT => {
                let Arg::Float(v) = ins.arg else {
                    return Err(Self::bad_arg(ins));
                };
                self.push_new(cur, Kind::Float(v), ins, 0)?;
            }
            O::UNICODE | O::SHORT_BINUNICODE | O::BINUNICODE | O::BINUNICODE8 => {
                let Arg::Str(s) = take_arg(ins) else {
                    return Err(Self::bad_arg(ins));
                };
                self.push_new(cur, Kind::Str(Box::new(s)), ins, 0)?;
            }
            O::STRING
            | O::BINSTRING
            | O::SHORT_BINSTRING
            | O::BINBYTES
            | O::SHORT_BINBYTES
            | O::BINBYTES8
            | O::BYTEARRAY8 => {
                let Arg::Bytes(b) = take_arg(ins) else {
                    return Err(Self::bad_arg(ins));
                };
                let b = Box::new(b);
                let kind = match ins.opcode {
                    O::BYTEARRAY8 => Kind::ByteArray(b),
                    O::BINBYTES | O::SHORT_BINBYTES | O::BINBYTES8 => Kind::Bytes(b),
                    _ => Kind::LegacyStr(b),
                };
                self.push_new(cur, kind, ins, 0)?;
            }

            // Containers.
            O::EMPTY_LIST => {
                self.push_new(cur, Kind::List(Box::default()), ins, 1)?;
            }
            O::EMPTY_TUPLE => {
                self.push_new(cur, Kind::Tuple(Items::default()), ins, 1)?;
            }
            O::EMPTY_DICT => {
                self.push_new(cur, Kind::Dict(Box::default()), ins, 1)?;
            }
            O::EMPTY_SET => {
                self.push_new(cur, Kind::Set(Box::default()), ins, 1)?;
            }
            O::LIST | O::TUPLE | O::FROZENSET | O::DICT => {
                let items = Self::pop_mark(cur, ins)?;
                let depth = self.nest(&items, offset)?;
                let kind = match ins.opcode {
                    O::LIST => Kind::List(Box::new(items)),
                    O::TUPLE => Kind::Tuple(self.intern(&items, offset)?),
                    O::FROZENSET => Kind::FrozenSet(self.intern(&items, offset)?),
                    _ => Kind::Dict(Box::new(Self::pairs(items, ins)?)),
                };
                self.push_new(cur, kind, ins, depth)?;
            }
            O::TUPLE1 | O::TUPLE2 | O::TUPLE3 => {
                let n = match ins.opcode {
                    O::TUPLE1 => 1,
                    O::TUPLE2 => 2,
                    _ => 3,
                };
                Self::need(cur, n, ins)?;
                let at = cur.stack.len().saturating_sub(n);
                let items = cur.stack.split_off(at);
                let depth = self.nest(&items, offset)?;
                let items = self.intern(&items, offset)?;
                self.push_new(cur, Kind::Tuple(items), ins, depth)?;
            }
            O::APPEND => {
                Self::need(cur, 2, ins)?;
                let item = Self::pop(cur, ins)?;
                let target = Self::top(cur, ins)?;
                self.mutate(target, ins, EventKind::Append { item })?;
            }
            O::SETITEM => {
                Self::need(cur, 3, ins)?;
                let value = Self::pop(cur, ins)?;
                let key = Self::pop(cur, ins)?;
                let target = Self::top(cur, ins)?;
                let pairs = vec![(key, value)].into_boxed_slice();
                self.mutate(target, ins, EventKind::SetItems { pairs })?;
            }
            O::APPENDS | O::SETITEMS | O::ADDITEMS => {
                let items = Self::pop_mark(cur, ins)?;
                let target = Self::top(cur, ins)?;
                let kind = match ins.opcode {
                    O::APPENDS => EventKind::Extend {
                        items: items.into_boxed_slice(),
                    },
                    O::ADDITEMS => EventKind::AddItems {
                        items: items.into_boxed_slice(),
                    },
                    _ => EventKind::SetItems {
                        pairs: Self::pairs(items, ins)?.into_boxed_slice(),
                    },
                };
                self.mutate(target, ins, kind)?;
            }

            // Stack and marks.
            O::POP => {
                if cur.above_fence() > 0 {
                    Self::pop(cur, ins)?;
                } else if cur.marks.last() == Some(&cur.stack.len()) {
                    cur.marks.pop();
                } else {
                    return Err(PickleError::StackUnderflow {
                        offset,
                        opcode: ins.opcode,
                        needed: 1,
                        found: 0,
                    });
                }
            }
            O::DUP => {
                let top = Self::top(cur, ins)?;
                self.push(cur, top, offset)?;
            }
            O::MARK => {
                cur.marks.push(cur.stack.len());
                self.check_stack(cur, offset)?;
            }
            O::POP_MARK => {
                Self::pop_mark(cur, ins)?;
            }

            // Memo.
            O::GET | O::BINGET | O::LONG_BINGET => {
                let Arg::Uint(index) = ins.arg else {
                    return Err(Self::bad_arg(ins));
                };
                self.memo_get(cur, index, ins)?;
            }
            O::PUT | O::BINPUT | O::LONG_BINPUT => {
                let Arg::Uint(index) = ins.arg else {
                    return Err(Self::bad_arg(ins));
                };
                self.memo_set(cur, index, ins)?;
            }
            O::MEMOIZE => {
                let index = cur.memo_len;
                self.memo_set(cur, index, ins)?;
            }

            // Names.
            O::GLOBAL => {
                let Arg::Global(pair) = take_arg(ins) else {
                    return Err(Self::bad_arg(ins));
                };
                let NamePair { module, name } = *pair;
                let g = Global {
                    module,
                    name,
                    protocol: cur.proto,
                    operands: None,
                };
                self.push_new(cur, Kind::Global(Box::new(g)), ins, 0)?;
            }
            O::STACK_GLOBAL => {
                Self::need(cur, 2, ins)?;
                let name_id = Self::pop(cur, ins)?;
                let module_id = Self::pop(cur, ins)?;
                let (module, name) = match (self.graph.text(module_id), self.graph.text(name_id)) {
                    (Ok(m), Ok(n)) => (m, n),
                    (m, n) => {
                        let kind = |r: std::result::Result<Cow<'a, str>, &'static str>| match r {
                            Ok(_) => "str",
                            Err(k) => k,
                        };
                        return Err(PickleError::BadOperands {
                            offset,
                            opcode: ins.opcode,
                            reason: format!(
                                "module and name must be `str`, found `{}` and `{}`",
                                kind(m),
                                kind(n)
                            ),
                        });
                    }
                };
                let g = Global {
                    module,
                    name,
                    protocol: cur.proto,
                    operands: Some((module_id, name_id)),
                };
                self.push_new(cur, Kind::Global(Box::new(g)), ins, 1)?;
            }
            O::EXT1 | O::EXT2 | O::EXT4 => {
                let code = match ins.arg {
                    Arg::Uint(v) => i64::try_from(v).unwrap_or(0),
                    Arg::Int(v) => v,
                    _ => return Err(Self::bad_arg(ins)),
                };
                let code = i32::try_from(code).ok().filter(|&c| c > 0).ok_or_else(|| {
                    PickleError::BadArgument {
                        offset,
                        opcode: ins.opcode,
                        reason: format!("extension code {code} is not positive"),
                    }
                })?;
                self.push_new(cur, Kind::Ext { code }, ins, 0)?;
            }

            // Calls.
            O::REDUCE => {
                Self::need(cur, 2, ins)?;
                let args = Self::pop(cur, ins)?;
                let callable = Self::pop(cur, ins)?;
                let depth = self.nest(&[callable, args], offset)?;
                self.push_new(cur, Kind::Reduce { callable, args }, ins, depth)?;
            }
            O::NEWOBJ => {
                Self::need(cur, 2, ins)?;
                let args = Self::pop(cur, ins)?;
                let cls = Self::pop(cur, ins)?;
                let depth = self.nest(&[cls, args], offset)?;
                let kind = Kind::NewObj { cls, args };
                self.push_new(cur, kind, ins, depth)?;
            }
            O::NEWOBJ_EX => {
                Self::need(cur, 3, ins)?;
                let kwargs = Self::pop(cur, ins)?;
                let args = Self::pop(cur, ins)?;
                let cls = Self::pop(cur, ins)?;
                let depth = self.nest(&[cls, args, kwargs], offset)?;
                let kind = Kind::NewObjEx { cls, args, kwargs };
                self.push_new(cur, kind, ins, depth)?;
            }
            O::OBJ => {
                let items = Self::pop_mark(cur, ins)?;
                let Some((&cls, args)) = items.split_first() else {
                    return Err(PickleError::StackUnderflow {
                        offset,
                        opcode: ins.opcode,
                        needed: 1,
                        found: 0,
                    });
                };
                let depth = self.nest(&items, offset)?;
                let args = self.intern(args, offset)?;
                let kind = Kind::Obj { cls, args };
                self.push_new(cur, kind, ins, depth)?;
            }
            O::INST => {
                let Arg::Global(pair) = take_arg(ins) else {
                    return Err(Self::bad_arg(ins));
                };
                let items = Self::pop_mark(cur, ins)?;
                let NamePair { module, name } = *pair;
                let g = Global {
                    module,
                    name,
                    protocol: cur.proto,
                    operands: None,
                };
                let class = self.add(Kind::Global(Box::new(g)), offset, ins.opcode, 0)?;
                let depth = self.nest(&items, offset)?;
                let args = self.intern(&items, offset)?;
                let kind = Kind::Inst { class, args };
                self.push_new(cur, kind, ins, depth)?;
            }
            O::BUILD => {
                Self::need(cur, 2, ins)?;
                let state = Self::pop(cur, ins)?;
                let target = Self::top(cur, ins)?;
                self.charge(EVENT_BYTES, offset)?;
                self.graph.events.push(Event {
                    target,
                    offset,
                    opcode: ins.opcode,
                    kind: EventKind::Build { state },
                });
                let depth = self
                    .depth_of(target)
                    .max(self.depth_of(state).saturating_add(1));
                self.graph.raise_depth(target, depth);
                self.note_depth(depth, offset)?;
                return self.after_build(cur, target, state, ins);
            }

            // Persistent ids, buffers.
            O::PERSID => {
                let Arg::Str(s) = take_arg(ins) else {
                    return Err(Self::bad_arg(ins));
                };
                let pid = self.add(Kind::Str(Box::new(s)), offset, ins.opcode, 0)?;
                self.push_new(cur, Kind::PersId { pid }, ins, 1)?;
            }
            O::BINPERSID => {
                let pid = Self::pop(cur, ins)?;
                let depth = self.nest(&[pid], offset)?;
                self.push_new(cur, Kind::PersId { pid }, ins, depth)?;
            }
            O::NEXT_BUFFER => {
                let index = self.stats.buffers;
                if let Some(available) = self.buffers
                    && index >= available
                {
                    return Err(PickleError::BufferMissing {
                        offset,
                        index,
                        available,
                    });
                }
                self.stats.buffers = index.saturating_add(1);
                self.push_new(cur, Kind::Buffer { index }, ins, 0)?;
            }
            O::READONLY_BUFFER => {
                let inner = Self::pop(cur, ins)?;
                let depth = self.nest(&[inner], offset)?;
                self.push_new(cur, Kind::ReadOnly { inner }, ins, depth)?;
            }
        }
        Ok(Step::Continue)
    }

    fn after_build(
        &mut self,
        cur: &mut Machine<'a>,
        target: NodeId,
        state: NodeId,
        ins: &Instruction<'_>,
    ) -> Result<Step> {
        let Some(hook) = self.hook.as_deref_mut() else {
            return Ok(Step::Continue);
        };
        let position = to_u64(cur.reader.position());
        let ctx = BuildContext {
            graph: &self.graph,
            target,
            state,
            build_offset: ins.offset,
            position,
            input: self.data,
            nested_depth: to_u64(self.suspended.len()),
        };
        match hook.after_build(&ctx)? {
            HookAction::Continue => Ok(Step::Continue),
            HookAction::Data { padding, len } => {
                let data_start = cur.reader.skip_raw(padding, len)?;
                self.stats.inline_data_bytes = self.stats.inline_data_bytes.saturating_add(len);
                let depth = self.nest(&[target], position)?;
                let inline = Inline {
                    wrapper: target,
                    offset: to_u64(data_start),
                    len,
                };
                let index = self.graph.push_inline(inline).ok_or(PickleError::Limit {
                    offset: position,
                    limit: LimitKind::Nodes,
                    value: self.values(),
                    max: u64::from(NO_ENTRY >> 1),
                })?;
                let id = self.add(Kind::InlineData(index), position, ins.opcode, depth)?;
                let top = cur.stack.last_mut().ok_or(PickleError::Internal {
                    offset: position,
                    what: "stack empty after BUILD",
                })?;
                *top = id;
                if let Some(listing) = self.listing.as_mut() {
                    listing.lines.push(Line::Raw {
                        offset: position,
                        padding,
                        len,
                        nested: self.suspended.len(),
                    });
                }
                Ok(Step::Continue)
            }
            HookAction::NestedPickle => {
                let depth = to_u64(self.suspended.len()).saturating_add(1);
                self.limits
                    .check(LimitKind::NestedPickles, depth, position)?;
                cur.reader.require_outside_frame("nested pickle")?;
                Ok(Step::Nested)
            }
        }
    }
}
