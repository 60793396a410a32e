//! The validators against every manifest entry, and a few hand-made cases.

use std::collections::{BTreeMap, BTreeSet};

use amber_pickle::NodeId;
use amber_scan::content::{Checker, Ctx, check, check_indexed, validated_classes};
use amber_scan::ndarray::NoArrays;

use crate::{Loaded, class_of, manifest, validate};

#[test]
fn every_real_fixture_passes_and_holds_its_objects() {
    let mut checked = 0;
    for entry in manifest().iter().filter(|e| e.expected == "ok") {
        let results = validate(&Loaded::read(&entry.name));
        let mut counts = BTreeMap::new();
        for (class, issues) in &results {
            assert!(issues.is_empty(), "{}: {class}: {issues:#?}", entry.name);
            *counts.entry(class.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts, entry.classes, "{}", entry.name);
        checked += results.len();
    }
    // Trees, predictors, neighbor trees and sparse matrices in five forms each.
    assert!(checked > 150, "only {checked} objects checked");
}

#[test]
fn every_crafted_fixture_is_refused_with_its_code() {
    let crafted: Vec<_> = manifest()
        .into_iter()
        .filter(|e| e.name.starts_with("crafted_"))
        .collect();
    assert!(crafted.len() >= 60, "{} crafted fixtures", crafted.len());
    for entry in crafted {
        let results = validate(&Loaded::read(&entry.name));
        let codes: BTreeSet<&str> = results
            .iter()
            .flat_map(|(_, issues)| issues.iter().map(|i| i.code))
            .collect();
        assert_eq!(
            codes,
            BTreeSet::from([entry.expected.as_str()]),
            "{}: {results:#?}",
            entry.name
        );
        let refused = results.iter().filter(|(_, i)| !i.is_empty()).count();
        assert_eq!(refused, 1, "{}: one object is crafted", entry.name);
        for (_, issues) in &results {
            for issue in issues {
                assert!(issue.offset > 0, "{}: {issue:?}", entry.name);
                assert!(!issue.message.is_empty());
            }
        }
    }
}

#[test]
fn arrays_without_their_bytes_are_undecodable_not_passed() {
    for name in ["decision_tree.p5.oob", "kdtree.p5.oob", "csr_matrix.joblib"] {
        let loaded = Loaded::read(name);
        let pickle = loaded.parse();
        let graph = pickle.graph();
        let ctx = Ctx {
            graph,
            arrays: &NoArrays,
        };
        let mut refused = 0;
        for event in graph.events() {
            let amber_pickle::EventKind::Build { state } = event.kind else {
                continue;
            };
            let Some(class) = class_of(graph, event.target) else {
                continue;
            };
            if validated_classes().contains(&class.as_str()) {
                let issues = check(&ctx, &class, event.target, state);
                // The estimator around a tree reads no array bytes.
                if class.starts_with("sklearn.tree._classes.") {
                    assert!(issues.is_empty(), "{name}: {issues:?}");
                    continue;
                }
                assert_eq!(issues.len(), 1, "{name}: {issues:?}");
                assert_eq!(issues[0].code, "content.undecodable");
                assert!(
                    issues[0].message.contains("was not supplied"),
                    "{}",
                    issues[0].message
                );
                refused += 1;
            }
        }
        assert_eq!(refused, 1, "{name}");
    }
}

#[test]
fn unlisted_classes_and_wrong_shapes_of_state() {
    let loaded = Loaded::read("decision_tree.p4.pkl");
    let pickle = loaded.parse();
    let graph = pickle.graph();
    let ctx = Ctx {
        graph,
        arrays: &NoArrays,
    };
    let build = graph
        .events()
        .iter()
        .find(|e| class_of(graph, e.target).as_deref() == Some("sklearn.tree._tree.Tree"))
        .unwrap();
    let amber_pickle::EventKind::Build { state } = build.kind else {
        panic!("not a build");
    };
    assert!(check(&ctx, "builtins.dict", build.target, state).is_empty());
    // The Tree's state given to validators that expect other layouts.
    for class in [
        "sklearn.neighbors._kd_tree.KDTree",
        "scipy.sparse._csr.csr_matrix",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ] {
        let issues = check(&ctx, class, build.target, state);
        assert_eq!(issues.len(), 1, "{class}: {issues:?}");
        assert_eq!(issues[0].code, "content.undecodable", "{class}");
    }
    // The state as the object: not REDUCE(Tree, ...).
    let issues = check(&ctx, "sklearn.tree._tree.Tree", state, state);
    assert_eq!(issues[0].code, "content.undecodable");
    assert!(validated_classes().contains(&"scipy.sparse._coo.coo_array"));
    assert!(amber_scan::content::sparse::format_of("scipy.sparse._csr.csc_matrix").is_none());
    assert!(amber_scan::content::sparse::format_of("scipy.sparse._dia.dia_matrix").is_none());
}

/// Timing, not a check: `AMBER_CONTENT_FOREST=/tmp/forest200 cargo test
/// --release -p amber-scan --test content -- --ignored --nocapture` after
/// `gen_fixtures.py --forest /tmp/forest200`.
#[test]
#[ignore = "needs a forest made by gen_fixtures.py --forest"]
fn forest_timing() {
    let prefix = std::env::var("AMBER_CONTENT_FOREST").unwrap();
    for suffix in ["p4.pkl", "p5.oob"] {
        let path = format!("{prefix}.{suffix}");
        let raw = std::fs::read(&path).unwrap();
        let loaded = if suffix.ends_with("oob") {
            Loaded::split_oob(&raw)
        } else {
            Loaded {
                pickle: raw,
                buffers: Vec::new(),
                joblib: false,
            }
        };
        let t = std::time::Instant::now();
        let pickle = loaded.parse();
        let parsed = t.elapsed();
        drop(pickle);
        let (trees, nodes, scanned, indexed) = loaded.with_graph(|graph, arrays| {
            let ctx = Ctx { graph, arrays };
            let builds = validated_builds(graph);
            let time = |f: &dyn Fn() -> usize| {
                let mut best = std::time::Duration::MAX;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    assert_eq!(f(), 0);
                    best = best.min(t.elapsed());
                }
                best
            };
            let scanned = time(&|| {
                builds
                    .iter()
                    .map(|(c, o, s)| check(&ctx, c, *o, *s).len())
                    .sum()
            });
            let indexed = time(&|| {
                let index = graph.event_index();
                builds
                    .iter()
                    .map(|(c, o, s)| check_indexed(&ctx, &index, c, *o, *s).len())
                    .sum()
            });
            (builds.len(), graph.len(), scanned, indexed)
        });
        let bytes = loaded.pickle.len() + loaded.buffers.iter().map(Vec::len).sum::<usize>();
        println!(
            "{path} ({bytes} bytes, {nodes} graph nodes): {trees} validated objects; parse {parsed:?}, check {scanned:?}, index + check_indexed {indexed:?}"
        );
    }
}

