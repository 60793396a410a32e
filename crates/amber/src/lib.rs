//! The facade over amber's core crates: open any model file by its content,
//! and analyse it with the safety policy before anything is unpickled.
//!
//! Both front ends need the same answers — the `amber` CLI for `scan`, the
//! Python binding for `load` and `scan` — so the joining of the container
//! reader (`amber-format`), the reader of files amber did not write
//! (`amber-legacy`) and the analyser (`amber-scan`) lives here, once:
//!
//! - [`Opened`] is an amber container or a legacy pickle/joblib file, told
//!   apart by content ([`open_path`], [`open_bytes`]);
//! - [`ContainerArrays`] and [`LegacyArrays`] give the content validators
//!   the bytes of the arrays a stream refers to (decompressing an amber
//!   entry only if a validator asks for it);
//! - [`scan_container`], [`scan_legacy`] and [`Opened::scan`] produce the
//!   [`Report`]; for legacy files every nested object-array pickle held
//!   outside the stream (companion `.npy` files) is analysed too and its
//!   findings merged.

#![deny(missing_docs)]

mod arrays;
mod error;
mod fill;
mod scan;

pub use amber_scan::{Finding, Limits, Policy, Report, Severity, Verdict};
pub use arrays::{Checked, ContainerArrays, DeferredChecks, LegacyArrays, StreamChecks};
pub use error::{Error, Result};
pub use fill::{Fill, FillFailure};
pub use scan::{
    Backing, Opened, StreamView, open_bytes, open_legacy_bytes_scanned, open_legacy_path_scanned,
    open_path, policy, scan_bytes, scan_container, scan_container_arrays, scan_legacy, scan_path,
    shared_policy,
};
