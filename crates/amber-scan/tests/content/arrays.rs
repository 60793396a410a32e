//! The array decoder on every array of every real fixture.

use std::collections::BTreeMap;

use amber_pickle::{Graph, Node, NodeId, NodeKind};
use amber_scan::ndarray::{self, Builds, ByteOrder, Kind, NdArray, Order};

use crate::{Loaded, manifest};

fn is_array(graph: &Graph<'_>, id: NodeId) -> bool {
    match graph.kind(id) {
        Some(NodeKind::InlineData { .. }) => true,
        Some(NodeKind::Reduce { callable, .. }) => graph
            .get(callable)
            .and_then(Node::as_global)
            .is_some_and(|g| {
                let name = g.dotted();
                name.ends_with("._frombuffer") || name.ends_with("._reconstruct")
            }),
        _ => false,
    }
}

/// `(shape, kind, itemsize, data)` of every distinct array, sorted (joblib's
/// pickler memoizes differently, so counts may differ between forms).
fn arrays_of(name: &str) -> Vec<(Vec<u64>, String, u64, Vec<u8>)> {
    Loaded::read(name).with_graph(|graph, bytes| {
        let mut out = Vec::new();
        for (id, _) in graph.iter() {
            if !is_array(graph, id) {
                continue;
            }
            let a: NdArray<'_> = match ndarray::decode(graph, id, bytes) {
                Ok(a) => a,
                // `GradientBoosting.estimators_` is an object array of trees.
                Err(e) if e.to_string().contains("an object array") => continue,
                Err(e) => panic!("{name}: {e} ({})", e.code()),
            };
            assert_eq!(a.data().len() as u64, a.len() as u64 * a.dtype.itemsize);
            out.push((
                a.shape.clone(),
                format!("{:?}", a.dtype.kind),
                a.dtype.itemsize,
                a.data().to_vec(),
            ));
        }
        out.sort();
        out.dedup();
        out
    })
}

#[test]
fn every_form_of_a_model_decodes_to_the_same_arrays() {
    let mut by_stem: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in manifest().iter().filter(|e| e.expected == "ok") {
        let stem = entry.name.split('.').next().unwrap().to_owned();
        by_stem.entry(stem).or_default().push(entry.name.clone());
    }
    assert!(by_stem.len() >= 17);
    for (stem, names) in by_stem {
        assert_eq!(names.len(), 5, "{stem}: {names:?}");
        let reference = arrays_of(&names[0]);
        assert!(!reference.is_empty(), "{stem}");
        for other in &names[1..] {
            let got = arrays_of(other);
            let summary = |v: &[(Vec<u64>, String, u64, Vec<u8>)]| {
                v.iter()
                    .map(|(s, k, i, _)| format!("{s:?}{k}{i}"))
                    .collect::<Vec<_>>()
            };
            assert!(
                got == reference,
                "{other} differs from {}: {:?} vs {:?}",
                names[0],
                summary(&got),
                summary(&reference)
            );
        }
    }
}

#[test]
fn structured_tree_nodes_decode_field_by_field() {
    Loaded::read("decision_tree.p5.oob").with_graph(|graph, bytes| {
        let nodes = graph
            .iter()
            .filter(|(id, _)| is_array(graph, *id))
            .map(|(id, _)| ndarray::decode(graph, id, bytes).unwrap())
            .find(|a| a.dtype.field("left_child").is_some())
            .unwrap();
        assert_eq!(nodes.dtype.itemsize, 64);
        assert_eq!(nodes.dtype.kind, Kind::Void);
        let names: Vec<_> = nodes
            .dtype
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset))
            .collect();
        assert_eq!(
            names,
            [
                ("left_child", 0),
                ("right_child", 8),
                ("feature", 16),
                ("threshold", 24),
                ("impurity", 32),
                ("n_node_samples", 40),
                ("weighted_n_node_samples", 48),
                ("missing_go_to_left", 56)
            ]
        );
        assert_eq!(
            nodes.dtype.field("feature").unwrap().dtype.byte_order,
            ByteOrder::Little
        );
        let left = nodes.field("left_child").unwrap();
        let samples = nodes.field("n_node_samples").unwrap();
        let weighted = nodes.field("weighted_n_node_samples").unwrap();
        // The root holds every training sample; the root's left child is node 1.
        assert_eq!(samples.i64(0), Some(60));
        assert_eq!(weighted.f64(0), Some(60.0));
        assert_eq!(left.i64(0), Some(1));
        assert_eq!(left.i64(nodes.len()), None);
        assert!(nodes.field("nope").is_err());
        assert!(nodes.values().is_err());
    });
}

