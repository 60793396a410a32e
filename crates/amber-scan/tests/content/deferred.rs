//! Deferred tree walks ([`ArrayBytes::deferring`]) find what walks in place find.
//!
//! A load that copies its arrays lets the `Tree` validator leave its node walk
//! for the copy. Run on every out-of-band fixture, real and crafted: the checks
//! made at once plus the deferred ones run on the buffers must flag exactly the
//! codes the in-place checks flag, and the tree's arrays are the ones lent.

use std::collections::BTreeSet;
use std::sync::Mutex;

use amber_scan::Deferred;
use amber_scan::content::{Checker, Ctx};
use amber_scan::ndarray::{ArrayBytes, SliceArrays};

use crate::{Loaded, manifest, validated_builds};

/// [`SliceArrays`] that defers every buffer's walks and records what it is told.
struct Deferring<'a> {
    inner: SliceArrays<'a>,
    checks: Mutex<Vec<Deferred>>,
    lent: Mutex<BTreeSet<u64>>,
}

impl ArrayBytes for Deferring<'_> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        self.inner.buffer(index)
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.inner.inline(offset, len)
    }

    fn deferring(&self, index: u64) -> bool {
        self.inner.buffer(index).is_some()
    }

    fn defers(&self) -> bool {
        true
    }

    fn buffer_len(&self, index: u64) -> Option<u64> {
        self.inner.buffer(index).map(|b| b.len() as u64)
    }

    fn defer(&self, index: u64, check: Deferred) {
        assert_eq!(index, check.buffer());
        self.checks.lock().unwrap().push(check);
    }

    fn lend(&self, index: u64) {
        self.lent.lock().unwrap().insert(index);
    }
}

/// Codes flagged on every validated object of `loaded`, with `arrays`
/// (checked as a load checks them: knowing the root, so trees may lend).
fn codes_with(loaded: &Loaded, arrays: &dyn ArrayBytes) -> BTreeSet<&'static str> {
    let pickle = loaded.parse();
    let graph = pickle.graph();
    let checker = Checker::new(Ctx { graph, arrays }, u64::MAX).with_root(pickle.root());
    let mut codes = BTreeSet::new();
    for (class, target, state) in validated_builds(graph) {
        codes.extend(checker.check(&class, target, state).iter().map(|i| i.code));
    }
    codes
}

#[test]
fn deferred_walks_find_what_walks_in_place_find() {
    let mut deferred_trees = 0;
    for entry in manifest() {
        let name = entry.name;
        if !name.ends_with(".oob") {
            continue;
        }
        let loaded = Loaded::read(&name);
        let buffers: Vec<&[u8]> = loaded.buffers.iter().map(Vec::as_slice).collect();
        let plain = SliceArrays {
            buffers: &buffers,
            input: &loaded.pickle,
        };
        let in_place = codes_with(&loaded, &plain);
        let deferring = Deferring {
            inner: plain,
            checks: Mutex::new(Vec::new()),
            lent: Mutex::new(BTreeSet::new()),
        };
        let mut codes = codes_with(&loaded, &deferring);
        let checks = deferring.checks.into_inner().unwrap();
        for check in &checks {
            let bytes = buffers[usize::try_from(check.buffer()).unwrap()];
            codes.extend(check.run(bytes).iter().map(|i| i.code));
            // A copy of another length is refused, never walked.
            assert!(!check.run(&bytes[..bytes.len() - 1]).is_empty(), "{name}");
        }
        assert_eq!(codes, in_place, "{name}");
        let lent = deferring.lent.into_inner().unwrap();
        // Each deferred walk's node array is lent, and so is a value array per tree.
        for check in &checks {
            assert!(lent.contains(&check.buffer()), "{name}");
        }
        assert!(lent.len() <= 2 * checks.len().max(1), "{name}: {lent:?}");
        deferred_trees += checks.len();
    }
    assert!(deferred_trees >= 10, "{deferred_trees} deferred walks");
}
