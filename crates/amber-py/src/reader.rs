//! `Reader`: the Python face of `amber_format::Container`.
//!
//! Opening validates structure and manifest (never the array bytes, so it is
//! instant). The pickle stream is handed out as a zero-copy `Region` after its
//! CRC is checked; arrays are either handed out as zero-copy regions of the map
//! (`mmap_mode`) or copied into NumPy-owned buffers with their CRCs checked, on
//! all cores and without the GIL.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use amber_format::{ArrayLocation, Container, MapMode, Source};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::buffer::{Borrowed, FrozenBytes, InFlight, Region, Shared};
use crate::errors::IntoPyResult;
use crate::scan;
use crate::threads::Threads;

use amber::Backing;

/// An open amber file.
#[pyclass(frozen, module = "amber._amber")]
pub struct Reader {
    container: Arc<Container<Backing>>,
    /// Where every array lies, in buffer order (built once: the load asks
    /// for them several times, and a forest has hundreds).
    arrays: Vec<ArrayLocation>,
    writable_arrays: bool,
    threads: Threads,
    /// The compressed batches being decoded in the background, in order.
    lane: Arc<Lane>,
    /// What the last `checked_pickle(defer=True)` left for the load.
    deferred: Mutex<Loading>,
    /// The file, when it was read into a `bytes` object the container reads
    /// in place: a stored pickle stream is then handed out as that object
    /// and [`Reader::stream_offset`], not copied.
    whole: Option<Arc<FrozenBytes>>,
    /// Where the stream `checked_pickle` last returned starts in its `bytes`.
    stream_start: Mutex<usize>,
    /// The analysis `start_checked_pickle` left running for `checked_pickle`.
    started: Mutex<Option<Started>>,
    /// The globals the last `checked_pickle` accepted, if it found nothing.
    accepted: Mutex<Option<Vec<String>>>,
}

/// What one analysis of the stream gives: the report, and what the content
/// checks read and left (see `amber::ContainerArrays::finish`).
type Analysis = (
    amber::Report,
    Result<amber::Checked, amber_format::FormatError>,
);

/// An analysis started on the pool by `start_checked_pickle`: the stream it
/// reads (the `bytes` the unpickler will read), and its result to come.
struct Started {
    trusted: Vec<String>,
    defer: bool,
    stream: Arc<FrozenBytes>,
    start: usize,
    len: usize,
    /// The trusted names, until a pool thread takes them to run the
    /// analysis; if none has when `checked_pickle` comes (no core was free),
    /// that call takes them back and analyses on its own thread instead of
    /// waiting.
    unclaimed: Arc<Mutex<Option<Vec<String>>>>,
    /// The analysis, or `None` if the policy refused a name (for
    /// `checked_pickle` to raise).
    done: std::sync::mpsc::Receiver<Option<Analysis>>,
}

/// Analyses `data`, the pickle stream of `container`, with the container's
/// arrays (filling the buffers of `slots` that the checks read) and, with
/// `defer`, leaving the walks of arrays a load copies for those copies.
fn analyse(
    container: &Container<Backing>,
    data: &[u8],
    policy: &amber::Policy,
    slots: Vec<Option<&mut [u8]>>,
    defer: bool,
) -> Analysis {
    let arrays = amber::ContainerArrays::with_destinations(container, slots);
    let arrays = if defer {
        arrays.deferring().deferring_in_stream(data)
    } else {
        arrays
    };
    let report = amber::scan_container_arrays(&arrays, data, policy, &amber::Limits::default());
    (report, arrays.finish())
}

/// Checks left for a load's copies, and the arrays it may lend as views.
#[derive(Default)]
struct Loading {
    checks: Arc<amber::DeferredChecks>,
    lent: Vec<bool>,
    decoded: Vec<Option<Vec<u8>>>,
    /// The checks of in-band arrays, with the stream's `bytes`, start and
    /// length, when there are any (for `stream_gate`).
    in_stream: Option<(Arc<amber::StreamChecks>, Arc<FrozenBytes>, usize, usize)>,
}

