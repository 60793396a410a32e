//! Mapping core errors to Python exceptions.
//!
//! One exception class per *category*, not per variant; each instance carries
//! the stable `code` and, where known, `entry` and `offset`. Operating-system
//! errors become the builtin `OSError` subclasses with `errno` and `filename`.

use amber_format::FormatError as Core;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    amber,
    AmberError,
    pyo3::exceptions::PyException,
    "Base class of every error amber raises about a file's content."
);
pyo3::create_exception!(
    amber,
    FormatError,
    AmberError,
    "The file is not a valid amber file: truncated, corrupt, or not amber at all."
);
pyo3::create_exception!(
    amber,
    ChecksumError,
    FormatError,
    "An entry's bytes do not match their checksum: the file is damaged."
);
pyo3::create_exception!(
    amber,
    UnsupportedError,
    AmberError,
    "A valid file that needs a newer amber or a feature this build lacks."
);
pyo3::create_exception!(
    amber,
    LimitExceededError,
    AmberError,
    "A size bound that protects the reader was exceeded."
);

/// Converts a core error into the matching Python exception.
pub fn to_py(py: Python<'_>, err: Core) -> PyErr {
    let message = err.to_string();
    let code = err.code();
    let entry = err.entry().map(str::to_owned);
    let offset = err.offset();
    let chunk = err.chunk();
    let pyerr = match err {
        Core::Io { path, source, .. } => return os_error(&message, &source, &path),
        Core::Checksum { .. } | Core::ContentHash { .. } => ChecksumError::new_err(message),
        Core::Unsupported { .. } => UnsupportedError::new_err(message),
        Core::Limit { .. } => LimitExceededError::new_err(message),
        Core::Usage { .. } => return PyValueError::new_err(message),
        _ => FormatError::new_err(message),
    };
    with_location(py, pyerr, code, entry, offset, chunk)
}

/// An `OSError` whose errno picks the builtin subclass (`FileNotFoundError`,
/// …), with the path as its `filename`.
pub(crate) fn os_error(message: &str, source: &std::io::Error, path: &std::path::Path) -> PyErr {
    let errno = os_errno(source).unwrap_or_else(|| errno_for(source.kind()));
    PyOSError::new_err((
        errno,
        format!("{message}: {source}"),
        path.display().to_string(),
    ))
}

/// Sets the attributes every amber content error carries.
pub(crate) fn with_location(
    py: Python<'_>,
    err: PyErr,
    code: &str,
    entry: Option<String>,
    offset: Option<u64>,
    chunk: Option<u64>,
) -> PyErr {
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail in practice;
    // if it did, the exception would still carry its message.
    let _ = value.setattr("code", code);
    let _ = value.setattr("entry", entry);
    let _ = value.setattr("offset", offset);
    let _ = value.setattr("chunk", chunk);
    err
}

/// The OS error number, looking through wrappers (tempfile adds the path to
/// write errors and keeps the original as its source).
fn os_errno(err: &std::io::Error) -> Option<i32> {
    if let Some(code) = err.raw_os_error() {
        return Some(code);
    }
    let mut source = std::error::Error::source(err).or_else(|| err.get_ref().map(|e| e as _));
    while let Some(inner) = source {
        if let Some(code) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        source = inner.source();
    }
    None
}

fn errno_for(kind: std::io::ErrorKind) -> i32 {
    use std::io::ErrorKind as K;
    match kind {
        K::NotFound => 2,
        K::PermissionDenied => 13,
        K::AlreadyExists => 17,
        K::IsADirectory => 21,
        K::NotADirectory => 20,
        K::StorageFull => 28,
        K::FileTooLarge => 27,
        K::QuotaExceeded => 122,
        _ => 5,
    }
}

/// Shorthand used by the binding's methods.
pub trait IntoPyResult<T> {
    /// Maps the error side to a Python exception.
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Core> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
