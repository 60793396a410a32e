//! One fast step for an object made from a memoized class with its state
//! dict written out in the same breath:
//!
//! `BINGET cls; EMPTY_TUPLE; NEWOBJ; MEMOIZE; EMPTY_DICT; MEMOIZE; MARK;
//! (key value)+; SETITEMS`
//!
//! where each key is a memo read and each value a memo read, a leaf scalar
//! (an int, `None`, a bool) or a tuple of one to three ints (memoized or
//! not). That is how protocol 4+ pickles every object after its first
//! (the keys are memoized by then), and joblib every array wrapper: a file
//! of many small arrays is almost nothing else, followed by the wrapper's
//! `BUILD`, which the hook still sees one at a time.
//!
//! As `Run::fast_frombuffer` does for NumPy's in-band arrays, the step has
//! the effects the one-at-a-time paths would have (the same leaves, nodes,
//! pool items, memo slots, counts and peaks), and only when all of it fits
//! the pattern, the run's budget, the memo's room and every limit the
//! opcodes could reach; anything else changes nothing and is left to them.

use super::{Machine, NO_ENTRY, NODE_BYTES, Run, Span, bump, memo_index};
use crate::graph::{Items, Kind, NodeId};
use crate::machine::{BOX_BYTES, ID_BYTES, items_bytes};
use crate::opcodes::Opcode;
use crate::parser::to_u64;

/// Most state pairs the step takes (joblib writes six).
const PAIRS: usize = 16;

/// Whether the memo read at `at` of `window` is followed by `EMPTY_TUPLE`
/// and `NEWOBJ`: worth `Run::fast_object`.
#[inline]
pub(super) fn starts_object(window: &[u8], at: usize) -> bool {
    let Some((&op, arg)) = window.get(at..).and_then(<[u8]>::split_first) else {
        return false;
    };
    let Some((_, len)) = memo_index(op, arg) else {
        return false;
    };
    arg.get(len..len.saturating_add(2))
        == Some(&[Opcode::EMPTY_TUPLE.byte(), Opcode::NEWOBJ.byte()])
}

/// What a key or a value of the state dict is.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum What {
    /// A memo read (`at` is the slot).
    #[default]
    Memo,
    /// A leaf scalar (`at` is its offset in the window).
    Leaf,
    /// A tuple of `dims` int leaves, the first at `at` of the window, the
    /// others right after it, then the tuple opcode (and a `MEMOIZE`, or not).
    Ints,
}

/// A key or a value of the state dict, in eight bytes.
#[derive(Clone, Copy, Default)]
struct Item {
    what: What,
    /// The opcode (of the memo read, the leaf or the first int).
    op: u8,
    dims: u8,
    memoized: bool,
    at: u32,
}

impl Item {
    /// The offsets in the window and opcodes of a tuple's ints, and the
    /// offset of its tuple opcode.
    #[inline(always)]
    fn ints(self, window: &[u8]) -> ([(usize, u8); 3], usize) {
        let mut out = [(0, 0); 3];
        let mut i = self.at as usize;
        for slot in out.iter_mut().take(usize::from(self.dims)) {
            let op = window.get(i).copied().unwrap_or(0);
            *slot = (i, op);
            i += 1 + int_len(op).unwrap_or(0);
        }
        (out, i)
    }
}

/// The pattern, as positions in the window.
struct Object {
    /// The class's memo slot and opcode.
    class: (usize, u8),
    /// Offsets of `EMPTY_TUPLE`, `NEWOBJ`, `EMPTY_DICT`, `SETITEMS`.
    tuple: usize,
    newobj: usize,
    dict: usize,
    setitems: usize,
    items: [Item; 2 * PAIRS],
    pairs: usize,
    /// Opcodes, memo reads, `MEMOIZE`s, leaves and tuples of ints in it.
    ops: usize,
    gets: usize,
    memoized: usize,
    leaves: usize,
    tuples: usize,
    /// Items of the tuples of ints.
    pooled: usize,
    /// Highest the stack gets above where it starts.
    peak: usize,
}