impl Reader {
    fn new(
        py: Python<'_>,
        backing: Backing,
        writable_arrays: bool,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let threads = Threads::new(threads)?;
        let container = py.detach(|| Container::parse(backing)).py(py)?;
        let arrays = container.arrays().into_iter().map(|(_, loc)| loc).collect();
        Ok(Self {
            arrays,
            container: Arc::new(container),
            writable_arrays,
            threads,
            lane: Arc::new(Lane::default()),
            deferred: Mutex::new(Loading::default()),
            whole: None,
            stream_start: Mutex::new(0),
            started: Mutex::new(None),
            accepted: Mutex::new(None),
        })
    }

    /// A reader over `bytes` (immutable), parsed and read in place.
    fn over_bytes(
        py: Python<'_>,
        bytes: &Bound<'_, PyBytes>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let whole = Arc::new(FrozenBytes::new(bytes));
        let backing = Backing::Shared(whole.clone());
        Ok(Self {
            whole: Some(whole),
            ..Self::new(py, backing, false, threads)?
        })
    }

    /// The pickle stream as a `bytes` object (CRC checked, decoded if
    /// compressed) and where in it the stream starts: the file's own
    /// `bytes` when the reader holds one and the stream is stored, else a
    /// `bytes` of the stream alone (decoded straight into it).
    fn stream_bytes<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyBytes>, usize, usize)> {
        let container = &self.container;
        let threads = &self.threads;
        if let Some(size) = container.compressed_pickle_size().py(py)? {
            let bytes = PyBytes::new_with(py, size, |buf| {
                py.detach(|| threads.run(|| container.decode_pickle_into(buf)))
                    .py(py)
            })?;
            return Ok((bytes, 0, size));
        }
        let stream = py.detach(|| threads.run(|| container.pickle())).py(py)?;
        let len = stream.len();
        Ok(match &self.whole {
            Some(whole) => {
                let start =
                    (stream.as_ptr() as usize).saturating_sub(container.bytes().as_ptr() as usize);
                (whole.object(py), start, len)
            }
            None => (PyBytes::new(py, &stream), 0, len),
        })
    }

    /// The writable buffers of `buffers` (one item per array, `None` to skip), by array index.
    fn borrow_buffers(&self, buffers: &Bound<'_, PyList>) -> PyResult<Vec<(usize, Borrowed)>> {
        let count = self.arrays.len();
        if buffers.len() != count {
            return Err(PyValueError::new_err(format!(
                "{} buffers given for {count} arrays",
                buffers.len()
            )));
        }
        let mut held = Vec::with_capacity(count);
        for (index, item) in buffers.iter().enumerate() {
            if !item.is_none() {
                held.push((index, Borrowed::get(&item, true)?));
            }
        }
        Ok(held)
    }

    fn region(&self, start: u64, len: u64, writable: bool) -> PyResult<Region> {
        let bytes = self.container.bytes();
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| bytes.get(s..s.checked_add(l)?))
            .ok_or_else(|| PyValueError::new_err("region outside the file"))?;
        Ok(Region::new(
            self.container.clone(),
            range.as_ptr(),
            range.len(),
            writable,
        ))
    }
}

