//! A text tree view of a value graph, for `amber inspect` and debugging.
//!
//! This module owns [`render_tree`]. It walks the graph with an explicit
//! work stack (never recursion), prints each composite node once and refers
//! back to it by id when it is reached again (memo sharing, cycles), shows
//! `BUILD` and other events under the object they act on, and caps depth,
//! items per container and total lines so hostile graphs render small.

use std::fmt::Write as _;

use crate::graph::{EventIndex, EventKind, Graph, Node, NodeId, NodeKind};
use crate::text::{format_float, format_le_int, repr_bytes, repr_str};

/// Bounds for [`render_tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeOptions {
    /// Deepest level expanded.
    pub max_depth: usize,
    /// Items shown per container (the rest are counted).
    pub max_items: usize,
    /// Lines of output before it is cut.
    pub max_lines: usize,
    /// Characters shown of a string, bytes shown of a byte payload.
    pub max_value_len: usize,
}

impl TreeOptions {
    /// Set [`TreeOptions::max_depth`].
    #[must_use]
    pub fn max_depth(mut self, n: usize) -> Self {
        self.max_depth = n;
        self
    }

    /// Set [`TreeOptions::max_items`].
    #[must_use]
    pub fn max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }

    /// Set [`TreeOptions::max_lines`].
    #[must_use]
    pub fn max_lines(mut self, n: usize) -> Self {
        self.max_lines = n;
        self
    }

    /// Set [`TreeOptions::max_value_len`].
    #[must_use]
    pub fn max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = n;
        self
    }
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            max_depth: 24,
            max_items: 16,
            max_lines: 2_000,
            max_value_len: 48,
        }
    }
}

enum Work {
    Node {
        label: String,
        id: NodeId,
        depth: usize,
    },
    Text {
        text: String,
        depth: usize,
    },
}

