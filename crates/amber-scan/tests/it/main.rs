//! Integration tests of amber-scan: real scikit-learn pickles must scan
//! `safe`; hostile pickles built here from the attack catalogue must be
//! refused with the expected finding code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod benign;
mod build;
mod hostile;