#[pymethods]
impl Reader {
    /// Opens and maps `path`. `mode` is `"r"` (read-only views), `"c"`
    /// (copy-on-write views) or `None` (arrays will be copied out).
    #[staticmethod]
    #[pyo3(signature = (path, mode = None, threads = None))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        mode: Option<&str>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let (map_mode, writable) = match mode {
            None | Some("r") => (MapMode::ReadOnly, false),
            Some("c") => (MapMode::CopyOnWrite, true),
            Some(other) => {
                return Err(PyValueError::new_err(format!("unknown map mode `{other}`")));
            }
        };
        // Without `mode` the arrays are copied out: a small file is then read
        // into a `bytes` object, which the load reads in place, not mapped.
        let mapping = match mode {
            None => match py.detach(|| amber_format::open_read_once(&path)).py(py)? {
                amber_format::ReadOnce::Small(file) => {
                    let bytes = PyBytes::new_with(py, file.size(), |buf| {
                        py.detach(|| file.read_into(buf)).py(py)
                    })?;
                    return Self::over_bytes(py, &bytes, threads);
                }
                amber_format::ReadOnce::Mapped(mapping) => mapping,
            },
            Some(_) => py
                .detach(|| amber_format::map_file(&path, map_mode))
                .py(py)?,
        };
        Self::new(py, Backing::Map(mapping), writable, threads)
    }

    /// Parses an amber file held in a bytes-like object: a `bytes` object is
    /// read in place (it cannot change), anything else copied once.
    #[staticmethod]
    #[pyo3(signature = (data, threads = None))]
    fn from_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return Self::over_bytes(py, bytes, threads);
        }
        let data = Borrowed::get(data, false)?.bytes().to_vec();
        Self::new(py, Backing::Owned(data), false, threads)
    }

    /// The manifest exactly as stored.
    fn manifest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.container.manifest_bytes())
    }

    /// The pickle stream in a `bytes` object, from [`Self::stream_offset`] on
    /// (CRC checked, decompressed if needed),
    /// unless `trusted` is `None` (`trusted=True`: no policy) the JSON report
    /// of its analysis under the default policy plus `trusted`, and for each
    /// array whether its buffer in `dests` now holds it. The analysis reads
    /// the very `bytes` object returned, so what is unpickled is exactly what
    /// was analysed.
    ///
    /// `dests`, if given, has one item per array in buffer order: `None`, or
    /// a writable buffer of exactly the array's size. An array the content
    /// checks read is first copied there (decoded, CRC checked) and checked in
    /// place, so the load hands the unpickler the bytes that were checked and
    /// reads no array twice; the others are left for the load to copy.
    ///
    /// With `defer`, the walks of arrays the load will copy anyway (tree
    /// nodes) are left for those copies: `start_copy_arrays_into` runs them
    /// on each copy before the copy is handed over, and raises
    /// `ContentCheckError` if one fails. Only for loads that copy every array
    /// (no `mmap_mode`). A file with any finding is analysed again without
    /// deferring, so its report is exactly `amber.scan`'s.
    #[pyo3(signature = (trusted, dests = None, defer = false))]
    fn checked_pickle<'py>(
        &self,
        py: Python<'py>,
        trusted: Option<Vec<String>>,
        dests: Option<&Bound<'py, PyList>>,
        defer: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, Option<String>, Vec<bool>)> {
        let container = &self.container;
        let threads = &self.threads;
        let started = self.lock_started()?.take();
        // The analysis `start_checked_pickle` began, if it is this one.
        let (bytes, start, len, done, frozen) = match started {
            Some(s)
                if dests.is_none() && defer == s.defer && trusted.as_ref() == Some(&s.trusted) =>
            {
                let taken_back = s
                    .unclaimed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let done = match taken_back {
                    Some(_) => None,
                    None => {
                        let receiver = s.done;
                        py.detach(move || receiver.recv()).map_err(|_| {
                            PyValueError::new_err(
                                "the thread analysing the stream stopped without a result",
                            )
                        })?
                    }
                };
                (s.stream.object(py), s.start, s.len, done, Some(s.stream))
            }
            _ => {
                let (bytes, start, len) = self.stream_bytes(py)?;
                (bytes, start, len, None, None)
            }
        };
        *self
            .stream_start
            .lock()
            .map_err(|_| PyValueError::new_err("the reader's stream state was poisoned"))? = start;
        let count = self.arrays.len();
        *self.lock_deferred()? = Loading::default();
        *self.lock_accepted()? = None;
        let Some(names) = trusted else {
            return Ok((bytes, None, vec![false; count]));
        };
        // Made only for an analysis run here (a started one brought its own).
        let policy = std::cell::OnceCell::new();
        let held = match dests {
            Some(list) => self.borrow_buffers(list)?,
            None => Vec::new(),
        };
        let data = bytes
            .as_bytes()
            .get(start..start.saturating_add(len))
            .ok_or_else(|| PyValueError::new_err("the pickle stream lies outside its bytes"))?;
        let analyse = |defer: bool| -> PyResult<Analysis> {
            let policy = match policy.get() {
                Some(policy) => policy,
                None => {
                    let made = amber::shared_policy(&names).map_err(|e| scan::to_py(py, e))?;
                    policy.get_or_init(|| made)
                }
            };
            let mut slots: Vec<Option<&mut [u8]>> = (0..count).map(|_| None).collect();
            for (index, buffer) in &held {
                if let Some(slot) = slots.get_mut(*index) {
                    *slot = Some(buffer.bytes_mut());
                }
            }
            Ok(py.detach(|| threads.run(|| analyse(container, data, policy, slots, defer))))
        };
        let (mut report, mut checked) = match done {
            Some(done) => done,
            None => analyse(defer)?,
        };
        let clean = |report: &amber::Report, checked: &Result<amber::Checked, _>| {
            report.findings.is_empty() && checked.as_ref().is_ok_and(|c| c.failed.is_none())
        };
        if defer && !clean(&report, &checked) {
            (report, checked) = analyse(false)?;
        }
        let checked = checked.py(py)?;
        // Uncompressed arrays are checked in the map before their CRCs are:
        // a check that fails may be reading damage, which is reported as such.
        if report
            .findings
            .iter()
            .any(|f| amber_scan::is_content_code(f.code))
        {
            py.detach(|| threads.run(|| container.verify(&|_| {})))
                .py(py)?;
        }
        let in_stream = (!checked.in_stream.is_empty()).then(|| {
            let frozen = frozen.unwrap_or_else(|| Arc::new(FrozenBytes::new(&bytes)));
            (Arc::new(checked.in_stream), frozen, start, len)
        });
        *self.lock_deferred()? = Loading {
            checks: Arc::new(checked.deferred),
            lent: checked.lent,
            decoded: checked.decoded,
            in_stream,
        };
        if report.findings.is_empty() && report.verdict == amber::Verdict::Safe {
            *self.lock_accepted()? = Some(
                report
                    .globals
                    .iter()
                    .filter(|g| g.allowed)
                    .map(|g| g.name.clone())
                    .collect(),
            );
        }
        Ok((
            bytes,
            Some(scan::report_json(&report, "amber")?),
            checked.filled,
        ))
    }

    /// Starts, on the pool and without waiting, the analysis the next
    /// `checked_pickle(trusted, None, defer)` would run, so that it overlaps
    /// what the load does before that call (comparing package versions).
    /// That call then waits for this analysis and returns its result for
    /// the very `bytes` object analysed here (or, if no pool thread has
    /// started on it yet, runs it itself); a call with other arguments
    /// ignores it. Nothing is unpickled before that call returns, so the
    /// analysis still comes before any object is built.
    fn start_checked_pickle(
        &self,
        py: Python<'_>,
        trusted: Vec<String>,
        defer: bool,
    ) -> PyResult<()> {
        // A damaged stream, or names the policy refuses, are for
        // `checked_pickle` to raise, in its turn.
        let Ok((bytes, start, len)) = self.stream_bytes(py) else {
            return Ok(());
        };
        let stream = Arc::new(FrozenBytes::new(&bytes));
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let container = Arc::clone(&self.container);
        let threads = self.threads.clone();
        let job_stream = Arc::clone(&stream);
        let count = self.arrays.len();
        let unclaimed = Arc::new(Mutex::new(Some(trusted.clone())));
        let claim = Arc::clone(&unclaimed);
        self.threads.spawn(Box::new(move || {
            let taken = claim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let Some(names) = taken else {
                return;
            };
            let Ok(policy) = amber::shared_policy(&names) else {
                let _ = tx.send(None);
                return;
            };
            let data = (*job_stream)
                .as_ref()
                .get(start..start.saturating_add(len))
                .unwrap_or_default();
            let _ = tx.send(Some(threads.run(|| {
                let slots = (0..count).map(|_| None).collect();
                analyse(&container, data, &policy, slots, defer)
            })));
        }));
        *self.lock_started()? = Some(Started {
            trusted,
            defer,
            stream,
            start,
            len,
            unclaimed,
            done,
        });
        Ok(())
    }

    /// The unpickler's file over the stream the last `checked_pickle(defer=True)`
    /// returned, when its analysis left checks of in-band arrays for the load
    /// (`None` otherwise: read the stream directly). It hands the unpickler
    /// the stream only as far as those checks passed, and raises
    /// `ContentCheckError` where one fails; a pool thread starts on them now.
    fn stream_gate(&self, py: Python<'_>) -> PyResult<Option<crate::gate::StreamGate>> {
        let Some((checks, bytes, start, len)) = self.lock_deferred()?.in_stream.clone() else {
            return Ok(None);
        };
        crate::gate::StreamGate::new(py, bytes, start, len, checks, &self.threads).map(Some)
    }

    /// The globals the analysis of the last `checked_pickle` accepted, when
    /// its report is `safe` with no finding (`None` otherwise): all a load
    /// needs of a clean report, without decoding its JSON.
    fn accepted_globals(&self) -> PyResult<Option<Vec<String>>> {
        Ok(self.lock_accepted()?.clone())
    }

    /// Where the stream the last `checked_pickle` returned starts in that
    /// `bytes` object (0 unless it is the whole file's): the unpickler reads
    /// from there, and stops at the stream's `STOP`.
    fn stream_offset(&self) -> PyResult<usize> {
        self.stream_start
            .lock()
            .map(|start| *start)
            .map_err(|_| PyValueError::new_err("the reader's stream state was poisoned"))
    }

    /// Zero-copy regions of every array's data, in buffer order; `None` for
    /// compressed arrays, which cannot be mapped. Structure is checked;
    /// contents are not (that would read every byte).
    fn array_regions(&self) -> PyResult<Vec<Option<Region>>> {
        self.arrays
            .iter()
            .map(|loc| {
                if loc.compressed {
                    Ok(None)
                } else {
                    self.region(loc.offset, loc.nbytes, self.writable_arrays)
                        .map(Some)
                }
            })
            .collect()
    }

    /// Sizes in bytes of every array, in buffer order.
    fn array_sizes(&self) -> Vec<u64> {
        self.arrays.iter().map(|loc| loc.nbytes).collect()
    }

    /// `(name, nbytes, compressed)` for every array, in buffer order.
    fn array_entries(&self) -> Vec<(String, u64, bool)> {
        self.arrays
            .iter()
            .map(|loc| (loc.name.clone(), loc.nbytes, loc.compressed))
            .collect()
    }

    /// Copies (or decompresses) arrays into `buffers`: one item per array in
    /// buffer order, either `None` (skip it) or a writable C-contiguous buffer of
    /// exactly the array's size. Every CRC is checked; work runs on all threads.
    fn copy_arrays_into(&self, py: Python<'_>, buffers: &Bound<'_, PyList>) -> PyResult<()> {
        let held = self.borrow_buffers(buffers)?;
        let dests: Vec<(usize, &mut [u8])> =
            held.iter().map(|(i, b)| (*i, b.bytes_mut())).collect();
        let container = &self.container;
        let threads = &self.threads;
        py.detach(|| threads.run(|| container.copy_arrays_into(dests)))
            .py(py)
    }

    /// [`Self::copy_arrays_into`] started on the pool, returning at once: the
    /// load decodes the next arrays while the unpickler builds objects from
    /// the previous ones. `buffers` must not be touched until the returned
    /// `PendingCopy`'s `wait()` has returned (it raises what the copy would).
    ///
    /// A batch of compressed arrays only is decoded array by array (chunk
    /// by chunk for large ones) by at most one thread fewer than the pool
    /// has, shared with the batches started before it (in order), and
    /// `wait()` decodes what is still unclaimed on the waiting thread before
    /// it blocks, so the unpickler's core is never idle while it waits.
    ///
    /// The checks a `checked_pickle(defer=True)` left run on the copies;
    /// `wait()` raises `ContentCheckError` if one fails.
    fn start_copy_arrays_into(&self, buffers: &Bound<'_, PyList>) -> PyResult<PendingCopy> {
        let held = self.borrow_buffers(buffers)?;
        let checks = Arc::clone(&self.lock_deferred()?.checks);
        let container = Arc::clone(&self.container);
        let compressed = |i: usize| self.arrays.get(i).is_some_and(|loc| loc.compressed);
        if !held.is_empty() && held.iter().all(|(i, _)| compressed(*i)) {
            // Compressed arrays are decoded piece by piece by one thread
            // fewer than the pool has (the unpickler keeps a core), and by
            // the thread that waits for them.
            let threads = self.threads.count();
            let shared = crate::buffer::share(
                held,
                move |dests| amber::Fill::new(container, dests, checks),
                |fill| {
                    let _ = fill.wait(false);
                },
            );
            self.lane.push(
                Arc::clone(shared.work()),
                threads.saturating_sub(1).max(1),
                &self.threads,
            );
            return Ok(PendingCopy {
                flight: Mutex::new(Some(Flight::Shared {
                    shared,
                    help: threads > 1,
                })),
            });
        }
        let threads = self.threads.clone();
        let flight = crate::buffer::fill_in_background(
            held,
            |job| self.threads.spawn(job),
            move |dests| threads.run(|| copy_checked(&container, dests, &checks)),
        );
        Ok(PendingCopy {
            flight: Mutex::new(Some(Flight::Copy(flight))),
        })
    }

    /// Says arrays `first..end` (their data and what lies between) will not
    /// be read through this reader's map again: their pages leave the
    /// process's resident set (they stay in the page cache, and a later read
    /// faults them back in). A load calls it on the arrays it lent once
    /// their objects have copied them, so it never holds the file's pages
    /// and the copies at once. Nothing happens for a file read into memory.
    fn release_arrays(&self, first: usize, end: usize) {
        let ends = (
            self.arrays.get(first),
            end.checked_sub(1).and_then(|last| self.arrays.get(last)),
        );
        let (Some(a), Some(b)) = ends else {
            return;
        };
        let stop = b.offset.saturating_add(b.nbytes);
        let range = usize::try_from(a.offset)
            .ok()
            .zip(usize::try_from(stop).ok());
        if let Some((start, stop)) = range
            && start < stop
            && stop <= self.container.bytes().len()
        {
            self.container.source().release(start, stop - start);
        }
    }

    /// For each array, whether the last `checked_pickle(defer=True)` found
    /// that all the stream gives it to copies it and nothing else reaches
    /// it (a scikit-learn `Tree`'s node and value arrays), so the load may
    /// lend it the region of the file (`array_regions`) once
    /// `start_check_views` has passed, or, compressed, scratch memory it
    /// reuses once the unpickler has asked for the buffer two after it.
    fn lent_arrays(&self) -> PyResult<Vec<bool>> {
        Ok(self.lock_deferred()?.lent.clone())
    }

    /// The compressed arrays the last `checked_pickle` decoded (CRC checked)
    /// for its checks without a buffer in `dests`, as writable regions the
    /// load hands over instead of decoding them again (`None` for the
    /// others); each is given out once.
    fn take_decoded(&self) -> PyResult<Vec<Option<Region>>> {
        let decoded = std::mem::take(&mut self.lock_deferred()?.decoded);
        Ok(decoded
            .into_iter()
            .map(|bytes| {
                bytes.map(|bytes| {
                    let (ptr, len) = (bytes.as_ptr(), bytes.len());
                    Region::new(Arc::new(bytes), ptr, len, true)
                })
            })
            .collect())
    }

    /// Checks the CRCs of the uncompressed arrays `indices` where they lie
    /// in the file, and runs there the checks `checked_pickle(defer=True)`
    /// left for them, on the pool, returning at once; `wait()` raises
    /// `ChecksumError` or `ContentCheckError` as a copy would.
    fn start_check_views(&self, indices: Vec<usize>) -> PyResult<PendingCopy> {
        let container = Arc::clone(&self.container);
        let threads = self.threads.clone();
        let checks = Arc::clone(&self.lock_deferred()?.checks);
        let flight = crate::buffer::fill_in_background(
            Vec::new(),
            |job| self.threads.spawn(job),
            move |_| threads.run(|| check_views(&container, &indices, &checks)),
        );
        Ok(PendingCopy {
            flight: Mutex::new(Some(Flight::Copy(flight))),
        })
    }

    /// Copies (or decompresses) array `index` into `buffer` (writable, exactly
    /// its size), checking its CRC, without the GIL.
    fn copy_array_into(
        &self,
        py: Python<'_>,
        index: usize,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let held = Borrowed::get(buffer, true)?;
        let dests = vec![(index, held.bytes_mut())];
        let container = &self.container;
        let threads = &self.threads;
        py.detach(|| threads.run(|| container.copy_arrays_into(dests)))
            .py(py)
    }

    /// Checks the CRC of every entry; raises `ChecksumError` naming the first damaged one.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let container = &self.container;
        let threads = &self.threads;
        py.detach(|| threads.run(|| container.verify(&|_| {})))
            .py(py)
    }

    /// Size of the file in bytes.
    fn __len__(&self) -> usize {
        self.container.bytes().len()
    }
}

