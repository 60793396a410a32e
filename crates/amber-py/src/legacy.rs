//! `Legacy`: the Python face of `amber_legacy` (pickle and joblib files).
//!
//! Opening (decompression, parsing, companion files) runs without the GIL.
//! The original stream, the rewritten load stream and each array's bytes are
//! handed out as zero-copy `Region`s of memory the opened file keeps alive.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use amber_legacy::{ArraySource, LegacyError, Limits};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;

use crate::buffer::{Borrowed, Region};
use crate::errors;
use crate::threads::Threads;

pyo3::create_exception!(
    amber,
    LegacyFormatError,
    errors::FormatError,
    "A pickle or joblib file that cannot be opened: not a pickle, malformed, or inconsistent."
);
pyo3::create_exception!(
    amber,
    CompressedStreamError,
    LegacyFormatError,
    "A compressed pickle or joblib file is truncated or corrupt."
);
pyo3::create_exception!(
    amber,
    CompanionFileError,
    LegacyFormatError,
    "A companion file of a pre-0.10 joblib dump is missing, refused or malformed."
);

/// What `Legacy.array_info` says of one array.
type ArrayInfo<'py> = (
    Bound<'py, pyo3::types::PyString>,
    Bound<'py, pyo3::types::PyString>,
    usize,
    bool,
    Option<(String, Vec<u64>, bool)>,
);

/// Converts an `amber_legacy` error into the matching Python exception.
pub fn to_py(py: Python<'_>, err: LegacyError) -> PyErr {
    let message = err.to_string();
    let code = err.code();
    let entry = err.entry().map(str::to_owned);
    let offset = err.offset();
    let pyerr = match &err {
        LegacyError::Io { path, source, .. } => return errors::os_error(&message, source, path),
        LegacyError::Truncated { .. }
        | LegacyError::Corrupt { .. }
        | LegacyError::ZfHeader { .. } => CompressedStreamError::new_err(message),
        LegacyError::TooLarge { .. } => errors::LimitExceededError::new_err(message),
        LegacyError::Pickle { source } if source.code() == "pickle.limit" => {
            errors::LimitExceededError::new_err(message)
        }
        LegacyError::CompanionName { .. }
        | LegacyError::CompanionMissing { .. }
        | LegacyError::CompanionNeedsDirectory { .. }
        | LegacyError::Companion { .. } => CompanionFileError::new_err(message),
        _ => LegacyFormatError::new_err(message),
    };
    errors::with_location(py, pyerr, code, entry, offset, None)
}

/// Copies smaller than this keep the GIL (releasing it costs more than they do).
const DETACH_ABOVE: usize = 256 << 10;

/// An opened pickle or joblib file.
#[pyclass(frozen, module = "amber._amber")]
pub struct Legacy {
    inner: Arc<amber_legacy::Legacy>,
    /// The JSON report of the scan made while opening, if one was asked for.
    report: Option<String>,
}

fn limits(max_decompressed: Option<u64>) -> Limits {
    match max_decompressed {
        Some(max) => Limits::default().with_max_decompressed(max),
        None => Limits::default(),
    }
}

impl Legacy {
    fn region(&self, bytes: &[u8]) -> Region {
        Region::new(self.inner.clone(), bytes.as_ptr(), bytes.len(), false)
    }

    fn new(inner: amber_legacy::Legacy, report: Option<String>) -> Self {
        Self {
            inner: Arc::new(inner),
            report,
        }
    }

    fn scanned(inner: amber_legacy::Legacy, report: &amber::Report) -> PyResult<Self> {
        let json = crate::scan::report_json(report, inner.kind().label())?;
        Ok(Self::new(inner, Some(json)))
    }

    fn source(&self, k: usize) -> PyResult<&ArraySource> {
        self.inner
            .arrays()
            .get(k)
            .ok_or_else(|| PyIndexError::new_err(format!("no array {k}")))
    }

    fn bytes(&self, k: usize) -> PyResult<&[u8]> {
        self.inner
            .array_bytes(k)
            .ok_or_else(|| PyIndexError::new_err(format!("no bytes for array {k}")))
    }
}