/// The memo read at `i` of `window`: the item and the position after it.
#[inline(always)]
fn memo_read(window: &[u8], i: usize) -> Option<(Item, usize)> {
    let (&op, arg) = window.get(i..)?.split_first()?;
    let (slot, len) = memo_index(op, arg)?;
    let item = Item {
        what: What::Memo,
        op,
        at: u32::try_from(slot).ok()?,
        ..Item::default()
    };
    Some((item, i + 1 + len))
}

/// The opcode of a tuple of `dims` (1 to 3) items.
#[inline(always)]
fn tuple_opcode(dims: usize) -> Opcode {
    match dims {
        1 => Opcode::TUPLE1,
        2 => Opcode::TUPLE2,
        _ => Opcode::TUPLE3,
    }
}

/// The argument length of an int leaf opcode.
#[inline(always)]
fn int_len(op: u8) -> Option<usize> {
    match op {
        b'K' => Some(1),
        b'M' => Some(2),
        b'J' => Some(4),
        _ => None,
    }
}

impl Object {
    /// Read the pattern from `at` of `window` (each opcode and argument
    /// inside it, since `SETITEMS` follows them all).
    #[inline(always)]
    fn read(window: &[u8], at: usize) -> Option<Self> {
        // Offsets in the window are kept in 32 bits.
        if u32::try_from(window.len()).is_err() {
            return None;
        }
        let byte = |i: usize| window.get(i).copied();
        let expect = |i: usize, op: Opcode| (byte(i) == Some(op.byte())).then(|| i + 1);
        let (class, tuple) = memo_read(window, at)?;
        let newobj = expect(tuple, Opcode::EMPTY_TUPLE)?;
        let i = expect(newobj, Opcode::NEWOBJ)?;
        let dict = expect(i, Opcode::MEMOIZE)?;
        let i = expect(dict, Opcode::EMPTY_DICT)?;
        let i = expect(i, Opcode::MEMOIZE)?;
        let mut i = expect(i, Opcode::MARK)?;
        let mut out = Object {
            class: (class.at as usize, class.op),
            tuple,
            newobj,
            dict,
            setitems: 0,
            items: [Item::default(); 2 * PAIRS],
            pairs: 0,
            ops: 8,
            gets: 1,
            memoized: 2,
            leaves: 0,
            tuples: 0,
            pooled: 0,
            peak: 3,
        };
        while byte(i) != Some(Opcode::SETITEMS.byte()) {
            let n = out.pairs;
            if n == PAIRS {
                return None;
            }
            let (key, after) = memo_read(window, i)?;
            // The stack holds the object, the dict, the mark and the pairs
            // so far, then this key.
            let below = 4 + 2 * n;
            let op = byte(after)?;
            let leaf = |at: usize| Item {
                what: What::Leaf,
                op,
                at: u32::try_from(at).unwrap_or(u32::MAX),
                ..Item::default()
            };
            let (value, next) = match op {
                b'h' | b'j' => {
                    out.gets += 1;
                    memo_read(window, after)?
                }
                b'N' | 0x88 | 0x89 => (leaf(after), after + 1),
                _ => {
                    let mut dims = 0;
                    let mut j = after;
                    while let Some(len) = byte(j).and_then(int_len) {
                        if dims == 3 {
                            return None;
                        }
                        // The argument lies inside the window.
                        window.get(j + len)?;
                        j += 1 + len;
                        dims += 1;
                    }
                    match (dims, byte(j)) {
                        (1, Some(0x85)) | (2, Some(0x86)) | (3, Some(0x87)) => {
                            let memoized = byte(j + 1) == Some(Opcode::MEMOIZE.byte());
                            out.peak = out.peak.max(below + dims);
                            out.ops += dims + usize::from(memoized);
                            out.memoized += usize::from(memoized);
                            out.tuples += 1;
                            out.pooled += dims;
                            out.leaves += dims;
                            let value = Item {
                                what: What::Ints,
                                dims: u8::try_from(dims).ok()?,
                                memoized,
                                ..leaf(after)
                            };
                            (value, j + 1 + usize::from(memoized))
                        }
                        (1, _) => (leaf(after), j),
                        _ => return None,
                    }
                }
            };
            if value.what == What::Leaf {
                out.leaves += 1;
            }
            *out.items.get_mut(2 * n)? = key;
            *out.items.get_mut(2 * n + 1)? = value;
            out.pairs += 1;
            out.ops += 2;
            out.gets += 1;
            out.peak = out.peak.max(below + 1);
            i = next;
        }
        if out.pairs == 0 {
            return None;
        }
        out.setitems = i;
        Some(out)
    }
}

