//! Opening a model file for `scan` and `inspect` through the `amber`
//! facade: amber containers, plain pickles and joblib files of every version
//! and compressor, told apart by content (never by extension).

use std::path::Path;

/// Why a file could not be opened (exit code 2, or 1 when it was read and
/// found invalid).
#[derive(Clone)]
pub struct OpenError {
    /// The message.
    pub message: String,
    /// The file is readable but invalid (exit 1, not 2).
    pub invalid: bool,
}

impl OpenError {
    /// The error of the facade, with the path.
    pub fn new(path: &Path, err: &amber::Error) -> Self {
        OpenError {
            message: format!("{}: {err}", path.display()),
            invalid: !err.is_io(),
        }
    }
}

/// Opens `path` by content.
pub fn open(path: &Path) -> Result<amber::Opened, OpenError> {
    amber::open_path(path, &amber_legacy::Limits::default()).map_err(|e| OpenError::new(path, &e))
}
