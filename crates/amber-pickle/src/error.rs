//! The one error type of this crate.
//!
//! Every variant says *what* is wrong and *where*: the byte offset of the
//! opcode concerned (or of the byte that is wrong) and, when there is one,
//! the opcode. Fields are structured so callers branch on them, and
//! [`PickleError::code`] gives a stable string per variant that bindings,
//! the CLI and tests match on. Messages are lowercase fragments without a
//! trailing period, literals in backticks, offsets in hex.

use crate::opcodes::Opcode;

/// Which bound of [`crate::Limits`] was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// [`crate::Limits::max_opcodes`].
    Opcodes,
    /// [`crate::Limits::max_nodes`].
    Nodes,
    /// [`crate::Limits::max_stack_depth`].
    StackDepth,
    /// [`crate::Limits::max_nesting_depth`].
    NestingDepth,
    /// [`crate::Limits::max_memo_entries`].
    MemoEntries,
    /// [`crate::Limits::max_memo_index`].
    MemoIndex,
    /// [`crate::Limits::max_memo_gets`].
    MemoGets,
    /// [`crate::Limits::max_str_len`].
    StrLen,
    /// [`crate::Limits::max_bytes_len`].
    BytesLen,
    /// [`crate::Limits::max_bigint_bytes`].
    BigIntBytes,
    /// [`crate::Limits::max_nested_pickles`].
    NestedPickles,
    /// [`crate::Limits::max_graph_bytes`].
    GraphBytes,
}