/// Render the graph below `root` as an indented tree.
#[must_use]
pub fn render_tree(graph: &Graph<'_>, root: NodeId, opts: &TreeOptions) -> String {
    let index = graph.event_index();
    let mut shown = vec![false; graph.len()];
    let mut shown_leaves = std::collections::HashSet::new();
    let mut out = String::new();
    let mut lines = 0usize;
    let mut work = vec![Work::Node {
        label: String::new(),
        id: root,
        depth: 0,
    }];
    while let Some(item) = work.pop() {
        if lines >= opts.max_lines {
            out.push_str("... output cut\n");
            break;
        }
        lines += 1;
        let (label, id, depth) = match item {
            Work::Text { text, depth } => {
                indent(&mut out, depth);
                out.push_str(&text);
                out.push('\n');
                continue;
            }
            Work::Node { label, id, depth } => (label, id, depth),
        };
        indent(&mut out, depth);
        out.push_str(&label);
        let Some(node) = graph.get(id) else {
            let _ = writeln!(out, "<unknown node {id}>");
            continue;
        };
        let composite = graph.children(id).next().is_some() || !index.of(id).is_empty();
        if !composite {
            out.push_str(&summary(graph, node, opts));
            out.push('\n');
            continue;
        }
        let seen = if id.is_leaf() {
            // A leaf with events (hostile streams only).
            !shown_leaves.insert(id)
        } else {
            shown.get(id.index()).copied().unwrap_or(true)
        };
        if seen {
            let _ = writeln!(out, "-> {id}");
            continue;
        }
        if let Some(s) = shown.get_mut(id.index()) {
            *s = true;
        }
        let _ = writeln!(
            out,
            "{} {id} @{:#x}",
            summary(graph, node, opts),
            node.offset()
        );
        if depth >= opts.max_depth {
            work.push(Work::Text {
                text: "...".to_owned(),
                depth: depth + 1,
            });
            continue;
        }
        let mut kids = child_entries(graph, node, opts);
        kids.extend(event_entries(graph, &index, id, opts));
        for (label, child) in kids.into_iter().rev() {
            work.push(match child {
                Some(id) => Work::Node {
                    label,
                    id,
                    depth: depth + 1,
                },
                None => Work::Text {
                    text: label,
                    depth: depth + 1,
                },
            });
        }
    }
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// `(label, child)`; a `None` child is a text line (`... 3 more`).
type Entries = Vec<(String, Option<NodeId>)>;

fn seq(entries: &mut Entries, prefix: &str, items: &[NodeId], opts: &TreeOptions) {
    for (i, &c) in items.iter().enumerate().take(opts.max_items) {
        entries.push((format!("{prefix}[{i}] "), Some(c)));
    }
    if items.len() > opts.max_items {
        entries.push((format!("... {} more", items.len() - opts.max_items), None));
    }
}

fn pairs(
    graph: &Graph<'_>,
    entries: &mut Entries,
    prefix: &str,
    items: &[(NodeId, NodeId)],
    opts: &TreeOptions,
) {
    for &(k, v) in items.iter().take(opts.max_items) {
        let key = graph.get(k);
        match key {
            Some(n) if graph.children(k).next().is_none() => {
                entries.push((format!("{prefix}{}: ", summary(graph, n, opts)), Some(v)));
            }
            _ => {
                entries.push((format!("{prefix}key: "), Some(k)));
                entries.push((format!("{prefix}value: "), Some(v)));
            }
        }
    }
    if items.len() > opts.max_items {
        entries.push((format!("... {} more", items.len() - opts.max_items), None));
    }
}

fn child_entries(graph: &Graph<'_>, node: Node<'_>, opts: &TreeOptions) -> Entries {
    let mut e = Entries::new();
    match node.kind() {
        NodeKind::Tuple(items) | NodeKind::FrozenSet(items) => seq(&mut e, "", items, opts),
        NodeKind::List(items) | NodeKind::Set(items) => seq(&mut e, "", items, opts),
        NodeKind::Dict(items) => pairs(graph, &mut e, "", items, opts),
        NodeKind::Reduce { callable, args } => {
            e.push(("callable: ".to_owned(), Some(callable)));
            e.push(("args: ".to_owned(), Some(args)));
        }
        NodeKind::NewObj { cls, args, kwargs } => {
            e.push(("cls: ".to_owned(), Some(cls)));
            e.push(("args: ".to_owned(), Some(args)));
            if let Some(k) = kwargs {
                e.push(("kwargs: ".to_owned(), Some(k)));
            }
        }
        NodeKind::Obj { cls, args } => {
            e.push(("cls: ".to_owned(), Some(cls)));
            seq(&mut e, "arg", args, opts);
        }
        NodeKind::Inst { class, args } => {
            e.push(("class: ".to_owned(), Some(class)));
            seq(&mut e, "arg", args, opts);
        }
        NodeKind::PersId { pid } => e.push(("pid: ".to_owned(), Some(pid))),
        NodeKind::ReadOnly { inner } => e.push(("inner: ".to_owned(), Some(inner))),
        NodeKind::InlineData { wrapper, .. } => e.push(("wrapper: ".to_owned(), Some(wrapper))),
        NodeKind::NestedPickle { wrapper, root, .. } => {
            e.push(("wrapper: ".to_owned(), Some(wrapper)));
            e.push(("root: ".to_owned(), Some(root)));
        }
        NodeKind::Global(g) => {
            if let Some((m, n)) = g.operands {
                e.push(("module: ".to_owned(), Some(m)));
                e.push(("name: ".to_owned(), Some(n)));
            }
        }
        _ => {}
    }
    e
}

fn event_entries(graph: &Graph<'_>, index: &EventIndex, id: NodeId, opts: &TreeOptions) -> Entries {
    let mut e = Entries::new();
    for &i in index.of(id) {
        let Some(ev) = graph.events().get(i as usize) else {
            continue;
        };
        let tag = format!("{} @{:#x} ", ev.opcode, ev.offset);
        match &ev.kind {
            EventKind::Build { state } => e.push((format!("{tag}state: "), Some(*state))),
            EventKind::Append { item } => e.push((tag, Some(*item))),
            EventKind::Extend { items } | EventKind::AddItems { items } => {
                seq(&mut e, &tag, items, opts);
            }
            EventKind::SetItems { pairs: items } => pairs(graph, &mut e, &tag, items, opts),
        }
    }
    e
}

fn summary(graph: &Graph<'_>, node: Node<'_>, opts: &TreeOptions) -> String {
    let n = opts.max_value_len;
    match node.kind() {
        NodeKind::None => "None".to_owned(),
        NodeKind::Bool(b) => if b { "True" } else { "False" }.to_owned(),
        NodeKind::Int(v) => v.to_string(),
        NodeKind::BigInt(b) => format_le_int(b),
        NodeKind::Float(v) => format_float(v),
        NodeKind::Str(s) => repr_str(s, n),
        NodeKind::Bytes(b) => repr_bytes(b, n),
        NodeKind::ByteArray(b) => format!("bytearray({})", repr_bytes(b, n)),
        NodeKind::LegacyStr(b) => format!("str2({})", repr_bytes(b, n)),
        NodeKind::Tuple(items) => format!("tuple ({} items)", items.len()),
        NodeKind::List(items) => format!("list ({} items)", items.len()),
        NodeKind::Dict(items) => format!("dict ({} items)", items.len()),
        NodeKind::Set(items) => format!("set ({} items)", items.len()),
        NodeKind::FrozenSet(items) => format!("frozenset ({} items)", items.len()),
        NodeKind::Global(g) => {
            let canonical = g.dotted();
            let written = format!("{}.{}", g.module, g.name);
            if canonical == written {
                format!("global {canonical}")
            } else {
                format!("global {canonical} (written {written})")
            }
        }
        NodeKind::Reduce { callable, .. } => format!("reduce {}", callee(graph, callable)),
        NodeKind::NewObj { cls, .. } => format!("newobj {}", callee(graph, cls)),
        NodeKind::Obj { cls, .. } => format!("obj {}", callee(graph, cls)),
        NodeKind::Inst { class, .. } => format!("inst {}", callee(graph, class)),
        NodeKind::PersId { .. } => "persistent id".to_owned(),
        NodeKind::Ext { code } => format!("extension {code}"),
        NodeKind::Buffer { index } => format!("out-of-band buffer {index}"),
        NodeKind::ReadOnly { .. } => "read-only".to_owned(),
        NodeKind::InlineData { offset, len, .. } => {
            format!("inline data ({len} bytes at {offset:#x})")
        }
        NodeKind::NestedPickle { start, end, .. } => {
            format!("nested pickle ({start:#x}..{end:#x})")
        }
    }
}

fn callee(graph: &Graph<'_>, id: NodeId) -> String {
    match graph.get(id).and_then(Node::as_global) {
        Some(g) => g.dotted(),
        None => format!("<{id}>"),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::parse;

    #[test]
    fn renders_shared_and_builds() {
        // obj = mod.C(); obj.__setstate__({'a': [1]}); root = (obj, obj)
        let p =
            parse(b"\x80\x02cmod\nC\n)\x81q\x00}X\x01\x00\x00\x00a]K\x01asbh\x00\x86.").unwrap();
        let text = render_tree(p.graph(), p.root(), &TreeOptions::default());
        assert!(text.starts_with("tuple (2 items)"), "{text}");
        assert!(text.contains("[0] newobj mod.C"), "{text}");
        assert!(text.contains("BUILD @0x"), "{text}");
        assert!(text.contains("'a': list (1 items)"), "{text}");
        assert!(text.contains("[1] -> #"), "{text}");
    }

    #[test]
    fn self_reference_terminates() {
        let p = parse(b"]q\x00h\x00a.").unwrap();
        let text = render_tree(p.graph(), p.root(), &TreeOptions::default());
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