#[test]
fn python2_protocol1_array_with_numpy_core_names() {
    let loaded = Loaded::read("py2_ndarray.p1.pkl");
    let pickle = loaded.parse();
    let a = ndarray::decode(pickle.graph(), pickle.root(), &ndarray::NoArrays).unwrap();
    assert_eq!(a.shape, [3]);
    assert_eq!(a.order, Order::C);
    assert_eq!(a.dtype.byte_order, ByteOrder::Big);
    let v = a.values().unwrap();
    assert_eq!((v.i64(0), v.i64(1), v.i64(2)), (Some(1), Some(-2), Some(3)));
}

#[test]
fn lies_about_length_are_errors() {
    // `_frombuffer(b'\x01' * 8, dtype('i8'), (2,), 'C')`, protocol 4, then
    // the same with a shape whose byte count overflows.
    let dtype = b"\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02i8\x89\x88\x87R";
    let call = b"\x80\x04\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93(C\x08\x01\x01\x01\x01\x01\x01\x01\x01";
    for (shape, code) in [
        (&b"K\x02\x85"[..], "ndarray.length"),
        (&b"K\x01\x85"[..], "ok"),
        (&b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x86"[..], "ndarray.length"),
        (&b"J\xff\xff\xff\xff\x85"[..], "ndarray.malformed"),
    ] {
        let mut data = call.to_vec();
        data.extend_from_slice(dtype);
        data.extend_from_slice(shape);
        data.extend_from_slice(b"\x8c\x01CtR.");
        let pickle = amber_pickle::parse(&data).unwrap();
        match ndarray::decode(pickle.graph(), pickle.root(), &ndarray::NoArrays) {
            Ok(a) => assert_eq!(code, "ok", "{:?}", a.shape),
            Err(e) => assert_eq!(e.code(), code, "{e}"),
        }
    }
}

#[test]
fn an_array_is_read_as_it_is_when_used() {
    // Protocol 4: `_reconstruct` then BUILD. Read as of an opcode before
    // that BUILD, the array does not exist yet.
    Loaded::read("decision_tree.p4.pkl").with_graph(|graph, bytes| {
        let (id, node) = graph.iter().find(|(id, _)| is_array(graph, *id)).unwrap();
        let build = graph
            .events()
            .iter()
            .find(|e| e.target == id)
            .unwrap()
            .offset;
        let index = graph.event_index();
        for builds in [Builds::scan(), Builds::indexed(&index)] {
            assert!(ndarray::decode_with(graph, id, bytes, builds.before(build + 1)).is_ok());
            let e = ndarray::decode_with(graph, id, bytes, builds.before(build)).unwrap_err();
            assert_eq!(e.code(), "ndarray.malformed");
            assert!(e.to_string().contains("not built before it is used"), "{e}");
            assert_eq!(e.offset(), node.offset());
        }
    });
}

#[test]
fn a_dtype_that_fans_out_through_shared_parts_is_bounded() {
    let loaded = Loaded::read("dtype_fanout.p4.pkl");
    let pickle = loaded.parse();
    let graph = pickle.graph();
    let e = ndarray::decode(graph, pickle.root(), &ndarray::NoArrays).unwrap_err();
    assert_eq!(e.code(), "ndarray.dtype");
    assert!(e.to_string().contains("too many fields"), "{e}");
    let roomy = Builds::scan().max_dtypes(27_931);
    let a = ndarray::decode_with(graph, pickle.root(), &ndarray::NoArrays, roomy).unwrap();
    assert_eq!(a.dtype.itemsize, 27_000);
    assert_eq!(a.dtype.fields.len(), 30);
    assert_eq!(a.dtype.fields[29].offset, 29 * 900);
    let tight = Builds::scan().max_dtypes(27_930);
    assert!(ndarray::decode_with(graph, pickle.root(), &ndarray::NoArrays, tight).is_err());
}