#[pymethods]
impl Legacy {
    /// Opens the file at `path` (mapped when uncompressed). With `scan`
    /// (extra trusted names), the stream is also analysed from the parse the
    /// open makes anyway, under the default policy plus those names: see
    /// [`Self::report`].
    #[staticmethod]
    #[pyo3(signature = (path, max_decompressed=None, scan=None))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        max_decompressed: Option<u64>,
        scan: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let limits = limits(max_decompressed);
        let Some(names) = scan else {
            let inner = py
                .detach(|| amber_legacy::open_path(&path, &limits))
                .map_err(|e| to_py(py, e))?;
            return Ok(Self::new(inner, None));
        };
        let policy = amber::policy(&names).map_err(|e| crate::scan::to_py(py, e))?;
        let (inner, report) = py
            .detach(|| amber::open_legacy_path_scanned(&path, &policy, &limits))
            .map_err(|e| to_py(py, e))?;
        Self::scanned(inner, &report)
    }

    /// Opens a file's bytes (copied once); `scan` as for [`Self::open`].
    #[staticmethod]
    #[pyo3(signature = (data, max_decompressed=None, scan=None))]
    fn from_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        max_decompressed: Option<u64>,
        scan: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let owned = Borrowed::get(data, false)?.bytes().to_vec();
        let limits = limits(max_decompressed);
        let Some(names) = scan else {
            let inner = py
                .detach(|| amber_legacy::open_bytes(owned, &limits))
                .map_err(|e| to_py(py, e))?;
            return Ok(Self::new(inner, None));
        };
        let policy = amber::policy(&names).map_err(|e| crate::scan::to_py(py, e))?;
        let (inner, report) = py
            .detach(|| amber::open_legacy_bytes_scanned(owned, &policy, &limits))
            .map_err(|e| to_py(py, e))?;
        Self::scanned(inner, &report)
    }

    /// The JSON report of the scan `open(..., scan=names)` made, else `None`.
    #[getter]
    fn report(&self) -> Option<String> {
        self.report.clone()
    }

    /// `"pickle"`, `"joblib"`, `"joblib-zf"` or `"joblib-multifile"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().label()
    }

    /// The whole-file compressor (`"zlib"`, …, `"zf"`), or `None`.
    #[getter]
    fn compression(&self) -> Option<&'static str> {
        self.inner.kind().compression()
    }

    /// Highest pickle protocol used.
    #[getter]
    fn protocol(&self) -> u8 {
        self.inner.protocol()
    }

    /// Written by Python 2: unpickle with `encoding="latin1"`.
    #[getter]
    fn py2(&self) -> bool {
        self.inner.py2()
    }

    /// Size of the file as opened.
    #[getter]
    fn file_size(&self) -> u64 {
        self.inner.file_size()
    }

    /// Whether `load_stream` differs from `stream`.
    #[getter]
    fn rewritten(&self) -> bool {
        self.inner.is_rewritten()
    }

    /// The original (decompressed) pickle stream: what the safety analysis reads.
    fn stream(&self) -> Region {
        self.region(self.inner.stream())
    }

    /// The JSON report of the safety analysis of the original stream (and of
    /// object-array pickles held in companion files) under the default policy
    /// plus `trusted`. `load_stream` differs from what was analysed only by
    /// dropped `FRAME`s and the persistent-id triples amber itself inserted.
    fn scan(&self, py: Python<'_>, trusted: Vec<String>) -> PyResult<String> {
        let policy = amber::policy(&trusted).map_err(|e| crate::scan::to_py(py, e))?;
        let inner = &self.inner;
        let report = py.detach(|| amber::scan_legacy(inner, &policy, &amber::Limits::default()));
        crate::scan::report_json(&report, inner.kind().label())
    }

    /// The stream for CPython's unpickler.
    fn load_stream(&self) -> Region {
        self.region(self.inner.load_stream())
    }

    /// Number of arrays (`persistent_load` ids run from 0 to this minus one).
    fn array_count(&self) -> usize {
        self.inner.arrays().len()
    }

    /// Array `k`: `(source, wrapper, nbytes, mapped, npy)` where `source` is
    /// `"inline"`, `"pickle"`, `"npy"`, `"npy-pickle"` or `"zfile"`, `wrapper` the
    /// wrapper class name, and `npy` is `(descr, shape, fortran_order)` for `.npy` companions.
    fn array_info<'py>(&self, py: Python<'py>, k: usize) -> PyResult<ArrayInfo<'py>> {
        let source = self.source(k)?;
        let (name, npy) = match source {
            ArraySource::Inline { .. } => (pyo3::intern!(py, "inline"), None),
            ArraySource::NestedPickle { .. } => (pyo3::intern!(py, "pickle"), None),
            ArraySource::Npy {
                descr,
                shape,
                fortran_order,
                ..
            } => (
                pyo3::intern!(py, "npy"),
                Some((descr.clone(), shape.clone(), *fortran_order)),
            ),
            ArraySource::NpyPickle { .. } => (pyo3::intern!(py, "npy-pickle"), None),
            ArraySource::Zfile { .. } => (pyo3::intern!(py, "zfile"), None),
            _ => return Err(PyValueError::new_err("unknown array source")),
        };
        let wrapper = match source.wrapper() {
            amber_legacy::WrapperClass::NdArrayWrapper => pyo3::intern!(py, "NDArrayWrapper"),
            amber_legacy::WrapperClass::ZndArrayWrapper => pyo3::intern!(py, "ZNDArrayWrapper"),
            _ => pyo3::intern!(py, "NumpyArrayWrapper"),
        };
        Ok((
            name.clone(),
            wrapper.clone(),
            self.bytes(k)?.len(),
            self.inner.array_is_mapped(k),
            npy,
        ))
    }

    /// Array `k`'s bytes (raw data or a pickle) as a zero-copy read-only region.
    fn array_region(&self, k: usize) -> PyResult<Region> {
        Ok(self.region(self.bytes(k)?))
    }

    /// Array `k`'s raw bytes in a decompressed stream as a *writable* zero-copy
    /// region (the loader hands large arrays of compressed files out this way
    /// instead of copying them; the stream is not read again after loading).
    fn owned_array_region(&self, k: usize) -> PyResult<Region> {
        if !self.inner.array_is_owned(k) {
            return Err(PyValueError::new_err(format!(
                "array {k} is not in a decompressed stream"
            )));
        }
        let bytes = self.bytes(k)?;
        Ok(Region::new(
            self.inner.clone(),
            bytes.as_ptr(),
            bytes.len(),
            true,
        ))
    }

    /// Copies array `k`'s bytes into `out` (a writable buffer of exactly that
    /// size), without the GIL; a large array of a file is read on `threads`
    /// threads (default: every core).
    #[pyo3(signature = (k, out, threads = None))]
    fn copy_array_into(
        &self,
        py: Python<'_>,
        k: usize,
        out: &Bound<'_, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<()> {
        let dst = Borrowed::get(out, true)?;
        let target = dst.bytes_mut();
        let result = if target.len() < DETACH_ABOVE {
            self.inner.copy_array(k, target)
        } else {
            let threads = Threads::new(threads)?;
            py.detach(|| threads.run(|| self.inner.copy_array(k, target)))
        };
        result.map_err(|e| to_py(py, e))
    }

    /// Copies arrays `first`, `first + 1`, ... (raw data of fewer than
    /// `below` bytes each) one after another into `out`, each at a multiple
    /// of `align`, while they fit; returns their offsets in `out`. The GIL is
    /// released for large blocks.
    fn pack_arrays_into(
        &self,
        py: Python<'_>,
        first: usize,
        out: &Bound<'_, PyAny>,
        below: usize,
        align: usize,
    ) -> PyResult<Vec<usize>> {
        let dst = Borrowed::get(out, true)?;
        let target = dst.bytes_mut();
        let result = if target.len() < DETACH_ABOVE {
            self.inner.pack_arrays(first, target, below, align)
        } else {
            py.detach(|| self.inner.pack_arrays(first, target, below, align))
        };
        result.map_err(|e| to_py(py, e))
    }

    /// `array_info(k)` for every array (the names are interned: one string
    /// object each, not two per array).
    fn array_infos<'py>(&self, py: Python<'py>) -> PyResult<Vec<ArrayInfo<'py>>> {
        (0..self.inner.arrays().len())
            .map(|k| self.array_info(py, k))
            .collect()
    }

    /// Companion files: `[(name, size)]`.
    fn companions(&self) -> Vec<(String, usize)> {
        self.inner
            .companions()
            .iter()
            .map(|c| (c.name().to_owned(), c.bytes().len()))
            .collect()
    }
}

