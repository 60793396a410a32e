//! `Writer`: the Python face of `amber_format::ContainerWriter` over a `Sink`.
//!
//! The Python pickler streams the pickle entry through [`Writer::write`]; array
//! entries are written from the arrays' own memory with the GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use amber_format::{Committed, ContainerWriter, Output, Sink, zip::ZipEntry};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffer::{Borrowed, Region};
use crate::errors::IntoPyResult;

/// Writes one amber file. Use `to_path`, `to_memory` or `to_temporary`, then
/// `begin_entry`/`write`/`end_entry` for the pickle, `add_entry` per array,
/// and `finish` with the manifest. `abort` (or dropping) discards everything.
#[pyclass(module = "amber._amber")]
pub struct Writer {
    inner: Option<ContainerWriter<Sink>>,
}

impl Writer {
    fn create(py: Python<'_>, output: &Output) -> PyResult<Self> {
        let sink = Sink::create(output).py(py)?;
        let label = sink.label();
        let writer = ContainerWriter::new(sink, label).py(py)?;
        Ok(Self {
            inner: Some(writer),
        })
    }

    fn active(&mut self) -> PyResult<&mut ContainerWriter<Sink>> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished or aborted"))
    }
}

fn entry_dict<'py>(py: Python<'py>, entry: &ZipEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &entry.name)?;
    d.set_item("size", entry.size)?;
    d.set_item("crc32", entry.crc32)?;
    d.set_item("offset", entry.data_offset)?;
    Ok(d)
}

#[pymethods]
impl Writer {
    /// A writer that atomically replaces `path` when finished.
    #[staticmethod]
    #[pyo3(signature = (path, *, overwrite = true, sync = false))]
    fn to_path(py: Python<'_>, path: PathBuf, overwrite: bool, sync: bool) -> PyResult<Self> {
        Self::create(
            py,
            &Output::Path {
                target: path,
                overwrite,
                sync,
            },
        )
    }

    /// A writer into memory; `finish` returns `bytes`.
    #[staticmethod]
    fn to_memory(py: Python<'_>) -> PyResult<Self> {
        Self::create(py, &Output::Memory)
    }

    /// A writer into an unnamed temporary file; `finish` returns a `Region` of it.
    #[staticmethod]
    fn to_temporary(py: Python<'_>) -> PyResult<Self> {
        Self::create(py, &Output::Anonymous)
    }

    /// Starts the streamed entry `name`.
    fn begin_entry(&mut self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.active()?.begin_entry(name).py(py)
    }

    /// Appends a bytes-like object to the streamed entry; returns its length.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let data = Borrowed::get(data, false)?;
        let bytes = data.bytes();
        let writer = self.active()?;
        if bytes.len() >= 1 << 20 {
            py.detach(|| writer.write(bytes)).py(py)?;
        } else {
            writer.write(bytes).py(py)?;
        }
        Ok(bytes.len())
    }

    /// Ends the streamed entry; returns its record.
    fn end_entry<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let entry = self.active()?.end_entry().py(py)?;
        entry_dict(py, &entry)
    }

    /// Writes entry `name` as `header` followed by the bytes of `data`, without
    /// holding the GIL; returns its record.
    fn add_entry<'py>(
        &mut self,
        py: Python<'py>,
        name: &str,
        header: &[u8],
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let data = Borrowed::get(data, false)?;
        let bytes = data.bytes();
        let writer = self.active()?;
        let entry = py
            .detach(|| writer.add_entry(name, &[header, bytes]))
            .py(py)?;
        entry_dict(py, &entry)
    }

    /// Records of the entries written so far (after `mimetype`).
    fn entries<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.active()?
            .entries()
            .iter()
            .map(|e| entry_dict(py, e))
            .collect()
    }

    /// Writes the manifest and the zip directory and makes the file visible.
    /// Returns the path (path writers), the bytes (memory writers) or a
    /// `Region` over the temporary file (temporary writers).
    fn finish(&mut self, py: Python<'_>, manifest: &[u8]) -> PyResult<Py<PyAny>> {
        let writer = self
            .inner
            .take()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished or aborted"))?;
        let sink = py.detach(|| writer.finish(manifest)).py(py)?;
        let committed = py.detach(|| sink.commit()).py(py)?;
        Ok(match committed {
            Committed::Path(path) => path.into_pyobject(py)?.into_any().unbind(),
            Committed::Memory(bytes) => PyBytes::new(py, &bytes).into_any().unbind(),
            Committed::Anonymous(file) => {
                let path = PathBuf::from("<temporary file>");
                let mapping = Arc::new(amber_format::file::map_open_file(&file, &path).py(py)?);
                let region = Region::new(mapping.clone(), mapping.as_ptr(), mapping.len(), false);
                Py::new(py, region)?.into_any()
            }
        })
    }

    /// Discards the file: the target keeps its previous content and the
    /// temporary file is removed. Safe to call more than once.
    fn abort(&mut self) {
        self.inner = None;
    }
}
