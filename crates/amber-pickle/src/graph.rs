//! The value graph a pickle describes, as an arena of nodes.
//!
//! This module owns [`Graph`], [`Node`], [`NodeKind`] and [`Event`]. Nodes
//! are addressed by [`NodeId`]s, never by references, so shared values
//! (memo `GET`s), cycles (a list appended to itself) and billion-laughs
//! DAGs cost one id per reference and are never expanded. Nothing here
//! recurses: [`Graph::children`] yields direct edges for callers to walk
//! with their own explicit stack and visited set.
//!
//! Each node records the byte offset and opcode that created it. Calls
//! (`REDUCE`, `NEWOBJ`, `OBJ`, `INST`) are nodes; things done *to* an
//! existing object (`BUILD`, and `APPEND(S)`/`SETITEM(S)`/`ADDITEMS` on a
//! value that is not the matching literal container) are [`Event`]s, in
//! stream order, so an analyser sees every one of them.

use std::borrow::Cow;

use crate::compat::canonicalize;
use crate::opcodes::Opcode;

/// Index of a node in a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The position in [`Graph::iter`] order (creation order).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A reference to a global: `GLOBAL`, `STACK_GLOBAL` or the class of `INST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global<'a> {
    /// Module as written in the stream.
    pub module: Cow<'a, str>,
    /// Qualified name as written (may be dotted for protocol 4+).
    pub name: Cow<'a, str>,
    /// The protocol in effect when the opcode ran (last `PROTO`, else 0);
    /// it decides `_compat_pickle` renaming and dotted-name lookup.
    pub protocol: u8,
    /// For `STACK_GLOBAL`: the `str` nodes that were the module and name operands.
    pub operands: Option<(NodeId, NodeId)>,
}

