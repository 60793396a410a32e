//! The value graph a pickle describes, as an arena of nodes plus leaves.
//!
//! This module owns [`Graph`], [`Node`], [`NodeKind`] and [`Event`]. Values
//! are addressed by [`NodeId`]s, never by references, so shared values
//! (memo `GET`s), cycles (a list appended to itself) and billion-laughs
//! DAGs cost one id per reference and are never expanded. Nothing here
//! recurses: [`Graph::children`] yields direct edges for callers to walk
//! with their own explicit stack and visited set.
//!
//! Each value records the byte offset and opcode that created it. Calls
//! (`REDUCE`, `NEWOBJ`, `OBJ`, `INST`) are nodes; things done *to* an
//! existing object (`BUILD`, and `APPEND(S)`/`SETITEM(S)`/`ADDITEMS` on a
//! value that is not the matching literal container) are [`Event`]s, in
//! stream order, so an analyser sees every one of them.
//!
//! Most values of a large stream are scalars (`str` keys, ints, floats,
//! raw bytes) written by binary opcodes. Those are *leaves*: the id itself
//! holds the offset of the opcode that pushed it, nothing is stored, and
//! [`Graph::get`] decodes the value from the input when asked. This keeps
//! a vocabulary of a million strings from costing a million stored nodes.
//! [`Graph::get`] and [`Graph::kind`] therefore return small views by
//! value, borrowed from the graph and the input.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::thread::LocalKey;

use crate::compat::canonicalize;
use crate::opcodes::Opcode;

/// Ids from this bit up are leaves: the low bits are the offset of the
/// opcode that pushed the value.
const LEAF_BIT: u32 = 1 << 31;

/// Index of a value in a [`Graph`]: a stored node or a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// A stored node's position in [`Graph::iter`] order (creation
    /// order); for a leaf, a number from 2^31 up, unique in the graph.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Whether this is a leaf (a scalar decoded from the input on demand,
    /// not listed by [`Graph::iter`]).
    #[must_use]
    #[inline]
    pub const fn is_leaf(self) -> bool {
        self.0 >= LEAF_BIT
    }

    /// Whether every id of `ids` is a leaf, in one pass without branches
    /// (a dict literal's keys and values, usually).
    #[inline]
    pub(crate) fn all_leaves(ids: &[NodeId]) -> bool {
        ids.iter().fold(LEAF_BIT, |all, id| all & id.0) == LEAF_BIT
    }

    /// The leaf for the opcode at `offset`, if the offset fits.
    #[inline]
    pub(crate) fn leaf(offset: usize) -> Option<NodeId> {
        u32::try_from(offset)
            .ok()
            .filter(|&o| o < LEAF_BIT)
            .map(|o| NodeId(o | LEAF_BIT))
    }

    /// The offset of a leaf's opcode.
    pub(crate) const fn leaf_offset(self) -> usize {
        (self.0 & !LEAF_BIT) as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether the values `opcode` pushes are leaves: binary scalars whose
/// value the opcode's bytes alone determine, payloads borrowed from the input.
#[must_use]
#[inline]
pub(crate) const fn is_leaf_opcode(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::NONE
            | Opcode::NEWTRUE
            | Opcode::NEWFALSE
            | Opcode::BININT
            | Opcode::BININT1
            | Opcode::BININT2
            | Opcode::BINFLOAT
            | Opcode::SHORT_BINUNICODE
            | Opcode::BINUNICODE
            | Opcode::BINUNICODE8
            | Opcode::SHORT_BINBYTES
            | Opcode::BINBYTES
            | Opcode::BINBYTES8
            | Opcode::BYTEARRAY8
            | Opcode::SHORT_BINSTRING
            | Opcode::BINSTRING
    )
}

/// The first `n` bytes of `rest` (`n` is 1, 2, 4 or 8: the widths of
/// pickle's lengths and ints) as a little-endian number, in one load.
#[inline]
fn le_word(rest: &[u8], n: usize) -> Option<u64> {
    Some(match n {
        1 => u64::from(*rest.first()?),
        2 => u64::from(u16::from_le_bytes(*rest.first_chunk::<2>()?)),
        4 => u64::from(u32::from_le_bytes(*rest.first_chunk::<4>()?)),
        8 => u64::from_le_bytes(*rest.first_chunk::<8>()?),
        _ => return None,
    })
}

/// A payload after a `head`-byte little-endian length at the start of `rest`.
#[inline]
fn leaf_payload(rest: &[u8], head: usize) -> Option<&[u8]> {
    let len = usize::try_from(le_word(rest, head)?).ok()?;
    rest.get(head..head.checked_add(len)?)
}

/// Decode the leaf pushed by the opcode at `offset`. The parse already
/// read and checked it (frame, limits, UTF-8), so this only re-slices; it
/// still checks every bound and gives `None` rather than trust the id.
#[inline]
fn decode_leaf(data: &[u8], offset: usize) -> Option<(NodeKind<'_>, Opcode)> {
    use Opcode as O;
    let (&byte, rest) = data.get(offset..)?.split_first()?;
    let word = |n: usize| le_word(rest, n);
    let payload = |head: usize| leaf_payload(rest, head);
    let text = |head: usize| std::str::from_utf8(payload(head)?).ok();
    let (kind, opcode) = match byte {
        b'N' => (NodeKind::None, O::NONE),
        0x88 => (NodeKind::Bool(true), O::NEWTRUE),
        0x89 => (NodeKind::Bool(false), O::NEWFALSE),
        b'K' => (NodeKind::Int(i64::from(*rest.first()?)), O::BININT1),
        b'M' => (NodeKind::Int(i64::try_from(word(2)?).ok()?), O::BININT2),
        b'J' => {
            let v = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            (NodeKind::Int(i64::from(v)), O::BININT)
        }
        b'G' => {
            let v = f64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            (NodeKind::Float(v), O::BINFLOAT)
        }
        0x8c => (NodeKind::Str(text(1)?), O::SHORT_BINUNICODE),
        b'X' => (NodeKind::Str(text(4)?), O::BINUNICODE),
        0x8d => (NodeKind::Str(text(8)?), O::BINUNICODE8),
        b'C' => (NodeKind::Bytes(payload(1)?), O::SHORT_BINBYTES),
        b'B' => (NodeKind::Bytes(payload(4)?), O::BINBYTES),
        0x8e => (NodeKind::Bytes(payload(8)?), O::BINBYTES8),
        0x96 => (NodeKind::ByteArray(payload(8)?), O::BYTEARRAY8),
        b'U' => (NodeKind::LegacyStr(payload(1)?), O::SHORT_BINSTRING),
        // A negative length never parsed, so the length is below 2^31.
        b'T' => (NodeKind::LegacyStr(payload(4)?), O::BINSTRING),
        _ => return None,
    };
    Some((kind, opcode))
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

    /// Whether [`Global::dotted`] is `dotted`, without allocating.
    #[must_use]
    pub fn dotted_is(&self, dotted: &str) -> bool {
        let (m, n) = self.canonical();
        dotted.len() == m.len() + 1 + n.len()
            && dotted.starts_with(m)
            && dotted.ends_with(n)
            && dotted.as_bytes().get(m.len()) == Some(&b'.')
    }
}