impl Reader {
    fn lock_accepted(&self) -> PyResult<std::sync::MutexGuard<'_, Option<Vec<String>>>> {
        self.accepted
            .lock()
            .map_err(|_| PyValueError::new_err("the reader's analysis state was poisoned"))
    }

    fn lock_started(&self) -> PyResult<std::sync::MutexGuard<'_, Option<Started>>> {
        self.started
            .lock()
            .map_err(|_| PyValueError::new_err("the reader's analysis state was poisoned"))
    }

    fn lock_deferred(&self) -> PyResult<std::sync::MutexGuard<'_, Loading>> {
        self.deferred
            .lock()
            .map_err(|_| PyValueError::new_err("the reader's check state was poisoned"))
    }
}

pyo3::create_exception!(
    amber,
    ContentCheckError,
    crate::errors::AmberError,
    "A content check left for an array's copy (a tree's nodes) refused it: the load analyses the file again for the full report."
);

use amber::FillFailure as CopyFailure;

/// Copies `dests` (see `Container::copy_arrays_into`), then runs on each copy
/// the checks left for it, in parallel: an array with checks is handed over
/// only once they have passed on exactly the bytes handed over.
fn copy_checked(
    container: &Container<Backing>,
    dests: Vec<(usize, &mut [u8])>,
    checks: &amber::DeferredChecks,
) -> Result<(), CopyFailure> {
    if checks.is_empty() {
        return container.copy_arrays_into(dests).map_err(CopyFailure::Read);
    }
    let mut dests = dests;
    let reborrowed = dests.iter_mut().map(|(i, d)| (*i, &mut **d)).collect();
    container
        .copy_arrays_into(reborrowed)
        .map_err(CopyFailure::Read)?;
    let copies: Vec<(usize, &[u8])> = dests.iter().map(|(i, d)| (*i, &**d)).collect();
    first_failure(&copies, checks)
}

