//! Scanning from Python: `trusted=` names to a policy, reports to JSON, and
//! the facade's errors to the exception tree.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::buffer::Borrowed;
use crate::errors;

/// Maps the facade's error to the Python exception tree.
pub fn to_py(py: Python<'_>, err: amber::Error) -> PyErr {
    match err {
        amber::Error::Format(e) => errors::to_py(py, e),
        amber::Error::Legacy(e) => crate::legacy::to_py(py, e),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// The report as JSON, with the file's format added.
pub fn report_json(report: &amber::Report, format: &str) -> PyResult<String> {
    let mut value = serde_json::to_value(report)
        .map_err(|e| PyValueError::new_err(format!("cannot encode the scan report: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("format".into(), format.into());
    }
    Ok(value.to_string())
}

fn finish(
    py: Python<'_>,
    scanned: amber::Result<(&'static str, amber::Report)>,
) -> PyResult<String> {
    let (format, report) = scanned.map_err(|e| to_py(py, e))?;
    report_json(&report, format)
}

/// Scans the file at `path` (amber, pickle or joblib, told apart by content)
/// with the default policy plus `trusted`; returns the report as JSON.
#[pyfunction]
pub fn scan_path(py: Python<'_>, path: PathBuf, trusted: Vec<String>) -> PyResult<String> {
    let policy = amber::policy(&trusted).map_err(|e| to_py(py, e))?;
    let scanned = py.detach(|| amber::scan_path(&path, &policy, &amber_legacy::Limits::default()));
    finish(py, scanned)
}

/// Scans a file held in a bytes-like object (see `scan_path`).
#[pyfunction]
pub fn scan_bytes(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    trusted: Vec<String>,
) -> PyResult<String> {
    let policy = amber::policy(&trusted).map_err(|e| to_py(py, e))?;
    let data = Borrowed::get(data, false)?.bytes().to_vec();
    let scanned = py.detach(|| amber::scan_bytes(data, &policy, &amber_legacy::Limits::default()));
    finish(py, scanned)
}
