//! `StoreCore`: the Python face of `amber_store::Store`.
//!
//! Argument conversion and error mapping only: layout, versions, locking and
//! the registry are in `amber-store`. Store errors are raised as `AmberError`
//! with their `store.*` code (the Python `amber.Store` turns each code into its
//! exception class); I/O errors are the builtin `OSError` subclasses.

use std::path::PathBuf;

use amber_store::{Store, StoreError, VersionFile};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{AmberError, os_error};

fn to_py(err: StoreError) -> PyErr {
    let message = err.to_string();
    if let StoreError::Io { path, source, .. } = err {
        return os_error(&message, &source, &path);
    }
    let code = err.code();
    let error = AmberError::new_err(message);
    Python::attach(|py| {
        let _ = error.value(py).setattr("code", code);
    });
    error
}

trait StoreResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> StoreResult<T> for Result<T, StoreError> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

fn version_dict<'py>(py: Python<'py>, file: &VersionFile) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &file.name)?;
    d.set_item("version", file.version.to_string())?;
    d.set_item("created", &file.created)?;
    d.set_item("path", &file.path)?;
    Ok(d)
}

/// A model store at a directory (see `amber.Store`, which wraps this).
#[pyclass(module = "amber._amber", frozen)]
pub struct StoreCore {
    inner: Store,
}

#[pymethods]
impl StoreCore {
    /// Opens the store at `root`, creating the directory if `create`.
    #[new]
    #[pyo3(signature = (root, *, create = true))]
    fn new(py: Python<'_>, root: PathBuf, create: bool) -> PyResult<Self> {
        let inner = py
            .detach(|| {
                if create {
                    Store::create(root)
                } else {
                    Store::open(root)
                }
            })
            .py()?;
        Ok(Self { inner })
    }

    /// The model names with at least one version, sorted.
    fn models(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.models()).py()
    }

    /// The versions of `name`, lowest first, as dicts.
    fn versions<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let files = py.detach(|| self.inner.versions(name)).py()?;
        files.iter().map(|f| version_dict(py, f)).collect()
    }

    /// The version an alias points to, the one given, or the newest.
    #[pyo3(signature = (name, version = None, alias = None))]
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let file = py
            .detach(|| self.inner.resolve(name, version, alias))
            .py()?;
        version_dict(py, &file)
    }

    /// `store.json` of `name` as JSON text (aliases with history).
    fn registry(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let registry = py.detach(|| self.inner.registry(name)).py()?;
        serde_json::to_string(&registry).map_err(|e| AmberError::new_err(e.to_string()))
    }

    /// A hidden temporary path to write a new version of `name` into.
    #[pyo3(signature = (name, version = None))]
    fn prepare(&self, py: Python<'_>, name: &str, version: Option<&str>) -> PyResult<PathBuf> {
        py.detach(|| self.inner.prepare(name, version)).py()
    }

    /// Registers the written file at `pending` as a new version (under the lock).
    #[pyo3(signature = (name, pending, version = None, alias = None))]
    fn commit<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        pending: PathBuf,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let file = py
            .detach(|| self.inner.commit(name, &pending, version, alias))
            .py()?;
        version_dict(py, &file)
    }

    /// Points `alias` at `version`.
    fn set_alias<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        alias: &str,
        version: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let file = py
            .detach(|| self.inner.set_alias(name, alias, version))
            .py()?;
        version_dict(py, &file)
    }

    /// Moves `alias` back to its previous target; returns (from, to).
    fn rollback<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        alias: &str,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let (from, to) = py.detach(|| self.inner.rollback(name, alias)).py()?;
        Ok((version_dict(py, &from)?, version_dict(py, &to)?))
    }

    /// Deletes a version; returns the aliases that were removed.
    #[pyo3(signature = (name, version, force = false))]
    fn delete(
        &self,
        py: Python<'_>,
        name: &str,
        version: &str,
        force: bool,
    ) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.delete(name, version, force)).py()
    }

    /// Removes leftover temporary files older than `older_than` seconds; returns them.
    fn prune(&self, py: Python<'_>, older_than: f64) -> PyResult<Vec<PathBuf>> {
        let age = std::time::Duration::try_from_secs_f64(older_than.max(0.0))
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        py.detach(|| self.inner.prune(age)).py()
    }

    /// The full consistency check, as JSON text.
    fn check(&self, py: Python<'_>) -> PyResult<String> {
        let report = py.detach(|| self.inner.check()).py()?;
        serde_json::to_string(&report).map_err(|e| AmberError::new_err(e.to_string()))
    }
}