/// [`copy_checked`] for arrays lent as views of the file: their CRCs and
/// deferred checks, run where they lie.
fn check_views(
    container: &Container<Backing>,
    indices: &[usize],
    checks: &amber::DeferredChecks,
) -> Result<(), CopyFailure> {
    let data = container
        .checked_arrays(indices)
        .map_err(CopyFailure::Read)?;
    let views: Vec<(usize, &[u8])> = indices.iter().copied().zip(data).collect();
    first_failure(&views, checks)
}

/// Runs the deferred checks of each `(index, bytes)` in parallel: the first
/// array (in order) they refuse, with its issue.
fn first_failure(
    arrays: &[(usize, &[u8])],
    checks: &amber::DeferredChecks,
) -> Result<(), CopyFailure> {
    use rayon::prelude::*;
    arrays
        .par_iter()
        .filter(|(index, _)| checks.has(*index))
        .find_map_first(|&(index, bytes)| {
            checks
                .check(index, bytes)
                .map(|issue| CopyFailure::Check { index, issue })
        })
        .map_or(Ok(()), Err)
}

/// The batches a reader's loads decode in the background, taken in order by
/// at most `workers` pool threads at a time: the batches started ahead share
/// those threads instead of each taking threads of its own, so the
/// unpickler's thread keeps its core.
#[derive(Default)]
struct Lane {
    queue: Mutex<LaneQueue>,
}