impl Global<'_> {
    /// `(module, name)` after CPython's `_compat_pickle` renaming.
    #[must_use]
    pub fn canonical(&self) -> (&str, &str) {
        canonicalize(&self.module, &self.name, self.protocol)
    }

    /// `module.name` after canonicalisation.
    #[must_use]
    pub fn dotted(&self) -> String {
        let (m, n) = self.canonical();
        format!("{m}.{n}")
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeKind<'a> {
    /// `None`.
    None,
    /// `True` / `False` (`NEWTRUE`, `NEWFALSE`, `INT 01`/`00`).
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// An integer that does not: minimal little-endian two's complement.
    BigInt(Cow<'a, [u8]>),
    /// A float.
    Float(f64),
    /// A Python 3 `str`.
    Str(Cow<'a, str>),
    /// `bytes`.
    Bytes(Cow<'a, [u8]>),
    /// `bytearray` (`BYTEARRAY8`).
    ByteArray(Cow<'a, [u8]>),
    /// A Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`): `str` or
    /// `bytes` depending on the unpickler's `encoding`.
    LegacyStr(Cow<'a, [u8]>),
    /// A tuple.
    Tuple(Box<[NodeId]>),
    /// A literal list with every item later appended to it.
    List(Vec<NodeId>),
    /// A literal dict with every pair later set on it, in order (keys may repeat).
    Dict(Vec<(NodeId, NodeId)>),
    /// A literal set with every item later added to it.
    Set(Vec<NodeId>),
    /// A frozenset.
    FrozenSet(Box<[NodeId]>),
    /// A global reference.
    Global(Box<Global<'a>>),
    /// `callable(*args)` (`REDUCE`).
    Reduce {
        /// The callable.
        callable: NodeId,
        /// The argument tuple (any node; CPython requires a tuple).
        args: NodeId,
    },
    /// `cls.__new__(cls, *args, **kwargs)` (`NEWOBJ`, `NEWOBJ_EX`).
    NewObj {
        /// The class.
        cls: NodeId,
        /// The argument tuple.
        args: NodeId,
        /// The keyword dict, for `NEWOBJ_EX`.
        kwargs: Option<NodeId>,
    },
    /// `items[0](*items[1:])` (`OBJ`).
    Obj {
        /// The callable (first item above the mark).
        cls: NodeId,
        /// The remaining items.
        args: Box<[NodeId]>,
    },
    /// `INST`: a class by name called with the items above the mark.
    Inst {
        /// The [`NodeKind::Global`] node `INST` named.
        class: NodeId,
        /// The arguments.
        args: Box<[NodeId]>,
    },
    /// `persistent_load(pid)` (`PERSID`, `BINPERSID`).
    PersId {
        /// The persistent id.
        pid: NodeId,
    },
    /// An extension-registry reference (`EXT1`, `EXT2`, `EXT4`).
    Ext {
        /// The code.
        code: i32,
    },
    /// An out-of-band buffer (`NEXT_BUFFER`), numbered from 0 in stream order.
    Buffer {
        /// The buffer index.
        index: u64,
    },
    /// `READONLY_BUFFER` applied to a value.
    ReadOnly {
        /// The wrapped value.
        inner: NodeId,
    },
    /// Raw bytes a [`crate::Hook`] declared after a `BUILD` (a joblib array);
    /// replaces the built object on the stack. The node's offset is just
    /// after the `BUILD`, its opcode `BUILD`.
    InlineData {
        /// The built object (the joblib `NumpyArrayWrapper`).
        wrapper: NodeId,
        /// Offset of the first data byte (after any padding).
        offset: u64,
        /// Data length in bytes.
        len: u64,
    },
    /// A complete pickle a [`crate::Hook`] asked to parse after a `BUILD`
    /// (a joblib object array); replaces the built object on the stack. The
    /// node's offset is the nested pickle's start, its opcode the nested `STOP`.
    NestedPickle {
        /// The built object.
        wrapper: NodeId,
        /// The nested pickle's root value.
        root: NodeId,
        /// Offset of the nested pickle's first byte.
        start: u64,
        /// Offset just after its `STOP`.
        end: u64,
    },
}

impl NodeKind<'_> {
    /// A short lowercase name for messages (`tuple`, `reduce`, ...).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            NodeKind::None => "none",
            NodeKind::Bool(_) => "bool",
            NodeKind::Int(_) | NodeKind::BigInt(_) => "int",
            NodeKind::Float(_) => "float",
            NodeKind::Str(_) => "str",
            NodeKind::Bytes(_) => "bytes",
            NodeKind::ByteArray(_) => "bytearray",
            NodeKind::LegacyStr(_) => "legacy str",
            NodeKind::Tuple(_) => "tuple",
            NodeKind::List(_) => "list",
            NodeKind::Dict(_) => "dict",
            NodeKind::Set(_) => "set",
            NodeKind::FrozenSet(_) => "frozenset",
            NodeKind::Global(_) => "global",
            NodeKind::Reduce { .. } => "reduce",
            NodeKind::NewObj { .. } => "newobj",
            NodeKind::Obj { .. } => "obj",
            NodeKind::Inst { .. } => "inst",
            NodeKind::PersId { .. } => "persistent id",
            NodeKind::Ext { .. } => "extension",
            NodeKind::Buffer { .. } => "buffer",
            NodeKind::ReadOnly { .. } => "read-only buffer",
            NodeKind::InlineData { .. } => "inline data",
            NodeKind::NestedPickle { .. } => "nested pickle",
        }
    }
}

/// One node: what it is, and which opcode at which offset created it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    pub(crate) kind: NodeKind<'a>,
    pub(crate) offset: u64,
    pub(crate) opcode: Opcode,
    pub(crate) depth: u32,
}

impl<'a> Node<'a> {
    /// What the node is.
    #[must_use]
    #[inline]
    pub fn kind(&self) -> &NodeKind<'a> {
        &self.kind
    }

    /// Offset of the opcode that created it.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The opcode that created it.
    #[must_use]
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// Nesting depth as measured while parsing: 0 for scalars, one more
    /// than its deepest child (updated when the node itself is mutated,
    /// not when a child is).
    #[must_use]
    #[inline]
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The text if this is a [`NodeKind::Str`].
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value if this is a [`NodeKind::Int`] (or a bool, as Python does).
    #[must_use]
    pub fn as_i64(&self) -> Option<i64> {
        match self.kind {
            NodeKind::Int(v) => Some(v),
            NodeKind::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// The payload of `bytes`, `bytearray` or a Python 2 `str`.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.kind {
            NodeKind::Bytes(b) | NodeKind::ByteArray(b) | NodeKind::LegacyStr(b) => Some(b),
            _ => None,
        }
    }

    /// The items if this is a tuple.
    #[must_use]
    pub fn as_tuple(&self) -> Option<&[NodeId]> {
        match &self.kind {
            NodeKind::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The global if this is a [`NodeKind::Global`].
    #[must_use]
    pub fn as_global(&self) -> Option<&Global<'a>> {
        match &self.kind {
            NodeKind::Global(g) => Some(g),
            _ => None,
        }
    }
}

/// Something done to an existing object.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// `BUILD`: `__setstate__(state)` or `__dict__` update.
    Build {
        /// The state.
        state: NodeId,
    },
    /// `APPEND` on something that is not a literal list.
    Append {
        /// The item.
        item: NodeId,
    },
    /// `APPENDS` on something that is not a literal list.
    Extend {
        /// The items.
        items: Box<[NodeId]>,
    },
    /// `SETITEM`/`SETITEMS` on something that is not a literal dict.
    SetItems {
        /// Key/value pairs.
        pairs: Box<[(NodeId, NodeId)]>,
    },
    /// `ADDITEMS` on something that is not a literal set.
    AddItems {
        /// The items.
        items: Box<[NodeId]>,
    },
}

/// An [`EventKind`] with its target and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The object acted on.
    pub target: NodeId,
    /// Offset of the opcode.
    pub offset: u64,
    /// The opcode.
    pub opcode: Opcode,
    /// What was done.
    pub kind: EventKind,
}

