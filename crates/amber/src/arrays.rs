//! Array bytes for the content validators.
//!
//! A validator (a tree's child indices, a sparse matrix's `indptr`) needs the
//! bytes of the arrays a stream refers to: out-of-band buffers of an amber
//! file, inline data or companion files of a joblib file. Uncompressed amber
//! entries are slices of the mapped file; compressed ones are decoded (CRCs
//! checked) only when a validator asks, once each.
//!
//! A load gives [`ContainerArrays::with_destinations`] the memory it will
//! hand the unpickler for some arrays (amber's mapped loads: the compressed
//! ones): such an array is copied there when a validator first asks for it
//! (CRC checked, decoded if compressed) and checked in place. Without a
//! destination, a compressed array a validator reads is decoded into memory
//! of its own, which [`ContainerArrays::finish`] gives back for the load to
//! hand over. Either way it is decoded once, and what is unpickled is
//! exactly what was checked.
//!
//! [`ContainerArrays::deferring`] goes further for the arrays a load copies
//! anyway: a validator that would walk such an array (a tree's nodes) checks
//! everything else now and leaves the walk as a [`Deferred`] check, which the
//! load runs where it takes the array from (its copy, or the file for an
//! array it lends: see [`Checked::lent`]) before the unpickler may have it.
//! The walk then runs on the pool while the unpickler builds the objects
//! before it, instead of reading the file once more before unpickling.
//!
//! [`ContainerArrays::deferring_in_stream`] does the same for the small
//! arrays that lie inside the pickle stream (a HistGradientBoosting model's
//! predictors): their checks become [`StreamChecks`], and the load hands the
//! unpickler the stream only as far as they have passed.

use std::sync::{Mutex, OnceLock};

use amber_format::{Container, FormatError, Source};
use amber_legacy::{ArraySource, Legacy};
use amber_scan::ndarray::Place;
use amber_scan::{ArrayBytes, Deferred, Issue};

/// The array entries of an amber container, as out-of-band buffers.
pub struct ContainerArrays<'c, B> {
    container: &'c Container<B>,
    locations: Vec<(u64, u64, bool)>,
    decoded: Vec<OnceLock<Option<Vec<u8>>>>,
    /// The caller's memory for each array, filled on the first request.
    dests: Vec<Dest<'c>>,
    /// The first error met filling one.
    failed: Mutex<Option<FormatError>>,
    /// Checks left for the load's copies, when it asked for that.
    deferred: Option<Mutex<Vec<Deferred>>>,
    /// Arrays whose consumers copy them ([`ArrayBytes::lend`]), when deferring.
    lent: Mutex<Vec<u64>>,
    /// The stream being analysed, when the checks of its in-band arrays may
    /// be left for the load ([`Self::deferring_in_stream`]).
    stream: Option<&'c [u8]>,
    /// Those checks.
    in_stream: Mutex<Vec<Deferred>>,
}

/// Content checks of in-band arrays left for the load (see
/// [`ContainerArrays::deferring_in_stream`]), in the order of the arrays in
/// the stream. The load hands the unpickler the stream's bytes up to the
/// start of the first array whose checks have not passed, and no further:
/// [`Self::check_until`] runs (or waits for) the checks of every array that
/// starts before the end of what it is to hand over. Each check runs once
/// whichever thread asks first ([`Self::run_all`] on the pool, or the reader).
#[derive(Debug, Default)]
pub struct StreamChecks {
    /// `(start, check)`, by start.
    checks: Vec<(u64, Deferred)>,
    /// Each check's first issue (`None`: passed), once it ran.
    results: Vec<OnceLock<Option<Issue>>>,
    /// The checks before this one passed.
    passed: std::sync::atomic::AtomicUsize,
}