#[derive(Default)]
struct LaneQueue {
    fills: std::collections::VecDeque<Arc<amber::Fill<'static, Backing>>>,
    workers: usize,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `fill`, starting a worker if fewer than `workers` run.
    fn push(
        self: &Arc<Self>,
        fill: Arc<amber::Fill<'static, Backing>>,
        workers: usize,
        threads: &Threads,
    ) {
        let mut queue = self.lock();
        queue.fills.push_back(fill);
        if queue.workers < workers {
            queue.workers += 1;
            let lane = Arc::clone(self);
            threads.spawn(Box::new(move || lane.work()));
        }
    }

    /// Helps with the oldest batch not yet fully claimed until none is left.
    fn work(&self) {
        loop {
            let fill = {
                let mut queue = self.lock();
                while queue.fills.front().is_some_and(|f| f.claimed()) {
                    queue.fills.pop_front();
                }
                match queue.fills.front() {
                    Some(fill) => Arc::clone(fill),
                    None => {
                        queue.workers = queue.workers.saturating_sub(1);
                        return;
                    }
                }
            };
            fill.help();
        }
    }
}

/// Arrays being copied into memory by [`Reader::start_copy_arrays_into`].
#[pyclass(frozen, module = "amber._amber")]
pub struct PendingCopy {
    flight: Mutex<Option<Flight>>,
}

