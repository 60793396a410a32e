//! `Writer`: the Python face of `amber_format::ContainerWriter` over a `Sink`.
//!
//! The Python pickler streams the pickle entry through [`Writer::write`]; array
//! entries are written from the arrays' own memory with the GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use amber_format::codec::{Codec, DEFAULT_CHUNK_SIZE, Settings, Summary};
use amber_format::write::ArrayItem;
use amber_format::{Committed, ContainerWriter, Output, Sink, zip::ZipEntry};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffer::{Borrowed, Region};
use crate::errors::IntoPyResult;
use crate::threads::Threads;

/// Writes one amber file. Use `to_path`, `to_memory` or `to_temporary`, then
/// `begin_entry`/`write`/`end_entry` for the pickle, `add_arrays` for the arrays,
/// and `finish` with the manifest. `abort` (or dropping) discards everything.
#[pyclass(module = "amber._amber")]
pub struct Writer {
    inner: Option<ContainerWriter<Sink>>,
    threads: Threads,
}

impl Writer {
    fn create(py: Python<'_>, output: &Output, threads: Option<usize>) -> PyResult<Self> {
        let threads = Threads::new(threads)?;
        let sink = Sink::create(output).py(py)?;
        let label = sink.label();
        let writer = ContainerWriter::new(sink, label).py(py)?;
        Ok(Self {
            inner: Some(writer),
            threads,
        })
    }

    fn active(&mut self) -> PyResult<&mut ContainerWriter<Sink>> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished or aborted"))
    }
}

fn entry_dict<'py>(
    py: Python<'py>,
    entry: &ZipEntry,
    summary: Option<Summary>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &entry.name)?;
    d.set_item("size", entry.size)?;
    d.set_item("crc32", entry.crc32)?;
    d.set_item("offset", entry.data_offset)?;
    if let Some(summary) = summary {
        d.set_item("codec", summary.codec.name())?;
        d.set_item("filter", summary.filter.name())?;
        d.set_item("raw_size", summary.raw_size)?;
        d.set_item("stored_size", summary.stored_size)?;
    }
    Ok(d)
}

/// `(name, header, data, itemsize, kind)` as `add_arrays` takes them from Python.
type PyArrayItem<'py> = (String, Vec<u8>, Bound<'py, PyAny>, usize, u64);

/// Compression settings from the Python side's (codec, level) choice.
fn settings(codec: Option<&str>, level: i32, itemsize: usize) -> PyResult<Option<Settings>> {
    let codec = match codec {
        None | Some("none") => return Ok(None),
        Some("zstd") => Codec::Zstd(level),
        Some("lz4") => Codec::Lz4,
        Some(other) => return Err(PyValueError::new_err(format!("unknown codec `{other}`"))),
    };
    Ok(Some(Settings {
        codec,
        itemsize,
        chunk_size: DEFAULT_CHUNK_SIZE,
    }))
}

#[pymethods]
impl Writer {
    /// A writer that atomically replaces `path` when finished.
    #[staticmethod]
    #[pyo3(signature = (path, *, overwrite = true, sync = false, threads = None))]
    fn to_path(
        py: Python<'_>,
        path: PathBuf,
        overwrite: bool,
        sync: bool,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        Self::create(
            py,
            &Output::Path {
                target: path,
                overwrite,
                sync,
            },
            threads,
        )
    }

    /// A writer into memory; `finish` returns `bytes`.
    #[staticmethod]
    #[pyo3(signature = (*, threads = None))]
    fn to_memory(py: Python<'_>, threads: Option<usize>) -> PyResult<Self> {
        Self::create(py, &Output::Memory, threads)
    }

    /// A writer into an unnamed temporary file; `finish` returns a `Region` of it.
    #[staticmethod]
    #[pyo3(signature = (*, threads = None))]
    fn to_temporary(py: Python<'_>, threads: Option<usize>) -> PyResult<Self> {
        Self::create(py, &Output::Anonymous, threads)
    }

    /// Starts the streamed entry `name`, compressed in chunks when `codec` is given.
    #[pyo3(signature = (name, codec = None, level = 3))]
    fn begin_entry(
        &mut self,
        py: Python<'_>,
        name: &str,
        codec: Option<&str>,
        level: i32,
    ) -> PyResult<()> {
        let settings = settings(codec, level, 1)?;
        let threads = self.threads.clone();
        let writer = self.active()?;
        match settings {
            Some(s) => threads
                .run(|| writer.begin_compressed_entry(name, s))
                .py(py),
            None => writer.begin_entry(name).py(py),
        }
    }

    /// Appends a bytes-like object to the streamed entry; returns its length.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let data = Borrowed::get(data, false)?;
        let bytes = data.bytes();
        let threads = self.threads.clone();
        let writer = self.active()?;
        if bytes.len() >= 1 << 20 {
            py.detach(|| threads.run(|| writer.write(bytes))).py(py)?;
        } else {
            threads.run(|| writer.write(bytes)).py(py)?;
        }
        Ok(bytes.len())
    }

    /// Ends the streamed entry; returns its record.
    fn end_entry<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let threads = self.threads.clone();
        let writer = self.active()?;
        let entry = py.detach(|| threads.run(|| writer.end_entry())).py(py)?;
        let summary = writer.take_summary();
        entry_dict(py, &entry, summary)
    }

    /// Writes many array entries at once: `items` is a list of
    /// `(name, header, data, itemsize, kind)`, where arrays of one `kind` (an
    /// int) may share a filter choice. Without the GIL; with `codec`, small
    /// arrays are compressed several at a time on all threads. Returns their records.
    #[pyo3(signature = (items, codec = None, level = 3))]
    fn add_arrays<'py>(
        &mut self,
        py: Python<'py>,
        items: Vec<PyArrayItem<'py>>,
        codec: Option<&str>,
        level: i32,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let settings = settings(codec, level, 1)?;
        let held: Vec<Borrowed> = items
            .iter()
            .map(|(_, _, data, _, _)| Borrowed::get(data, false))
            .collect::<PyResult<_>>()?;
        let refs: Vec<ArrayItem<'_>> = items
            .iter()
            .zip(&held)
            .map(|((name, header, _, itemsize, kind), data)| ArrayItem {
                name: name.as_str(),
                header: header.as_slice(),
                data: data.bytes(),
                itemsize: *itemsize,
                kind: *kind,
            })
            .collect();
        let threads = self.threads.clone();
        let writer = self.active()?;
        let records = py
            .detach(|| threads.run(|| writer.add_arrays(&refs, settings)))
            .py(py)?;
        records
            .iter()
            .map(|(entry, summary)| entry_dict(py, entry, *summary))
            .collect()
    }

    /// The content hash of the entries written so far (`blake3:<hex>`), for the manifest.
    fn content_hash(&mut self) -> PyResult<String> {
        Ok(self.active()?.content_hash())
    }

    /// Writes the manifest and the zip directory and makes the file visible.
    /// Returns the path as a `str` (path writers), the bytes (memory writers) or a
    /// `Region` over the temporary file (temporary writers).
    fn finish(&mut self, py: Python<'_>, manifest: &[u8]) -> PyResult<Py<PyAny>> {
        let writer = self
            .inner
            .take()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished or aborted"))?;
        let sink = py.detach(|| writer.finish(manifest)).py(py)?;
        let committed = py.detach(|| sink.commit()).py(py)?;
        Ok(match committed {
            // A `str` (an `OsString` converts to one); a `pathlib.Path` costs more to make.
            Committed::Path(path) => path.into_os_string().into_pyobject(py)?.into_any().unbind(),
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
