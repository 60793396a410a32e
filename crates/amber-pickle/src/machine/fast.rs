//! The machine's fast path: the common opcodes of object-heavy streams,
//! executed straight from the input without building an [`Instruction`].
//!
//! Memo traffic, marks, scalars, short payloads, tuples and `REDUCE` make
//! up almost every opcode of a typical NumPy or scikit-learn pickle. Here
//! each is executed only when it is certain to succeed: every limit, the
//! frame and the stack are checked *first*, and anything unusual (a limit
//! that would be hit, a hole in the memo, a missing mark, an error of any
//! kind) returns `false` before any state changes, so that the general
//! path (`Run::step`) executes the same opcode from scratch and reports
//! exactly what it always did. The effects here mirror `step` one for one,
//! statistics included; the parser's differential tests (listing on, which
//! disables this path, against listing off) hold the two to that.
//!
//! Scalars, `MEMOIZE`, `BINGET` and `MARK` come in long runs (a dict
//! literal's keys and values, an array's arguments), closed by the tuples
//! and calls that take them, so a run is executed in one loop (`fast_run`)
//! under a budget taken once from the limits that grow by at most one per
//! opcode (opcodes, values, stack); it stops short of any limit rather than
//! at it, leaving the opcode there to the paths that report it. Tuples and
//! calls check the limits only they can reach (nesting, graph bytes) themselves.
//!
//! [`Instruction`]: crate::reader::Instruction

mod object;

use super::{EVENT_BYTES, ID_BYTES, Machine, NO_ENTRY, NODE_BYTES, Run, items_bytes, node_bytes};
use crate::graph::{Event, EventKind};
use crate::graph::{Global, Items, Kind, NodeId, Stored, is_leaf_opcode};
use crate::opcodes::Opcode;
use crate::parser::to_u64;
use crate::reader::{Arg, is_utf8};

/// The argument length of each opcode that can be a pair's value in
/// `Run::fast_pairs`, [`NOT_A_VALUE`] for the others.
#[expect(
    clippy::indexing_slicing,
    reason = "constant indices, checked at compile time"
)]
const PAIR_VALUE_LEN: [u8; 256] = {
    let mut t = [NOT_A_VALUE; 256];
    t[b'K' as usize] = 1;
    t[b'M' as usize] = 2;
    t[b'J' as usize] = 4;
    t[b'G' as usize] = 8;
    t[b'N' as usize] = 0;
    t[0x88] = 0;
    t[0x89] = 0;
    t
};
const NOT_A_VALUE: u8 = u8::MAX;

/// Whether the `SHORT_BINUNICODE` whose argument starts `arg` is followed
/// (after a `MEMOIZE`, or not) by a pair's value: worth `Run::fast_pairs`.
#[inline]
fn starts_pair(arg: &[u8]) -> bool {
    let Some(&n) = arg.first() else {
        return false;
    };
    let after = usize::from(n).saturating_add(1);
    let value = match arg.get(after) {
        Some(&op) if op == Opcode::MEMOIZE.byte() => arg.get(after.saturating_add(1)),
        op => op,
    };
    value.is_some_and(|&op| PAIR_VALUE_LEN.get(usize::from(op)) != Some(&NOT_A_VALUE))
}

/// The memo index of the `BINGET` (`h`) or `LONG_BINGET` (`j`) whose
/// argument starts `arg`, and the argument's length.
#[inline]
fn memo_index(op: u8, arg: &[u8]) -> Option<(usize, usize)> {
    match op {
        b'h' => Some((usize::from(*arg.first()?), 1)),
        b'j' => {
            let word = u32::from_le_bytes(arg.get(..4)?.try_into().ok()?);
            Some((usize::try_from(word).ok()?, 4))
        }
        _ => None,
    }
}

/// The memo read (`BINGET` or `LONG_BINGET`) that starts `rest`: its
/// index, its opcode and what follows it.
#[inline(always)]
fn read_memo(rest: &[u8]) -> Option<(usize, u8, &[u8])> {
    match rest {
        [b'h', i, tail @ ..] => Some((usize::from(*i), b'h', tail)),
        [b'j', a, b, c, d, tail @ ..] => {
            let i = usize::try_from(u32::from_le_bytes([*a, *b, *c, *d])).ok()?;
            Some((i, b'j', tail))
        }
        _ => None,
    }
}

/// Where `Run::fast_frombuffer` starts: at `at` in `window` (which starts
/// at `pos` of the input), with a budget of `room` opcodes.
#[derive(Clone, Copy)]
struct Span<'w> {
    window: &'w [u8],
    at: usize,
    pos: usize,
    room: usize,
}

