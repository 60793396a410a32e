//! The amber container: a strict zip64 archive holding a JSON manifest, one
//! pickle stream and one 64-byte-aligned `.npy` entry per large array.
//!
//! `docs/FORMAT.md` is the normative description; this crate is its reference
//! implementation. It is sans-Python: the pickle stream is opaque bytes here
//! (the Python side writes it with CPython's pickler and the `amber-pickle`
//! crate analyses it), and arrays are byte ranges with a manifest record.
//!
//! - [`ContainerWriter`] writes an archive into any seekable sink, usually a
//!   [`Sink`] that replaces its target atomically.
//! - [`Container`] validates an archive held in memory or in a [`Mapping`] and
//!   gives checked access to its parts.

#![deny(missing_docs)]

mod bitshuffle;
pub mod codec;
pub mod diff;
pub mod error;
pub mod file;
pub mod manifest;
mod manifest_fast;
pub mod npy;
pub mod read;
pub mod sniff;
pub mod write;
pub mod zip;

pub use error::{FormatError, Result};
pub use file::{
    Committed, MapMode, Mapping, Output, Pieces, ReadOnce, Sink, map_file, open_file, open_pieces,
    open_read_once, read_file,
};
pub use manifest::{ArrayInfo, EntryInfo, FORMAT_VERSION, Manifest, Order};
pub use read::{ArrayLocation, Container, Piece, Source};
pub use write::ContainerWriter;
