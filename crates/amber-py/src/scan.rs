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

/// The report as JSON, with the file's format added: written straight to
/// text (no intermediate JSON tree), the format spliced in as the object's
/// first member.
pub fn report_json(report: &amber::Report, format: &str) -> PyResult<String> {
    let encode =
        |e: serde_json::Error| PyValueError::new_err(format!("cannot encode the scan report: {e}"));
    let body = serde_json::to_string(report).map_err(encode)?;
    let format = serde_json::to_string(format).map_err(encode)?;
    let members = body
        .strip_prefix('{')
        .ok_or_else(|| PyValueError::new_err("the scan report is not a JSON object"))?;
    let mut out = String::with_capacity(body.len().saturating_add(format.len()).saturating_add(12));
    out.push_str("{\"format\":");
    out.push_str(&format);
    if members != "}" {
        out.push(',');
    }
    out.push_str(members);
    Ok(out)
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
