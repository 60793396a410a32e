//! When a load may lend a `Tree` its arrays in memory it then reuses.
//!
//! `Tree.__setstate__` copies its node and value arrays and keeps neither,
//! so a load may hand them over without a copy of their own: views of the
//! file (uncompressed), or, for compressed files, a few scratch buffers it
//! decodes batch after batch into, reusing each once the trees have copied
//! what it held. Reuse is only sound when nothing else in the stream can
//! reach those bytes, and when each tree copies them before the load
//! reuses their memory. So an array is lent ([`ArrayBytes::lend`]) only when
//!
//! - the array, its `_frombuffer` arguments, its buffer (and `READONLY`
//!   wrapper) and the state dict that holds it are each referenced exactly
//!   once in the graph: by a node edge, an event or as the stream's root
//!   (no memo `GET`, second `BUILD` or other object reaches them), and
//! - the tree's `BUILD` comes before the `NEXT_BUFFER` of buffer
//!   `index + 2`: a load asked for buffer `k` may reuse the memory of every
//!   lent buffer below `k - 1`.
//!
//! Real scikit-learn pickles always qualify (each tree's state is written
//! once, nodes then values, just before its `BUILD`); a stream that does
//! not only loses the lending.
//!
//! [`ArrayBytes::lend`]: crate::ndarray::ArrayBytes::lend

use std::sync::OnceLock;

use amber_pickle::{EventKind, Graph, NodeId, NodeKind};

/// What lending needs to know of the whole graph, found in one pass the
/// first time a check could lend (see [`Lending`]).
#[derive(Debug)]
pub(crate) struct Sharing {
    /// References to each stored node, saturating at 2.
    uses: Vec<u8>,
    /// For each buffer index `k`, the smallest `NEXT_BUFFER` offset of the
    /// buffers from `k` on.
    next_buffer_from: Vec<u64>,
    /// An event of a kind this does not know the operands of: nothing is lent.
    opaque: bool,
}

impl Sharing {
    fn of(graph: &Graph<'_>, root: NodeId) -> Self {
        let mut uses = vec![0u8; graph.len()];
        let mut bump = |id: NodeId| {
            if !id.is_leaf()
                && let Some(count) = uses.get_mut(id.index())
            {
                *count = count.saturating_add(1).min(2);
            }
        };
        let mut buffers: Vec<(u64, u64)> = Vec::new();
        for (id, node) in graph.iter() {
            graph.children(id).for_each(&mut bump);
            if let NodeKind::Buffer { index } = node.kind() {
                buffers.push((index, node.offset()));
            }
        }
        let mut opaque = false;
        for event in graph.events() {
            bump(event.target);
            match &event.kind {
                EventKind::Build { state } => bump(*state),
                EventKind::Append { item } => bump(*item),
                EventKind::Extend { items } | EventKind::AddItems { items } => {
                    items.iter().copied().for_each(&mut bump);
                }
                EventKind::SetItems { pairs } => {
                    for &(key, value) in pairs {
                        bump(key);
                        bump(value);
                    }
                }
                _ => opaque = true,
            }
        }
        bump(root);
        buffers.sort_unstable();
        let mut next_buffer_from = vec![u64::MAX; buffers.len()];
        let mut lowest = u64::MAX;
        for (slot, &(_, offset)) in next_buffer_from.iter_mut().zip(&buffers).rev() {
            lowest = lowest.min(offset);
            *slot = lowest;
        }
        Sharing {
            uses,
            next_buffer_from,
            opaque,
        }
    }

    fn once(&self, id: NodeId) -> bool {
        !id.is_leaf() && self.uses.get(id.index()) == Some(&1)
    }
}

/// Lets a [`super::Checker`]'s tree checks lend arrays: the graph's sharing
/// (computed once, when first needed) and the stream's root.
#[derive(Clone, Copy)]
pub(crate) struct Lending<'g> {
    pub(crate) sharing: &'g OnceLock<Sharing>,
    pub(crate) root: NodeId,
}

