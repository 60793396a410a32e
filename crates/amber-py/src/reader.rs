//! `Reader`: the Python face of `amber_format::Container`.
//!
//! Opening validates structure and manifest (never the array bytes, so it is
//! instant). The pickle stream is handed out as a zero-copy `Region` after its
//! CRC is checked; arrays are either handed out as zero-copy regions of the map
//! (`mmap_mode`) or copied into NumPy-owned buffers with their CRCs checked, on
//! all cores and without the GIL.

use std::path::PathBuf;
use std::sync::Arc;

use amber_format::{Container, MapMode, Mapping};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::buffer::{Borrowed, Region};
use crate::errors::IntoPyResult;
use crate::threads::Threads;

/// Bytes a container is parsed from.
enum Backing {
    Map(Mapping),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Map(m) => m.as_ref(),
            Self::Owned(v) => v,
        }
    }
}

impl amber_format::Source for Backing {
    fn release(&self, offset: usize, len: usize) {
        if let Self::Map(m) = self {
            m.release(offset, len);
        }
    }
}

/// The pickle stream once checked: a range of the file, or decompressed bytes.
enum Stream {
    Mapped { start: usize, len: usize },
    Owned(Vec<u8>),
}

/// Pages of the stream behind the reading position are released in steps of this size.
const RELEASE_STEP: usize = 8 << 20;

/// An open amber file.
#[pyclass(frozen, module = "amber._amber")]
pub struct Reader {
    container: Arc<Container<Backing>>,
    writable_arrays: bool,
    threads: Threads,
    stream: std::sync::Mutex<Option<(Stream, usize)>>,
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
        Ok(Self {
            container: Arc::new(container),
            writable_arrays,
            threads,
            stream: std::sync::Mutex::new(None),
        })
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
        let mapping = py
            .detach(|| amber_format::map_file(&path, map_mode))
            .py(py)?;
        Self::new(py, Backing::Map(mapping), writable, threads)
    }

    /// Parses an amber file held in a bytes-like object (copied once).
    #[staticmethod]
    #[pyo3(signature = (data, threads = None))]
    fn from_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let data = Borrowed::get(data, false)?.bytes().to_vec();
        Self::new(py, Backing::Owned(data), false, threads)
    }

    /// The manifest exactly as stored.
    fn manifest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.container.manifest_bytes())
    }

    /// Checks (and decompresses) the pickle stream for reading with
    /// `read_pickle`; returns its length.
    fn open_pickle(&self, py: Python<'_>) -> PyResult<usize> {
        let container = &self.container;
        let threads = &self.threads;
        let base = container.bytes().as_ptr() as usize;
        let stream = py
            .detach(|| {
                threads.run(|| {
                    container.pickle().map(|d| match d {
                        std::borrow::Cow::Borrowed(b) => Stream::Mapped {
                            start: b.as_ptr() as usize - base,
                            len: b.len(),
                        },
                        std::borrow::Cow::Owned(v) => Stream::Owned(v),
                    })
                })
            })
            .py(py)?;
        let len = match &stream {
            Stream::Mapped { len, .. } => *len,
            Stream::Owned(v) => v.len(),
        };
        *self
            .stream
            .lock()
            .map_err(|_| PyValueError::new_err("reader lock poisoned"))? = Some((stream, 0));
        Ok(len)
    }

    /// Up to `n` bytes of the pickle stream from `pos` (all the rest if `n` < 0).
    /// Pages of the file behind `pos` are released as reading goes on.
    fn read_pickle<'py>(
        &self,
        py: Python<'py>,
        pos: usize,
        n: isize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut guard = self
            .stream
            .lock()
            .map_err(|_| PyValueError::new_err("reader lock poisoned"))?;
        let (stream, released) = guard
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("call open_pickle first"))?;
        let data: &[u8] = match stream {
            Stream::Mapped { start, len } => self
                .container
                .bytes()
                .get(*start..*start + *len)
                .unwrap_or_default(),
            Stream::Owned(v) => v,
        };
        let from = pos.min(data.len());
        let to = if n < 0 {
            data.len()
        } else {
            from.saturating_add(n.unsigned_abs()).min(data.len())
        };
        let out = PyBytes::new(py, data.get(from..to).unwrap_or_default());
        if let Stream::Mapped { start, .. } = stream
            && to >= *released + RELEASE_STEP
        {
            amber_format::Source::release(
                self.container.source(),
                *start + *released,
                to - *released,
            );
            *released = to;
        }
        Ok(out)
    }

    /// Zero-copy regions of every array's data, in buffer order; `None` for
    /// compressed arrays, which cannot be mapped. Structure is checked;
    /// contents are not (that would read every byte).
    fn array_regions(&self) -> PyResult<Vec<Option<Region>>> {
        self.container
            .arrays()
            .into_iter()
            .map(|(_, loc)| {
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
        self.container
            .arrays()
            .into_iter()
            .map(|(_, loc)| loc.nbytes)
            .collect()
    }

    /// `(name, nbytes, compressed)` for every array, in buffer order.
    fn array_entries(&self) -> Vec<(String, u64, bool)> {
        self.container
            .arrays()
            .into_iter()
            .map(|(_, loc)| (loc.name, loc.nbytes, loc.compressed))
            .collect()
    }

    /// Copies (or decompresses) arrays into `buffers`: one item per array in
    /// buffer order, either `None` (skip it) or a writable C-contiguous buffer of
    /// exactly the array's size. Every CRC is checked; work runs on all threads.
    fn copy_arrays_into(&self, py: Python<'_>, buffers: &Bound<'_, PyList>) -> PyResult<()> {
        let count = self.container.arrays().len();
        if buffers.len() != count {
            return Err(PyValueError::new_err(format!(
                "{} buffers given for {count} arrays",
                buffers.len()
            )));
        }
        let mut held: Vec<(usize, Borrowed)> = Vec::with_capacity(count);
        for (index, item) in buffers.iter().enumerate() {
            if !item.is_none() {
                held.push((index, Borrowed::get(&item, true)?));
            }
        }
        let dests: Vec<(usize, &mut [u8])> =
            held.iter().map(|(i, b)| (*i, b.bytes_mut())).collect();
        let container = &self.container;
        let threads = &self.threads;
        py.detach(|| threads.run(|| container.copy_arrays_into(dests)))
            .py(py)
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

/// Names what the bytes look like (`"a pickle stream (protocol 5) …"`).
#[pyfunction]
pub fn sniff(data: &[u8]) -> String {
    amber_format::sniff::describe(data)
}