/// A node the opcode at `at` of the input made.
#[inline(always)]
fn stored_at(kind: Kind<'_>, at: usize, opcode: Opcode, depth: u32) -> Stored<'_> {
    Stored {
        kind,
        offset: to_u64(at),
        opcode,
        depth,
    }
}

/// Count `n` more executions of `op`.
#[inline(always)]
fn bump(counts: &mut [u64; 256], op: u8, n: u64) {
    if let Some(c) = counts.get_mut(usize::from(op)) {
        *c += n;
    }
}

/// Whether the memo read at `at` of `window` is followed by a `MARK` and a
/// `BYTEARRAY8`: how NumPy's protocol-5 pickle of an array with its bytes
/// in-band starts once the memo holds `_frombuffer` (worth `Run::fast_frombuffer`).
#[inline]
fn starts_frombuffer(window: &[u8], at: usize) -> bool {
    let Some((&op, arg)) = window.get(at..).and_then(<[u8]>::split_first) else {
        return false;
    };
    let Some((_, len)) = memo_index(op, arg) else {
        return false;
    };
    arg.get(len..len.saturating_add(2)) == Some(&[Opcode::MARK.byte(), Opcode::BYTEARRAY8.byte()])
}

/// The opcodes of an in-band array after its memo reads of `_frombuffer`,
/// the dtype and the order, as positions in the window.
struct Frombuffer {
    callable: usize,
    dtype: usize,
    order: usize,
    /// The opcodes of the three memo reads (`h` or `j`).
    reads: [u8; 3],
    /// Offsets (in the window) of the `BYTEARRAY8`, the shape tuple, the
    /// argument tuple and the `REDUCE`.
    buffer: usize,
    shape: usize,
    args: usize,
    reduce: usize,
    /// Offsets and opcodes of the shape's ints (`dims` of them).
    ints: [(usize, u8); 3],
    dims: usize,
    /// Just after the last `MEMOIZE`.
    end: usize,
}

impl Frombuffer {
    /// Opcodes the array takes: three memo reads, `MARK`, the buffer,
    /// the ints, two tuples, `REDUCE` and four `MEMOIZE`s.
    fn ops(&self) -> usize {
        self.dims + 12
    }

    /// Read the pattern from `at` of `window`, a buffer of at most
    /// `max_bytes` (the checks the one-at-a-time path makes of the
    /// arguments: each lies inside the window, since an opcode follows it).
    /// Slice patterns walk the suffix left; each position is the window's
    /// length less the suffix's.
    #[inline(always)]
    fn read(window: &[u8], at: usize, max_bytes: u64) -> Option<Self> {
        let at_ = |rest: &[u8]| window.len() - rest.len();
        let rest = window.get(at..)?;
        let (callable, callable_op, rest) = read_memo(rest)?;
        let [b'(', 0x96, rest @ ..] = rest else {
            return None;
        };
        let buffer = at_(rest) - 1;
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let len = u64::from_le_bytes(*len);
        if len > max_bytes {
            return None;
        }
        let [0x94, rest @ ..] = rest.get(usize::try_from(len).ok()?..)? else {
            return None;
        };
        let (dtype, dtype_op, mut rest) = read_memo(rest)?;
        let mut ints = [(0, 0); 3];
        let mut dims = 0;
        while let Some((op @ (b'K' | b'M' | b'J'), arg)) = rest.split_first() {
            *ints.get_mut(dims)? = (at_(rest), *op);
            rest = arg.get(
                match op {
                    b'K' => 1,
                    b'M' => 2,
                    _ => 4,
                }..,
            )?;
            dims += 1;
        }
        let tuple = match dims {
            1 => Opcode::TUPLE1,
            2 => Opcode::TUPLE2,
            3 => Opcode::TUPLE3,
            _ => return None,
        };
        let shape = at_(rest);
        let [op, 0x94, rest @ ..] = rest else {
            return None;
        };
        if *op != tuple.byte() {
            return None;
        }
        let (order, order_op, rest) = read_memo(rest)?;
        let args = at_(rest);
        let [b't', 0x94, b'R', 0x94, rest @ ..] = rest else {
            return None;
        };
        Some(Frombuffer {
            callable,
            dtype,
            order,
            reads: [callable_op, dtype_op, order_op],
            buffer,
            shape,
            args,
            reduce: args + 2,
            ints,
            dims,
            end: at_(rest),
        })
    }
}

impl<'a> Run<'a, '_> {
    /// Execute the next opcode if it is a common one that cannot fail;
    /// `false` leaves everything untouched for the general path.
    #[inline]
    pub(super) fn fast_step(&mut self, cur: &mut Machine<'a>) -> bool {
        if self.stats.opcodes >= self.limits.max_opcodes {
            return false;
        }
        let pos = cur.reader.position();
        let window = cur.reader.window();
        let Some(&byte) = window.first() else {
            return false;
        };
        // One dispatch on the byte for the commonest opcodes, each with its
        // opcode a constant so that its checks compile to a few instructions.
        let next = match byte {
            // Scalars, memo traffic and marks come in runs (a dict
            // literal's keys and values): one loop takes the whole run.
            0x8c | b'K' | b'M' | b'J' | b'G' | b'N' | 0x88 | 0x89 | b'C' | b'X' | 0x96 | 0x94
            | b'h' | b'j' | b'(' => {
                let next = self.fast_run(cur, window, pos);
                if next == pos {
                    return false;
                }
                cur.reader.advance_to(next);
                return true;
            }
            // A frame per array in joblib files (their bytes sit between frames).
            0x95 => {
                if !cur.reader.fast_frame() {
                    return false;
                }
                self.stats.frames = self.stats.frames.saturating_add(1);
                self.count(byte);
                return true;
            }
            b'q' => self.other_op(cur, window, pos, Opcode::BINPUT),
            0x85 => self.other_op(cur, window, pos, Opcode::TUPLE1),
            0x86 => self.other_op(cur, window, pos, Opcode::TUPLE2),
            0x87 => self.other_op(cur, window, pos, Opcode::TUPLE3),
            b't' => self.other_op(cur, window, pos, Opcode::TUPLE),
            b'R' => self.other_op(cur, window, pos, Opcode::REDUCE),
            0x81 => self.other_op(cur, window, pos, Opcode::NEWOBJ),
            0x93 => self.other_op(cur, window, pos, Opcode::STACK_GLOBAL),
            b'b' => self.other_op(cur, window, pos, Opcode::BUILD),
            _ => {
                let Some(opcode) = Opcode::from_byte(byte) else {
                    return false;
                };
                self.other_op(cur, window, pos, opcode)
            }
        };
        let Some(next) = next else {
            return false;
        };
        self.count(byte);
        // Protocol 4+ memoizes almost every value it pushes: take a
        // `MEMOIZE` that follows in the same frame without another dispatch.
        let next = if window.get(next.saturating_sub(pos)) == Some(&Opcode::MEMOIZE.byte())
            && self.stats.opcodes < self.limits.max_opcodes
            && self.fast_put(cur, cur.memo_len)
        {
            self.count(Opcode::MEMOIZE.byte());
            next.saturating_add(1)
        } else {
            next
        };
        cur.reader.advance_to(next);
        true
    }

    /// A run of leaf scalars, `MEMOIZE`s, `BINGET`s, `MARK`s, tuples and
    /// calls from `pos` (`window`, which ends with the input or the open
    /// frame, starts there), each executed exactly as `fast_leaf`,
    /// `fast_put`, `fast_get`, `fast_mark` and `fast_tuple` would one at a
    /// time, without a dispatch back through the loop between them: the keys
    /// and values of a dict literal, say, or a dict of arrays. Opcodes,
    /// values and stack grow by at most one per opcode in a run, so one
    /// budget (the least room left under any of their limits) bounds it; the run stops
    /// early rather than near a limit, leaving the rest to the one-at-a-time
    /// paths, which report any limit exactly. Returns the position after
    /// the last opcode executed.
    #[inline(never)]
    fn fast_run(&mut self, cur: &mut Machine<'a>, window: &[u8], pos: usize) -> usize {
        let ops = self.limits.max_opcodes.saturating_sub(self.stats.opcodes);
        let values = self.limits.max_nodes.saturating_sub(self.values());
        let room = self
            .limits
            .max_stack_depth
            .saturating_sub(self.suspended_depth.saturating_add(cur.depth()));
        let budget = usize::try_from(ops.min(values).min(room)).unwrap_or(usize::MAX);
        // `MEMOIZE`s that append to a memo without holes, as `fast_put` would.
        let mut memo_room = if to_u64(cur.memo.len()) == cur.memo_len {
            self.limits
                .max_memo_index
                .saturating_add(1)
                .min(self.limits.max_memo_entries)
                .saturating_sub(cur.memo_len)
        } else {
            0
        };
        let mut done = 0usize;
        let mut at = 0usize;
        // `MEMOIZE`s taken right after a value (counted once, at the end).
        let mut fused = 0u64;
        while done < budget {
            let Some((&byte, arg)) = window.get(at..).and_then(<[u8]>::split_first) else {
                break;
            };
            // A dict literal's `str` keys and scalar values (one step per
            // pair), an in-band NumPy array whose callable, dtype and order
            // the memo holds (one step per array).
            let room = budget.saturating_sub(done);
            let (next, ops) = if byte == Opcode::SHORT_BINUNICODE.byte() && starts_pair(arg) {
                self.fast_pairs(cur, window, at, pos, room, &mut memo_room)
            } else if matches!(byte, b'h' | b'j') {
                let span = Span {
                    window,
                    at,
                    pos,
                    room,
                };
                if starts_frombuffer(window, at) {
                    self.fast_frombuffer(cur, span, &mut memo_room)
                } else if object::starts_object(window, at) {
                    self.fast_object(cur, span, &mut memo_room)
                } else {
                    (at, 0)
                }
            } else {
                (at, 0)
            };
            if ops > 0 {
                done = done.saturating_add(ops);
                at = next;
                continue;
            }
            // Whether this opcode pushed a value made here (for the `MEMOIZE` below).
            let mut pushed = false;
            // The argument length of a leaf, `None` for the other opcodes
            // (executed right here); a leaf the fast path cannot take ends the run.
            let leaf = |op: Opcode| cur.reader.fast_leaf_len(op, arg).ok_or(());
            let leaf_len = match byte {
                b'N' | 0x88 | 0x89 => Ok(Some(0)),
                b'K' => leaf(Opcode::BININT1).map(Some),
                b'M' => leaf(Opcode::BININT2).map(Some),
                b'J' => leaf(Opcode::BININT).map(Some),
                b'G' => leaf(Opcode::BINFLOAT).map(Some),
                0x8c => leaf(Opcode::SHORT_BINUNICODE).map(Some),
                b'X' => leaf(Opcode::BINUNICODE).map(Some),
                b'C' => leaf(Opcode::SHORT_BINBYTES).map(Some),
                0x96 => leaf(Opcode::BYTEARRAY8).map(Some),
                0x94 => {
                    if memo_room > 0
                        && let Some(&top) = cur.stack.get(cur.fence()..).and_then(<[_]>::last)
                    {
                        cur.memo.push(top.0);
                        cur.memo_len += 1;
                        memo_room -= 1;
                        self.stats.memo_puts += 1;
                        Ok(None)
                    } else if self.fast_put(cur, cur.memo_len) {
                        memo_room = 0; // the memo may have holes now
                        Ok(None)
                    } else {
                        Err(())
                    }
                }
                // `fast_get` without its stack check: the budget bounds the stack.
                b'h' | b'j' => {
                    let gets = self.stats.memo_gets.saturating_add(1);
                    match memo_index(byte, arg).and_then(|(i, _)| cur.memo.get(i)) {
                        Some(&v) if v != NO_ENTRY && gets <= self.limits.max_memo_gets => {
                            self.stats.memo_gets = gets;
                            cur.stack.push(NodeId(v));
                            Ok(None)
                        }
                        _ => Err(()),
                    }
                }
                b'(' => {
                    if self.fast_mark(cur) {
                        Ok(None)
                    } else {
                        Err(())
                    }
                }
                // Tuples and calls end most runs (an array's arguments,
                // a call): they pop what they take, so the budget still
                // bounds the run, and they check their own limits. The
                // stack's peak so far is noted first, as the pops lower it.
                0x85 | 0x86 | 0x87 | b't' | b'R' | 0x81 => {
                    let opcode = match byte {
                        0x85 => Opcode::TUPLE1,
                        0x86 => Opcode::TUPLE2,
                        0x87 => Opcode::TUPLE3,
                        b't' => Opcode::TUPLE,
                        b'R' => Opcode::REDUCE,
                        _ => Opcode::NEWOBJ,
                    };
                    let total = self.suspended_depth.saturating_add(cur.depth());
                    self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
                    if self.fast_tuple(cur, pos.saturating_add(at), opcode) {
                        pushed = true;
                        Ok(None)
                    } else {
                        Err(())
                    }
                }
                _ => Err(()),
            };
            let len = match leaf_len {
                Ok(Some(len)) => {
                    let Some(id) = self.graph.push_leaf(pos.saturating_add(at)) else {
                        break;
                    };
                    cur.stack.push(id);
                    pushed = true;
                    len
                }
                Ok(None) => match byte {
                    b'h' => 1,
                    b'j' => 4,
                    _ => 0,
                },
                Err(()) => break,
            };
            if let Some(c) = self.stats.op_counts.get_mut(usize::from(byte)) {
                *c += 1;
            }
            done += 1;
            at = at.saturating_add(1).saturating_add(len);
            // Protocol 4+ memoizes almost every value it makes: a `MEMOIZE`
            // right after one is taken here, as its own arm would take it.
            // (What was just pushed is above the innermost mark.)
            if pushed
                && memo_room > 0
                && done < budget
                && window.get(at) == Some(&Opcode::MEMOIZE.byte())
                && let Some(&top) = cur.stack.last()
            {
                cur.memo.push(top.0);
                cur.memo_len += 1;
                memo_room -= 1;
                fused += 1;
                done += 1;
                at = at.saturating_add(1);
            }
        }
        self.stats.memo_puts += fused;
        if let Some(c) = self
            .stats
            .op_counts
            .get_mut(usize::from(Opcode::MEMOIZE.byte()))
        {
            *c += fused;
        }
        self.stats.opcodes = self.stats.opcodes.saturating_add(to_u64(done));
        let total = self.suspended_depth.saturating_add(cur.depth());
        self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
        self.stats.max_memo_entries = self.stats.max_memo_entries.max(cur.memo_len);
        pos.saturating_add(at)
    }

    /// Pairs of a `SHORT_BINUNICODE` key (then a `MEMOIZE`, or not) and a
    /// scalar value (`BININT1`, `BININT2`, `BININT`, `BINFLOAT`, `NONE`,
    /// `NEWTRUE`, `NEWFALSE`) from `at` in `window` (which starts at `pos`
    /// of the input): the body of a dict literal, a vocabulary say. Each
    /// pair is executed exactly as `fast_run` executes its two or three
    /// opcodes one at a time, but with one test of the pattern and of the
    /// budget (`room` opcodes, each growing the opcodes, values and stack by
    /// at most one, as in `fast_run`) per pair. Stops at the first opcode
    /// that does not fit the pattern, the budget or the memo's room,
    /// leaving it to `fast_run`. Returns the position in `window` after the
    /// last pair and the number of opcodes executed.
    #[inline(never)]
    fn fast_pairs(
        &mut self,
        cur: &mut Machine<'a>,
        window: &[u8],
        at: usize,
        pos: usize,
        room: usize,
        memo_room: &mut u64,
    ) -> (usize, usize) {
        // Every offset in the window makes a leaf id, or none is taken here.
        if NodeId::leaf(pos.saturating_add(window.len())).is_none() {
            return (at, 0);
        }
        let max_str = self.limits.max_str_len;
        let mut done = 0usize;
        let mut pairs = 0u64;
        let mut memoized = 0u64;
        // Locals for the loop, put back below (`cur` stays borrowed otherwise).
        let mut stack = std::mem::take(&mut cur.stack);
        let mut memo = std::mem::take(&mut cur.memo);
        let mut left = *memo_room;
        let mut rest = window.get(at..).unwrap_or_default();
        // Offsets below are of suffixes of `window`, so they cannot overflow.
        while let &[0x8c, n, ref tail @ ..] = rest {
            let Some((key, after)) = tail.split_at_checked(usize::from(n)) else {
                break;
            };
            let memoize = after.first() == Some(&Opcode::MEMOIZE.byte());
            let after = after.get(usize::from(memoize)..).unwrap_or_default();
            let Some((&value_op, value)) = after.split_first() else {
                break;
            };
            let value_len = PAIR_VALUE_LEN
                .get(usize::from(value_op))
                .copied()
                .unwrap_or(NOT_A_VALUE);
            let ops = 2 + usize::from(memoize);
            if value_len == NOT_A_VALUE
                || value.len() < usize::from(value_len)
                || done + ops > room
                || (memoize && left == 0)
                || u64::from(n) > max_str
                || !is_utf8(key)
            {
                break;
            }
            let key_at = pos + (window.len() - rest.len());
            let value_at = pos + (window.len() - after.len());
            let (Some(key_id), Some(value_id)) = (NodeId::leaf(key_at), NodeId::leaf(value_at))
            else {
                break;
            };
            stack.extend_from_slice(&[key_id, value_id]);
            if memoize {
                memo.push(key_id.0);
                left -= 1;
                memoized += 1;
            }
            if let Some(c) = self.stats.op_counts.get_mut(usize::from(value_op)) {
                *c += 1;
            }
            pairs += 1;
            done += ops;
            rest = value.get(usize::from(value_len)..).unwrap_or_default();
        }
        cur.stack = stack;
        cur.memo = memo;
        *memo_room = left;
        let at = window.len() - rest.len();
        self.graph.add_leaves(pairs.saturating_mul(2));
        cur.memo_len += memoized;
        self.stats.memo_puts += memoized;
        let counts = &mut self.stats.op_counts;
        if let Some(c) = counts.get_mut(usize::from(Opcode::SHORT_BINUNICODE.byte())) {
            *c += pairs;
        }
        if let Some(c) = counts.get_mut(usize::from(Opcode::MEMOIZE.byte())) {
            *c += memoized;
        }
        (at, done)
    }

    /// NumPy's protocol-5 pickles of arrays with their bytes in-band, from
    /// `at` in `window` (which starts at `pos` of the input), once the memo
    /// holds `_frombuffer`, the dtype and the order:
    ///
    /// `BINGET f; MARK; BYTEARRAY8 b; MEMOIZE; BINGET d; ints; TUPLEn;
    /// MEMOIZE; BINGET o; TUPLE; MEMOIZE; REDUCE; MEMOIZE`
    ///
    /// (`LONG_BINGET` as well, one to three `BININT1`/`BININT2`/`BININT`
    /// for the shape), then as many more as follow, each after a
    /// memoized `SHORT_BINUNICODE` key or straight after the last: a dict
    /// (or a list) of small arrays is almost nothing else. Each array (with
    /// its key) is executed at once, with the effects the one-at-a-time
    /// paths would have (the same leaves, nodes, pool items, memo slots,
    /// counts and peaks), but only if all of it fits: the pattern, the
    /// budget (`room` opcodes, as in `fast_run`, for the whole run), the
    /// memo's room for its slots, memo reads of filled slots that exist
    /// before it, the key's length and text, the memo-read, nesting and
    /// graph-bytes limits. The first array that does not fit ends the run
    /// with nothing of it done, leaving it to `fast_run`. Returns the
    /// position in `window` after the last array and the number of opcodes
    /// executed.
    #[inline(never)]
    fn fast_frombuffer(
        &mut self,
        cur: &mut Machine<'a>,
        span: Span<'_>,
        memo_room: &mut u64,
    ) -> (usize, usize) {
        let (window, pos) = (span.window, span.pos);
        // Every offset in the window makes a leaf id; no leaf has a depth.
        if !self.graph.leaf_depths_empty()
            || NodeId::leaf(pos.saturating_add(window.len())).is_none()
        {
            return (span.at, 0);
        }
        let max_bytes = self.limits.max_bytes_len;
        let max_str = self.limits.max_str_len;
        let max_gets = self.limits.max_memo_gets;
        let max_graph_bytes = self.limits.max_graph_bytes;
        let max_nesting = self.limits.max_nesting_depth;
        let base_depth = self.suspended_depth;
        let mut at = span.at;
        let mut done = 0usize;
        let mut gets = self.stats.memo_gets;
        let mut left = *memo_room;
        // What the last array read from the memo, with its depths: the
        // arrays of a dict share their callable, dtype and order slots.
        let mut last: Option<([usize; 3], [NodeId; 3], u32, u32)> = None;
        // Counts for the opcodes that vary, added once at the end.
        let (mut arrays, mut keys, mut longs, mut dims_total) = (0u64, 0u64, 0u64, 0u64);
        let mut ints_by_op = [0u64; 3];
        let mut tuples_by_dims = [0u64; 3];
        let mut peak = 0u64;
        let mut nesting = 0u32;
        loop {
            // After the first array: its memoized `str` key, or none.
            let (key, start) = match window.get(at..) {
                Some(&[0x8c, n, ref tail @ ..]) if done > 0 => {
                    let n = usize::from(n);
                    match tail.get(..=n) {
                        Some(text) if text.last() == Some(&Opcode::MEMOIZE.byte()) => {
                            let text = text.get(..n).unwrap_or_default();
                            if to_u64(n) > max_str || !is_utf8(text) {
                                break;
                            }
                            (Some(at), at.saturating_add(n).saturating_add(3))
                        }
                        _ => break,
                    }
                }
                _ => (None, at),
            };
            let Some(p) = Frombuffer::read(window, start, max_bytes) else {
                break;
            };
            let key_ops = if key.is_some() { 2 } else { 0 };
            let ops = p.ops().saturating_add(key_ops);
            let slots = 4 + u64::from(key.is_some());
            let array_gets = gets.saturating_add(3);
            if done.saturating_add(ops) > span.room || left < slots || array_gets > max_gets {
                break;
            }
            // The memo reads are of slots that exist already (not of the
            // ones this array, or its key, fills).
            let reads = [p.callable, p.dtype, p.order];
            let (read, args_depth, depth) = match last {
                Some((r, ids, args_depth, depth)) if r == reads => (ids, args_depth, depth),
                _ => {
                    let memo = cur.memo.as_slice();
                    let (Some(&callable), Some(&dtype), Some(&order)) =
                        (memo.get(p.callable), memo.get(p.dtype), memo.get(p.order))
                    else {
                        break;
                    };
                    if callable == NO_ENTRY || dtype == NO_ENTRY || order == NO_ENTRY {
                        break;
                    }
                    let ids = [NodeId(callable), NodeId(dtype), NodeId(order)];
                    // The shape tuple is at depth 1 (its items are plain leaves).
                    let args_depth = self
                        .graph
                        .depth(ids[1])
                        .max(self.graph.depth(ids[2]))
                        .max(1)
                        .saturating_add(1);
                    let depth = self.graph.depth(ids[0]).max(args_depth).saturating_add(1);
                    last = Some((reads, ids, args_depth, depth));
                    (ids, args_depth, depth)
                }
            };
            // With a key, its slot comes first: a read of it is a read of
            // a slot this array fills.
            let fresh = cur.memo.len();
            if key.is_some() && reads.contains(&fresh) {
                break;
            }
            let len = self.graph.len();
            let bytes = (3 * NODE_BYTES).saturating_add(items_bytes(p.dims + 4, ID_BYTES));
            if len.saturating_add(2) >= (NO_ENTRY >> 1) as usize
                || self.graph_bytes.saturating_add(bytes) > max_graph_bytes
                || u64::from(depth) > max_nesting
            {
                break;
            }
            let [callable, dtype, order] = read;
            let leaf = |i: usize| NodeId::leaf(pos.saturating_add(i));
            let mut ints = [NodeId(0); 3];
            for (id, &(i, _)) in ints.iter_mut().zip(&p.ints).take(p.dims) {
                *id = leaf(i).unwrap_or(NodeId(0));
            }
            let ints = ints.get(..p.dims).unwrap_or_default();
            let (Some(buffer), Ok(first)) = (leaf(p.buffer), u32::try_from(len)) else {
                break;
            };
            let (shape, args) = (NodeId(first), NodeId(first.saturating_add(1)));
            let reduce = NodeId(first.saturating_add(2));
            let Some((shape_items, args_items)) =
                self.graph.intern_two(ints, &[buffer, dtype, shape, order])
            else {
                break;
            };
            // Certain to succeed from here on.
            #[cfg(test)]
            tests::TAKEN.with(|n| n.set(n.get() + 1));
            if let Some(k) = key.and_then(leaf) {
                cur.stack.push(k);
                cur.memo.push(k.0);
                keys += 1;
            }
            let tuple = match p.dims {
                1 => Opcode::TUPLE1,
                2 => Opcode::TUPLE2,
                _ => Opcode::TUPLE3,
            };
            let node = |kind, i: usize, opcode, depth| {
                stored_at(kind, pos.saturating_add(i), opcode, depth)
            };
            let nodes = [
                node(Kind::Tuple(shape_items), p.shape, tuple, 1),
                node(Kind::Tuple(args_items), p.args, Opcode::TUPLE, args_depth),
                node(
                    Kind::Reduce { callable, args },
                    p.reduce,
                    Opcode::REDUCE,
                    depth,
                ),
            ];
            // Never fails: the id and the node count were checked above.
            let _ = self.graph.push_all(shape, nodes);
            self.graph_bytes = self.graph_bytes.saturating_add(bytes);
            cur.memo
                .extend_from_slice(&[buffer.0, shape.0, args.0, reduce.0]);
            left -= slots;
            gets = array_gets;
            // The stack peaks with the ints (or with the order) on it, above
            // the callable, the mark, the buffer and the dtype.
            peak = peak.max(
                base_depth
                    .saturating_add(cur.depth())
                    .saturating_add(to_u64(p.dims.saturating_add(4).max(6))),
            );
            cur.stack.push(reduce);
            nesting = nesting.max(depth);
            arrays += 1;
            longs += p.reads.iter().map(|&op| u64::from(op == b'j')).sum::<u64>();
            dims_total += to_u64(p.dims);
            for &(_, op) in p.ints.iter().take(p.dims) {
                let i = match op {
                    b'K' => 0,
                    b'M' => 1,
                    _ => 2,
                };
                if let Some(c) = ints_by_op.get_mut(i) {
                    *c += 1;
                }
            }
            if let Some(c) = tuples_by_dims.get_mut(p.dims.saturating_sub(1)) {
                *c += 1;
            }
            done = done.saturating_add(ops);
            at = p.end;
        }
        if arrays == 0 {
            return (span.at, 0);
        }
        #[cfg(test)]
        tests::RUNS.with(|n| n.set(n.get() + 1));
        let puts = 4 * arrays + keys;
        cur.memo_len += puts;
        *memo_room = left;
        self.graph.add_leaves(dims_total + arrays + keys);
        let stats = &mut self.stats;
        stats.max_stack_depth = stats.max_stack_depth.max(peak);
        stats.max_nesting_depth = stats.max_nesting_depth.max(u64::from(nesting));
        stats.memo_gets = gets;
        stats.memo_puts += puts;
        let counts = &mut *stats.op_counts;
        bump(counts, b'h', 3 * arrays - longs);
        bump(counts, b'j', longs);
        for (op, n) in [b'K', b'M', b'J'].into_iter().zip(ints_by_op) {
            bump(counts, op, n);
        }
        for (op, n) in [Opcode::TUPLE1, Opcode::TUPLE2, Opcode::TUPLE3]
            .into_iter()
            .zip(tuples_by_dims)
        {
            bump(counts, op.byte(), n);
        }
        bump(counts, Opcode::SHORT_BINUNICODE.byte(), keys);
        bump(counts, Opcode::MARK.byte(), arrays);
        bump(counts, Opcode::BYTEARRAY8.byte(), arrays);
        bump(counts, Opcode::MEMOIZE.byte(), puts);
        bump(counts, Opcode::TUPLE.byte(), arrays);
        bump(counts, Opcode::REDUCE.byte(), arrays);
        (at, done)
    }

    /// A leaf opcode at `pos` (`window` starts there): the position after it.
    #[inline(always)]
    fn leaf_op(
        &mut self,
        cur: &mut Machine<'a>,
        window: &[u8],
        pos: usize,
        opcode: Opcode,
    ) -> Option<usize> {
        // Checking the argument (UTF-8 included) is all decoding does
        // here; the leaf is decoded again only if someone looks at it.
        let len = cur.reader.fast_leaf_len(opcode, window.get(1..)?)?;
        self.fast_leaf(cur, pos)
            .then_some(pos.saturating_add(1).saturating_add(len))
    }

    /// Any other opcode the fast path takes: the position after it.
    #[inline(always)]
    fn other_op(
        &mut self,
        cur: &mut Machine<'a>,
        window: &[u8],
        pos: usize,
        opcode: Opcode,
    ) -> Option<usize> {
        let at = pos.saturating_add(1);
        match opcode {
            Opcode::MEMOIZE => self.fast_put(cur, cur.memo_len).then_some(at),
            Opcode::BINPUT | Opcode::LONG_BINPUT | Opcode::BINGET | Opcode::LONG_BINGET => {
                let Some((Arg::Uint(index), next)) = cur.reader.fast_arg(opcode, at) else {
                    return None;
                };
                let done = if matches!(opcode, Opcode::BINPUT | Opcode::LONG_BINPUT) {
                    self.fast_put(cur, index)
                } else {
                    self.fast_get(cur, index)
                };
                done.then_some(next)
            }
            Opcode::MARK => self.fast_mark(cur).then_some(at),
            Opcode::APPENDS | Opcode::SETITEMS | Opcode::ADDITEMS => {
                self.fast_extend(cur, opcode).then_some(at)
            }
            Opcode::BUILD => self.fast_build(cur, pos).then_some(at),
            Opcode::STACK_GLOBAL => self.fast_stack_global(cur, pos).then_some(at),
            Opcode::TUPLE1
            | Opcode::TUPLE2
            | Opcode::TUPLE3
            | Opcode::TUPLE
            | Opcode::REDUCE
            | Opcode::NEWOBJ => self.fast_tuple(cur, pos, opcode).then_some(at),
            _ if is_leaf_opcode(opcode) => self.leaf_op(cur, window, pos, opcode),
            _ => {
                let kind = Self::fast_empty(opcode)?;
                self.fast_new(cur, kind, pos, opcode).then_some(at)
            }
        }
    }

    /// A tuple, `REDUCE` or `NEWOBJ` at `pos`: the node of the items it
    /// takes from the stack (and, for `TUPLE`, the innermost mark).
    #[inline]
    fn fast_tuple(&mut self, cur: &mut Machine<'a>, pos: usize, opcode: Opcode) -> bool {
        if opcode == Opcode::TUPLE {
            let Some(&mark) = cur.marks.last() else {
                return false;
            };
            return mark <= cur.stack.len() && self.fast_collect(cur, mark, 1, pos, opcode);
        }
        let n = match opcode {
            Opcode::TUPLE1 => 1,
            Opcode::TUPLE3 => 3,
            _ => 2,
        };
        let start = cur.stack.len().saturating_sub(n);
        cur.above_fence() >= n && self.fast_collect(cur, start, 0, pos, opcode)
    }

    /// Count one opcode executed.
    #[inline]
    fn count(&mut self, byte: u8) {
        self.stats.opcodes = self.stats.opcodes.saturating_add(1);
        if let Some(c) = self.stats.op_counts.get_mut(usize::from(byte)) {
            *c = c.saturating_add(1);
        }
    }

    /// The node an empty-container opcode creates (depth 1).
    #[inline]
    fn fast_empty(opcode: Opcode) -> Option<Kind<'a>> {
        Some(match opcode {
            Opcode::EMPTY_LIST => Kind::List(Box::default()),
            Opcode::EMPTY_DICT => Kind::Dict(Box::default()),
            Opcode::EMPTY_TUPLE => Kind::Tuple(Items::default()),
            Opcode::EMPTY_SET => Kind::Set(Box::default()),
            _ => return None,
        })
    }

    /// The stack depth (all levels) after popping `popped` entries and
    /// pushing `pushed`, if within the limit.
    #[inline]
    fn fast_room(&self, cur: &Machine<'a>, popped: usize, pushed: usize) -> Option<u64> {
        let total = self
            .suspended_depth
            .saturating_add(cur.depth())
            .saturating_sub(to_u64(popped))
            .saturating_add(to_u64(pushed));
        (total <= self.limits.max_stack_depth).then_some(total)
    }

    /// One more node of `bytes` (graph accounting) fits the node, id and
    /// graph-bytes limits.
    #[inline]
    fn fast_fits(&self, bytes: u64) -> bool {
        let len = self.graph.len();
        u32::try_from(len).is_ok_and(|i| i < NO_ENTRY >> 1)
            && self.values().saturating_add(1) <= self.limits.max_nodes
            && self.graph_bytes.saturating_add(bytes) <= self.limits.max_graph_bytes
    }

    /// Append a node whose limits were checked; `None` (never, after
    /// [`Run::fast_fits`]) leaves the graph unchanged.
    #[inline]
    fn fast_add(
        &mut self,
        kind: Kind<'a>,
        bytes: u64,
        pos: usize,
        opcode: Opcode,
        depth: u32,
    ) -> Option<NodeId> {
        let id = self.graph.push(Stored {
            kind,
            offset: to_u64(pos),
            opcode,
            depth,
        })?;
        self.graph_bytes = self.graph_bytes.saturating_add(bytes);
        Some(id)
    }

    /// Push `id` (a new node), the stack reaching `total`.
    #[inline]
    fn fast_push(&mut self, cur: &mut Machine<'a>, id: NodeId, total: u64) {
        cur.stack.push(id);
        self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
    }

    /// A leaf scalar.
    #[inline]
    fn fast_leaf(&mut self, cur: &mut Machine<'a>, pos: usize) -> bool {
        let Some(total) = self.fast_room(cur, 0, 1) else {
            return false;
        };
        if self.values().saturating_add(1) > self.limits.max_nodes {
            return false;
        }
        let Some(id) = self.graph.push_leaf(pos) else {
            return false;
        };
        self.fast_push(cur, id, total);
        true
    }

    /// An empty container.
    #[inline]
    fn fast_new(
        &mut self,
        cur: &mut Machine<'a>,
        kind: Kind<'a>,
        pos: usize,
        opcode: Opcode,
    ) -> bool {
        let bytes = node_bytes(&kind);
        let Some(total) = self.fast_room(cur, 0, 1) else {
            return false;
        };
        if !self.fast_fits(bytes) {
            return false;
        }
        let Some(id) = self.fast_add(kind, bytes, pos, opcode, 1) else {
            return false;
        };
        self.fast_push(cur, id, total);
        true
    }

    /// A node made of the stack items from `start` up (and, for `marks` =
    /// 1, the innermost mark): tuples and `REDUCE`. Every check comes
    /// before any change, and nothing is built that a failed check drops.
    #[inline(never)]
    fn fast_collect(
        &mut self,
        cur: &mut Machine<'a>,
        start: usize,
        marks: usize,
        pos: usize,
        opcode: Opcode,
    ) -> bool {
        let Some(items) = cur.stack.get(start..) else {
            return false;
        };
        let n = items.len();
        let call = matches!(opcode, Opcode::REDUCE | Opcode::NEWOBJ);
        if call && n != 2 {
            return false;
        }
        // Leaves are at depth 0 unless one was mutated (rare).
        let plain_leaves = self.graph.leaf_depths_empty();
        let deepest = items
            .iter()
            .filter(|c| !(plain_leaves && c.is_leaf()))
            .fold(0, |d, &c| d.max(self.graph.depth(c)));
        let depth = deepest.saturating_add(1);
        if u64::from(depth) > self.limits.max_nesting_depth {
            return false;
        }
        let Some(total) = self.fast_room(cur, n.saturating_add(marks), 1) else {
            return false;
        };
        // A call owns nothing beyond the node (as `node_bytes` counts it).
        let bytes = if call {
            NODE_BYTES
        } else {
            NODE_BYTES.saturating_add(items_bytes(n, ID_BYTES))
        };
        if !self.fast_fits(bytes) {
            return false;
        }
        // Interned only once the node is certain to be added.
        let kind = match (opcode, items) {
            (Opcode::REDUCE, &[callable, args]) => Kind::Reduce { callable, args },
            (Opcode::NEWOBJ, &[cls, args]) => Kind::NewObj { cls, args },
            _ => match self.graph.intern(items) {
                Some(items) => Kind::Tuple(items),
                None => return false,
            },
        };
        let Some(id) = self.fast_add(kind, bytes, pos, opcode, depth) else {
            return false;
        };
        cur.stack.truncate(start);
        if marks > 0 {
            cur.marks.pop();
        }
        self.stats.max_nesting_depth = self.stats.max_nesting_depth.max(u64::from(depth));
        self.fast_push(cur, id, total);
        true
    }

    /// `STACK_GLOBAL` of two `str`s (anything else is an error `step` reports).
    #[inline]
    fn fast_stack_global(&mut self, cur: &mut Machine<'a>, pos: usize) -> bool {
        if cur.above_fence() < 2 {
            return false;
        }
        let at = cur.stack.len().saturating_sub(2);
        let Some(&[module_id, name_id]) = cur.stack.get(at..) else {
            return false;
        };
        let (Ok(module), Ok(name)) = (self.graph.text(module_id), self.graph.text(name_id)) else {
            return false;
        };
        let kind = Kind::Global(Box::new(Global {
            module,
            name,
            protocol: cur.proto,
            operands: Some((module_id, name_id)),
        }));
        let bytes = node_bytes(&kind);
        let Some(total) = self.fast_room(cur, 2, 1) else {
            return false;
        };
        if !self.fast_fits(bytes) {
            return false;
        }
        let Some(id) = self.fast_add(kind, bytes, pos, Opcode::STACK_GLOBAL, 1) else {
            return false;
        };
        self.graph.globals.push(id);
        cur.stack.truncate(at);
        self.fast_push(cur, id, total);
        true
    }

    /// `APPENDS`, `SETITEMS`, `ADDITEMS` onto a literal container of the
    /// matching type (anything else is an event, left to `step`).
    #[inline]
    fn fast_extend(&mut self, cur: &mut Machine<'a>, opcode: Opcode) -> bool {
        let Some(&mark) = cur.marks.last() else {
            return false;
        };
        // The target sits just below the mark, above the next fence.
        let fence = cur
            .marks
            .len()
            .checked_sub(2)
            .and_then(|i| cur.marks.get(i))
            .copied()
            .unwrap_or(0);
        let Some(target_at) = mark.checked_sub(1).filter(|&t| t >= fence) else {
            return false;
        };
        let (Some(&target), Some(items)) = (cur.stack.get(target_at), cur.stack.get(mark..)) else {
            return false;
        };
        let n = items.len();
        let bytes = if opcode == Opcode::SETITEMS {
            if !n.is_multiple_of(2) {
                return false;
            }
            items_bytes(n / 2, 2 * ID_BYTES)
        } else {
            items_bytes(n, ID_BYTES)
        };
        if self.graph_bytes.saturating_add(bytes) > self.limits.max_graph_bytes {
            return false;
        }
        // Leaves are at depth 0 unless one was mutated (rare).
        let child = if self.graph.leaf_depths_empty() && NodeId::all_leaves(items) {
            None
        } else if self.graph.leaf_depths_empty() {
            items
                .iter()
                .filter(|c| !c.is_leaf())
                .map(|&c| self.graph.depth(c))
                .max()
        } else {
            items.iter().map(|&c| self.graph.depth(c)).max()
        }
        .unwrap_or(0);
        if opcode == Opcode::SETITEMS {
            self.graph.unpool(target);
        }
        let Some(node) = self.graph.get_mut(target) else {
            return false;
        };
        let depth = node.depth.max(child.saturating_add(1));
        if u64::from(depth) > self.limits.max_nesting_depth {
            return false;
        }
        match (&mut node.kind, opcode) {
            (Kind::Dict(dict), Opcode::SETITEMS) => {
                dict.extend(items.as_chunks::<2>().0.iter().map(|&[k, v]| (k, v)));
            }
            (Kind::List(list), Opcode::APPENDS) => list.extend_from_slice(items),
            (Kind::Set(set), Opcode::ADDITEMS) => set.extend_from_slice(items),
            _ => return false,
        }
        node.depth = depth;
        self.graph_bytes = self.graph_bytes.saturating_add(bytes);
        self.stats.max_nesting_depth = self.stats.max_nesting_depth.max(u64::from(depth));
        cur.stack.truncate(mark);
        cur.marks.pop();
        true
    }

    /// `BUILD` when no hook is installed (a hook decides what follows).
    #[inline]
    fn fast_build(&mut self, cur: &mut Machine<'a>, pos: usize) -> bool {
        if self.hook.is_some() || cur.above_fence() < 2 {
            return false;
        }
        let Some(&[target, state]) = cur
            .stack
            .len()
            .checked_sub(2)
            .and_then(|at| cur.stack.get(at..))
        else {
            return false;
        };
        if self.graph_bytes.saturating_add(EVENT_BYTES) > self.limits.max_graph_bytes {
            return false;
        }
        let depth = self
            .graph
            .depth(target)
            .max(self.graph.depth(state).saturating_add(1));
        if u64::from(depth) > self.limits.max_nesting_depth {
            return false;
        }
        self.graph_bytes = self.graph_bytes.saturating_add(EVENT_BYTES);
        self.graph.events.push(Event {
            target,
            offset: to_u64(pos),
            opcode: Opcode::BUILD,
            kind: EventKind::Build { state },
        });
        self.graph.raise_depth(target, depth);
        self.stats.max_nesting_depth = self.stats.max_nesting_depth.max(u64::from(depth));
        cur.stack.pop();
        true
    }

    /// `MARK`.
    #[inline]
    fn fast_mark(&mut self, cur: &mut Machine<'a>) -> bool {
        let Some(total) = self.fast_room(cur, 0, 1) else {
            return false;
        };
        cur.marks.push(cur.stack.len());
        self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
        true
    }

    /// `MEMOIZE` (at `memo_len`) and `BINPUT`/`LONG_BINPUT`: store the top
    /// item in a slot that exists or comes right after the last one.
    #[inline]
    fn fast_put(&mut self, cur: &mut Machine<'a>, index: u64) -> bool {
        if cur.above_fence() == 0 || index > self.limits.max_memo_index {
            return false;
        }
        let (Some(&value), Ok(idx)) = (cur.stack.last(), usize::try_from(index)) else {
            return false;
        };
        let filled = cur.memo.get(idx).is_some_and(|&v| v != NO_ENTRY);
        if !filled {
            let entries = cur.memo_len.saturating_add(1);
            if idx > cur.memo.len() || entries > self.limits.max_memo_entries {
                return false;
            }
            if idx == cur.memo.len() {
                cur.memo.push(NO_ENTRY);
            }
            cur.memo_len = entries;
            self.stats.max_memo_entries = self.stats.max_memo_entries.max(entries);
        }
        let Some(slot) = cur.memo.get_mut(idx) else {
            return false;
        };
        *slot = value.0;
        self.stats.memo_puts = self.stats.memo_puts.saturating_add(1);
        true
    }

    /// `BINGET`/`LONG_BINGET` of a filled slot.
    #[inline]
    fn fast_get(&mut self, cur: &mut Machine<'a>, index: u64) -> bool {
        let gets = self.stats.memo_gets.saturating_add(1);
        if gets > self.limits.max_memo_gets {
            return false;
        }
        let Ok(idx) = usize::try_from(index) else {
            return false;
        };
        let Some(&v) = cur.memo.get(idx).filter(|&&v| v != NO_ENTRY) else {
            return false;
        };
        let Some(total) = self.fast_room(cur, 0, 1) else {
            return false;
        };
        self.stats.memo_gets = gets;
        cur.stack.push(NodeId(v));
        self.stats.max_stack_depth = self.stats.max_stack_depth.max(total);
        true
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use std::cell::Cell;

    use crate::Parser;

    thread_local! {
        /// Arrays `Run::fast_frombuffer` took on this thread.
        pub(super) static TAKEN: Cell<u64> = const { Cell::new(0) };
        /// Runs of one or more arrays `Run::fast_frombuffer` took on this thread.
        pub(super) static RUNS: Cell<u64> = const { Cell::new(0) };
        /// Objects `Run::fast_object` took on this thread.
        pub(super) static OBJECTS: Cell<u64> = const { Cell::new(0) };
    }

    #[test]
    fn joblib_wrappers_are_taken_whole() {
        let data = include_bytes!("../../tests/data/joblib_many.joblib");
        let parse = |listing| {
            let mut hook = crate::joblib::JoblibHook::new();
            let p = Parser::new(data)
                .record_listing(listing)
                .hook(&mut hook)
                .parse()
                .unwrap();
            (format!("{p:?}"), hook.arrays().to_vec())
        };
        let before = OBJECTS.with(Cell::get);
        let fast = parse(false);
        // The wrappers whose keys, dtype and order the memo holds already
        // (the others have a dtype or an order written out).
        assert_eq!(OBJECTS.with(Cell::get) - before, 7);
        let general = parse(true);
        assert_eq!(OBJECTS.with(Cell::get) - before, 7);
        let cut = |s: &str| s.split(", listing:").next().unwrap_or_default().to_owned();
        assert_eq!(cut(&fast.0), cut(&general.0));
        assert_eq!(fast.1, general.1);
        assert_eq!(fast.1.len(), 17);
    }

    #[test]
    fn in_band_arrays_are_taken_whole() {
        // A list: `_frombuffer` in slot 1, a dtype in 3, the order in 4,
        // then five arrays (one of them reading its own buffer's slot).
        let mut data = b"\x80\x05]\x94(\x8c\x01f\x940K\x05\x94\x85\x85\x940\x8c\x01C\x940".to_vec();
        let array =
            b"h\x01(\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94h\x03K\x02\x85\x94h\x04t\x94R\x94";
        for i in 0..5 {
            let mut a = array.to_vec();
            if i == 2 {
                a[16] = 5 + 4 * 2; // the slot its own buffer just filled
            }
            data.extend_from_slice(&a);
        }
        data.extend_from_slice(b"e.");
        let before = TAKEN.with(Cell::get);
        let fast = format!("{:?}", Parser::new(&data).parse().unwrap());
        assert_eq!(TAKEN.with(Cell::get) - before, 4);
        let general = Parser::new(&data).record_listing(true).parse().unwrap();
        assert_eq!(TAKEN.with(Cell::get) - before, 4);
        let general = format!("{:?}", general);
        // The listing aside, both parses are the same.
        let cut = |s: &str| s.split(", listing:").next().unwrap_or_default().to_owned();
        assert_eq!(cut(&fast), cut(&general));
        assert!(fast.contains("REDUCE"));
    }

    #[test]
    fn in_band_arrays_after_keys_are_taken_in_one_run() {
        // A dict: `_frombuffer` in slot 1, a dtype in 3, the order in 4,
        // then six arrays under memoized keys; the fourth key is read from
        // the memo, the fifth array's dtype is its own key's slot.
        let mut data = b"\x80\x05}\x94(\x8c\x01f\x940K\x05\x94\x85\x85\x940\x8c\x01C\x940".to_vec();
        let mut slot = 5u8;
        for i in 0..6u8 {
            if i == 3 {
                data.extend_from_slice(&[b'h', 5]);
            } else {
                data.extend_from_slice(&[0x8c, 2, b'k', b'0' + i, 0x94]);
                slot += 1;
            }
            let dtype = if i == 4 { slot - 1 } else { 3 };
            data.extend_from_slice(b"h\x01(\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94h");
            data.extend_from_slice(&[dtype]);
            data.extend_from_slice(b"K\x02\x85\x94h\x04t\x94R\x94");
            slot += 4;
        }
        data.extend_from_slice(b"u.");
        let before = TAKEN.with(Cell::get);
        let runs = RUNS.with(Cell::get);
        let fast = format!("{:?}", Parser::new(&data).parse().unwrap());
        // Three runs: the first three arrays, the fourth, the last two.
        assert_eq!(RUNS.with(Cell::get) - runs, 3);
        // All of them: a run ends before the key read from the memo and
        // before the key whose slot the next array reads (each then goes
        // the one-at-a-time way, and its array starts a new run).
        assert_eq!(TAKEN.with(Cell::get) - before, 6);
        let general = format!(
            "{:?}",
            Parser::new(&data).record_listing(true).parse().unwrap()
        );
        let cut = |s: &str| s.split(", listing:").next().unwrap_or_default().to_owned();
        assert_eq!(cut(&fast), cut(&general));
    }
}
