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
///
/// The stream was parsed whole before, so its frames are known to be sound:
/// a frame's body is copied in one piece (a protocol 4+ stream is almost all
/// frames, a joblib one a frame per array), and only opcodes outside frames
/// are read one by one.
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
    let mut next = spans.iter().enumerate().peekable();
    // The next opcode (outside any frame), and a reader there if opcodes
    // outside frames are being read.
    let mut pos = 0usize;
    let mut reader: Option<Reader<'_>> = None;
    loop {
        if let Some(&(k, &(start, stop))) = next.peek()
            && to_u64(pos) == start
        {
            next.next();
            persistent_id(&mut out, k, start)?;
            pos = to_usize(stop)?;
            reader = None;
            continue;
        }
        if data.get(pos) == Some(&Opcode::FRAME.byte()) {
            let body = pos.saturating_add(9);
            let len = data
                .get(pos.saturating_add(1)..body)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| internal(to_u64(pos), "truncated frame while rewriting"))?;
            let body_end = to_usize(len)
                .ok()
                .and_then(|n| body.checked_add(n))
                .filter(|&e| e <= data.len())
                .ok_or_else(|| internal(to_u64(pos), "frame overruns while rewriting"))?;
            // Only regions without data (companion arrays) start inside a frame.
            let mut from = body;
            while let Some(&(k, &(start, stop))) = next.peek()
                && start < to_u64(body_end)
            {
                if stop != start {
                    return Err(internal(start, "array region inside a frame").into());
                }
                next.next();
                out.extend_from_slice(piece(data, from, to_usize(start)?)?);
                persistent_id(&mut out, k, start)?;
                from = to_usize(start)?;
            }
            out.extend_from_slice(piece(data, from, body_end.min(end))?);
            pos = body_end;
            reader = None;
            if body_end >= end {
                break;
            }
            continue;
        }
        let r = match reader.as_mut() {
            Some(r) => r,
            None => reader.insert(Reader::new(data, pos, limits)?),
        };
        let ins = r.next_instruction()?;
        let ins_end = to_usize(ins.end)?;
        out.extend_from_slice(piece(data, pos, ins_end)?);
        pos = ins_end;
        if ins.opcode == Opcode::STOP {
            break;
        }
    }
    if let Some((_, &(start, _))) = next.next() {
        return Err(internal(start, "array region not reached while rewriting").into());
    }
    Ok(out)
}

/// `BININT k`, `TUPLE2`, `BINPERSID`: `persistent_load((wrapper, k))`.
fn persistent_id(out: &mut Vec<u8>, k: usize, at: u64) -> Result<()> {
    let k = i32::try_from(k).map_err(|_| internal(at, "too many arrays"))?;
    out.push(Opcode::BININT.byte());
    out.extend_from_slice(&k.to_le_bytes());
    out.push(Opcode::TUPLE2.byte());
    out.push(Opcode::BINPERSID.byte());
    Ok(())
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

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = vec![Opcode::FRAME.byte()];
        v.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn run(data: &[u8], spans: &[(u64, u64)]) -> Result<Vec<u8>> {
        rewrite(data, data.len() as u64, spans, Limits::default())
    }

    /// The parser's code of a rewrite's error.
    fn code(result: Result<Vec<u8>>) -> &'static str {
        match result {
            Err(crate::LegacyError::Pickle { source }) => source.code(),
            _ => "not a pickle error",
        }
    }

    const PERSID_0: &[u8] = b"J\x00\x00\x00\x00\x86Q";

    #[test]
    fn frames_are_dropped_and_regions_replaced() {
        let mut data = b"\x80\x04".to_vec();
        data.extend(frame(b"K\x01"));
        let raw = data.len() as u64;
        data.extend_from_slice(b"RAW");
        data.extend(frame(b"K\x02\x86."));
        assert_eq!(code(run(&data, &[])), "pickle.bad_opcode");
        let want = [b"\x80\x04K\x01".as_slice(), PERSID_0, b"K\x02\x86."].concat();
        assert_eq!(run(&data, &[(raw, raw + 3)]).unwrap(), want);

        // Without frames (protocol 2), opcodes are copied one by one.
        let data = b"\x80\x02K\x01RAWK\x02\x86.";
        let want = [b"\x80\x02K\x01".as_slice(), PERSID_0, b"K\x02\x86."].concat();
        assert_eq!(run(data, &[(4, 7)]).unwrap(), want);
    }

    #[test]
    fn regions_inside_frames() {
        let mut data = b"\x80\x04".to_vec();
        data.extend(frame(b"K\x01K\x02\x86."));
        // A companion array (no bytes) right after an opcode inside the frame.
        let at = 2 + 9 + 2;
        let want = [b"\x80\x04K\x01".as_slice(), PERSID_0, b"K\x02\x86."].concat();
        assert_eq!(run(&data, &[(at, at)]).unwrap(), want);
        // Bytes inside a frame are never an array's (the parse refuses them).
        assert_eq!(code(run(&data, &[(at, at + 2)])), "pickle.internal");
        // A region the copy never reaches.
        assert_eq!(code(run(&data, &[(100, 100)])), "pickle.internal");
        // Bytes after `STOP` inside the last frame are not copied.
        let mut data = b"\x80\x04".to_vec();
        data.extend(frame(b"K\x01.JUNK"));
        assert_eq!(
            rewrite(&data, 2 + 9 + 3, &[], Limits::default()).unwrap(),
            b"\x80\x04K\x01."
        );
    }
}
