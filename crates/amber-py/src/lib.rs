//! `amber._amber`: the Python binding of amber's Rust core.
//!
//! This crate converts arguments, releases the GIL around work in the core
//! crates and maps their errors to the Python exception tree. It holds no
//! format logic: anything that grows beyond that belongs in a core crate.

#![deny(missing_docs)]

mod buffer;
mod compare;
mod errors;
mod gate;
mod legacy;
mod reader;
mod scan;
mod store;
mod threads;
mod writer;

use pyo3::prelude::*;

/// The native module. Python code reaches it through the `amber` package.
#[pymodule]
fn _amber(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AmberError", py.get_type::<errors::AmberError>())?;
    m.add("FormatError", py.get_type::<errors::FormatError>())?;
    m.add("ChecksumError", py.get_type::<errors::ChecksumError>())?;
    m.add(
        "ContentCheckError",
        py.get_type::<reader::ContentCheckError>(),
    )?;
    m.add(
        "UnsupportedError",
        py.get_type::<errors::UnsupportedError>(),
    )?;
    m.add(
        "LimitExceededError",
        py.get_type::<errors::LimitExceededError>(),
    )?;
    m.add("FORMAT_VERSION", amber_format::FORMAT_VERSION)?;
    m.add("ALIGNMENT", amber_format::zip::ALIGNMENT)?;
    m.add_class::<buffer::Region>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<reader::PendingCopy>()?;
    m.add_class::<store::StoreCore>()?;
    m.add_function(wrap_pyfunction!(reader::sniff, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan_path, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan_bytes, m)?)?;
    legacy::register(m)?;
    m.add_function(wrap_pyfunction!(compare::diff, m)?)?;
    Ok(())
}