#[test]
fn far_builds_are_bounded_by_scanning_and_exact_by_index() {
    // N csr objects and their state dicts are made first, their BUILDs come
    // after all of them: object k's BUILD is k events after its state.
    const N: u32 = 5000;
    let mut data = b"\x80\x04".to_vec();
    for _ in 0..N {
        data.extend_from_slice(b"cscipy.sparse._csr\ncsr_matrix\n)\x81\x940}\x940");
    }
    for k in 0..N {
        data.push(b'j');
        data.extend_from_slice(&(2 * k).to_le_bytes());
        data.push(b'j');
        data.extend_from_slice(&(2 * k + 1).to_le_bytes());
        data.extend_from_slice(b"b0");
    }
    data.extend_from_slice(b"N.");
    let pickle = amber_pickle::parse(&data).unwrap();
    let graph = pickle.graph();
    let ctx = Ctx {
        graph,
        arrays: &NoArrays,
    };
    let index = graph.event_index();
    let class = "scipy.sparse._csr.csr_matrix";
    let (mut near, mut far) = (0, 0);
    for event in graph.events() {
        let amber_pickle::EventKind::Build { state } = event.kind else {
            panic!("only builds");
        };
        let scanned = check(&ctx, class, event.target, state);
        let indexed = check_indexed(&ctx, &index, class, event.target, state);
        assert_eq!(indexed.len(), 1);
        assert!(
            indexed[0].message.contains("state has no `_shape`"),
            "{indexed:?}"
        );
        assert_eq!(scanned[0].code, "content.undecodable");
        if scanned == indexed {
            near += 1;
        } else {
            assert!(scanned[0].message.contains("no BUILD"), "{scanned:?}");
            far += 1;
        }
    }
    assert_eq!((near, far), (4096, N - 4096));
}

/// `(class, object, state)` of every validated BUILD.
fn validated_builds(graph: &amber_pickle::Graph<'_>) -> Vec<(String, NodeId, NodeId)> {
    graph
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            amber_pickle::EventKind::Build { state } => {
                let class = class_of(graph, e.target)?;
                validated_classes()
                    .contains(&class.as_str())
                    .then_some((class, e.target, state))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_checker_budget_bounds_work_over_the_whole_file() {
    for entry in manifest().iter().filter(|e| e.expected == "ok") {
        let loaded = Loaded::read(&entry.name);
        loaded.with_graph(|graph, arrays| {
            let ctx = Ctx { graph, arrays };
            let builds = validated_builds(graph);
            let unlimited = Checker::new(ctx, u64::MAX);
            for (c, o, s) in &builds {
                assert!(unlimited.check(c, *o, *s).is_empty());
            }
            let used = u64::MAX - unlimited.remaining();
            // Twice the file's bytes covers every real model.
            let bytes = loaded.pickle.len() + loaded.buffers.iter().map(Vec::len).sum::<usize>();
            assert!(
                used <= 2 * bytes as u64,
                "{}: {used} > 2 x {bytes}",
                entry.name
            );
            if used == 0 {
                return;
            }
            let exact = Checker::new(ctx, used);
            assert!(
                builds
                    .iter()
                    .all(|(c, o, s)| exact.check(c, *o, *s).is_empty())
            );
            assert_eq!(exact.remaining(), 0);
            let short = Checker::new(ctx, used - 1);
            let refused: Vec<Vec<_>> = builds
                .iter()
                .map(|(c, o, s)| short.check(c, *o, *s))
                .collect();
            assert!(refused.iter().any(|r| !r.is_empty()), "{}", entry.name);
            assert!(
                refused.iter().flatten().all(|i| i.code == "content.budget"),
                "{refused:?}"
            );
            // In parallel batches: the same issues for every job, the same budget left.
            let jobs: Vec<_> = builds
                .iter()
                .map(|(c, o, s)| (c.as_str(), *o, *s))
                .collect();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            for budget in [u64::MAX, used, used - 1, used / 2, 1, 0] {
                let alone = Checker::new(ctx, budget);
                let expected: Vec<_> = builds
                    .iter()
                    .map(|(c, o, s)| alone.check(c, *o, *s))
                    .collect();
                let (got, left) = pool.install(|| {
                    let many = Checker::new(ctx, budget).parallel_from(0);
                    (many.check_many(&jobs), many.remaining())
                });
                assert_eq!(got, expected, "{} with budget {budget}", entry.name);
                assert_eq!(left, alone.remaining(), "{}", entry.name);
            }
        });
    }
}