/// The work a [`PendingCopy`] waits for.
enum Flight {
    /// One job on the pool.
    Copy(InFlight<Result<(), CopyFailure>>),
    /// Pieces the pool's jobs take and, with `help`, the waiting thread too.
    Shared {
        shared: Shared<amber::Fill<'static, Backing>>,
        help: bool,
    },
}

#[pymethods]
impl PendingCopy {
    /// Waits (without the GIL) until the arrays are in their buffers; raises
    /// what the copy met (`ChecksumError` naming a damaged entry, …).
    fn wait(&self, py: Python<'_>) -> PyResult<()> {
        let flight = self
            .flight
            .lock()
            .map_err(|_| PyValueError::new_err("array copy state poisoned"))?
            .take();
        let result = match flight {
            None => return Err(PyValueError::new_err("this copy was already waited for")),
            Some(Flight::Copy(mut flight)) => py.detach(|| flight.wait()),
            Some(Flight::Shared { shared, help }) => {
                let work = shared.work();
                let result = py.detach(|| work.wait(help));
                drop(shared);
                Some(result)
            }
        };
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(CopyFailure::Read(e))) => Err(e).py(py),
            Some(Err(CopyFailure::Check { index, issue })) => {
                Err(ContentCheckError::new_err(format!(
                    "array {index}: {} at byte {}: {}",
                    issue.code, issue.offset, issue.message
                )))
            }
            None => Err(PyValueError::new_err(
                "the thread copying the arrays stopped without a result",
            )),
        }
    }
}

/// Names what the bytes look like (`"a pickle stream (protocol 5) …"`).
#[pyfunction]
pub fn sniff(data: &[u8]) -> String {
    amber_format::sniff::describe(data)
}
