//! The one error type of the store.
//!
//! Each variant names the model, version, alias or path concerned, and has a
//! stable [`StoreError::code`] (`store.*`) that the Python binding maps to its
//! exception classes and that `amber store --json` prints.

use std::path::PathBuf;

/// Everything that can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A model or alias name outside the allowed form.
    #[error("invalid {what} name `{name}`: {reason}")]
    InvalidName {
        /// `model` or `alias`.
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A version string that is not a semantic version amber accepts.
    #[error("invalid version `{version}`: {reason}")]
    InvalidVersion {
        /// The string given.
        version: String,
        /// Why it is refused.
        reason: String,
    },

    /// No model of that name in the store.
    #[error("no model `{name}` in the store at `{root}`")]
    UnknownModel {
        /// The model name.
        name: String,
        /// The store's root.
        root: PathBuf,
    },

    /// The model exists but not that version.
    #[error("model `{name}` has no version {version} (it has: {available})")]
    UnknownVersion {
        /// The model name.
        name: String,
        /// The version asked for.
        version: String,
        /// The versions it has, comma-separated.
        available: String,
    },

    /// The model has no alias of that name.
    #[error("model `{name}` has no alias `{alias}`")]
    UnknownAlias {
        /// The model name.
        name: String,
        /// The alias asked for.
        alias: String,
    },

    /// Saving a version that already exists (versions are immutable).
    #[error("model `{name}` already has version {version} (`{path}`); versions are immutable")]
    VersionExists {
        /// The model name.
        name: String,
        /// The version.
        version: String,
        /// The existing file.
        path: PathBuf,
    },

    /// Deleting a version an alias points to, without `force`.
    #[error(
        "version {version} of `{name}` is the target of alias {aliases}; move the alias first or force"
    )]
    AliasInUse {
        /// The model name.
        name: String,
        /// The version.
        version: String,
        /// The aliases pointing to it, comma-separated, in backticks.
        aliases: String,
    },

    /// Rolling back an alias that has no previous target.
    #[error("alias `{alias}` of `{name}` has no previous target to roll back to")]
    NoHistory {
        /// The model name.
        name: String,
        /// The alias.
        alias: String,
    },

    /// A store file that cannot be understood (`store.json` not JSON, a wrong schema).
    #[error("store file `{path}` is invalid: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A temporary file handed to `commit` that this store did not prepare.
    #[error("`{path}` is not a pending file of model `{name}`")]
    NotPending {
        /// The model name.
        name: String,
        /// The path given.
        path: PathBuf,
    },

    /// An operating-system error on a path.
    #[error("{op} `{path}`")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// A stable, dotted code for this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "store.invalid_name",
            Self::InvalidVersion { .. } => "store.invalid_version",
            Self::UnknownModel { .. } => "store.unknown_model",
            Self::UnknownVersion { .. } => "store.unknown_version",
            Self::UnknownAlias { .. } => "store.unknown_alias",
            Self::VersionExists { .. } => "store.version_exists",
            Self::AliasInUse { .. } => "store.alias_in_use",
            Self::NoHistory { .. } => "store.no_history",
            Self::Corrupt { .. } => "store.corrupt",
            Self::NotPending { .. } => "store.not_pending",
            Self::Io { .. } => "io",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