impl<'a> Run<'a, '_> {
    /// The object at `span.at` (see the module docs), once the memo holds
    /// its class and the keys and values it reads. Returns the position in
    /// the window after its `SETITEMS` and the number of opcodes executed
    /// (none, with nothing changed, if any of it does not fit).
    #[inline(never)]
    pub(super) fn fast_object(
        &mut self,
        cur: &mut Machine<'a>,
        span: Span<'_>,
        memo_room: &mut u64,
    ) -> (usize, usize) {
        let (window, pos) = (span.window, span.pos);
        let none = (span.at, 0);
        let Some(p) = Object::read(window, span.at) else {
            return none;
        };
        let len = self.graph.len();
        let stored = 3 + p.tuples;
        let gets = self.stats.memo_gets.saturating_add(to_u64(p.gets));
        if p.ops > span.room
            || *memo_room < to_u64(p.memoized)
            || gets > self.limits.max_memo_gets
            || !self.graph.leaf_depths_empty()
            || NodeId::leaf(pos.saturating_add(window.len())).is_none()
            || len.saturating_add(stored) >= (NO_ENTRY >> 1) as usize
        {
            return none;
        }
        let bytes = to_u64(stored)
            .saturating_mul(NODE_BYTES)
            .saturating_add(BOX_BYTES)
            .saturating_add(items_bytes(p.pooled, ID_BYTES))
            .saturating_add(items_bytes(p.pairs, 2 * ID_BYTES));
        if self.graph_bytes.saturating_add(bytes) > self.limits.max_graph_bytes {
            return none;
        }
        // Every memo read is of a filled slot that exists before the step.
        let memo = cur.memo.as_slice();
        let read = |slot: usize| memo.get(slot).copied().filter(|&v| v != NO_ENTRY);
        let (Some(class), Ok(first)) = (read(p.class.0), u32::try_from(len)) else {
            return none;
        };
        let class = NodeId(class);
        let (tuple, object, dict) = (
            NodeId(first),
            NodeId(first.saturating_add(1)),
            NodeId(first.saturating_add(2)),
        );
        let items = p.items.get(..2 * p.pairs).unwrap_or_default();
        let mut pairs = [(NodeId(0), NodeId(0)); PAIRS];
        let mut key = NodeId(0);
        let mut next_tuple = first.saturating_add(3);
        // The deepest stored key or value (leaves are at depth 0).
        let mut deepest = 0;
        for (n, item) in items.iter().enumerate() {
            let id = match item.what {
                What::Memo => match read(item.at as usize) {
                    Some(v) => NodeId(v),
                    None => return none,
                },
                What::Leaf => match NodeId::leaf(pos.saturating_add(item.at as usize)) {
                    Some(id) => id,
                    None => return none,
                },
                What::Ints => {
                    let id = NodeId(next_tuple);
                    next_tuple = next_tuple.saturating_add(1);
                    deepest = deepest.max(1);
                    id
                }
            };
            if item.what == What::Memo && !id.is_leaf() {
                deepest = deepest.max(self.graph.depth(id));
            }
            if n % 2 == 0 {
                key = id;
            } else if let Some(pair) = pairs.get_mut(n / 2) {
                *pair = (key, id);
            }
        }
        let object_depth = self.graph.depth(class).max(1).saturating_add(1);
        let dict_depth = deepest.saturating_add(1);
        let max_depth = object_depth.max(dict_depth);
        if u64::from(max_depth) > self.limits.max_nesting_depth || !self.graph.pool_room(p.pooled) {
            return none;
        }
        // The dict's pairs, pooled (nothing after this can fail).
        let Some(pooled) = self
            .graph
            .intern_pairs(pairs.get(..p.pairs).unwrap_or_default())
        else {
            return none;
        };
        // Certain to succeed from here on.
        #[cfg(test)]
        super::tests::OBJECTS.with(|n| n.set(n.get() + 1));
        let node = |kind, i: usize, opcode, depth| {
            super::stored_at(kind, pos.saturating_add(i), opcode, depth)
        };
        let nodes = [
            node(
                Kind::Tuple(Items::default()),
                p.tuple,
                Opcode::EMPTY_TUPLE,
                1,
            ),
            node(
                Kind::NewObj {
                    cls: class,
                    args: tuple,
                },
                p.newobj,
                Opcode::NEWOBJ,
                object_depth,
            ),
            node(
                Kind::PooledDict(pooled),
                p.dict,
                Opcode::EMPTY_DICT,
                dict_depth,
            ),
        ];
        // Never fails: the id and the node count were checked above.
        let _ = self.graph.push_all(tuple, nodes);
        cur.memo.extend_from_slice(&[object.0, dict.0]);
        let counts = &mut *self.stats.op_counts;
        bump(counts, p.class.1, 1);
        // The tuples of ints (nodes, pooled items and memo slots in stream
        // order), and the opcodes of every item.
        let mut shape = first.saturating_add(3);
        for item in items {
            if item.what != What::Ints {
                bump(counts, item.op, 1);
                continue;
            }
            let dims = usize::from(item.dims);
            let (ints, tuple_at) = item.ints(window);
            let mut leaves = [NodeId(0); 3];
            for (id, &(i, op)) in leaves.iter_mut().zip(&ints).take(dims) {
                // Never `None`: every offset in the window makes a leaf id.
                *id = NodeId::leaf(pos.saturating_add(i)).unwrap_or(NodeId(0));
                bump(counts, op, 1);
            }
            let opcode = tuple_opcode(dims);
            bump(counts, opcode.byte(), 1);
            // Never `None`: the pool has room.
            let pooled = self
                .graph
                .intern(leaves.get(..dims).unwrap_or_default())
                .unwrap_or_default();
            let _ = self
                .graph
                .push(node(Kind::Tuple(pooled), tuple_at, opcode, 1));
            if item.memoized {
                cur.memo.push(shape);
            }
            shape = shape.saturating_add(1);
        }
        for op in [
            Opcode::EMPTY_TUPLE,
            Opcode::NEWOBJ,
            Opcode::EMPTY_DICT,
            Opcode::MARK,
            Opcode::SETITEMS,
        ] {
            bump(counts, op.byte(), 1);
        }
        let memoized = to_u64(p.memoized);
        bump(counts, Opcode::MEMOIZE.byte(), memoized);
        self.graph_bytes = self.graph_bytes.saturating_add(bytes);
        self.graph.add_leaves(to_u64(p.leaves));
        cur.memo_len += memoized;
        *memo_room -= memoized;
        let base = self.suspended_depth.saturating_add(cur.depth());
        cur.stack.extend_from_slice(&[object, dict]);
        let stats = &mut self.stats;
        stats.max_stack_depth = stats
            .max_stack_depth
            .max(base.saturating_add(to_u64(p.peak)));
        stats.max_nesting_depth = stats.max_nesting_depth.max(u64::from(max_depth));
        stats.memo_gets = gets;
        stats.memo_puts += memoized;
        (p.setitems.saturating_add(1), p.ops)
    }
}