impl Lending<'_> {
    /// Whether the array `array` (a `_frombuffer` of buffer `buffer`), held
    /// by the state dict `state` that a `BUILD` at `build_at` gives its tree,
    /// may be lent (see the module doc).
    pub(crate) fn may_lend(
        self,
        graph: &Graph<'_>,
        array: NodeId,
        buffer: u64,
        state: NodeId,
        build_at: u64,
    ) -> bool {
        let sharing = self.sharing.get_or_init(|| Sharing::of(graph, self.root));
        if sharing.opaque || !sharing.once(array) || !sharing.once(state) {
            return false;
        }
        let held = matches!(graph.kind(state), Some(NodeKind::Dict(pairs))
            if pairs.iter().any(|&(_, value)| value == array));
        let Some(NodeKind::Reduce { args, .. }) = graph.kind(array) else {
            return false;
        };
        let Some(&buf) = graph.tuple_items(args).and_then(<[NodeId]>::first) else {
            return false;
        };
        let inner = match graph.kind(buf) {
            Some(NodeKind::ReadOnly { inner }) if sharing.once(inner) => inner,
            _ => buf,
        };
        let sole_buffer =
            matches!(graph.kind(inner), Some(NodeKind::Buffer { index }) if index == buffer);
        let copied_in_time = usize::try_from(buffer.saturating_add(2))
            .ok()
            .and_then(|k| sharing.next_buffer_from.get(k))
            .is_none_or(|&next| build_at < next);
        held && sharing.once(args) && sharing.once(buf) && sole_buffer && copied_in_time
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;

    /// `T = mod.T()`, `X = mod.fn(<buffer 0>, None, None, None)` (memo 0),
    /// `BUILD(T, {"nodes": X})` with `between` before the `BUILD` and
    /// `after` after it (the root is what is left on the stack).
    fn stream(between: &[u8], after: &[u8]) -> Vec<u8> {
        let mut s = b"\x80\x05cmod\nT\n)R}X\x05\x00\x00\x00nodes".to_vec();
        s.extend_from_slice(b"cmod\nfn\n(\x97NNNtR\x94s");
        s.extend_from_slice(between);
        s.extend_from_slice(b"b");
        s.extend_from_slice(after);
        s.push(b'.');
        s
    }

    /// Whether the array of `stream(between, after)` may be lent.
    fn lendable(between: &[u8], after: &[u8]) -> bool {
        let data = stream(between, after);
        let pickle = amber_pickle::parse(&data).unwrap();
        let graph = pickle.graph();
        let find = |want: &dyn Fn(NodeKind<'_>) -> bool| {
            graph
                .iter()
                .find(|(_, node)| want(node.kind()))
                .map(|(id, _)| id)
                .unwrap()
        };
        let state = find(&|k| matches!(k, NodeKind::Dict(_)));
        let array = find(&|k| {
            let NodeKind::Reduce { args, .. } = k else {
                return false;
            };
            let first = graph.tuple_items(args).and_then(<[NodeId]>::first);
            first.is_some_and(|&b| matches!(graph.kind(b), Some(NodeKind::Buffer { .. })))
        });
        let Some(EventKind::Build { .. }) = graph.events().first().map(|e| &e.kind) else {
            panic!("no BUILD event");
        };
        let at = graph.events().first().unwrap().offset;
        let sharing = OnceLock::new();
        let lending = Lending {
            sharing: &sharing,
            root: pickle.root(),
        };
        lending.may_lend(graph, array, 0, state, at)
    }

    #[test]
    fn an_array_only_its_tree_reaches_is_lent() {
        assert!(lendable(b"", b""));
        // Its neighbour's buffer (the values) may come before the BUILD.
        assert!(lendable(b"\x970", b""));
    }

    #[test]
    fn an_array_reached_again_is_not_lent() {
        // The root is `(T, X)`: X through the memo.
        assert!(!lendable(b"", b"h\x00\x86"));
        // The root is X itself.
        assert!(!lendable(b"", b"0h\x00"));
    }

    #[test]
    fn an_array_copied_after_the_buffer_two_on_is_not_lent() {
        // Buffers 1 and 2 come before the BUILD: the load could have
        // reused buffer 0's memory by then.
        assert!(!lendable(b"\x970\x970", b""));
    }
}