impl LimitKind {
    /// The field name in [`crate::Limits`].
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            LimitKind::Opcodes => "max_opcodes",
            LimitKind::Nodes => "max_nodes",
            LimitKind::StackDepth => "max_stack_depth",
            LimitKind::NestingDepth => "max_nesting_depth",
            LimitKind::MemoEntries => "max_memo_entries",
            LimitKind::MemoIndex => "max_memo_index",
            LimitKind::MemoGets => "max_memo_gets",
            LimitKind::StrLen => "max_str_len",
            LimitKind::BytesLen => "max_bytes_len",
            LimitKind::BigIntBytes => "max_bigint_bytes",
            LimitKind::NestedPickles => "max_nested_pickles",
            LimitKind::GraphBytes => "max_graph_bytes",
        }
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong while parsing a pickle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The input ends inside an opcode, its argument or announced raw data.
    #[error("truncated {what} at byte {offset:#x}{}", op_suffix(*opcode))]
    Truncated {
        /// What was being read (`opcode`, `string`, `integer`, ...).
        what: &'static str,
        /// Where the opcode (or raw data) starts.
        offset: u64,
        /// The opcode being read, if its byte was read.
        opcode: Option<Opcode>,
    },

    /// A byte that is not a pickle opcode.
    #[error("unknown opcode byte {byte:#04x} at byte {offset:#x}")]
    BadOpcode {
        /// Where the byte is.
        offset: u64,
        /// The byte.
        byte: u8,
    },

    /// An inline argument is malformed (bad digits, bad escape, negative length).
    #[error("invalid argument at byte {offset:#x} (opcode `{opcode}`): {reason}")]
    BadArgument {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// What is wrong, as a fragment.
        reason: String,
    },

    /// Text that is not valid in the encoding the opcode requires.
    #[error("invalid {encoding} text at byte {offset:#x} (opcode `{opcode}`): {reason}")]
    BadEncoding {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// `UTF-8`, `ASCII` or `raw-unicode-escape`.
        encoding: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// `PROTO` names a protocol above 5.
    #[error("unsupported pickle protocol {protocol} at byte {offset:#x}")]
    UnsupportedProtocol {
        /// Where the `PROTO` opcode starts.
        offset: u64,
        /// The protocol it names.
        protocol: u8,
    },

    /// A `FRAME` announces more bytes than the input holds.
    #[error("frame at byte {offset:#x} announces {length} bytes, only {available} remain")]
    FrameOverrun {
        /// Where the `FRAME` opcode starts.
        offset: u64,
        /// The announced length.
        length: u64,
        /// Bytes left after the `FRAME` argument.
        available: u64,
    },

    /// An opcode or its argument crosses the end of the current frame.
    #[error(
        "opcode at byte {offset:#x} (opcode `{opcode}`) crosses the end of its frame at byte {frame_end:#x}"
    )]
    FrameStraddle {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// Where the frame ends.
        frame_end: u64,
    },

    /// A `FRAME` opcode inside a frame that has not ended.
    #[error("`FRAME` at byte {offset:#x} starts inside a frame that ends at byte {frame_end:#x}")]
    FrameNested {
        /// Where the inner `FRAME` starts.
        offset: u64,
        /// Where the enclosing frame ends.
        frame_end: u64,
    },

    /// `STOP` or raw data (a hook) inside a frame that has bytes left.
    #[error("{what} at byte {offset:#x} leaves the frame ending at byte {frame_end:#x} unfinished")]
    FrameUnfinished {
        /// `STOP` or `raw data`.
        what: &'static str,
        /// Where it happens.
        offset: u64,
        /// Where the frame ends.
        frame_end: u64,
    },

    /// An opcode needs more stack items above the top mark than there are.
    #[error(
        "stack underflow at byte {offset:#x} (opcode `{opcode}`): needs {needed} items above the mark, found {found}"
    )]
    StackUnderflow {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// Items it needs.
        needed: usize,
        /// Items there are above the top mark.
        found: usize,
    },

    /// An opcode that pops a mark finds none.
    #[error("no mark at byte {offset:#x} (opcode `{opcode}`)")]
    MarkMissing {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
    },

    /// A memo read of a slot that was never written.
    #[error("memo slot {index} is empty at byte {offset:#x} (opcode `{opcode}`)")]
    MemoMissing {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// The slot.
        index: u64,
    },

    /// An operand has a type CPython itself refuses (odd `DICT` items,
    /// non-`str` `STACK_GLOBAL` operands).
    #[error("invalid operands at byte {offset:#x} (opcode `{opcode}`): {reason}")]
    BadOperands {
        /// Where the opcode starts.
        offset: u64,
        /// The opcode.
        opcode: Opcode,
        /// What is wrong.
        reason: String,
    },

    /// `STOP` with a stack that is not exactly one item and no mark.
    #[error(
        "`STOP` at byte {offset:#x} with {stack_len} stack items and {marks} open marks, expected 1 and 0"
    )]
    BadStop {
        /// Where `STOP` is.
        offset: u64,
        /// Items on the stack (all levels).
        stack_len: usize,
        /// Marks still open.
        marks: usize,
    },

    /// Bytes after `STOP` in strict mode.
    #[error("{remaining} trailing bytes after `STOP` at byte {offset:#x}")]
    TrailingBytes {
        /// Where the trailing bytes start.
        offset: u64,
        /// How many there are.
        remaining: u64,
    },

    /// `NEXT_BUFFER` beyond the out-of-band buffers the caller declared.
    #[error(
        "`NEXT_BUFFER` at byte {offset:#x} asks for buffer {index}, only {available} available"
    )]
    BufferMissing {
        /// Where the opcode is.
        offset: u64,
        /// The buffer index requested.
        index: u64,
        /// Buffers the caller declared.
        available: u64,
    },

    /// A bound of [`crate::Limits`] was hit.
    #[error("limit `{limit}` exceeded at byte {offset:#x}: {value} > {max}")]
    Limit {
        /// Where it was hit.
        offset: u64,
        /// Which limit.
        limit: LimitKind,
        /// The value that would have been reached.
        value: u64,
        /// The configured maximum.
        max: u64,
    },

    /// A [`crate::Hook`] refused the stream.
    #[error("{reason} at byte {offset:#x}")]
    Hook {
        /// Where (usually the position just after `BUILD`).
        offset: u64,
        /// What the hook found wrong, as a fragment.
        reason: String,
    },

    /// The start offset given by the caller is past the end of the input.
    #[error("start offset {offset:#x} is past the end of the input ({len} bytes)")]
    BadStart {
        /// The requested start.
        offset: u64,
        /// The input length.
        len: u64,
    },

    /// An invariant of this crate broke; this is a bug, please report it.
    #[error("internal error at byte {offset:#x}: {what}")]
    Internal {
        /// Where.
        offset: u64,
        /// Which invariant.
        what: &'static str,
    },
}

fn op_suffix(opcode: Option<Opcode>) -> String {
    opcode.map_or_else(String::new, |op| format!(" (opcode `{op}`)"))
}

