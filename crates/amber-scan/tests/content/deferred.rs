//! Deferred tree walks ([`ArrayBytes::deferring`]) find what walks in place find.
//!
//! A load that copies its arrays lets the `Tree` validator leave its node walk
//! for the copy. Run on every out-of-band fixture, real and crafted: the checks
//! made at once plus the deferred ones run on the buffers must flag exactly the
//! codes the in-place checks flag, and the tree's arrays are the ones lent.

use std::collections::BTreeSet;
use std::sync::Mutex;

use amber_scan::Deferred;
use amber_scan::content::{Checker, Ctx, check};
use amber_scan::ndarray::{ArrayBytes, Place, SliceArrays};

use crate::{Loaded, manifest, validated_builds};

/// [`SliceArrays`] that defers every buffer's walks (or, given `stream`, the
/// checks of every in-band array of it) and records what it is told.
struct Deferring<'a> {
    inner: SliceArrays<'a>,
    stream: Option<&'a [u8]>,
    checks: Mutex<Vec<Deferred>>,
    lent: Mutex<BTreeSet<u64>>,
}

impl<'a> Deferring<'a> {
    fn new(inner: SliceArrays<'a>, stream: Option<&'a [u8]>) -> Self {
        Deferring {
            inner,
            stream,
            checks: Mutex::new(Vec::new()),
            lent: Mutex::new(BTreeSet::new()),
        }
    }
}

impl ArrayBytes for Deferring<'_> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        self.inner.buffer(index)
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.inner.inline(offset, len)
    }

    fn deferring(&self, index: u64) -> bool {
        self.stream.is_none() && self.inner.buffer(index).is_some()
    }

    fn deferring_in_stream(&self, payload: &[u8]) -> Option<u64> {
        let stream = self.stream?;
        let start = (payload.as_ptr() as usize).checked_sub(stream.as_ptr() as usize)?;
        (start + payload.len() <= stream.len()).then_some(start as u64)
    }

    fn defer_in_stream(&self, check: Deferred) {
        self.checks.lock().unwrap().push(check);
    }

    fn defers(&self) -> bool {
        true
    }

    fn buffer_len(&self, index: u64) -> Option<u64> {
        self.inner.buffer(index).map(|b| b.len() as u64)
    }

    fn defer(&self, index: u64, check: Deferred) {
        assert_eq!(Some(index), check.buffer());
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

/// Codes flagged on every validated object of `loaded`, each checked on its
/// own by [`check`] (no checker to remember what a predictor's check left).
fn codes_alone(loaded: &Loaded, arrays: &dyn ArrayBytes) -> BTreeSet<&'static str> {
    let pickle = loaded.parse();
    let graph = pickle.graph();
    let ctx = Ctx { graph, arrays };
    let mut codes = BTreeSet::new();
    for (class, target, state) in validated_builds(graph) {
        codes.extend(check(&ctx, &class, target, state).iter().map(|i| i.code));
    }
    codes
}

#[test]
fn deferred_walks_find_what_walks_in_place_find() {
    let mut deferred_trees = 0;
    let mut deferred_predictors = 0;
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
        let deferring = Deferring::new(plain, None);
        let mut codes = codes_with(&loaded, &deferring);
        let checks = deferring.checks.into_inner().unwrap();
        for check in &checks {
            let bytes = buffers[usize::try_from(check.buffer().unwrap()).unwrap()];
            codes.extend(check.run(bytes).iter().map(|i| i.code));
            // A copy of another length is refused, never walked.
            assert!(!check.run(&bytes[..bytes.len() - 1]).is_empty(), "{name}");
        }
        assert_eq!(codes, in_place, "{name}");
        let lent = deferring.lent.into_inner().unwrap();
        // Each deferred tree walk's node array is lent, and so is a value
        // array per tree; a predictor keeps its nodes, so they are not.
        let trees = checks.iter().filter(|c| c.what() == "tree nodes").count();
        for check in &checks {
            let buffer = check.buffer().unwrap();
            assert_eq!(
                lent.contains(&buffer),
                check.what() == "tree nodes",
                "{name}"
            );
        }
        assert!(lent.len() <= 2 * trees.max(1), "{name}: {lent:?}");
        deferred_trees += trees;
        deferred_predictors += checks.len() - trees;
    }
    assert!(deferred_trees >= 10, "{deferred_trees} deferred walks");
    assert!(
        deferred_predictors >= 2,
        "{deferred_predictors} deferred predictor checks"
    );
}

/// The codes `arrays` (deferring in-band checks) gives every validated
/// object of `loaded`, through [`check`] or (with `checker`) a [`Checker`],
/// plus those its deferred checks find in the stream; and what they check.
fn in_band_codes(
    loaded: &Loaded,
    arrays: &Deferring<'_>,
    checker: bool,
) -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let mut codes = if checker {
        codes_with(loaded, arrays)
    } else {
        codes_alone(loaded, arrays)
    };
    let mut what = BTreeSet::new();
    for check in std::mem::take(&mut *arrays.checks.lock().unwrap()) {
        let Place::Stream { start, len } = check.place() else {
            panic!("an in-band check of a buffer");
        };
        let (start, len) = (start as usize, len as usize);
        let bytes = &loaded.pickle[start..start + len];
        codes.extend(check.run(bytes).iter().map(|i| i.code));
        // Other bytes than the stream's are refused, never walked.
        assert!(!check.run(&bytes[..len - 1]).is_empty());
        what.insert(check.what());
    }
    (codes, what)
}

#[test]
fn deferred_in_band_checks_find_what_checks_in_place_find() {
    let (mut alone, mut joined) = (BTreeSet::new(), BTreeSet::new());
    for entry in manifest() {
        let name = entry.name;
        let loaded = Loaded::read(&name);
        let buffers: Vec<&[u8]> = loaded.buffers.iter().map(Vec::as_slice).collect();
        let plain = SliceArrays {
            buffers: &buffers,
            input: &loaded.pickle,
        };
        let in_place = codes_with(&loaded, &plain);
        let arrays = Deferring::new(plain, Some(&loaded.pickle));
        let (codes, what) = in_band_codes(&loaded, &arrays, false);
        assert_eq!(codes, in_place, "{name}");
        alone.extend(what);
        // A checker remembers what each predictor's check left, so the
        // ensemble's bound joins that check instead of being one more.
        let (codes, what) = in_band_codes(&loaded, &arrays, true);
        assert_eq!(codes, in_place, "{name} (checker)");
        joined.extend(what);
    }
    assert_eq!(
        alone,
        BTreeSet::from(["predictor features", "predictor nodes", "tree nodes"])
    );
    assert_eq!(joined, BTreeSet::from(["predictor nodes", "tree nodes"]));
}
