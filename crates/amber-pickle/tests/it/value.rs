//! End-to-end decoding check: rebuild the plain-data fixture from the graph
//! with a tiny allowlisted evaluator and compare its canonical rendering
//! with the one Python wrote (`plain_render.txt`), for protocols 0–5.
//!
//! The evaluator recurses; it only runs on the small, known fixtures.

use std::fmt::Write as _;

use amber_pickle::text::format_le_int;
use amber_pickle::{EventKind, Graph, NodeId, NodeKind, parse};

use crate::{data_dir, fixture};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn join(graph: &Graph<'_>, items: &[NodeId]) -> Result<String, String> {
    Ok(items
        .iter()
        .map(|&i| render(graph, i))
        .collect::<Result<Vec<_>, _>>()?
        .join(","))
}

fn join_pairs(graph: &Graph<'_>, pairs: &[(NodeId, NodeId)]) -> Result<String, String> {
    Ok(pairs
        .iter()
        .map(|&(k, v)| Ok(format!("{}:{}", render(graph, k)?, render(graph, v)?)))
        .collect::<Result<Vec<_>, String>>()?
        .join(","))
}

fn tuple_items<'g>(graph: &'g Graph<'_>, id: NodeId) -> Result<&'g [NodeId], String> {
    graph
        .get(id)
        .and_then(|n| n.as_tuple())
        .ok_or_else(|| format!("{id} is not a tuple"))
}

fn list_items<'g>(graph: &'g Graph<'_>, id: NodeId) -> Result<&'g [NodeId], String> {
    match graph.kind(id) {
        Some(NodeKind::List(items)) => Ok(items),
        other => Err(format!("{id} is not a list: {other:?}")),
    }
}

fn render(graph: &Graph<'_>, id: NodeId) -> Result<String, String> {
    let node = graph.get(id).ok_or("unknown node")?;
    Ok(match node.kind() {
        NodeKind::None => "N".to_owned(),
        NodeKind::Bool(b) => if b { "T" } else { "F" }.to_owned(),
        NodeKind::Int(v) => format!("i{v}"),
        NodeKind::BigInt(b) => format!("i{}", format_le_int(b)),
        NodeKind::Float(v) => format!("f{:016x}", v.to_bits()),
        NodeKind::Str(s) => format!("s{}", hex(s.as_bytes())),
        NodeKind::Bytes(b) => format!("b{}", hex(b)),
        NodeKind::ByteArray(b) => format!("y{}", hex(b)),
        NodeKind::Tuple(items) => format!("({})", join(graph, items)?),
        NodeKind::List(items) => format!("[{}]", join(graph, items)?),
        NodeKind::Dict(pairs) => format!("{{{}}}", join_pairs(graph, pairs)?),
        NodeKind::Set(items) => format!("<{}>", join(graph, items)?),
        NodeKind::FrozenSet(items) => format!("z<{}>", join(graph, items)?),
        NodeKind::Reduce { callable, args } => {
            let g = graph
                .get(callable)
                .and_then(|n| n.as_global())
                .ok_or("reduce of a non-global")?;
            let args = tuple_items(graph, args)?;
            match (g.dotted().as_str(), args) {
                ("builtins.set", [list]) => {
                    format!("<{}>", join(graph, list_items(graph, *list)?)?)
                }
                ("builtins.frozenset", [list]) => {
                    format!("z<{}>", join(graph, list_items(graph, *list)?)?)
                }
                ("builtins.bytes", []) => "b".to_owned(),
                ("builtins.bytearray", []) => "y".to_owned(),
                ("builtins.bytearray", [b]) => {
                    let inner = render(graph, *b)?;
                    let hex = inner.strip_prefix('b').ok_or("bytearray of a non-bytes")?;
                    format!("y{hex}")
                }
                ("builtins.bytearray" | "_codecs.encode", [s, enc]) => {
                    let text = graph.get(*s).and_then(|n| n.as_str()).ok_or("not str")?;
                    let enc = graph.get(*enc).and_then(|n| n.as_str()).ok_or("not str")?;
                    if enc != "latin1" && enc != "latin-1" {
                        return Err(format!("encoding {enc}"));
                    }
                    let bytes: Vec<u8> = text
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).map_err(|_| "not latin-1".to_owned()))
                        .collect::<Result<_, _>>()?;
                    let tag = if g.name == "bytearray" { "y" } else { "b" };
                    format!("{tag}{}", hex(&bytes))
                }
                ("collections.OrderedDict", []) => {
                    let mut pairs = Vec::new();
                    for e in graph.events_of(id) {
                        match &e.kind {
                            EventKind::SetItems { pairs: p } => pairs.extend_from_slice(p),
                            other => return Err(format!("unexpected event {other:?}")),
                        }
                    }
                    format!("o{{{}}}", join_pairs(graph, &pairs)?)
                }
                (name, _) => return Err(format!("unsupported callable {name}")),
            }
        }
        other => return Err(format!("unsupported node {other:?}")),
    })
}

#[test]
fn plain_values_render_like_python() {
    let want = std::fs::read_to_string(data_dir().join("plain_render.txt")).unwrap();
    let want = want.trim_end();
    for proto in 0..6 {
        let data = fixture(&format!("plain_p{proto}.pkl"));
        let p = parse(&data).unwrap();
        let got = render(p.graph(), p.root()).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        if got != want {
            let at = got
                .bytes()
                .zip(want.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            let lo = at.saturating_sub(60);
            panic!(
                "protocol {proto} differs at {at}:\n got  ...{}\n want ...{}",
                &got[lo..(at + 60).min(got.len())],
                &want[lo..(at + 60).min(want.len())]
            );
        }
    }
}

#[test]
fn sharing_and_cycles_are_ids_not_copies() {
    for proto in 0..6 {
        let data = fixture(&format!("shared_p{proto}.pkl"));
        let p = parse(&data).unwrap();
        let g = p.graph();
        let root = list_items(g, p.root()).unwrap();
        assert_eq!(root.len(), 3, "protocol {proto}");
        assert_eq!(
            root[0], root[1],
            "protocol {proto}: shared list is one node"
        );
        let cyc = list_items(g, root[2]).unwrap();
        assert_eq!(
            cyc[1], root[2],
            "protocol {proto}: the list contains itself"
        );
        assert!(p.stats().memo_gets >= 2, "protocol {proto}");
    }
}
