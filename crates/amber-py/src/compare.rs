//! `diff`: the Python face of `amber_format::diff::compare` over two files.

use std::path::PathBuf;

use amber_format::{Container, MapMode};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;

/// What differs between the amber files at `a` and `b`, as JSON text.
#[pyfunction]
pub fn diff(py: Python<'_>, a: PathBuf, b: PathBuf) -> PyResult<String> {
    let report = py
        .detach(|| {
            let open =
                |p: &PathBuf| Container::parse(amber_format::map_file(p, MapMode::ReadOnly)?);
            amber_format::diff::compare(&open(&a)?, &open(&b)?)
        })
        .py(py)?;
    serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
}
