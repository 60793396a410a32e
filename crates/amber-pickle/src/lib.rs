//! A sans-IO parser for Python pickles (protocols 0–5) that never executes
//! anything.
//!
//! It reads a byte slice (a buffer or an mmap), simulates CPython's
//! unpickler exactly — stack, marks, memo, frames — and, where the
//! unpickler would import or call, records a node instead. The result is a
//! [`Graph`] of values addressed by [`NodeId`], each with the byte offset
//! and opcode that created it, plus the globals used and counters. Binary
//! scalars are leaves: their id is their offset and they are decoded from
//! the input when looked at, so a million-string vocabulary costs no
//! stored nodes. A safety analyser decides on that graph; nothing here
//! imports, calls or expands references.
//!
//! It is built for hostile input: [`Limits`] bound opcodes, nodes, stack,
//! nesting, memo and lengths, checked before any allocation; every length is
//! also bounded by the bytes left; nothing recurses; malformed input is an
//! error, never a panic. Where CPython's two unpicklers disagree (frames,
//! text number syntax, bytes after `STOP`), the strict reading is enforced.
//!
//! ```
//! use amber_pickle::{NodeKind, parse};
//!
//! // pickle.dumps(("a", 1), protocol=4)
//! let data = b"\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94K\x01\x86\x94.";
//! let pickle = parse(data)?;
//! let root = pickle.graph().get(pickle.root()).and_then(|n| n.as_tuple()).map(<[_]>::len);
//! assert_eq!(root, Some(2));
//! assert_eq!(pickle.end(), data.len() as u64);
//! # Ok::<(), amber_pickle::PickleError>(())
//! ```
//!
//! - [`parse`], [`parse_prefix`] and [`Parser`] parse; [`Pickle`] is the result.
//! - [`Hook`] lets a caller act after each `BUILD` (skip raw data, parse a
//!   nested pickle); [`joblib::JoblibHook`] reads joblib files with it.
//! - [`disassemble`] and [`render_tree`] make listings and tree views.
//! - [`canonicalize`] applies CPython's Python 2 name mapping.

#![deny(missing_docs)]

mod compat;
pub mod disasm;
pub mod error;
pub mod graph;
pub mod joblib;
pub mod limits;
mod machine;
pub mod opcodes;
pub mod parser;
pub mod reader;
pub mod text;
pub mod tree;

pub use compat::canonicalize;
pub use disasm::{Disassembly, Line, disassemble, disassemble_with};
pub use error::{LimitKind, PickleError, Result};
pub use graph::{
    Children, Event, EventIndex, EventKind, Global, Graph, Node, NodeId, NodeKind, NodeSet,
};
pub use limits::Limits;
pub use opcodes::{ArgKind, Opcode};
pub use parser::{
    BuildContext, GlobalUse, HIGHEST_PROTOCOL, Hook, HookAction, Parser, Pickle, Stats, parse,
    parse_prefix,
};
pub use reader::{Arg, Instruction, NamePair, Reader};
pub use tree::{TreeOptions, render_tree};