/// Nodes per arena chunk: chunks never reallocate once full, so a large
/// graph grows without copying (or doubling) the whole arena.
const CHUNK_BITS: usize = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The arena: every node and event of one parse (nested pickles included).
#[derive(Debug, Clone, Default)]
pub struct Graph<'a> {
    chunks: Vec<Vec<Node<'a>>>,
    len: usize,
    pub(crate) events: Vec<Event>,
}

impl<'a> Graph<'a> {
    /// Number of nodes.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserve room for about `nodes` nodes in the first chunk (at most a
    /// chunk), so a mid-sized graph does not grow it by copying. Untouched
    /// reserved memory costs no pages.
    pub(crate) fn reserve_first(&mut self, nodes: usize) {
        if self.chunks.is_empty() && nodes > 0 {
            self.chunks.push(Vec::with_capacity(nodes.min(CHUNK)));
        }
    }

    /// Append a node; the caller has checked the node limit.
    #[inline]
    pub(crate) fn push(&mut self, node: Node<'a>) -> Option<NodeId> {
        let id = u32::try_from(self.len).ok().filter(|&i| i != u32::MAX)?;
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(node),
            last => {
                // An unreserved first chunk grows (small pickles stay
                // small); later ones are allocated whole, never to move.
                let mut chunk = if last.is_none() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(node);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        Some(NodeId(id))
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Node<'a>> {
        let i = id.index();
        self.chunks
            .get_mut(i >> CHUNK_BITS)?
            .get_mut(i & (CHUNK - 1))
    }

    /// The node with this id, or `None` for an id from another graph.
    #[must_use]
    #[inline]
    pub fn get(&self, id: NodeId) -> Option<&Node<'a>> {
        let i = id.index();
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// The kind of the node with this id.
    #[must_use]
    #[inline]
    pub fn kind(&self, id: NodeId) -> Option<&NodeKind<'a>> {
        self.get(id).map(Node::kind)
    }

    /// All nodes in creation order.
    pub fn iter(&self) -> Nodes<'_, 'a> {
        Nodes {
            chunks: self.chunks.iter(),
            current: [].iter(),
            next: 0,
            remaining: self.len,
        }
    }

    /// All events in stream order.
    #[must_use]
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Events whose target is `id`, in stream order (a linear scan; build
    /// an [`EventIndex`] to look up many nodes).
    pub fn events_of(&self, id: NodeId) -> impl Iterator<Item = &Event> + '_ {
        self.events.iter().filter(move |e| e.target == id)
    }

