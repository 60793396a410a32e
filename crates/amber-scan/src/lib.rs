//! Decides whether a pickle stream is safe to load, without importing or
//! executing anything.
//!
//! [`scan`] parses the stream with `amber-pickle` (exact CPython semantics,
//! bounded by [`Limits`]) and applies a [`Policy`]: an allowlist of exact
//! canonical names, each with a [`Role`] — only referenced, called with a
//! checked argument shape, or instantiated and given a checked state. The
//! [`Report`] says `safe`, `unsafe` or `malformed`, lists every
//! [`Finding`] with a stable code and byte offset, and every global with its
//! count; [`Report::allowed_globals`] is what the loader's `find_class` may
//! return afterwards. [`ndarray`] decodes the NumPy arrays a graph describes
//! and [`content`] validates the state of compiled scikit-learn and SciPy
//! types whose native code trusts its arrays (a crafted tree must be refused,
//! not crash `predict`).
//!
//! ```
//! use amber_scan::{NoArrays, Policy, StreamKind, Verdict, scan};
//! use amber_pickle::Limits;
//!
//! // pickle.dumps(os.system, protocol=4) with a REDUCE: the classic payload.
//! let evil = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04echo\x85R.";
//! let report = scan(evil, StreamKind::Pickle, &NoArrays, &Policy::default_policy(), &Limits::default());
//! assert_eq!(report.verdict, Verdict::Unsafe);
//! assert_eq!(report.findings[0].code, "global.not_allowed");
//!
//! let data = b"\x80\x04]\x94(K\x01K\x02e.";
//! let report = scan(data, StreamKind::Pickle, &NoArrays, &Policy::default_policy(), &Limits::default());
//! assert!(report.is_safe());
//! ```

#![deny(missing_docs)]

mod analyse;
pub mod content;
pub mod error;
pub mod ndarray;
pub mod policy;
pub mod report;
mod scan;

pub use amber_pickle::Limits;
pub use content::{
    Checker, Ctx, Deferred, Issue, check, check_indexed, is_content_code, validated_classes,
};
pub use error::ScanError;
pub use ndarray::{ArrayBytes, ArrayError, NoArrays};
pub use policy::{ArgCheck, Entry, Policy, Role, StateCheck};
pub use report::{Finding, GlobalCount, Report, Severity, Verdict};
pub use scan::{StreamKind, refused, scan, scan_parsed};
