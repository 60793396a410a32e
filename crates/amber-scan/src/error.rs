//! The crate's error type. Scanning itself never fails (a bad stream is a
//! [`crate::Report`] with verdict `malformed`); only configuring can.

/// An error configuring a scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A name given to [`crate::Policy::trust`] is not `module.qualname`.
    #[error("cannot trust {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ScanError {
    /// A stable code for the error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::BadName { .. } => "scan.bad_name",
        }
    }
}
