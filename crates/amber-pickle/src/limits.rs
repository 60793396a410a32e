//! Resource bounds for parsing untrusted pickles.
//!
//! This module owns the [`Limits`] struct and its defaults. The defaults
//! accept every scikit-learn / NumPy / SciPy model we have seen while
//! keeping the worst case of a hostile input well under 256 MiB of memory
//! and linear time. Every check happens *before* the allocation or the work
//! it guards; lengths are additionally bounded by the bytes that remain in
//! the input, so a length field can never make the parser allocate more
//! than the input holds.

use crate::error::{LimitKind, PickleError};

/// Bounds applied while parsing. Use [`Limits::default`] unless a known,
/// trusted workload needs more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Opcodes executed, including those of nested pickles.
    pub max_opcodes: u64,
    /// Values in the value graph: stored nodes (32 bytes each, plus what
    /// they hold; see `max_graph_bytes`) and leaves (scalars decoded from
    /// the input on demand, which cost nothing stored) together.
    pub max_nodes: u64,
    /// Stack items plus open marks, over all levels.
    pub max_stack_depth: u64,
    /// Nesting depth of a node, measured when it is created or mutated
    /// (a container holding a container holding ... ).
    pub max_nesting_depth: u64,
    /// Filled memo slots of one pickle.
    pub max_memo_entries: u64,
    /// Highest memo index written (CPython's C unpickler allocates an array
    /// of twice this size).
    pub max_memo_index: u64,
    /// Memo reads (`GET`, `BINGET`, `LONG_BINGET`) of one parse.
    pub max_memo_gets: u64,
    /// Length in bytes of one text value (`str`, names, persistent ids).
    pub max_str_len: u64,
    /// Length of one byte value (`bytes`, `bytearray`, Python 2 `str`).
    pub max_bytes_len: u64,
    /// Bytes of one integer that does not fit in an `i64`.
    pub max_bigint_bytes: u64,
    /// Depth of pickles nested inside a pickle by a [`crate::Hook`]
    /// (joblib object arrays use 1).
    pub max_nested_pickles: u64,
    /// Approximate heap bytes of the value graph: nodes, decoded (owned)
    /// payloads, container items and events. Payloads borrowed from the
    /// input cost nothing.
    pub max_graph_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_opcodes: 10_000_000,
            max_nodes: 2_000_000,
            max_stack_depth: 1_000_000,
            max_nesting_depth: 1_000,
            max_memo_entries: 2_000_000,
            max_memo_index: 2_000_000,
            max_memo_gets: 4_000_000,
            max_str_len: 1 << 30,
            max_bytes_len: 1 << 40,
            max_bigint_bytes: 4_096,
            max_nested_pickles: 4,
            max_graph_bytes: 128 << 20,
        }
    }
}

impl Limits {
    /// No bound beyond the input itself and `u32` node ids. For trusted
    /// inputs and tests only.
    #[must_use]
    pub fn unlimited() -> Self {
        Limits {
            max_opcodes: u64::MAX,
            max_nodes: u64::from(u32::MAX - 1),
            max_stack_depth: u64::MAX,
            max_nesting_depth: u64::MAX,
            max_memo_entries: u64::MAX,
            max_memo_index: u64::from(u32::MAX),
            max_memo_gets: u64::MAX,
            max_str_len: u64::MAX,
            max_bytes_len: u64::MAX,
            max_bigint_bytes: u64::MAX,
            max_nested_pickles: 64,
            max_graph_bytes: u64::MAX,
        }
    }

    /// The configured maximum for one limit.
    #[must_use]
    #[inline]
    pub const fn get(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::Opcodes => self.max_opcodes,
            LimitKind::Nodes => self.max_nodes,
            LimitKind::StackDepth => self.max_stack_depth,
            LimitKind::NestingDepth => self.max_nesting_depth,
            LimitKind::MemoEntries => self.max_memo_entries,
            LimitKind::MemoIndex => self.max_memo_index,
            LimitKind::MemoGets => self.max_memo_gets,
            LimitKind::StrLen => self.max_str_len,
            LimitKind::BytesLen => self.max_bytes_len,
            LimitKind::BigIntBytes => self.max_bigint_bytes,
            LimitKind::NestedPickles => self.max_nested_pickles,
            LimitKind::GraphBytes => self.max_graph_bytes,
        }
    }

    /// Set one limit by kind (for callers that take limits from a config).
    pub fn set(&mut self, kind: LimitKind, value: u64) {
        let slot = match kind {
            LimitKind::Opcodes => &mut self.max_opcodes,
            LimitKind::Nodes => &mut self.max_nodes,
            LimitKind::StackDepth => &mut self.max_stack_depth,
            LimitKind::NestingDepth => &mut self.max_nesting_depth,
            LimitKind::MemoEntries => &mut self.max_memo_entries,
            LimitKind::MemoIndex => &mut self.max_memo_index,
            LimitKind::MemoGets => &mut self.max_memo_gets,
            LimitKind::StrLen => &mut self.max_str_len,
            LimitKind::BytesLen => &mut self.max_bytes_len,
            LimitKind::BigIntBytes => &mut self.max_bigint_bytes,
            LimitKind::NestedPickles => &mut self.max_nested_pickles,
            LimitKind::GraphBytes => &mut self.max_graph_bytes,
        };
        *slot = value;
    }

    /// This set of limits with one of them changed.
    ///
    /// ```
    /// use amber_pickle::{LimitKind, Limits};
    /// let limits = Limits::default().with(LimitKind::Nodes, 10_000_000);
    /// assert_eq!(limits.max_nodes, 10_000_000);
    /// ```
    #[must_use]
    pub fn with(mut self, kind: LimitKind, value: u64) -> Self {
        self.set(kind, value);
        self
    }

    /// `Ok` if `value` is within the limit, else a [`PickleError::Limit`].
    #[inline]
    pub(crate) fn check(
        &self,
        kind: LimitKind,
        value: u64,
        offset: u64,
    ) -> Result<(), PickleError> {
        let max = self.get(kind);
        if value > max {
            Err(PickleError::Limit {
                offset,
                limit: kind,
                value,
                max,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_and_set() {
        let mut l = Limits::default();
        assert!(l.check(LimitKind::Nodes, 2_000_000, 0).is_ok());
        let err = l.check(LimitKind::Nodes, 2_000_001, 7);
        assert!(matches!(
            err,
            Err(PickleError::Limit {
                offset: 7,
                limit: LimitKind::Nodes,
                ..
            })
        ));
        l.set(LimitKind::Nodes, 5);
        assert_eq!(l.max_nodes, 5);
        assert_eq!(l.get(LimitKind::Nodes), 5);
    }
}