    /// An index from node to its events.
    #[must_use]
    pub fn event_index(&self) -> EventIndex {
        let mut starts = vec![0u32; self.len + 1];
        for e in &self.events {
            if let Some(s) = starts.get_mut(e.target.index() + 1) {
                *s += 1;
            }
        }
        for i in 1..starts.len() {
            let prev = starts.get(i - 1).copied().unwrap_or(0);
            if let Some(s) = starts.get_mut(i) {
                *s += prev;
            }
        }
        let mut fill = starts.clone();
        let mut order = vec![0u32; self.events.len()];
        for (i, e) in self.events.iter().enumerate() {
            if let Some(slot) = fill.get_mut(e.target.index()) {
                if let Some(o) = order.get_mut(*slot as usize) {
                    *o = u32::try_from(i).unwrap_or(u32::MAX);
                }
                *slot += 1;
            }
        }
        EventIndex { starts, order }
    }

    /// Direct children of a node: items, keys and values, callables and
    /// arguments, wrapped values. Events are not included.
    pub fn children(&self, id: NodeId) -> Children<'_> {
        let Some(node) = self.get(id) else {
            return fixed([None, None, None].into_iter());
        };
        match &node.kind {
            NodeKind::Tuple(items) | NodeKind::FrozenSet(items) => {
                Children(ChildIter::Slice(items.iter()))
            }
            NodeKind::List(items) | NodeKind::Set(items) => {
                Children(ChildIter::Slice(items.iter()))
            }
            NodeKind::Dict(pairs) => Children(ChildIter::Pairs(pairs.iter(), None)),
            NodeKind::Obj { cls, args } => Children(ChildIter::Lead(Some(*cls), args.iter())),
            NodeKind::Inst { class, args } => Children(ChildIter::Lead(Some(*class), args.iter())),
            NodeKind::Reduce { callable, args } => {
                fixed([Some(*callable), Some(*args), None].into_iter())
            }
            NodeKind::NewObj { cls, args, kwargs } => {
                fixed([Some(*cls), Some(*args), *kwargs].into_iter())
            }
            NodeKind::PersId { pid } => fixed([Some(*pid), None, None].into_iter()),
            NodeKind::ReadOnly { inner } => fixed([Some(*inner), None, None].into_iter()),
            NodeKind::InlineData { wrapper, .. } => fixed([Some(*wrapper), None, None].into_iter()),
            NodeKind::NestedPickle { wrapper, root, .. } => {
                fixed([Some(*wrapper), Some(*root), None].into_iter())
            }
            NodeKind::Global(g) => match g.operands {
                Some((m, n)) => fixed([Some(m), Some(n), None].into_iter()),
                None => fixed([None, None, None].into_iter()),
            },
            _ => fixed([None, None, None].into_iter()),
        }
    }
}

/// Iterator over `(id, node)` in creation order ([`Graph::iter`]).
#[derive(Debug, Clone)]
pub struct Nodes<'g, 'a> {
    chunks: std::slice::Iter<'g, Vec<Node<'a>>>,
    current: std::slice::Iter<'g, Node<'a>>,
    next: u32,
    remaining: usize,
}

