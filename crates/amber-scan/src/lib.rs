//! Safety analysis of parsed pickles.
//!
//! Works on the value graph [`amber_pickle`] builds and never imports or
//! calls anything. [`ndarray`] decodes the NumPy arrays a graph describes;
//! [`content`] validates the state of compiled scikit-learn and SciPy types
//! whose native code trusts its arrays.

#![deny(missing_docs)]

pub mod content;
pub mod ndarray;

pub use content::{Checker, Ctx, Issue, check, check_indexed, validated_classes};
pub use ndarray::{ArrayBytes, ArrayError, NoArrays};