/// What a node is: a view borrowed from the [`Graph`] (and the input).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum NodeKind<'g> {
    /// `None`.
    None,
    /// `True` / `False` (`NEWTRUE`, `NEWFALSE`, `INT 01`/`00`).
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// An integer that does not: minimal little-endian two's complement.
    BigInt(&'g [u8]),
    /// A float.
    Float(f64),
    /// A Python 3 `str`.
    Str(&'g str),
    /// `bytes`.
    Bytes(&'g [u8]),
    /// `bytearray` (`BYTEARRAY8`).
    ByteArray(&'g [u8]),
    /// A Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`): `str` or
    /// `bytes` depending on the unpickler's `encoding`.
    LegacyStr(&'g [u8]),
    /// A tuple.
    Tuple(&'g [NodeId]),
    /// A literal list with every item later appended to it.
    List(&'g [NodeId]),
    /// A literal dict with every pair later set on it, in order (keys may repeat).
    Dict(&'g [(NodeId, NodeId)]),
    /// A literal set with every item later added to it.
    Set(&'g [NodeId]),
    /// A frozenset.
    FrozenSet(&'g [NodeId]),
    /// A global reference.
    Global(&'g Global<'g>),
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
        args: &'g [NodeId],
    },
    /// `INST`: a class by name called with the items above the mark.
    Inst {
        /// The [`NodeKind::Global`] node `INST` named.
        class: NodeId,
        /// The arguments.
        args: &'g [NodeId],
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
    pub const fn name(self) -> &'static str {
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

/// Items of an immutable sequence (tuple, frozenset, call arguments):
/// a range of [`Graph`]'s shared item pool, so a tuple costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Items {
    start: u32,
    len: u32,
}

impl Items {
    pub(crate) fn len(self) -> usize {
        self.len as usize
    }

    fn of<T>(self, pool: &[T]) -> &[T] {
        let start = self.start as usize;
        pool.get(start..start.saturating_add(self.len as usize))
            .unwrap_or_default()
    }
}

/// Raw data after a `BUILD` ([`NodeKind::InlineData`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inline {
    pub(crate) wrapper: NodeId,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// A nested pickle ([`NodeKind::NestedPickle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nested {
    pub(crate) wrapper: NodeId,
    pub(crate) root: NodeId,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// How a [`NodeKind`] is stored: 16 bytes, payloads that are rare in
/// stored nodes (decoded text, big ints, joblib data) boxed, immutable
/// sequences in the item pool, growing containers behind one pointer.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::box_collection,
    reason = "one pointer keeps `Kind` at 16 bytes; literal lists and dicts are few"
)]
pub(crate) enum Kind<'a> {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Box<Cow<'a, [u8]>>),
    Float(f64),
    Str(Box<Cow<'a, str>>),
    Bytes(Box<Cow<'a, [u8]>>),
    ByteArray(Box<Cow<'a, [u8]>>),
    LegacyStr(Box<Cow<'a, [u8]>>),
    Tuple(Items),
    List(Box<Vec<NodeId>>),
    Dict(Box<Vec<(NodeId, NodeId)>>),
    /// A dict literal made whole by the fast path (a joblib wrapper's
    /// state): its pairs in the graph's pair pool, no allocation of its
    /// own; it becomes a [`Kind::Dict`] if it ever grows.
    PooledDict(Items),
    Set(Box<Vec<NodeId>>),
    FrozenSet(Items),
    Global(Box<Global<'a>>),
    Reduce {
        callable: NodeId,
        args: NodeId,
    },
    NewObj {
        cls: NodeId,
        args: NodeId,
    },
    NewObjEx {
        cls: NodeId,
        args: NodeId,
        kwargs: NodeId,
    },
    Obj {
        cls: NodeId,
        args: Items,
    },
    Inst {
        class: NodeId,
        args: Items,
    },
    PersId {
        pid: NodeId,
    },
    Ext {
        code: i32,
    },
    Buffer {
        index: u64,
    },
    ReadOnly {
        inner: NodeId,
    },
    /// An index into the graph's table of inline data (no box per array).
    InlineData(u32),
    NestedPickle(Box<Nested>),
}

const _: () = assert!(std::mem::size_of::<Kind<'static>>() == 16);

impl<'a> Kind<'a> {
    /// Whether dropping this kind frees memory (a box of its own). Every
    /// variant is named, so a new one must say (the graph's drop forgets
    /// the others).
    #[inline(always)]
    const fn owns_heap(&self) -> bool {
        match self {
            Kind::BigInt(_)
            | Kind::Str(_)
            | Kind::Bytes(_)
            | Kind::ByteArray(_)
            | Kind::LegacyStr(_)
            | Kind::List(_)
            | Kind::Dict(_)
            | Kind::Set(_)
            | Kind::Global(_)
            | Kind::NestedPickle(_) => true,
            Kind::None
            | Kind::Bool(_)
            | Kind::Int(_)
            | Kind::Float(_)
            | Kind::Tuple(_)
            | Kind::PooledDict(_)
            | Kind::FrozenSet(_)
            | Kind::Reduce { .. }
            | Kind::NewObj { .. }
            | Kind::NewObjEx { .. }
            | Kind::Obj { .. }
            | Kind::Inst { .. }
            | Kind::PersId { .. }
            | Kind::Ext { .. }
            | Kind::Buffer { .. }
            | Kind::ReadOnly { .. }
            | Kind::InlineData(_) => false,
        }
    }

    /// The public view (`side` holds the graph's item pool and inline data).
    #[inline(always)]
    fn view<'s>(&'s self, side: Side<'s>) -> NodeKind<'s> {
        let pool = side.pool;
        match self {
            Kind::None => NodeKind::None,
            Kind::Bool(b) => NodeKind::Bool(*b),
            Kind::Int(v) => NodeKind::Int(*v),
            Kind::BigInt(b) => NodeKind::BigInt(b),
            Kind::Float(v) => NodeKind::Float(*v),
            Kind::Str(s) => NodeKind::Str(s),
            Kind::Bytes(b) => NodeKind::Bytes(b),
            Kind::ByteArray(b) => NodeKind::ByteArray(b),
            Kind::LegacyStr(b) => NodeKind::LegacyStr(b),
            Kind::Tuple(items) => NodeKind::Tuple(items.of(pool)),
            Kind::List(items) => NodeKind::List(items),
            Kind::Dict(pairs) => NodeKind::Dict(pairs),
            Kind::PooledDict(pairs) => NodeKind::Dict(pairs.of(side.pairs)),
            Kind::Set(items) => NodeKind::Set(items),
            Kind::FrozenSet(items) => NodeKind::FrozenSet(items.of(pool)),
            Kind::Global(g) => NodeKind::Global(g),
            &Kind::Reduce { callable, args } => NodeKind::Reduce { callable, args },
            &Kind::NewObj { cls, args } => NodeKind::NewObj {
                cls,
                args,
                kwargs: None,
            },
            &Kind::NewObjEx { cls, args, kwargs } => NodeKind::NewObj {
                cls,
                args,
                kwargs: Some(kwargs),
            },
            &Kind::Obj { cls, args } => NodeKind::Obj {
                cls,
                args: args.of(pool),
            },
            &Kind::Inst { class, args } => NodeKind::Inst {
                class,
                args: args.of(pool),
            },
            &Kind::PersId { pid } => NodeKind::PersId { pid },
            &Kind::Ext { code } => NodeKind::Ext { code },
            &Kind::Buffer { index } => NodeKind::Buffer { index },
            &Kind::ReadOnly { inner } => NodeKind::ReadOnly { inner },
            Kind::InlineData(i) => {
                // Every index was made by `Graph::push_inline`.
                let d = side.inline.get(*i as usize).copied().unwrap_or(Inline {
                    wrapper: NodeId(0),
                    offset: 0,
                    len: 0,
                });
                NodeKind::InlineData {
                    wrapper: d.wrapper,
                    offset: d.offset,
                    len: d.len,
                }
            }
            Kind::NestedPickle(n) => NodeKind::NestedPickle {
                wrapper: n.wrapper,
                root: n.root,
                start: n.start,
                end: n.end,
            },
        }
    }
}

/// What a stored node's view reads besides the node: the item pool and
/// the inline data table.
#[derive(Debug, Clone, Copy)]
struct Side<'s> {
    pool: &'s [NodeId],
    pairs: &'s [(NodeId, NodeId)],
    inline: &'s [Inline],
}

/// A stored node: its kind, and which opcode at which offset created it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored<'a> {
    pub(crate) kind: Kind<'a>,
    pub(crate) offset: u64,
    pub(crate) opcode: Opcode,
    pub(crate) depth: u32,
}

const _: () = assert!(std::mem::size_of::<Stored<'static>>() == 32);

/// One value: what it is, and which opcode at which offset created it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node<'g> {
    kind: NodeKind<'g>,
    offset: u64,
    opcode: Opcode,
    depth: u32,
}

impl<'g> Node<'g> {
    /// What the value is.
    #[must_use]
    #[inline]
    pub fn kind(self) -> NodeKind<'g> {
        self.kind
    }

    /// Offset of the opcode that created it.
    #[must_use]
    pub fn offset(self) -> u64 {
        self.offset
    }

    /// The opcode that created it.
    #[must_use]
    pub fn opcode(self) -> Opcode {
        self.opcode
    }

    /// Nesting depth as measured while parsing: 0 for scalars, one more
    /// than its deepest child (updated when the node itself is mutated,
    /// not when a child is).
    #[must_use]
    #[inline]
    pub fn depth(self) -> u32 {
        self.depth
    }

    /// The text if this is a [`NodeKind::Str`].
    #[must_use]
    pub fn as_str(self) -> Option<&'g str> {
        match self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value if this is a [`NodeKind::Int`] (or a bool, as Python does).
    #[must_use]
    pub fn as_i64(self) -> Option<i64> {
        match self.kind {
            NodeKind::Int(v) => Some(v),
            NodeKind::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// The payload of `bytes`, `bytearray` or a Python 2 `str`.
    #[must_use]
    pub fn as_bytes(self) -> Option<&'g [u8]> {
        match self.kind {
            NodeKind::Bytes(b) | NodeKind::ByteArray(b) | NodeKind::LegacyStr(b) => Some(b),
            _ => None,
        }
    }

    /// The items if this is a tuple.
    #[must_use]
    pub fn as_tuple(self) -> Option<&'g [NodeId]> {
        match self.kind {
            NodeKind::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The global if this is a [`NodeKind::Global`].
    #[must_use]
    pub fn as_global(self) -> Option<&'g Global<'g>> {
        match self.kind {
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

/// A set of the [`NodeId`]s of one graph, cheap to fill and to clear: a
/// bit per stored node and one per leaf offset (so at most a bit per input
/// byte), grown as ids come; [`NodeSet::clear`] resets only the words set,
/// so one set can serve many small walks.
#[derive(Debug, Clone, Default)]
pub struct NodeSet {
    nodes: Bits,
    leaves: Bits,
}

impl NodeSet {
    /// Adds `id`; whether it was not in the set.
    #[inline]
    pub fn insert(&mut self, id: NodeId) -> bool {
        if id.is_leaf() {
            self.leaves.insert(id.leaf_offset())
        } else {
            self.nodes.insert(id.index())
        }
    }

    /// Whether `id` is in the set.
    #[must_use]
    #[inline]
    pub fn contains(&self, id: NodeId) -> bool {
        if id.is_leaf() {
            self.leaves.contains(id.leaf_offset())
        } else {
            self.nodes.contains(id.index())
        }
    }

    /// Empties the set (keeping its memory).
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.leaves.clear();
    }
}

#[derive(Debug, Clone, Default)]
struct Bits {
    words: Vec<u64>,
    /// The words with a bit set.
    dirty: Vec<usize>,
}

impl Bits {
    #[inline]
    fn insert(&mut self, i: usize) -> bool {
        let word = i / 64;
        let bit = 1u64 << (i % 64);
        if word >= self.words.len() {
            let len = word
                .saturating_add(1)
                .max(self.words.len().saturating_mul(2));
            self.words.resize(len, 0);
        }
        let Some(w) = self.words.get_mut(word) else {
            return true;
        };
        if *w & bit != 0 {
            return false;
        }
        if *w == 0 {
            self.dirty.push(word);
        }
        *w |= bit;
        true
    }

    #[inline]
    fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn clear(&mut self) {
        for &word in &self.dirty {
            if let Some(w) = self.words.get_mut(word) {
                *w = 0;
            }
        }
        self.dirty.clear();
    }
}

/// Nodes per arena chunk: chunks never reallocate once full, so a large
/// graph grows without copying (or doubling) the whole arena.
const CHUNK_BITS: usize = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Most emptied chunks a thread keeps for its next graphs (512 KiB each).
const SPARE_CHUNKS: usize = 32;

thread_local! {
    /// Full-size chunks of the graphs this thread dropped, emptied: the
    /// next graph fills memory that is mapped already instead of faulting
    /// in fresh pages for every node (a scan of a million nodes otherwise
    /// pays thousands of page faults, even after `malloc_trim`).
    static SPARE: RefCell<Vec<Vec<Stored<'static>>>> = const { RefCell::new(Vec::new()) };
}

/// Most items an emptied vector of ids (the item pool, a memo) may hold
/// to be kept for the thread's next parse (4 MiB of ids).
const SPARE_IDS: usize = 1 << 20;

thread_local! {
    /// The item pool of the last graph this thread dropped, emptied.
    static SPARE_POOL: RefCell<Vec<NodeId>> = const { RefCell::new(Vec::new()) };
    /// The memo of the last pickle this thread parsed, emptied.
    pub(crate) static SPARE_MEMO: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// This thread's spare vector in `slot` if it has room for `items`, else
/// a new empty one (growing a spare would copy its stale bytes, touching
/// the very pages it saves).
pub(crate) fn take_spare<T: 'static>(
    slot: &'static LocalKey<RefCell<Vec<T>>>,
    items: usize,
) -> Vec<T> {
    slot.try_with(|spare| {
        let mut spare = spare.try_borrow_mut().ok()?;
        (spare.capacity() >= items).then(|| std::mem::take(&mut *spare))
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Keep `items`, emptied, as this thread's spare in `slot`, unless it is
/// larger than [`SPARE_IDS`] or smaller than the spare there.
pub(crate) fn keep_spare<T: 'static>(slot: &'static LocalKey<RefCell<Vec<T>>>, mut items: Vec<T>) {
    if items.capacity() > SPARE_IDS {
        return;
    }
    items.clear();
    let _ = slot.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut()
            && spare.capacity() < items.capacity()
        {
            *spare = items;
        }
    });
}

/// An empty chunk of [`CHUNK`] nodes: a spare one if this thread has one.
fn new_chunk<'a>() -> Vec<Stored<'a>> {
    SPARE
        .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(CHUNK))
}

/// Keep an emptied full-size chunk for this thread's next graph, within
/// [`SPARE_CHUNKS`]. Its nodes borrowed the dropped graph's input, so it
/// is made a chunk of no borrow first: collecting its (no) items in place
/// keeps the allocation.
fn keep_chunk(chunk: Vec<Stored<'_>>) {
    if !chunk.is_empty() || chunk.capacity() != CHUNK {
        return;
    }
    // Nothing to map (the chunk is empty): only the type changes.
    let chunk: Vec<Stored<'static>> = chunk
        .into_iter()
        .map(|_| Stored {
            kind: Kind::None,
            offset: 0,
            opcode: Opcode::NONE,
            depth: 0,
        })
        .collect();
    if chunk.capacity() != CHUNK {
        return;
    }
    let _ = SPARE.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut()
            && spare.len() < SPARE_CHUNKS
        {
            spare.push(chunk);
        }
    });
}

/// The arena: every node, leaf and event of one parse (nested pickles included).
#[derive(Clone, Default)]
pub struct Graph<'a> {
    /// The input, which leaves are decoded from.
    data: &'a [u8],
    chunks: Vec<Vec<Stored<'a>>>,
    len: usize,
    /// The items of every tuple, frozenset and `OBJ`/`INST` argument list.
    pool: Vec<NodeId>,
    /// The pairs of every [`Kind::PooledDict`].
    pairs: Vec<(NodeId, NodeId)>,
    /// What each [`Kind::InlineData`] node stands for.
    inline: Vec<Inline>,
    leaves: usize,
    /// Depths of the (rare) leaves that were mutated, as nodes record theirs.
    leaf_depths: BTreeMap<NodeId, u32>,
    /// The [`NodeKind::Global`] nodes, in creation order.
    pub(crate) globals: Vec<NodeId>,
    pub(crate) events: Vec<Event>,
}

/// Most nodes own nothing on the heap (tuples, calls, ints and the like),
/// so a graph of a million nodes drops them by looking at each kind here
/// rather than through a call of the generic drop per node; full-size
/// chunks are kept for the thread's next graph ([`keep_chunk`]).
impl Drop for Graph<'_> {
    fn drop(&mut self) {
        for mut chunk in std::mem::take(&mut self.chunks) {
            for node in chunk.drain(..) {
                if node.kind.owns_heap() {
                    drop(node);
                } else {
                    std::mem::forget(node);
                }
            }
            keep_chunk(chunk);
        }
        keep_spare(&SPARE_POOL, std::mem::take(&mut self.pool));
    }
}

impl std::fmt::Debug for Graph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("nodes", &self.iter().map(|(_, n)| n).collect::<Vec<_>>())
            .field("pool", &self.pool)
            .field("inline", &self.inline)
            .field("leaves", &self.leaves)
            .field("leaf_depths", &self.leaf_depths)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<'a> Graph<'a> {
    /// An empty graph over `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        let mut graph = Graph::default();
        graph.data = data;
        graph
    }

    /// Number of stored nodes (what [`Graph::iter`] yields).
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no stored nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of leaves created (each push of a leaf scalar counts once).
    #[must_use]
    #[inline]
    pub fn leaves(&self) -> usize {
        self.leaves
    }

    /// Reserve room for about `nodes` nodes in the first chunk (at most a
    /// chunk), so a mid-sized graph does not grow it by copying. Untouched
    /// reserved memory costs no pages.
    pub(crate) fn reserve_first(&mut self, nodes: usize) {
        if self.chunks.is_empty() && nodes > 0 {
            self.chunks.push(if nodes >= CHUNK {
                new_chunk()
            } else {
                Vec::with_capacity(nodes)
            });
        }
    }

    /// Reserve room for `items` pooled tuple items (in the thread's spare
    /// pool if it has one).
    pub(crate) fn reserve_pool(&mut self, items: usize) {
        if self.pool.capacity() == 0 {
            self.pool = take_spare(&SPARE_POOL, items);
        }
        self.pool.reserve(items);
    }

    /// Append a node; the caller has checked the node limit.
    #[inline(always)]
    pub(crate) fn push(&mut self, node: Stored<'a>) -> Option<NodeId> {
        let id = u32::try_from(self.len).ok().filter(|&i| i < LEAF_BIT)?;
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(node),
            last => {
                // An unreserved first chunk grows (small pickles stay
                // small); later ones are allocated whole, never to move.
                let mut chunk = if last.is_none() {
                    Vec::new()
                } else {
                    new_chunk()
                };
                chunk.push(node);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        Some(NodeId(id))
    }

    /// Append `N` nodes at once, the first with the id `first` (the
    /// caller has checked the node limit and made the ids): `None`, and
    /// nothing appended, if `first` is not the next id or the last would
    /// not fit an id.
    #[inline]
    pub(crate) fn push_all<const N: usize>(
        &mut self,
        first: NodeId,
        nodes: [Stored<'a>; N],
    ) -> Option<()> {
        let last = self.len.checked_add(N)?;
        if first.index() != self.len
            || u32::try_from(last)
                .ok()
                .filter(|&i| i <= LEAF_BIT)
                .is_none()
        {
            return None;
        }
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len().saturating_add(N) <= CHUNK => chunk.extend(nodes),
            _ => {
                for node in nodes {
                    self.push(node)?;
                }
                return Some(());
            }
        }
        self.len = last;
        Some(())
    }

    /// Store the items of an immutable sequence; `None` if the pool is full
    /// (2^32 items, far beyond any graph-bytes limit).
    #[inline]
    pub(crate) fn intern(&mut self, items: &[NodeId]) -> Option<Items> {
        let start = u32::try_from(self.pool.len()).ok()?;
        let len = u32::try_from(items.len()).ok()?;
        start.checked_add(len)?;
        self.pool.extend_from_slice(items);
        Some(Items { start, len })
    }

    /// What views of stored nodes read besides the node.
    #[inline(always)]
    fn side(&self) -> Side<'_> {
        Side {
            pool: &self.pool,
            pairs: &self.pairs,
            inline: &self.inline,
        }
    }

    /// Store the pairs of a dict literal made whole (see
    /// [`Kind::PooledDict`]); `None` if the pair pool is full.
    #[inline]
    pub(crate) fn intern_pairs(&mut self, pairs: &[(NodeId, NodeId)]) -> Option<Items> {
        let start = u32::try_from(self.pairs.len()).ok()?;
        let len = u32::try_from(pairs.len()).ok()?;
        start.checked_add(len)?;
        self.pairs.extend_from_slice(pairs);
        Some(Items { start, len })
    }

    /// Make a [`Kind::PooledDict`] a [`Kind::Dict`] of the same pairs,
    /// before it grows in place (any other node is left as it is).
    pub(crate) fn unpool(&mut self, id: NodeId) {
        let pairs = match self.stored(id).map(|n| &n.kind) {
            Some(Kind::PooledDict(items)) => items.of(&self.pairs).to_vec(),
            _ => return,
        };
        if let Some(node) = self.get_mut(id) {
            node.kind = Kind::Dict(Box::new(pairs));
        }
    }

    /// Add an entry to the inline data table, for a [`Kind::InlineData`]
    /// node (`None` if the table is full: never before the node limit).
    pub(crate) fn push_inline(&mut self, data: Inline) -> Option<u32> {
        let i = u32::try_from(self.inline.len()).ok()?;
        self.inline.push(data);
        Some(i)
    }

    /// Whether `n` more items fit the pool (as [`Graph::intern`] needs).
    #[inline]
    pub(crate) fn pool_room(&self, n: usize) -> bool {
        u32::try_from(self.pool.len())
            .ok()
            .zip(u32::try_from(n).ok())
            .is_some_and(|(start, n)| start.checked_add(n).is_some())
    }

    /// Store two item lists one after the other: both, or (if the pool is
    /// full) neither.
    #[inline]
    pub(crate) fn intern_two(&mut self, a: &[NodeId], b: &[NodeId]) -> Option<(Items, Items)> {
        let start = u32::try_from(self.pool.len()).ok()?;
        let a_len = u32::try_from(a.len()).ok()?;
        let b_len = u32::try_from(b.len()).ok()?;
        let b_start = start.checked_add(a_len)?;
        b_start.checked_add(b_len)?;
        self.pool.reserve(a.len().saturating_add(b.len()));
        self.pool.extend_from_slice(a);
        self.pool.extend_from_slice(b);
        Some((
            Items { start, len: a_len },
            Items {
                start: b_start,
                len: b_len,
            },
        ))
    }

    /// Count a leaf for the opcode at `offset`: `None` if the offset is
    /// too large for a leaf id (the caller stores a node instead).
    #[inline]
    pub(crate) fn push_leaf(&mut self, offset: usize) -> Option<NodeId> {
        let id = NodeId::leaf(offset)?;
        self.leaves += 1;
        Some(id)
    }

    /// Count `n` leaves whose ids the caller made with [`NodeId::leaf`].
    #[inline]
    pub(crate) fn add_leaves(&mut self, n: u64) {
        self.leaves = self
            .leaves
            .saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Stored<'a>> {
        let i = id.index();
        self.chunks
            .get_mut(i >> CHUNK_BITS)?
            .get_mut(i & (CHUNK - 1))
    }

    #[inline]
    fn stored(&self, id: NodeId) -> Option<&Stored<'a>> {
        let i = id.index();
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// The depth of a value (as [`Node::depth`]), 0 if unknown.
    #[inline(always)]
    pub(crate) fn depth(&self, id: NodeId) -> u32 {
        if id.is_leaf() {
            if self.leaf_depths.is_empty() {
                return 0;
            }
            return self.leaf_depths.get(&id).copied().unwrap_or(0);
        }
        self.stored(id).map_or(0, |n| n.depth)
    }

    /// Whether no leaf has a recorded depth (every leaf is at depth 0).
    #[inline]
    pub(crate) fn leaf_depths_empty(&self) -> bool {
        self.leaf_depths.is_empty()
    }

    /// Raise a value's recorded depth to at least `depth`; returns it.
    pub(crate) fn raise_depth(&mut self, id: NodeId, depth: u32) -> Option<u32> {
        if id.is_leaf() {
            let d = self.leaf_depths.entry(id).or_insert(0);
            *d = (*d).max(depth);
            return Some(*d);
        }
        let node = self.get_mut(id)?;
        node.depth = node.depth.max(depth);
        Some(node.depth)
    }

    /// The text of a `str` value, as the input or the parse holds it;
    /// else the kind's name (`"unknown"` for an id from another graph).
    pub(crate) fn text(&self, id: NodeId) -> Result<Cow<'a, str>, &'static str> {
        if id.is_leaf() {
            return match decode_leaf(self.data, id.leaf_offset()) {
                Some((NodeKind::Str(s), _)) => Ok(Cow::Borrowed(s)),
                Some((other, _)) => Err(other.name()),
                None => Err("unknown"),
            };
        }
        match self.stored(id).map(|n| &n.kind) {
            Some(Kind::Str(s)) => Ok((**s).clone()),
            Some(other) => Err(other.view(self.side()).name()),
            None => Err("unknown"),
        }
    }

    /// The UTF-8 bytes of a `str` value (what [`NodeKind::Str`] holds),
    /// without decoding them again: the parse checked every `str` it read,
    /// so comparing these bytes is comparing the text. `None` for any
    /// other value.
    #[must_use]
    #[inline]
    pub fn str_bytes(&self, id: NodeId) -> Option<&[u8]> {
        if id.is_leaf() {
            let (&byte, rest) = self.data.get(id.leaf_offset()..)?.split_first()?;
            let head = match byte {
                0x8c => 1,
                b'X' => 4,
                0x8d => 8,
                _ => return None,
            };
            return leaf_payload(rest, head);
        }
        match self.stored(id).map(|n| &n.kind) {
            Some(Kind::Str(s)) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// Whether the value is a leaf `str`, `bytes`, `bytearray` or Python 2
    /// `str` ([`NodeKind::Str`], [`NodeKind::Bytes`],
    /// [`NodeKind::ByteArray`], [`NodeKind::LegacyStr`], as [`Graph::kind`]
    /// would say), without decoding it: its payload's bounds are checked, a
    /// `str`'s text not again (as [`Graph::str_bytes`]). `false` for stored
    /// nodes (which [`Graph::kind`] tells apart cheaply) and other leaves.
    #[must_use]
    #[inline]
    pub fn is_raw_leaf(&self, id: NodeId) -> bool {
        if !id.is_leaf() {
            return false;
        }
        let Some((&byte, rest)) = self
            .data
            .get(id.leaf_offset()..)
            .and_then(<[u8]>::split_first)
        else {
            return false;
        };
        let head = match byte {
            0x8c | b'C' | b'U' => 1,
            b'X' | b'B' | b'T' => 4,
            0x8d | 0x8e | 0x96 => 8,
            _ => return false,
        };
        leaf_payload(rest, head).is_some()
    }

    /// The items of a tuple, as [`Graph::kind`] gives them in a
    /// [`NodeKind::Tuple`], without making the rest of the view; `None` for
    /// any other value.
    #[must_use]
    #[inline]
    pub fn tuple_items(&self, id: NodeId) -> Option<&[NodeId]> {
        if id.is_leaf() {
            return None;
        }
        match self.stored(id).map(|n| &n.kind) {
            Some(Kind::Tuple(items)) => Some(items.of(&self.pool)),
            _ => None,
        }
    }

    /// Whether the value is an `int` ([`NodeKind::Int`] or
    /// [`NodeKind::BigInt`], as [`Graph::kind`] would say) without decoding it.
    #[must_use]
    #[inline]
    pub fn is_int(&self, id: NodeId) -> bool {
        if id.is_leaf() {
            // Leaf ints: the binary int opcodes, with their whole argument.
            let at = id.leaf_offset();
            let len = match self.data.get(at) {
                Some(b'K') => 1,
                Some(b'M') => 2,
                Some(b'J') => 4,
                _ => return false,
            };
            return at
                .checked_add(1 + len)
                .is_some_and(|end| end <= self.data.len());
        }
        matches!(
            self.stored(id).map(|n| &n.kind),
            Some(Kind::Int(_) | Kind::BigInt(_))
        )
    }

    /// The value with this id, or `None` for an id from another graph.
    #[must_use]
    #[inline]
    pub fn get(&self, id: NodeId) -> Option<Node<'_>> {
        if id.is_leaf() {
            let offset = id.leaf_offset();
            let (kind, opcode) = decode_leaf(self.data, offset)?;
            return Some(Node {
                kind,
                offset: u64::try_from(offset).ok()?,
                opcode,
                depth: self.depth(id),
            });
        }
        self.stored(id).map(|n| Node {
            kind: n.kind.view(self.side()),
            offset: n.offset,
            opcode: n.opcode,
            depth: n.depth,
        })
    }

    /// The kind of the value with this id.
    #[must_use]
    #[inline]
    pub fn kind(&self, id: NodeId) -> Option<NodeKind<'_>> {
        if id.is_leaf() {
            return decode_leaf(self.data, id.leaf_offset()).map(|(k, _)| k);
        }
        self.stored(id).map(|n| n.kind.view(self.side()))
    }

    /// All stored nodes in creation order (leaves are not listed).
    pub fn iter(&self) -> Nodes<'_, 'a> {
        Nodes {
            side: self.side(),
            chunks: self.chunks.iter(),
            current: [].iter(),
            next: 0,
            remaining: self.len,
        }
    }

    /// The [`NodeKind::Global`] nodes, in creation order (a stream has
    /// few; this saves walking every node to find them).
    #[must_use]
    pub fn globals(&self) -> &[NodeId] {
        &self.globals
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

    /// An index from value to its events.
    #[must_use]
    pub fn event_index(&self) -> EventIndex {
        let mut starts = vec![0u32; self.len + 1];
        let mut leaf = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            if e.target.is_leaf() {
                leaf.push((e.target, u32::try_from(i).unwrap_or(u32::MAX)));
            } else if let Some(s) = starts.get_mut(e.target.index() + 1) {
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
        let mut order = vec![0u32; starts.last().map_or(0, |&n| n as usize)];
        for (i, e) in self.events.iter().enumerate() {
            if e.target.is_leaf() {
                continue;
            }
            if let Some(slot) = fill.get_mut(e.target.index()) {
                if let Some(o) = order.get_mut(*slot as usize) {
                    *o = u32::try_from(i).unwrap_or(u32::MAX);
                }
                *slot += 1;
            }
        }
        // Stable: events of one leaf stay in stream order.
        leaf.sort_by_key(|&(id, _)| id);
        let (leaf_ids, leaf_order) = leaf.into_iter().unzip();
        EventIndex {
            starts,
            order,
            leaf_ids,
            leaf_order,
        }
    }

    /// Direct children of a node: items, keys and values, callables and
    /// arguments, wrapped values. Events are not included.
    pub fn children(&self, id: NodeId) -> Children<'_> {
        // Leaves are scalars: nothing to decode to know they have no edges.
        let Some(node) = self.stored(id).filter(|_| !id.is_leaf()) else {
            return fixed([None, None, None].into_iter());
        };
        match node.kind.view(self.side()) {
            NodeKind::Tuple(items)
            | NodeKind::FrozenSet(items)
            | NodeKind::List(items)
            | NodeKind::Set(items) => Children(ChildIter::Slice(items.iter())),
            NodeKind::Dict(pairs) => Children(ChildIter::Pairs(pairs.iter(), None)),
            NodeKind::Obj { cls, args } => Children(ChildIter::Lead(Some(cls), args.iter())),
            NodeKind::Inst { class, args } => Children(ChildIter::Lead(Some(class), args.iter())),
            NodeKind::Reduce { callable, args } => {
                fixed([Some(callable), Some(args), None].into_iter())
            }
            NodeKind::NewObj { cls, args, kwargs } => {
                fixed([Some(cls), Some(args), kwargs].into_iter())
            }
            NodeKind::PersId { pid } => fixed([Some(pid), None, None].into_iter()),
            NodeKind::ReadOnly { inner } => fixed([Some(inner), None, None].into_iter()),
            NodeKind::InlineData { wrapper, .. } => fixed([Some(wrapper), None, None].into_iter()),
            NodeKind::NestedPickle { wrapper, root, .. } => {
                fixed([Some(wrapper), Some(root), None].into_iter())
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
    side: Side<'g>,
    chunks: std::slice::Iter<'g, Vec<Stored<'a>>>,
    current: std::slice::Iter<'g, Stored<'a>>,
    next: u32,
    remaining: usize,
}

impl<'g> Iterator for Nodes<'g, '_> {
    type Item = (NodeId, Node<'g>);

    // Always inlined: walks over every node (the analyser's) otherwise pay a
    // call per node for a view that is mostly a copy.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(n) = self.current.next() {
                let id = NodeId(self.next);
                self.next = self.next.saturating_add(1);
                self.remaining = self.remaining.saturating_sub(1);
                let node = Node {
                    kind: n.kind.view(self.side),
                    offset: n.offset,
                    opcode: n.opcode,
                    depth: n.depth,
                };
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

/// Value → events lookup built by [`Graph::event_index`].
#[derive(Debug, Clone)]
pub struct EventIndex {
    starts: Vec<u32>,
    order: Vec<u32>,
    /// Leaves with events, sorted, one entry per event.
    leaf_ids: Vec<NodeId>,
    leaf_order: Vec<u32>,
}

impl EventIndex {
    /// Indices into [`Graph::events`] of the events targeting `id`, in order.
    #[must_use]
    pub fn of(&self, id: NodeId) -> &[u32] {
        if id.is_leaf() {
            let a = self.leaf_ids.partition_point(|&l| l < id);
            let b = self.leaf_ids.partition_point(|&l| l <= id);
            return self.leaf_order.get(a..b).unwrap_or_default();
        }
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

    fn node(kind: Kind<'static>) -> Stored<'static> {
        Stored {
            kind,
            offset: 0,
            opcode: Opcode::NONE,
            depth: 0,
        }
    }

    #[test]
    fn children_and_events() {
        let mut g = Graph::default();
        g.push(node(Kind::None)); // 0
        g.push(node(Kind::Int(1))); // 1
        g.push(node(Kind::Dict(Box::new(vec![(NodeId(0), NodeId(1))])))); // 2
        let args = g.intern(&[NodeId(1), NodeId(2)]).unwrap_or_default();
        g.push(node(Kind::Obj {
            cls: NodeId(0),
            args,
        })); // 3
        let items = g.intern(&[NodeId(3), NodeId(3)]).unwrap_or_default();
        g.push(node(Kind::Tuple(items))); // 4
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
            let id = g.push(node(Kind::Int(i64::try_from(i).unwrap_or(0))));
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

    #[test]
    fn dropped_chunks_serve_the_next_graph() {
        let spares = || SPARE.with(|s| s.borrow().len());
        let before = spares();
        let text = String::from("a str the graph owns");
        let mut g = Graph::default();
        for i in 0..2 * CHUNK + 1 {
            let kind = if i % 1000 == 0 {
                Kind::Str(Box::new(Cow::Owned(text.clone())))
            } else {
                Kind::Tuple(Items::default())
            };
            g.push(node(kind));
        }
        drop(g);
        // Every chunk kept, allocation and all: the first grew to a full
        // one, the others were made full-size.
        assert_eq!(spares(), before + 3);
        assert!(SPARE.with(|s| {
            s.borrow()
                .iter()
                .all(|c| c.is_empty() && c.capacity() == CHUNK)
        }));
        let mut g = Graph::default();
        for _ in 0..CHUNK + 1 {
            g.push(node(Kind::None));
        }
        // An unreserved first chunk grows on its own (small pickles stay
        // small); the second is a spare.
        assert_eq!(spares(), before + 2);
        assert_eq!(g.iter().len(), CHUNK + 1);
        assert!(g.iter().all(|(_, n)| n.kind() == NodeKind::None));
    }

    #[test]
    #[expect(clippy::unwrap_used, reason = "test")]
    fn dropped_pools_and_memos_serve_the_next_parse() {
        let mut g = Graph::default();
        g.reserve_pool(1000);
        let items = g.intern(&[NodeId(1), NodeId(2)]).unwrap();
        assert_eq!(items.of(&g.pool), [NodeId(1), NodeId(2)]);
        drop(g);
        let mut g = Graph::default();
        g.reserve_pool(10);
        assert!(g.pool.is_empty() && g.pool.capacity() >= 1000);
        drop(g);
        // A parse leaves its memo (emptied) for the next one.
        let data = b"\x80\x04(K\x01\x94K\x02\x94K\x03\x94h\x00t\x94.";
        let first = format!("{:?}", crate::Parser::new(data).parse().unwrap().graph());
        let spare = SPARE_MEMO.with(|m| (m.borrow().len(), m.borrow().capacity()));
        assert_eq!(spare.0, 0);
        assert!(spare.1 >= 4);
        let second = format!("{:?}", crate::Parser::new(data).parse().unwrap().graph());
        assert_eq!(first, second);
    }
}

#[cfg(test)]
mod leaf_tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn every_leaf_opcode_decodes_and_nothing_else() {
        for byte in 0..=255u8 {
            let data = [byte, 0, 0, 0, 0, 0, 0, 0, 0];
            let leaf = Opcode::from_byte(byte).is_some_and(is_leaf_opcode);
            let decoded = decode_leaf(&data, 0).map(|(_, op)| op.byte());
            assert_eq!(decoded, leaf.then_some(byte), "{byte:#x}");
        }
    }

    #[test]
    fn leaves_decode_from_the_input() {
        // N, K 7, X "hé", C b"ab", G 1.5, U "x"
        let data = b"NK\x07X\x03\x00\x00\x00h\xc3\xa9C\x02abG?\xf8\x00\x00\x00\x00\x00\x00U\x01x";
        let mut g = Graph::new(data);
        let ids: Vec<NodeId> = [0, 1, 3, 11, 15, 24]
            .into_iter()
            .map(|o| g.push_leaf(o).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.is_leaf()));
        assert_eq!(g.leaves(), 6);
        assert_eq!(g.len(), 0);
        assert_eq!(g.kind(ids[0]), Some(NodeKind::None));
        assert_eq!(g.get(ids[1]).unwrap().as_i64(), Some(7));
        assert_eq!(g.get(ids[2]).unwrap().as_str(), Some("hé"));
        assert_eq!(g.text(ids[2]).unwrap(), "hé");
        assert_eq!(g.text(ids[1]), Err("int"));
        assert_eq!(g.get(ids[3]).unwrap().as_bytes(), Some(&b"ab"[..]));
        assert_eq!(g.kind(ids[4]), Some(NodeKind::Float(1.5)));
        assert_eq!(g.kind(ids[5]), Some(NodeKind::LegacyStr(b"x")));
        let n = g.get(ids[3]).unwrap();
        assert_eq!(
            (n.offset(), n.opcode(), n.depth()),
            (11, Opcode::SHORT_BINBYTES, 0)
        );
        assert_eq!(g.children(ids[2]).count(), 0);
        // A mutated leaf keeps its depth, and its events are indexed.
        assert_eq!(g.raise_depth(ids[1], 3), Some(3));
        assert_eq!(g.get(ids[1]).unwrap().depth(), 3);
        g.events.push(Event {
            target: ids[1],
            offset: 30,
            opcode: Opcode::APPEND,
            kind: EventKind::Append { item: ids[0] },
        });
        let idx = g.event_index();
        assert_eq!(idx.of(ids[1]), &[0]);
        assert!(idx.of(ids[0]).is_empty());
        // An id past the input decodes to nothing.
        assert!(g.get(NodeId::leaf(1000).unwrap()).is_none());
        assert!(NodeId::leaf(1 << 31).is_none());
    }
}

#[cfg(test)]
mod global_tests {
    use super::*;

    #[test]
    #[expect(clippy::unwrap_used, reason = "tests")]
    fn node_sets_clear_between_walks() {
        let mut seen = NodeSet::default();
        let ids = [NodeId(0), NodeId(63), NodeId(64), NodeId(5000)];
        let leaves = [NodeId::leaf(0), NodeId::leaf(12_345)].map(Option::unwrap);
        for &id in ids.iter().chain(&leaves) {
            assert!(seen.insert(id), "{id}");
            assert!(!seen.insert(id), "{id}");
        }
        assert!(seen.insert(NodeId(1)));
        // A leaf and a stored node with the same low bits are different ids.
        assert!(seen.insert(NodeId::leaf(63).unwrap()));
        seen.clear();
        for &id in ids.iter().chain(&leaves) {
            assert!(seen.insert(id), "{id} after clear");
        }
        assert!(seen.insert(NodeId(1)));
        assert!(seen.contains(NodeId(5000)) && !seen.contains(NodeId(5001)));
        assert!(!seen.contains(NodeId::leaf(1).unwrap()));
    }

    #[test]
    fn dotted_is_matches_dotted() {
        let g = |module: &'static str, name: &'static str, protocol| Global {
            module: Cow::Borrowed(module),
            name: Cow::Borrowed(name),
            protocol,
            operands: None,
        };
        for (global, other) in [
            (g("a.b", "C", 4), "a.bC"),
            (g("a", "b.C", 4), "a.b.D"),
            (
                g("copy_reg", "_reconstructor", 2),
                "copy_reg._reconstructor",
            ),
            (g("", "", 4), ""),
        ] {
            assert!(global.dotted_is(&global.dotted()), "{global:?}");
            assert!(!global.dotted_is(other), "{global:?} {other}");
        }
        assert!(g("a", "b.C", 4).dotted_is("a.b.C"));
        assert!(g("copy_reg", "_reconstructor", 2).dotted_is("copyreg._reconstructor"));
    }
}