impl PickleError {
    /// A stable, machine-readable identifier for the kind of error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            PickleError::Truncated { .. } => "pickle.truncated",
            PickleError::BadOpcode { .. } => "pickle.bad_opcode",
            PickleError::BadArgument { .. } => "pickle.bad_argument",
            PickleError::BadEncoding { .. } => "pickle.bad_encoding",
            PickleError::UnsupportedProtocol { .. } => "pickle.unsupported_protocol",
            PickleError::FrameOverrun { .. } => "pickle.frame_overrun",
            PickleError::FrameStraddle { .. } => "pickle.frame_straddle",
            PickleError::FrameNested { .. } => "pickle.frame_nested",
            PickleError::FrameUnfinished { .. } => "pickle.frame_unfinished",
            PickleError::StackUnderflow { .. } => "pickle.stack_underflow",
            PickleError::MarkMissing { .. } => "pickle.mark_missing",
            PickleError::MemoMissing { .. } => "pickle.memo_missing",
            PickleError::BadOperands { .. } => "pickle.bad_operands",
            PickleError::BadStop { .. } => "pickle.bad_stop",
            PickleError::TrailingBytes { .. } => "pickle.trailing_bytes",
            PickleError::BufferMissing { .. } => "pickle.buffer_missing",
            PickleError::Limit { .. } => "pickle.limit",
            PickleError::Hook { .. } => "pickle.hook",
            PickleError::BadStart { .. } => "pickle.bad_start",
            PickleError::Internal { .. } => "pickle.internal",
        }
    }

    /// The byte offset the error refers to.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        match self {
            PickleError::Truncated { offset, .. }
            | PickleError::BadOpcode { offset, .. }
            | PickleError::BadArgument { offset, .. }
            | PickleError::BadEncoding { offset, .. }
            | PickleError::UnsupportedProtocol { offset, .. }
            | PickleError::FrameOverrun { offset, .. }
            | PickleError::FrameStraddle { offset, .. }
            | PickleError::FrameNested { offset, .. }
            | PickleError::FrameUnfinished { offset, .. }
            | PickleError::StackUnderflow { offset, .. }
            | PickleError::MarkMissing { offset, .. }
            | PickleError::MemoMissing { offset, .. }
            | PickleError::BadOperands { offset, .. }
            | PickleError::BadStop { offset, .. }
            | PickleError::TrailingBytes { offset, .. }
            | PickleError::BufferMissing { offset, .. }
            | PickleError::Limit { offset, .. }
            | PickleError::Hook { offset, .. }
            | PickleError::BadStart { offset, .. }
            | PickleError::Internal { offset, .. } => *offset,
        }
    }

    /// The opcode the error refers to, when there is one.
    #[must_use]
    pub const fn opcode(&self) -> Option<Opcode> {
        match self {
            PickleError::Truncated { opcode, .. } => *opcode,
            PickleError::BadArgument { opcode, .. }
            | PickleError::BadEncoding { opcode, .. }
            | PickleError::FrameStraddle { opcode, .. }
            | PickleError::StackUnderflow { opcode, .. }
            | PickleError::MarkMissing { opcode, .. }
            | PickleError::MemoMissing { opcode, .. }
            | PickleError::BadOperands { opcode, .. } => Some(*opcode),
            PickleError::UnsupportedProtocol { .. } => Some(Opcode::PROTO),
            PickleError::FrameOverrun { .. } | PickleError::FrameNested { .. } => {
                Some(Opcode::FRAME)
            }
            PickleError::BadStop { .. } => Some(Opcode::STOP),
            PickleError::BufferMissing { .. } => Some(Opcode::NEXT_BUFFER),
            _ => None,
        }
    }

    /// A hook error, for [`crate::Hook`] implementations.
    pub fn hook(offset: u64, reason: impl Into<String>) -> Self {
        PickleError::Hook {
            offset,
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = PickleError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_style() {
        let e = PickleError::Truncated {
            what: "string",
            offset: 0x1f3,
            opcode: Some(Opcode::BINUNICODE),
        };
        assert_eq!(
            e.to_string(),
            "truncated string at byte 0x1f3 (opcode `BINUNICODE`)"
        );
        assert_eq!(e.code(), "pickle.truncated");
        assert_eq!(e.offset(), 0x1f3);
        assert_eq!(e.opcode(), Some(Opcode::BINUNICODE));

        let e = PickleError::Limit {
            offset: 2,
            limit: LimitKind::StackDepth,
            value: 11,
            max: 10,
        };
        assert_eq!(
            e.to_string(),
            "limit `max_stack_depth` exceeded at byte 0x2: 11 > 10"
        );
        assert_eq!(
            PickleError::BadOpcode {
                offset: 0,
                byte: 0xff
            }
            .to_string(),
            "unknown opcode byte 0xff at byte 0x0"
        );
    }
}