impl<'g, 'a> Iterator for Nodes<'g, 'a> {
    type Item = (NodeId, &'g Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(node) = self.current.next() {
                let id = NodeId(self.next);
                self.next = self.next.saturating_add(1);
                self.remaining = self.remaining.saturating_sub(1);
                return Some((id, node));
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Nodes<'_, '_> {}

fn fixed<'g>(edges: std::array::IntoIter<Option<NodeId>, 3>) -> Children<'g> {
    Children(ChildIter::Fixed(edges))
}

/// Node → events lookup built by [`Graph::event_index`].
#[derive(Debug, Clone)]
pub struct EventIndex {
    starts: Vec<u32>,
    order: Vec<u32>,
}

impl EventIndex {
    /// Indices into [`Graph::events`] of the events targeting `id`, in order.
    #[must_use]
    pub fn of(&self, id: NodeId) -> &[u32] {
        let (Some(&a), Some(&b)) = (self.starts.get(id.index()), self.starts.get(id.index() + 1))
        else {
            return &[];
        };
        self.order.get(a as usize..b as usize).unwrap_or_default()
    }
}

/// Iterator over the direct children of a node ([`Graph::children`]).
#[derive(Debug, Clone)]
pub struct Children<'g>(ChildIter<'g>);

#[derive(Debug, Clone)]
enum ChildIter<'g> {
    /// Items of a sequence.
    Slice(std::slice::Iter<'g, NodeId>),
    /// Keys and values of a dict.
    Pairs(std::slice::Iter<'g, (NodeId, NodeId)>, Option<NodeId>),
    /// A leading node, then items.
    Lead(Option<NodeId>, std::slice::Iter<'g, NodeId>),
    /// Up to three fixed edges.
    Fixed(std::array::IntoIter<Option<NodeId>, 3>),
}

impl Iterator for Children<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        match &mut self.0 {
            ChildIter::Slice(it) => it.next().copied(),
            ChildIter::Pairs(it, pending) => {
                if let Some(v) = pending.take() {
                    return Some(v);
                }
                let (k, v) = it.next()?;
                *pending = Some(*v);
                Some(*k)
            }
            ChildIter::Lead(lead, it) => lead.take().or_else(|| it.next().copied()),
            ChildIter::Fixed(it) => it.by_ref().flatten().next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind<'static>) -> Node<'static> {
        Node {
            kind,
            offset: 0,
            opcode: Opcode::NONE,
            depth: 0,
        }
    }

    #[test]
    fn children_and_events() {
        let mut g = Graph::default();
        g.push(node(NodeKind::None)); // 0
        g.push(node(NodeKind::Int(1))); // 1
        g.push(node(NodeKind::Dict(vec![(NodeId(0), NodeId(1))]))); // 2
        g.push(node(NodeKind::Obj {
            cls: NodeId(0),
            args: vec![NodeId(1), NodeId(2)].into(),
        })); // 3
        g.push(node(NodeKind::Tuple(vec![NodeId(3), NodeId(3)].into()))); // 4
        assert_eq!(
            g.children(NodeId(2)).collect::<Vec<_>>(),
            [NodeId(0), NodeId(1)]
        );
        assert_eq!(
            g.children(NodeId(3)).collect::<Vec<_>>(),
            [NodeId(0), NodeId(1), NodeId(2)]
        );
        assert_eq!(g.children(NodeId(4)).count(), 2);
        assert_eq!(g.children(NodeId(99)).count(), 0);
        g.events.push(Event {
            target: NodeId(3),
            offset: 9,
            opcode: Opcode::BUILD,
            kind: EventKind::Build { state: NodeId(2) },
        });
        g.events.push(Event {
            target: NodeId(1),
            offset: 10,
            opcode: Opcode::APPEND,
            kind: EventKind::Append { item: NodeId(0) },
        });
        g.events.push(Event {
            target: NodeId(3),
            offset: 11,
            opcode: Opcode::BUILD,
            kind: EventKind::Build { state: NodeId(0) },
        });
        let idx = g.event_index();
        assert_eq!(idx.of(NodeId(3)), &[0, 2]);
        assert_eq!(idx.of(NodeId(1)), &[1]);
        assert!(idx.of(NodeId(0)).is_empty());
        assert!(idx.of(NodeId(1000)).is_empty());
        assert_eq!(g.events_of(NodeId(3)).count(), 2);
    }

    #[test]
    fn ids_survive_chunk_boundaries() {
        let mut g = Graph::default();
        let n = 3 * CHUNK + 5;
        for i in 0..n {
            let id = g.push(node(NodeKind::Int(i64::try_from(i).unwrap_or(0))));
            assert_eq!(id.map(NodeId::index), Some(i));
        }
        assert_eq!(g.len(), n);
        assert_eq!(g.iter().len(), n);
        for (id, node) in g.iter() {
            assert_eq!(node.as_i64(), i64::try_from(id.index()).ok());
        }
        let last = NodeId(u32::try_from(n - 1).unwrap_or(0));
        assert!(g.get(last).is_some());
        assert!(g.get_mut(last).is_some());
        assert!(g.get(NodeId(u32::try_from(n).unwrap_or(0))).is_none());
    }
}
