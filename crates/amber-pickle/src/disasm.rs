//! Human-readable opcode listings, in the spirit of `pickletools.dis`.
//!
//! This module owns [`Disassembly`] and [`disassemble`]. A listing shows
//! each opcode's offset, name and decoded argument, indented by the number
//! of open marks. [`disassemble`] needs no stack simulation, so it lists a
//! stream up to the first error (handy for hostile files); the parser can
//! record the same listing with hook-declared raw data and nested pickles
//! interleaved ([`crate::Parser::record_listing`]).

use std::fmt;

use crate::error::PickleError;
use crate::limits::Limits;
use crate::opcodes::Opcode;
use crate::reader::{Instruction, Reader};

/// One line of a listing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Line<'a> {
    /// An opcode.
    Op {
        /// The instruction.
        instruction: Instruction<'a>,
        /// Open marks (indentation).
        marks: usize,
        /// Depth of nested pickles (0 at top level).
        nested: usize,
    },
    /// Raw bytes a hook declared after a `BUILD`.
    Raw {
        /// Offset of the first byte (padding included).
        offset: u64,
        /// Padding bytes before the data.
        padding: u64,
        /// Data bytes.
        len: u64,
        /// Depth of nested pickles.
        nested: usize,
    },
}

/// A listing, possibly cut short by an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disassembly<'a> {
    /// The lines, in stream order.
    pub lines: Vec<Line<'a>>,
    /// Offset just after `STOP`, if it was reached.
    pub end: Option<u64>,
    /// The error that stopped the listing, if any.
    pub error: Option<PickleError>,
}

/// List the opcodes of the pickle starting at `start`, up to `STOP` or the
/// first error. Limits apply to lengths and the opcode count; raw data of
/// joblib files is not known here (use the parser with a hook for that).
#[must_use]
pub fn disassemble(data: &[u8], start: usize) -> Disassembly<'_> {
    disassemble_with(data, start, Limits::default())
}

/// [`disassemble`] with explicit limits.
#[must_use]
pub fn disassemble_with(data: &[u8], start: usize, limits: Limits) -> Disassembly<'_> {
    let mut out = Disassembly::default();
    let mut reader = match Reader::new(data, start, limits) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let mut marks: usize = 0;
    let mut count: u64 = 0;
    loop {
        let ins = match reader.next_instruction() {
            Ok(ins) => ins,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        count = count.saturating_add(1);
        if let Err(e) = limits.check(crate::error::LimitKind::Opcodes, count, ins.offset) {
            out.error = Some(e);
            return out;
        }
        let op = ins.opcode;
        let offset = ins.offset;
        if op.pops_mark() {
            marks = marks.saturating_sub(1);
        }
        out.lines.push(Line::Op {
            instruction: ins,
            marks,
            nested: 0,
        });
        match op {
            Opcode::MARK => marks = marks.saturating_add(1),
            Opcode::STOP => {
                if let Err(e) = reader.finish_at_stop(offset) {
                    out.error = Some(e);
                } else {
                    out.end = Some(u64::try_from(reader.position()).unwrap_or(u64::MAX));
                }
                return out;
            }
            _ => {}
        }
    }
}

impl fmt::Display for Disassembly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            match line {
                Line::Op {
                    instruction,
                    marks,
                    nested,
                } => {
                    write!(f, "{:>8x}: ", instruction.offset)?;
                    for _ in 0..*nested {
                        f.write_str("| ")?;
                    }
                    for _ in 0..*marks {
                        f.write_str("  ")?;
                    }
                    write!(f, "{}", instruction.opcode)?;
                    let arg = instruction.arg.to_string();
                    if !arg.is_empty() {
                        write!(f, " {arg}")?;
                    }
                    writeln!(f)?;
                }
                Line::Raw {
                    offset,
                    padding,
                    len,
                    nested,
                } => {
                    write!(f, "{offset:>8x}: ")?;
                    for _ in 0..*nested {
                        f.write_str("| ")?;
                    }
                    writeln!(f, "<raw data: {padding} padding bytes, {len} data bytes>")?;
                }
            }
        }
        if let Some(end) = self.end {
            writeln!(f, "{end:>8x}: <end>")?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_until_stop() {
        let d = disassemble(b"\x80\x04(K\x01\x8c\x02abt.", 0);
        assert!(d.error.is_none());
        assert_eq!(d.end, Some(11));
        let text = d.to_string();
        assert_eq!(
            text,
            "       0: PROTO 4\n       2: MARK\n       3:   BININT1 1\n       5:   SHORT_BINUNICODE 'ab'\n       9: TUPLE\n       a: STOP\n       b: <end>\n"
        );
    }

    #[test]
    fn keeps_lines_before_an_error() {
        let d = disassemble(b"NN\xff", 0);
        assert_eq!(d.lines.len(), 2);
        assert_eq!(
            d.error.as_ref().map(PickleError::code),
            Some("pickle.bad_opcode")
        );
        assert!(
            d.to_string()
                .ends_with("error: unknown opcode byte 0xff at byte 0x2\n")
        );
    }
}
