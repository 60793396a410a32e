//! `StreamGate`: the unpickler's file over an analysed stream whose in-band
//! arrays' content checks were left for the load (`amber::StreamChecks`).
//!
//! The analysis checked everything else before this file is made; what it
//! left are walks of array bytes (a HistGradientBoosting predictor's nodes, a
//! small `Tree`'s nodes) that lie in the stream itself. The gate hands the
//! unpickler the stream's bytes only up to the start of the first array whose
//! checks have not passed: a `read` that reaches further first runs (or waits
//! for) those checks, without the GIL, and raises `ContentCheckError` if one
//! fails. A pool thread runs them all in order meanwhile, so they are mostly
//! done by the time the unpickler comes to each array.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PySlice};

use crate::buffer::FrozenBytes;
use crate::reader::ContentCheckError;

/// A read-only binary file over the analysed stream (`read`, `readinto`,
/// `readline`: what `pickle.Unpickler` calls), gated by the stream's checks.
#[pyclass(frozen, module = "amber._amber")]
pub struct StreamGate {
    bytes: Arc<FrozenBytes>,
    view: Py<PyMemoryView>,
    start: usize,
    len: usize,
    pos: Mutex<usize>,
    checks: Arc<amber::StreamChecks>,
}

impl StreamGate {
    /// A gate over `len` bytes of `bytes` from `start` (the stream analysed),
    /// with the checks its analysis left, which a pool job starts running.
    pub fn new(
        py: Python<'_>,
        bytes: Arc<FrozenBytes>,
        start: usize,
        len: usize,
        checks: Arc<amber::StreamChecks>,
        threads: &crate::threads::Threads,
    ) -> PyResult<Self> {
        let view = PyMemoryView::from(bytes.object(py).as_any())?.unbind();
        let (job_bytes, job_checks) = (Arc::clone(&bytes), Arc::clone(&checks));
        threads.spawn(Box::new(move || {
            if let Some(stream) = stream_of(job_bytes.as_ref().as_ref(), start, len) {
                // A failure is the reader's to raise when it comes to it.
                let _ = job_checks.run_all(stream);
            }
        }));
        Ok(Self {
            bytes,
            view,
            start,
            len,
            pos: Mutex::new(0),
            checks,
        })
    }

    /// The position, read without holding its lock over a read.
    fn position(&self) -> PyResult<usize> {
        self.pos
            .lock()
            .map(|pos| *pos)
            .map_err(|_| PyValueError::new_err("the stream gate's position was poisoned"))
    }

    fn seek_to(&self, end: usize) -> PyResult<()> {
        *self
            .pos
            .lock()
            .map_err(|_| PyValueError::new_err("the stream gate's position was poisoned"))? = end;
        Ok(())
    }

    /// Makes sure the bytes before `end` (from the stream's start) may be
    /// handed over: every array starting before it passed its checks.
    fn open_to(&self, py: Python<'_>, end: usize) -> PyResult<()> {
        let end = u64::try_from(end).unwrap_or(u64::MAX);
        if end <= self.checks.open_until() {
            return Ok(());
        }
        let stream = stream_of(self.bytes.as_ref().as_ref(), self.start, self.len)
            .ok_or_else(|| PyValueError::new_err("the pickle stream lies outside its bytes"))?;
        let checks = &self.checks;
        py.detach(|| checks.check_until(stream, end))
            .map_err(|issue| {
                ContentCheckError::new_err(format!(
                    "an in-band array: {} at byte {}: {}",
                    issue.code, issue.offset, issue.message
                ))
            })
    }

    /// The stream's bytes `from..to` as a view of the `bytes` object.
    fn slice<'py>(&self, py: Python<'py>, from: usize, to: usize) -> PyResult<Bound<'py, PyAny>> {
        let (a, b) = (
            self.start.saturating_add(from),
            self.start.saturating_add(to),
        );
        let a = isize::try_from(a).map_err(|_| PyValueError::new_err("stream too large"))?;
        let b = isize::try_from(b).map_err(|_| PyValueError::new_err("stream too large"))?;
        self.view.bind(py).get_item(PySlice::new(py, a, b, 1))
    }

    /// Where a read of `n` bytes (`None`: to the end) from `pos` ends.
    fn end_of(&self, pos: usize, n: Option<usize>) -> usize {
        n.map_or(self.len, |n| pos.saturating_add(n).min(self.len))
    }
}

fn stream_of(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

#[pymethods]
impl StreamGate {
    /// Up to `n` bytes (all that is left if `n` is negative or omitted).
    #[pyo3(signature = (n = -1))]
    fn read<'py>(&self, py: Python<'py>, n: isize) -> PyResult<Bound<'py, PyAny>> {
        let pos = self.position()?;
        let end = self.end_of(pos, usize::try_from(n).ok());
        self.open_to(py, end)?;
        let out = self.slice(py, pos, end)?;
        self.seek_to(end)?;
        Ok(out)
    }

    /// Reads into the writable buffer `buffer`; returns the bytes read.
    fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pos = self.position()?;
        let end = self.end_of(pos, Some(buffer.len()?));
        self.open_to(py, end)?;
        let count = end.saturating_sub(pos);
        let part = self.slice(py, pos, end)?;
        buffer.set_item(PySlice::new(py, 0, isize::try_from(count)?, 1), part)?;
        self.seek_to(end)?;
        Ok(count)
    }

    /// The bytes up to and including the next newline (or the end).
    fn readline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pos = self.position()?;
        let stream = stream_of(self.bytes.as_ref().as_ref(), self.start, self.len)
            .ok_or_else(|| PyValueError::new_err("the pickle stream lies outside its bytes"))?;
        let rest = stream.get(pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.len, |i| pos.saturating_add(i).saturating_add(1));
        self.open_to(py, end)?;
        let out = self.slice(py, pos, end)?;
        self.seek_to(end)?;
        Ok(out)
    }
}
