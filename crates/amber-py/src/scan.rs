//! Scanning from Python: `trusted=` names to a policy, reports to the parts
//! `ScanReport` is made of (and to JSON), and the facade's errors to the
//! exception tree.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyString};

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

/// One finding as `amber._safety.Finding` takes its fields: code,
/// severity, message, offset, opcode, global, count.
type FindingParts = (
    &'static str,
    &'static str,
    String,
    Option<u64>,
    Option<&'static str>,
    Option<String>,
    u64,
);

/// A scan's report as the Python side builds its `ScanReport` from it,
/// without decoding JSON: format, verdict, findings, globals (`{name:
/// count}`), the names accepted (in NumPy 2's spelling, as
/// `amber._safety.allowed_names` gives them), protocol, and the whole report
/// as JSON (for `details`, which decodes it only when asked).
type ReportParts<'py> = (
    &'static str,
    &'static str,
    Vec<FindingParts>,
    Bound<'py, PyDict>,
    Bound<'py, PyFrozenSet>,
    Option<u8>,
    String,
);

fn finish<'py>(
    py: Python<'py>,
    scanned: amber::Result<(&'static str, amber::Report)>,
) -> PyResult<ReportParts<'py>> {
    let (format, report) = scanned.map_err(|e| to_py(py, e))?;
    let json = report_json(&report, format)?;
    let globals = PyDict::new(py);
    for g in &report.globals {
        globals.set_item(&g.name, g.count)?;
    }
    let allowed = PyFrozenSet::new(
        py,
        report
            .globals
            .iter()
            .filter(|g| g.allowed)
            .map(|g| amber_scan::policy::alias(&g.name)),
    )?;
    let findings = report
        .findings
        .into_iter()
        .map(|f| {
            let severity = f.severity.as_str();
            (
                f.code, severity, f.message, f.offset, f.opcode, f.global, f.count,
            )
        })
        .collect();
    Ok((
        format,
        report.verdict.as_str(),
        findings,
        globals,
        allowed,
        report.protocol,
        json,
    ))
}

/// Scans the file at `path` (amber, pickle or joblib, told apart by content)
/// with the default policy plus `trusted`; returns the report's parts (see
/// `amber._safety.report_from_parts`).
#[pyfunction]
pub fn scan_path<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    trusted: Vec<String>,
) -> PyResult<ReportParts<'py>> {
    // An ASCII `str` is its path's bytes in any file system encoding, read
    // in place; anything else is converted as `os.fsencode` would.
    let ascii = path.cast::<PyString>().ok().and_then(|s| s.to_str().ok());
    let path = match ascii.filter(|text| text.is_ascii()) {
        Some(text) => PathBuf::from(text),
        None => path.extract::<PathBuf>()?,
    };
    let policy = amber::shared_policy(&trusted).map_err(|e| to_py(py, e))?;
    let scanned = py.detach(|| amber::scan_path(&path, &policy, &amber_legacy::Limits::default()));
    finish(py, scanned)
}

/// Scans a file held in a bytes-like object (see `scan_path`).
#[pyfunction]
pub fn scan_bytes<'py>(
    py: Python<'py>,
    data: &Bound<'_, PyAny>,
    trusted: Vec<String>,
) -> PyResult<ReportParts<'py>> {
    let policy = amber::shared_policy(&trusted).map_err(|e| to_py(py, e))?;
    let data = Borrowed::get(data, false)?.bytes().to_vec();
    let scanned = py.detach(|| amber::scan_bytes(data, &policy, &amber_legacy::Limits::default()));
    finish(py, scanned)
}