/// Whether bytes starting with `head` (and, for protocol 0/1 pickles, ending
/// with the last byte of `head`) are a pickle or a joblib file's content:
/// a `PROTO` pickle, a protocol 0/1 pickle, joblib's compressors or `ZF`.
#[pyfunction]
pub fn is_legacy(head: &[u8]) -> bool {
    amber_legacy::is_legacy_content(head)
}

/// [`is_legacy`] for the file at `path`, reading only its first 16 bytes and
/// its last byte; `false` when it cannot be read (the amber reader then says
/// what is wrong). Cheaper than opening the file from Python on every load.
#[pyfunction]
pub fn is_legacy_path(py: Python<'_>, path: PathBuf) -> bool {
    py.detach(|| {
        let Ok(mut file) = std::fs::File::open(&path) else {
            return false;
        };
        let mut head = Vec::with_capacity(17);
        if (&file).take(16).read_to_end(&mut head).is_err() || head.is_empty() {
            return false;
        }
        let mut last = [0u8; 1];
        if file.seek(SeekFrom::End(-1)).is_err() || file.read_exact(&mut last).is_err() {
            return false;
        }
        head.extend_from_slice(&last);
        amber_legacy::is_legacy_content(&head)
    })
}

/// Registers the class and its exceptions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LegacyFormatError", py.get_type::<LegacyFormatError>())?;
    m.add(
        "CompressedStreamError",
        py.get_type::<CompressedStreamError>(),
    )?;
    m.add("CompanionFileError", py.get_type::<CompanionFileError>())?;
    m.add_function(wrap_pyfunction!(is_legacy, m)?)?;
    m.add_function(wrap_pyfunction!(is_legacy_path, m)?)?;
    m.add_class::<Legacy>()
}
