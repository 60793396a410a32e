//! The facade's error: whichever core crate failed, with its code kept.

use amber_format::FormatError;
use amber_legacy::LegacyError;
use amber_scan::ScanError;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Opening or configuring failed (a stream that is merely unsafe or
/// malformed is not an error: it is a [`crate::Report`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The amber container is damaged, or the file could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A pickle or joblib file could not be opened (bad compression, a
    /// missing companion file...).
    #[error(transparent)]
    Legacy(#[from] LegacyError),
    /// A `trusted` name is not an exact dotted name.
    #[error(transparent)]
    Scan(#[from] ScanError),
}

impl Error {
    /// Whether the file could not be read at all (missing, unreadable), as
    /// opposed to read and found invalid.
    #[must_use]
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Error::Format(FormatError::Io { .. }) | Error::Legacy(LegacyError::Io { .. })
        )
    }

    /// The stable code of the underlying error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::Format(e) => e.code(),
            Error::Legacy(e) => e.code(),
            Error::Scan(e) => e.code(),
        }
    }
}