impl StreamChecks {
    fn new(checks: Vec<Deferred>) -> Self {
        let mut checks: Vec<(u64, Deferred)> = checks
            .into_iter()
            .map(|check| match check.place() {
                Place::Stream { start, .. } => (start, check),
                Place::Buffer(_) => (u64::MAX, check),
            })
            .collect();
        checks.sort_by_key(|&(start, _)| start);
        let results = checks.iter().map(|_| OnceLock::new()).collect();
        StreamChecks {
            checks,
            results,
            passed: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether no check was left for the load.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Where the first array whose checks have not all passed starts
    /// (`u64::MAX` once every check passed): the unpickler may have the
    /// stream's bytes before it.
    #[must_use]
    pub fn open_until(&self) -> u64 {
        let passed = self.passed.load(std::sync::atomic::Ordering::Acquire);
        self.checks
            .get(passed)
            .map_or(u64::MAX, |&(start, _)| start)
    }

    /// Runs (or waits for) in order the checks of every array that starts
    /// before `end` in `stream` (the bytes analysed): the first issue found,
    /// naming its check's array, or `Ok` when the stream's bytes before
    /// `end` may be handed over.
    ///
    /// # Errors
    /// The first issue a check found.
    pub fn check_until(&self, stream: &[u8], end: u64) -> Result<(), Issue> {
        use std::sync::atomic::Ordering;
        let mut at = self.passed.load(Ordering::Acquire);
        while let (Some((start, check)), Some(result)) = (self.checks.get(at), self.results.get(at))
        {
            if *start >= end {
                break;
            }
            let issue = result.get_or_init(|| run_in_stream(check, stream));
            if let Some(issue) = issue {
                return Err(issue.clone());
            }
            at += 1;
            self.passed.fetch_max(at, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Runs every check, in order (what a pool thread does while the
    /// unpickler reads the stream): the first issue found, if any.
    ///
    /// # Errors
    /// As [`Self::check_until`].
    pub fn run_all(&self, stream: &[u8]) -> Result<(), Issue> {
        self.check_until(stream, u64::MAX)
    }
}

/// A deferred check of an in-band array, on its bytes in `stream`.
fn run_in_stream(check: &Deferred, stream: &[u8]) -> Option<Issue> {
    let bytes = match check.place() {
        Place::Stream { start, len } => slice(stream, start, len),
        Place::Buffer(_) => None,
    };
    match bytes {
        Some(bytes) => check.run(bytes).into_iter().next(),
        None => Some(Issue {
            code: amber_scan::content::UNDECODABLE,
            offset: 0,
            message: "a deferred check's array lies outside the stream".to_owned(),
        }),
    }
}

/// Content checks left for the copies a load makes of its arrays (see
/// [`ContainerArrays::deferring`]), by array index.
#[derive(Debug, Default)]
pub struct DeferredChecks {
    by_array: Vec<Vec<Deferred>>,
}

impl DeferredChecks {
    fn new(arrays: usize, checks: Vec<Deferred>) -> Self {
        let mut by_array: Vec<Vec<Deferred>> = (0..arrays).map(|_| Vec::new()).collect();
        for check in checks {
            if let Some(list) = check
                .buffer()
                .and_then(|b| usize::try_from(b).ok())
                .and_then(|i| by_array.get_mut(i))
            {
                list.push(check);
            }
        }
        DeferredChecks { by_array }
    }

    /// Whether no check was left for later.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_array.iter().all(Vec::is_empty)
    }

    /// Whether array `index` has checks to run on its copy.
    #[must_use]
    pub fn has(&self, index: usize) -> bool {
        self.by_array.get(index).is_some_and(|c| !c.is_empty())
    }

    /// Runs array `index`'s checks on `bytes`, its copy: the first issue
    /// found, or `None` when they all pass (or there are none).
    #[must_use]
    pub fn check(&self, index: usize, bytes: &[u8]) -> Option<Issue> {
        self.by_array
            .get(index)?
            .iter()
            .find_map(|check| check.run(bytes).into_iter().next())
    }
}

/// What the checks of one analysis left: see [`ContainerArrays::finish`].
#[derive(Debug)]
pub struct Checked {
    /// For each array, whether its destination holds it (copied and CRC checked).
    pub filled: Vec<bool>,
    /// The checks to run on the copies of the arrays not filled.
    pub deferred: DeferredChecks,
    /// The first issue a deferred check found in an array that was filled
    /// during the analysis itself (so was checked at once).
    pub failed: Option<Issue>,
    /// For each array not already in memory, whether all the stream gives
    /// it to copies it, and nothing else can reach it (a `Tree`'s arrays,
    /// see `amber_scan`'s lending rules): once its CRC and deferred checks
    /// have passed, the load may hand it a view of the file (uncompressed)
    /// or of scratch memory it reuses when the unpickler has asked for
    /// buffer `index + 2` (compressed).
    pub lent: Vec<bool>,
    /// Compressed arrays without a destination that the checks decoded (CRC
    /// checked) to read them: a load can hand these bytes over instead of
    /// decoding the arrays again.
    pub decoded: Vec<Option<Vec<u8>>>,
    /// The checks of in-band arrays, when the analysis was
    /// [`ContainerArrays::deferring_in_stream`]: the load hands the unpickler
    /// the stream only as far as they passed.
    pub in_stream: StreamChecks,
}

/// Where one array goes, and what it holds once filled.
struct Dest<'c> {
    empty: Mutex<Option<&'c mut [u8]>>,
    filled: OnceLock<Option<&'c [u8]>>,
}

impl<'c, B: AsRef<[u8]> + Source + Sync> ContainerArrays<'c, B> {
    /// The buffers of `container`, in buffer order.
    #[must_use]
    pub fn new(container: &'c Container<B>) -> Self {
        let locations: Vec<(u64, u64, bool)> = container
            .arrays()
            .iter()
            .map(|(_, loc)| (loc.offset, loc.nbytes, loc.compressed))
            .collect();
        let decoded = locations.iter().map(|_| OnceLock::new()).collect();
        ContainerArrays {
            container,
            locations,
            decoded,
            dests: Vec::new(),
            failed: Mutex::new(None),
            deferred: None,
            lent: Mutex::new(Vec::new()),
            stream: None,
            in_stream: Mutex::new(Vec::new()),
        }
    }

    /// Lets validators leave the walks of uncompressed and compressed arrays
    /// not yet filled to the load's copies ([`Deferred`]): the caller copies
    /// every such array before anything gets it and runs
    /// [`DeferredChecks::check`] on each copy, refusing the file if one fails.
    #[must_use]
    pub fn deferring(self) -> Self {
        ContainerArrays {
            deferred: Some(Mutex::new(Vec::new())),
            ..self
        }
    }

    /// Lets validators leave the checks of in-band arrays of `stream` (the
    /// stream analysed) to the load ([`Checked::in_stream`]): the caller
    /// hands the unpickler no byte of the stream from the start of such an
    /// array on before [`StreamChecks::check_until`] has passed it.
    #[must_use]
    pub fn deferring_in_stream(self, stream: &'c [u8]) -> Self {
        ContainerArrays {
            stream: Some(stream),
            ..self
        }
    }

    /// Array `index`'s destination, once filled.
    fn filled_bytes(&self, index: usize) -> Option<&'c [u8]> {
        self.dests
            .get(index)
            .and_then(|d| d.filled.get().copied().flatten())
    }

    fn is_filled(&self, index: usize) -> bool {
        self.filled_bytes(index).is_some()
    }

    /// [`Self::filled`], with the checks left for the load's copies; checks
    /// left on an array that was filled later in the analysis run at once,
    /// on the filled bytes.
    ///
    /// # Errors
    /// As [`Self::filled`].
    pub fn finish(mut self) -> Result<Checked, FormatError> {
        let checks = match &self.deferred {
            Some(list) => std::mem::take(&mut *list.lock().map_err(|_| poisoned())?),
            None => Vec::new(),
        };
        let mut deferred = DeferredChecks::new(self.locations.len(), checks);
        let decoded: Vec<Option<Vec<u8>>> = std::mem::take(&mut self.decoded)
            .into_iter()
            .map(|d| d.into_inner().flatten())
            .collect();
        // Arrays the analysis itself read into memory the load hands over
        // are checked now: no copy of them follows.
        let mut failed = None;
        for i in 0..deferred.by_array.len() {
            let Some(bytes) = self
                .filled_bytes(i)
                .or_else(|| decoded.get(i).and_then(Option::as_deref))
            else {
                continue;
            };
            if failed.is_none() {
                failed = deferred.check(i, bytes);
            }
            if let Some(list) = deferred.by_array.get_mut(i) {
                list.clear();
            }
        }
        let mut lent = vec![false; self.locations.len()];
        let lent_indices = std::mem::take(&mut *self.lent.lock().map_err(|_| poisoned())?);
        for index in lent_indices {
            let i = usize::try_from(index).unwrap_or(usize::MAX);
            let in_memory = decoded.get(i).is_some_and(Option::is_some);
            if let Some(slot) = lent.get_mut(i) {
                *slot = !in_memory && !self.is_filled(i);
            }
        }
        let in_stream = std::mem::take(&mut *self.in_stream.lock().map_err(|_| poisoned())?);
        let filled = self.filled()?;
        Ok(Checked {
            filled,
            deferred,
            failed,
            lent,
            decoded,
            in_stream: StreamChecks::new(in_stream),
        })
    }

    /// [`Self::new`], with `dests[i]` (exactly array `i`'s size) the memory
    /// array `i` is copied into, CRC checked, when a validator first asks for
    /// it; it is read there from then on. See [`Self::filled`].
    #[must_use]
    pub fn with_destinations(
        container: &'c Container<B>,
        dests: Vec<Option<&'c mut [u8]>>,
    ) -> Self {
        let dests = dests
            .into_iter()
            .map(|d| Dest {
                empty: Mutex::new(d),
                filled: OnceLock::new(),
            })
            .collect();
        ContainerArrays {
            dests,
            ..Self::new(container)
        }
    }

    /// For each array, whether its destination now holds it (copied and
    /// CRC checked); a load copies the others itself.
    ///
    /// # Errors
    /// The first error met filling a destination (a damaged entry): the
    /// analysis saw that array as missing, and the load must stop.
    pub fn filled(self) -> Result<Vec<bool>, FormatError> {
        let filled = (0..self.dests.len()).map(|i| self.is_filled(i)).collect();
        if let Some(e) = self.failed.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(filled)
    }

    fn fill(&self, index: usize, dest: &Dest<'c>) -> Option<&'c [u8]> {
        let buffer = dest.empty.lock().ok()?.take()?;
        match self.container.copy_arrays_into(vec![(index, &mut *buffer)]) {
            Ok(()) => Some(buffer),
            Err(e) => {
                if let Ok(mut failed) = self.failed.lock() {
                    failed.get_or_insert(e);
                }
                None
            }
        }
    }

    /// Number of buffers.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }
}

impl<B: AsRef<[u8]> + Source + Sync> ArrayBytes for ContainerArrays<'_, B> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        let i = usize::try_from(index).ok()?;
        let &(offset, len, compressed) = self.locations.get(i)?;
        if let Some(dest) = self.dests.get(i) {
            let filled = *dest.filled.get_or_init(|| self.fill(i, dest));
            if filled.is_some() {
                return filled;
            }
        }
        if !compressed {
            return slice(self.container.bytes(), offset, len);
        }
        let decoded = self.decoded.get(i)?.get_or_init(|| {
            let mut out = vec![0u8; usize::try_from(len).ok()?];
            self.container
                .copy_arrays_into(vec![(i, out.as_mut_slice())])
                .ok()?;
            Some(out)
        });
        decoded.as_deref()
    }

    fn inline(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }

    fn total_len(&self) -> u64 {
        self.locations
            .iter()
            .fold(0u64, |sum, &(_, len, _)| sum.saturating_add(len))
    }

    fn deferring(&self, index: u64) -> bool {
        self.deferred.is_some()
            && usize::try_from(index).is_ok_and(|i| i < self.locations.len() && !self.is_filled(i))
    }

    fn defers(&self) -> bool {
        self.deferred.is_some()
    }

    fn buffer_len(&self, index: u64) -> Option<u64> {
        let i = usize::try_from(index).ok()?;
        self.locations.get(i).map(|&(_, len, _)| len)
    }

    fn defer(&self, _index: u64, check: Deferred) {
        if let Some(Ok(mut list)) = self.deferred.as_ref().map(Mutex::lock) {
            list.push(check);
        }
    }

    fn deferring_in_stream(&self, payload: &[u8]) -> Option<u64> {
        let stream = self.stream?;
        let start = (payload.as_ptr() as usize).checked_sub(stream.as_ptr() as usize)?;
        let end = start.checked_add(payload.len())?;
        if end > stream.len() {
            return None;
        }
        u64::try_from(start).ok()
    }

    fn defer_in_stream(&self, check: Deferred) {
        if let Ok(mut list) = self.in_stream.lock() {
            list.push(check);
        }
    }

    fn lend(&self, index: u64) {
        if self.deferred.is_some()
            && let Ok(mut list) = self.lent.lock()
        {
            list.push(index);
        }
    }
}

fn poisoned() -> FormatError {
    FormatError::Usage {
        what: "the array checks' state was poisoned".to_owned(),
    }
}

/// The arrays of a legacy file: inline data lies in its stream.
pub struct LegacyArrays<'l>(pub &'l Legacy);

impl ArrayBytes for LegacyArrays<'_> {
    fn buffer(&self, _index: u64) -> Option<&[u8]> {
        None
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.0.inline(offset, len)
    }
}

/// Nested pickles a legacy file holds outside its stream (object arrays in
/// companion `.npy` files), which must be analysed as well.
pub(crate) fn outside_pickles(legacy: &Legacy) -> impl Iterator<Item = (usize, &[u8])> {
    legacy
        .arrays()
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, ArraySource::NpyPickle { .. }))
        .filter_map(|(k, _)| legacy.array_bytes(k).map(|b| (k, b)))
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}
