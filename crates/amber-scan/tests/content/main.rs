//! Content validators on real scikit-learn/SciPy pickles and crafted variants.
//!
//! The fixtures come from `gen_fixtures.py` beside this file; its
//! `fixtures/MANIFEST.txt` says, per file, whether every validated object
//! must pass (`ok`) or which one code a crafted file must be refused with,
//! and how many objects of each validated class the file holds.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod arrays;
mod checks;
mod deferred;
mod robust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{EventKind, Graph, Node, NodeId, NodeKind, Parser, Pickle};
use amber_scan::content::{Checker, Ctx, Issue, check, check_indexed, validated_classes};
use amber_scan::ndarray::SliceArrays;

/// The fixture directory.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/content/fixtures")
}

/// One manifest line.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) expected: String,
    pub(crate) classes: BTreeMap<String, usize>,
}

/// The manifest lines.
pub(crate) fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(fixtures().join("MANIFEST.txt")).unwrap();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next().unwrap().to_owned();
            let expected = parts.next().unwrap().to_owned();
            let classes = parts
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| {
                    let (k, v) = c.split_once('=').unwrap();
                    (k.to_owned(), v.parse().unwrap())
                })
                .collect();
            Entry {
                name,
                expected,
                classes,
            }
        })
        .collect()
}

/// A fixture file: the pickle bytes and its out-of-band buffers.
pub(crate) struct Loaded {
    pub(crate) pickle: Vec<u8>,
    pub(crate) buffers: Vec<Vec<u8>>,
    pub(crate) joblib: bool,
}

impl Loaded {
    pub(crate) fn read(name: &str) -> Loaded {
        let raw = std::fs::read(fixtures().join(name)).unwrap();
        if name.ends_with(".oob") {
            return Loaded::split_oob(&raw);
        }
        Loaded {
            pickle: raw,
            buffers: Vec::new(),
            joblib: name.ends_with(".joblib"),
        }
    }

    pub(crate) fn split_oob(raw: &[u8]) -> Loaded {
        assert_eq!(&raw[..4], b"OOB1");
        let count = u32::from_le_bytes(raw[4..8].try_into().unwrap());
        let mut at = 8;
        let mut buffers = Vec::new();
        for _ in 0..count {
            let len = u64::from_le_bytes(raw[at..at + 8].try_into().unwrap()) as usize;
            at += 8;
            buffers.push(raw[at..at + len].to_vec());
            at += len;
        }
        Loaded {
            pickle: raw[at..].to_vec(),
            buffers,
            joblib: false,
        }
    }

    pub(crate) fn parse(&self) -> Pickle<'_> {
        let mut parser = Parser::new(&self.pickle);
        if !self.buffers.is_empty() {
            parser = parser.out_of_band_buffers(self.buffers.len() as u64);
        }
        if self.joblib {
            let mut hook = JoblibHook::new();
            parser.hook(&mut hook).parse().unwrap()
        } else {
            parser.parse().unwrap()
        }
    }

    /// [`validate`], or `None` if the stream does not parse.
    pub(crate) fn try_validate(&self) -> Option<Vec<(String, Vec<Issue>)>> {
        let mut parser = Parser::new(&self.pickle);
        if !self.buffers.is_empty() {
            parser = parser.out_of_band_buffers(self.buffers.len() as u64);
        }
        let mut hook = JoblibHook::new();
        if self.joblib {
            parser = parser.hook(&mut hook);
        }
        let pickle = parser.parse().ok()?;
        let buffers: Vec<&[u8]> = self.buffers.iter().map(Vec::as_slice).collect();
        let arrays = SliceArrays {
            buffers: &buffers,
            input: &self.pickle,
        };
        Some(validate_graph(pickle.graph(), &arrays))
    }

    /// Run `f` on the parsed graph and the bytes of its arrays.
    pub(crate) fn with_graph<R>(&self, f: impl FnOnce(&Graph<'_>, &SliceArrays<'_>) -> R) -> R {
        let pickle = self.parse();
        let buffers: Vec<&[u8]> = self.buffers.iter().map(Vec::as_slice).collect();
        let arrays = SliceArrays {
            buffers: &buffers,
            input: &self.pickle,
        };
        f(pickle.graph(), &arrays)
    }
}

fn global(graph: &Graph<'_>, id: NodeId) -> Option<String> {
    graph.get(id).and_then(Node::as_global).map(|g| g.dotted())
}

/// The class an object was made from, as the analyser would name it.
pub(crate) fn class_of(graph: &Graph<'_>, object: NodeId) -> Option<String> {
    match graph.kind(object)? {
        NodeKind::NewObj { cls, .. } => global(graph, cls),
        NodeKind::Reduce { callable, args } => {
            let f = global(graph, callable)?;
            let first = || {
                let first = *graph.get(args)?.as_tuple()?.first()?;
                global(graph, first)
            };
            if f.ends_with(".newObj") || f.starts_with("copyreg.") {
                first()
            } else {
                Some(f)
            }
        }
        _ => None,
    }
}

/// Every validated object's class and issues, in stream order.
pub(crate) fn validate(loaded: &Loaded) -> Vec<(String, Vec<Issue>)> {
    loaded.with_graph(validate_graph)
}

/// [`validate`] on a parsed graph.
pub(crate) fn validate_graph(
    graph: &Graph<'_>,
    arrays: &SliceArrays<'_>,
) -> Vec<(String, Vec<Issue>)> {
    let ctx = Ctx { graph, arrays };
    let index = graph.event_index();
    let checker = Checker::new(ctx, u64::MAX);
    let mut out = Vec::new();
    for (class, target, state) in validated_builds(graph) {
        let issues = check(&ctx, &class, target, state);
        // Scanning and the index find the same BUILDs.
        assert_eq!(issues, check_indexed(&ctx, &index, &class, target, state));
        assert_eq!(issues, checker.check(&class, target, state));
        out.push((class, issues));
    }
    out
}

/// `(class, object, state)` of every `BUILD` of a validated class, in stream order.
pub(crate) fn validated_builds(graph: &Graph<'_>) -> Vec<(String, NodeId, NodeId)> {
    graph
        .events()
        .iter()
        .filter_map(|event| {
            let EventKind::Build { state } = event.kind else {
                return None;
            };
            let class = class_of(graph, event.target)?;
            validated_classes()
                .contains(&class.as_str())
                .then_some((class, event.target, state))
        })
        .collect()
}
