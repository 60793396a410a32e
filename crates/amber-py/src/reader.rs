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

/// An open amber file.
#[pyclass(frozen, module = "amber._amber")]
pub struct Reader {
    container: Arc<Container<Backing>>,
    writable_arrays: bool,
}

impl Reader {
    fn new(py: Python<'_>, backing: Backing, writable_arrays: bool) -> PyResult<Self> {
        let container = py.detach(|| Container::parse(backing)).py(py)?;
        Ok(Self {
            container: Arc::new(container),
            writable_arrays,
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
    #[pyo3(signature = (path, mode = None))]
    fn open(py: Python<'_>, path: PathBuf, mode: Option<&str>) -> PyResult<Self> {
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
        Self::new(py, Backing::Map(mapping), writable)
    }

    /// Parses an amber file held in a bytes-like object (copied once).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = Borrowed::get(data, false)?.bytes().to_vec();
        Self::new(py, Backing::Owned(data), false)
    }

    /// The manifest exactly as stored.
    fn manifest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.container.manifest_bytes())
    }

    /// The pickle stream as a read-only region, after checking its CRC.
    fn pickle(&self, py: Python<'_>) -> PyResult<Region> {
        let container = self.container.clone();
        let data = py
            .detach(|| container.pickle().map(|d| (d.as_ptr() as usize, d.len())))
            .py(py)?;
        Ok(Region::new(
            self.container.clone(),
            data.0 as *const u8,
            data.1,
            false,
        ))
    }

    /// Zero-copy regions of every array's data, in buffer order. Structure is
    /// checked; contents are not (that would read every byte).
    fn array_regions(&self) -> PyResult<Vec<Region>> {
        self.container
            .arrays()
            .into_iter()
            .map(|(_, loc)| self.region(loc.offset, loc.nbytes, self.writable_arrays))
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

    /// Copies every array into `buffers` (writable, C-contiguous, one per array
    /// in buffer order, each exactly the array's size), checking each CRC.
    fn copy_arrays_into(&self, py: Python<'_>, buffers: &Bound<'_, PyList>) -> PyResult<()> {
        let held: Vec<Borrowed> = buffers
            .iter()
            .map(|b| Borrowed::get(&b, true))
            .collect::<PyResult<_>>()?;
        let count = self.container.arrays().len();
        if held.len() != count {
            return Err(PyValueError::new_err(format!(
                "{} buffers given for {count} arrays",
                held.len()
            )));
        }
        let dests: Vec<(usize, &mut [u8])> =
            held.iter().map(Borrowed::bytes_mut).enumerate().collect();
        let container = &self.container;
        py.detach(|| container.copy_arrays_into(dests)).py(py)
    }

    /// Checks the CRC of every entry; raises `ChecksumError` naming the first damaged one.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let container = &self.container;
        py.detach(|| container.verify(&|_| {})).py(py)
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
