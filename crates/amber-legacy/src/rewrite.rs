//! The stream CPython's C unpickler reads instead of a joblib stream.
//!
//! The C unpickler cannot skip the raw bytes joblib puts after an array
//! wrapper's `BUILD`. So the stream is copied with every `FRAME` opcode
//! dropped (frames only batch reads; without them the opcodes mean the same)
//! and each array's bytes (padding, raw data or nested pickle) replaced by
//! `BININT k`, `TUPLE2`, `BINPERSID`: the unpickler then calls
//! `persistent_load((wrapper, k))` with the wrapper still on its stack, and
//! the result takes the wrapper's place, as joblib's own `load_build` does.

use amber_pickle::{Limits, Opcode, PickleError, Reader};

use crate::error::Result;

/// Rewrites `data` (one pickle ending at `end`); `spans` are the regions
/// `(start, end)` to replace, in stream order, each starting right after a
/// `BUILD`.
pub(crate) fn rewrite(
    data: &[u8],
    end: u64,
    spans: &[(u64, u64)],
    limits: Limits,
) -> Result<Vec<u8>> {
    let end = to_usize(end)?;
    let removed: u64 = spans.iter().map(|&(a, b)| b.saturating_sub(a)).sum();
    let capacity = to_u64(end)
        .saturating_sub(removed)
        .saturating_add(7 * to_u64(spans.len()));
    let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(end));
    let mut reader = Reader::new(data, 0, limits)?;
    let mut copied = 0usize;
    let mut next = spans.iter().enumerate().peekable();
    loop {
        let ins = reader.next_instruction()?;
        if ins.opcode == Opcode::FRAME {
            out.extend_from_slice(piece(data, copied, to_usize(ins.offset)?)?);
            copied = to_usize(ins.end)?;
        }
        if ins.opcode == Opcode::STOP {
            out.extend_from_slice(piece(data, copied, end)?);
            break;
        }
        if let Some(&(k, &(start, stop))) = next.peek()
            && ins.end == start
        {
            next.next();
            out.extend_from_slice(piece(data, copied, to_usize(start)?)?);
            let k = i32::try_from(k).map_err(|_| internal(start, "too many arrays"))?;
            out.push(Opcode::BININT.byte());
            out.extend_from_slice(&k.to_le_bytes());
            out.push(Opcode::TUPLE2.byte());
            out.push(Opcode::BINPERSID.byte());
            copied = to_usize(stop)?;
            reader = Reader::new(data, copied, limits)?;
        }
    }
    if let Some((_, &(start, _))) = next.next() {
        return Err(internal(start, "array region not reached while rewriting").into());
    }
    Ok(out)
}

fn piece(data: &[u8], from: usize, to: usize) -> Result<&[u8]> {
    data.get(from..to)
        .ok_or_else(|| internal(to_u64(from), "rewrite range out of bounds").into())
}

fn internal(offset: u64, what: &'static str) -> PickleError {
    PickleError::Internal { offset, what }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| internal(v, "offset does not fit in usize").into())
}

fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
