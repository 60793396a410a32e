//! The tokenizer: bytes to [`Instruction`]s, with exact frame rules.
//!
//! This module owns reading one opcode and its argument at a time from a
//! byte slice, decoding the argument (via [`crate::text`] for protocol 0)
//! and enforcing the `FRAME` grammar: a frame must fit in the input, no
//! opcode may cross a frame's end, no `FRAME` may start inside an
//! unfinished frame, and raw data read by a hook (joblib arrays) may only
//! sit *between* frames. It has no stack and no memo; the parser and the
//! disassembler both sit on top of it.
//!
//! Every length is checked against the bytes that remain (and against
//! [`Limits`]) before anything is sliced or decoded, so it never allocates
//! more than a small multiple of the input it has actually seen.
//!
//! Binary arguments that lie wholly inside the input (and the open frame)
//! and within the limits are decoded on a short fast path; anything else
//! goes to the general decoder, which alone reports errors.

use std::borrow::Cow;
use std::fmt;

use crate::error::{LimitKind, PickleError, Result};
use crate::limits::Limits;
use crate::opcodes::{ArgKind, Opcode};
use crate::text::{self, IntValue};

/// The decoded inline argument of an opcode.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Arg<'a> {
    /// The opcode has no argument.
    None,
    /// Unsigned argument: `PROTO`, `FRAME` length, memo indices, `BININT1`, `BININT2`.
    Uint(u64),
    /// Signed integer: `BININT`, `EXT*` codes, `INT`/`LONG` values that fit.
    Int(i64),
    /// `INT` spelled `00`/`01`.
    Bool(bool),
    /// An integer that does not fit in `i64`: minimal little-endian two's complement.
    BigInt(Cow<'a, [u8]>),
    /// `FLOAT`, `BINFLOAT`.
    Float(f64),
    /// Byte payload: `bytes`, `bytearray`, Python 2 `str`.
    Bytes(Cow<'a, [u8]>),
    /// Text payload: `str`, persistent id of `PERSID`.
    Str(Cow<'a, str>),
    /// `GLOBAL` and `INST`: module and name as written.
    Global(Box<NamePair<'a>>),
}

/// The argument of `GLOBAL` and `INST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePair<'a> {
    /// Module.
    pub module: Cow<'a, str>,
    /// Qualified name.
    pub name: Cow<'a, str>,
}

/// One opcode with its decoded argument and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction<'a> {
    /// Byte offset of the opcode.
    pub offset: u64,
    /// Byte offset just after the argument.
    pub end: u64,
    /// The opcode.
    pub opcode: Opcode,
    /// Its argument.
    pub arg: Arg<'a>,
}

/// Reads instructions from a byte slice, enforcing frame rules and limits.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    frame_end: Option<usize>,
    limits: Limits,
    /// Graph bytes already used by the caller: decoded (owned) text is
    /// checked against [`Limits::max_graph_bytes`] before it is allocated.
    graph_used: u64,
}

fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Whether `raw` is UTF-8. Most strings of a model are short and ASCII:
/// those up to 16 bytes are tested with two overlapping word loads rather
/// than byte by byte, the rest by the standard library.
#[inline]
pub(crate) fn is_utf8(raw: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let ascii = match (raw.first_chunk::<8>(), raw.last_chunk::<8>()) {
        (Some(&head), Some(&tail)) if raw.len() <= 16 => {
            (u64::from_ne_bytes(head) | u64::from_ne_bytes(tail)) & HIGH == 0
        }
        _ => match (raw.first_chunk::<4>(), raw.last_chunk::<4>()) {
            (Some(&head), Some(&tail)) if raw.len() < 8 => {
                (u32::from_ne_bytes(head) | u32::from_ne_bytes(tail)) & 0x8080_8080 == 0
            }
            _ => raw.is_ascii(),
        },
    };
    ascii || std::str::from_utf8(raw).is_ok()
}

impl<'a> Reader<'a> {
    /// A reader positioned at `start`.
    ///
    /// # Errors
    /// [`PickleError::BadStart`] if `start` is past the end of `data`.
    pub fn new(data: &'a [u8], start: usize, limits: Limits) -> Result<Self> {
        if start > data.len() {
            return Err(PickleError::BadStart {
                offset: to_u64(start),
                len: to_u64(data.len()),
            });
        }
        Ok(Reader {
            data,
            pos: start,
            frame_end: None,
            limits,
            graph_used: 0,
        })
    }

    /// The offset of the next byte to read.
    #[must_use]
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The end of the current frame, if a frame is open and not finished.
    #[must_use]
    pub fn frame_end(&self) -> Option<usize> {
        self.frame_end.filter(|&end| end != self.pos)
    }

    /// Tell the reader how many graph bytes are in use, so that decoding
    /// protocol-0 text never allocates past [`Limits::max_graph_bytes`].
    #[inline]
    pub fn set_graph_used(&mut self, used: u64) {
        self.graph_used = used;
    }

    /// The input.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    #[inline]
    fn close_finished_frame(&mut self) {
        if self.frame_end == Some(self.pos) {
            self.frame_end = None;
        }
    }

    /// Read the next instruction.
    ///
    /// # Errors
    /// Truncation, unknown opcodes, malformed arguments, frame violations
    /// and length limits.
    #[inline]
    pub fn next_instruction(&mut self) -> Result<Instruction<'a>> {
        self.close_finished_frame();
        let start = self.pos;
        let offset = to_u64(start);
        let Some(&byte) = self.data.get(start) else {
            return Err(PickleError::Truncated {
                what: "opcode",
                offset,
                opcode: None,
            });
        };
        let opcode = Opcode::from_byte(byte).ok_or(PickleError::BadOpcode { offset, byte })?;
        let at = start.saturating_add(1);
        if let Some((arg, next)) = self.fast_arg(opcode, at) {
            self.pos = next;
            return Ok(Instruction {
                offset,
                end: to_u64(next),
                opcode,
                arg,
            });
        }
        if opcode == Opcode::FRAME
            && let Some(frame_end) = self.frame_end
        {
            return Err(PickleError::FrameNested {
                offset,
                frame_end: to_u64(frame_end),
            });
        }
        let mut cur = Cursor {
            reader: self,
            at: start + 1,
            offset,
            opcode,
        };
        let arg = cur.read_arg()?;
        let next = cur.at;
        self.pos = next;
        if opcode == Opcode::FRAME {
            let Arg::Uint(length) = arg else {
                return Err(PickleError::Internal {
                    offset,
                    what: "FRAME argument is not an unsigned integer",
                });
            };
            let available = to_u64(self.data.len().saturating_sub(next));
            if length > available {
                return Err(PickleError::FrameOverrun {
                    offset,
                    length,
                    available,
                });
            }
            // length <= available, so this fits in usize.
            let len = usize::try_from(length).map_err(|_| PickleError::Internal {
                offset,
                what: "frame length does not fit in usize",
            })?;
            self.frame_end = Some(next.saturating_add(len));
        }
        Ok(Instruction {
            offset,
            end: to_u64(next),
            opcode,
            arg,
        })
    }

    /// For the machine's fast path: the bytes from the position to the end
    /// of the open frame (or of the input), after closing a finished frame.
    #[inline]
    pub(crate) fn window(&mut self) -> &'a [u8] {
        self.close_finished_frame();
        let limit = self.frame_end.unwrap_or(self.data.len());
        self.data.get(self.pos..limit).unwrap_or_default()
    }

    /// For the machine's fast path: a `FRAME` at the position, taken
    /// (its frame opened, the position after it) when no frame is open and
    /// the frame fits the input, as [`Reader::next_instruction`] would
    /// take it; `false`, with nothing changed, sends it to that path.
    #[inline]
    pub(crate) fn fast_frame(&mut self) -> bool {
        self.close_finished_frame();
        let next = self.pos.saturating_add(9);
        let Some(arg) = self.data.get(self.pos.saturating_add(1)..next) else {
            return false;
        };
        let Ok(arg) = <[u8; 8]>::try_from(arg) else {
            return false;
        };
        let length = u64::from_le_bytes(arg);
        let available = to_u64(self.data.len().saturating_sub(next));
        let Ok(len) = usize::try_from(length) else {
            return false;
        };
        if self.frame_end.is_some()
            || self.data.get(self.pos) != Some(&Opcode::FRAME.byte())
            || length > available
        {
            return false;
        }
        self.pos = next;
        self.frame_end = Some(next.saturating_add(len));
        true
    }

    /// For the machine's fast path: move to `pos`, the end of an opcode
    /// that [`Reader::window`] held whole.
    #[inline]
    pub(crate) fn advance_to(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// The argument of a common binary opcode when it lies wholly inside
    /// the input (and the open frame) and is within the limits, with the
    /// position after it. `None` sends everything else, every error
    /// included, to the general decoder ([`Cursor::read_arg`]), which
    /// re-reads from the same position.
    #[inline]
    pub(crate) fn fast_arg(&self, opcode: Opcode, at: usize) -> Option<(Arg<'a>, usize)> {
        let limit = self.frame_end.unwrap_or(self.data.len());
        let window = self.data.get(at..limit)?;
        let fixed = |n: usize| window.get(..n).map(|b| (b, at.saturating_add(n)));
        match opcode.arg() {
            ArgKind::None => Some((Arg::None, at)),
            ArgKind::U8 => {
                let &b = window.first()?;
                Some((Arg::Uint(u64::from(b)), at.saturating_add(1)))
            }
            ArgKind::U16 => {
                let (b, next) = fixed(2)?;
                let v = u16::from_le_bytes(b.try_into().ok()?);
                Some((Arg::Uint(u64::from(v)), next))
            }
            ArgKind::U32 => {
                let (b, next) = fixed(4)?;
                let v = u32::from_le_bytes(b.try_into().ok()?);
                Some((Arg::Uint(u64::from(v)), next))
            }
            ArgKind::I32 => {
                let (b, next) = fixed(4)?;
                let v = i32::from_le_bytes(b.try_into().ok()?);
                Some((Arg::Int(i64::from(v)), next))
            }
            ArgKind::F64 => {
                let (b, next) = fixed(8)?;
                let v = f64::from_be_bytes(b.try_into().ok()?);
                Some((Arg::Float(v), next))
            }
            ArgKind::Bytes1 => {
                let &len = window.first()?;
                self.fast_payload(opcode, window, 1, usize::from(len), at)
            }
            ArgKind::Bytes4 => {
                let (b, _) = fixed(4)?;
                let len = u32::from_le_bytes(b.try_into().ok()?);
                self.fast_payload(opcode, window, 4, usize::try_from(len).ok()?, at)
            }
            ArgKind::Bytes8 => {
                let (b, _) = fixed(8)?;
                let len = u64::from_le_bytes(b.try_into().ok()?);
                self.fast_payload(opcode, window, 8, usize::try_from(len).ok()?, at)
            }
            _ => None,
        }
    }

    /// For the machine's fast path: the length of the argument of a leaf
    /// opcode (see `graph::is_leaf_opcode`) in `arg`, the bytes after the
    /// opcode up to the end of the frame or input, when [`Reader::fast_arg`]
    /// would decode it: the same bounds, limits and UTF-8 check, without
    /// building the value (the graph decodes a leaf again when asked).
    #[inline(always)]
    pub(crate) fn fast_leaf_len(&self, opcode: Opcode, arg: &[u8]) -> Option<usize> {
        let (head, max): (usize, usize) = match opcode.arg() {
            ArgKind::None => return Some(0),
            ArgKind::U8 => return (!arg.is_empty()).then_some(1),
            ArgKind::U16 => return (arg.len() >= 2).then_some(2),
            ArgKind::I32 => return (arg.len() >= 4).then_some(4),
            ArgKind::F64 => return (arg.len() >= 8).then_some(8),
            ArgKind::Bytes1 => (1, usize::from(*arg.first()?)),
            ArgKind::Bytes4 => (
                4,
                usize::try_from(u32::from_le_bytes(arg.get(..4)?.try_into().ok()?)).ok()?,
            ),
            ArgKind::Bytes8 => (
                8,
                usize::try_from(u64::from_le_bytes(arg.get(..8)?.try_into().ok()?)).ok()?,
            ),
            _ => return None,
        };
        let end = head.checked_add(max)?;
        let raw = arg.get(head..end)?;
        let n = to_u64(max);
        if matches!(
            opcode,
            Opcode::SHORT_BINUNICODE | Opcode::BINUNICODE | Opcode::BINUNICODE8
        ) {
            if n > self.limits.max_str_len || !is_utf8(raw) {
                return None;
            }
        } else if n > self.limits.max_bytes_len {
            return None;
        }
        Some(end)
    }

    /// A length-prefixed payload for [`Reader::fast_arg`]: `head` length
    /// bytes, then `len` bytes, all inside `window` (which starts at `at`).
    #[inline]
    fn fast_payload(
        &self,
        opcode: Opcode,
        window: &'a [u8],
        head: usize,
        len: usize,
        at: usize,
    ) -> Option<(Arg<'a>, usize)> {
        let end = head.checked_add(len)?;
        let raw = window.get(head..end)?;
        let next = at.checked_add(end)?;
        let n = to_u64(len);
        if matches!(
            opcode,
            Opcode::SHORT_BINUNICODE | Opcode::BINUNICODE | Opcode::BINUNICODE8
        ) {
            if n > self.limits.max_str_len {
                return None;
            }
            let s = std::str::from_utf8(raw).ok()?;
            Some((Arg::Str(Cow::Borrowed(s)), next))
        } else {
            if n > self.limits.max_bytes_len {
                return None;
            }
            Some((Arg::Bytes(Cow::Borrowed(raw)), next))
        }
    }

    /// Check the position after `STOP`: a frame that holds `STOP` must end
    /// right after it (else a file-based unpickler and this reader would
    /// continue at different offsets).
    ///
    /// # Errors
    /// [`PickleError::FrameUnfinished`].
    pub fn finish_at_stop(&mut self, stop_offset: u64) -> Result<()> {
        self.close_finished_frame();
        match self.frame_end {
            Some(frame_end) => Err(PickleError::FrameUnfinished {
                what: "`STOP`",
                offset: stop_offset,
                frame_end: to_u64(frame_end),
            }),
            None => Ok(()),
        }
    }

    /// Ensure no frame is open at the current position (raw data or a nested
    /// pickle is about to be read here).
    ///
    /// # Errors
    /// [`PickleError::FrameUnfinished`].
    pub fn require_outside_frame(&mut self, what: &'static str) -> Result<()> {
        self.close_finished_frame();
        match self.frame_end {
            Some(frame_end) => Err(PickleError::FrameUnfinished {
                what,
                offset: to_u64(self.pos),
                frame_end: to_u64(frame_end),
            }),
            None => Ok(()),
        }
    }

    /// Skip `padding + len` raw bytes that sit between frames; returns the
    /// offset where the `len` data bytes start.
    ///
    /// # Errors
    /// A frame is open, or the input is too short.
    pub fn skip_raw(&mut self, padding: u64, len: u64) -> Result<usize> {
        self.require_outside_frame("raw data")?;
        let offset = to_u64(self.pos);
        let truncated = PickleError::Truncated {
            what: "raw data",
            offset,
            opcode: None,
        };
        let remaining = to_u64(self.data.len().saturating_sub(self.pos));
        let total = padding.checked_add(len).ok_or_else(|| truncated.clone())?;
        if total > remaining {
            return Err(truncated);
        }
        let padding = usize::try_from(padding).map_err(|_| truncated.clone())?;
        let total = usize::try_from(total).map_err(|_| truncated.clone())?;
        let data_start = self
            .pos
            .checked_add(padding)
            .ok_or_else(|| truncated.clone())?;
        self.pos = self.pos.checked_add(total).ok_or(truncated)?;
        Ok(data_start)
    }

    /// Move to `pos` (after a nested pickle that ended there). The caller
    /// guarantees no frame is open.
    pub(crate) fn resume_at(&mut self, pos: usize) {
        self.pos = pos;
        self.frame_end = None;
    }
}

/// Reads the argument of one opcode.
struct Cursor<'r, 'a> {
    reader: &'r Reader<'a>,
    at: usize,
    offset: u64,
    opcode: Opcode,
}

impl<'a> Cursor<'_, 'a> {
    fn truncated(&self, what: &'static str) -> PickleError {
        match self.reader.frame_end {
            Some(frame_end) => PickleError::FrameStraddle {
                offset: self.offset,
                opcode: self.opcode,
                frame_end: to_u64(frame_end),
            },
            None => PickleError::Truncated {
                what,
                offset: self.offset,
                opcode: Some(self.opcode),
            },
        }
    }

    fn limit_end(&self) -> usize {
        self.reader.frame_end.unwrap_or(self.reader.data.len())
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let available = to_u64(self.limit_end().saturating_sub(self.at));
        if n > available {
            return Err(self.truncated(what));
        }
        let n = usize::try_from(n).map_err(|_| self.truncated(what))?;
        let end = self.at.checked_add(n).ok_or_else(|| self.truncated(what))?;
        let data: &'a [u8] = self.reader.data;
        let slice = data.get(self.at..end).ok_or_else(|| self.truncated(what))?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let slice = self.take(to_u64(N), what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn line(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.reader.data;
        let window = data.get(self.at..self.limit_end()).unwrap_or_default();
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return Err(self.truncated(what));
        };
        let line = window.get(..nl).ok_or_else(|| self.truncated(what))?;
        self.at = self.at.saturating_add(nl).saturating_add(1);
        Ok(line)
    }

    fn bad(&self, reason: impl Into<String>) -> PickleError {
        PickleError::BadArgument {
            offset: self.offset,
            opcode: self.opcode,
            reason: reason.into(),
        }
    }

    fn bad_encoding(&self, encoding: &'static str, reason: impl Into<String>) -> PickleError {
        PickleError::BadEncoding {
            offset: self.offset,
            opcode: self.opcode,
            encoding,
            reason: reason.into(),
        }
    }

    fn check_limit(&self, kind: LimitKind, value: u64) -> Result<()> {
        self.reader.limits.check(kind, value, self.offset)
    }

    /// Before allocating `bytes` of decoded text.
    fn check_alloc(&self, bytes: usize) -> Result<()> {
        let total = self.reader.graph_used.saturating_add(to_u64(bytes));
        self.check_limit(LimitKind::GraphBytes, total)
    }

    fn is_text(&self) -> bool {
        matches!(
            self.opcode,
            Opcode::SHORT_BINUNICODE | Opcode::BINUNICODE | Opcode::BINUNICODE8
        )
    }

    /// A length-prefixed payload: text or bytes depending on the opcode.
    fn payload(&mut self, len: u64) -> Result<Arg<'a>> {
        let what = if self.is_text() { "string" } else { "bytes" };
        // Bound by the input first (a truncated file), then by the limits.
        let available = to_u64(self.limit_end().saturating_sub(self.at));
        if len > available {
            return Err(self.truncated(what));
        }
        if self.is_text() {
            self.check_limit(LimitKind::StrLen, len)?;
            let raw = self.take(len, what)?;
            let s = std::str::from_utf8(raw).map_err(|e| {
                let at = e.valid_up_to();
                let surrogate = raw.get(at) == Some(&0xed)
                    && raw.get(at + 1).is_some_and(|b| (0xa0..=0xbf).contains(b));
                if surrogate {
                    self.bad_encoding(
                        "UTF-8",
                        format!("lone surrogate at payload byte {at} is not supported"),
                    )
                } else {
                    self.bad_encoding("UTF-8", format!("invalid byte at payload byte {at}"))
                }
            })?;
            Ok(Arg::Str(Cow::Borrowed(s)))
        } else {
            self.check_limit(LimitKind::BytesLen, len)?;
            Ok(Arg::Bytes(Cow::Borrowed(self.take(len, what)?)))
        }
    }

    fn long_payload(&mut self, len: u64) -> Result<Arg<'a>> {
        let available = to_u64(self.limit_end().saturating_sub(self.at));
        if len > available {
            return Err(self.truncated("integer"));
        }
        self.check_limit(LimitKind::BigIntBytes, len)?;
        let raw = self.take(len, "integer")?;
        Ok(match text::small_from_le(raw) {
            Some(v) => Arg::Int(v),
            None => Arg::BigInt(Cow::Borrowed(text::minimal_le(raw))),
        })
    }

    fn int_value(v: IntValue<'a>) -> Arg<'a> {
        match v {
            IntValue::Bool(b) => Arg::Bool(b),
            IntValue::Small(i) => Arg::Int(i),
            IntValue::Big(b) => Arg::BigInt(b),
        }
    }

    fn name_line(&mut self, ascii: bool) -> Result<Cow<'a, str>> {
        let line = self.line("name")?;
        self.check_limit(LimitKind::StrLen, to_u64(line.len()))?;
        if ascii && !line.is_ascii() {
            return Err(self.bad_encoding("ASCII", "non-ASCII byte in name"));
        }
        let s = std::str::from_utf8(line).map_err(|e| {
            self.bad_encoding("UTF-8", format!("invalid byte at {}", e.valid_up_to()))
        })?;
        Ok(Cow::Borrowed(s))
    }

    fn read_arg(&mut self) -> Result<Arg<'a>> {
        Ok(match self.opcode.arg() {
            ArgKind::None => Arg::None,
            ArgKind::U8 => Arg::Uint(u64::from(self.array::<1>("argument")?[0])),
            ArgKind::U16 => Arg::Uint(u64::from(u16::from_le_bytes(self.array("argument")?))),
            ArgKind::U32 => Arg::Uint(u64::from(u32::from_le_bytes(self.array("argument")?))),
            ArgKind::I32 => Arg::Int(i64::from(i32::from_le_bytes(self.array("argument")?))),
            ArgKind::U64 => Arg::Uint(u64::from_le_bytes(self.array("argument")?)),
            ArgKind::F64 => Arg::Float(f64::from_be_bytes(self.array("float")?)),
            ArgKind::DecimalLine => {
                let line = self.line("integer")?;
                if self.opcode == Opcode::INT {
                    Self::int_value(text::parse_int_line(line).map_err(|r| self.bad(r))?)
                } else {
                    match text::parse_index_line(line).map_err(|r| self.bad(r))? {
                        Some(v) => Arg::Uint(v),
                        None => {
                            return Err(PickleError::Limit {
                                offset: self.offset,
                                limit: LimitKind::MemoIndex,
                                value: u64::MAX,
                                max: self.reader.limits.max_memo_index,
                            });
                        }
                    }
                }
            }
            ArgKind::LongLine => {
                let line = self.line("integer")?;
                let v = text::parse_long_line(line).map_err(|r| self.bad(r))?;
                if let IntValue::Big(b) = &v {
                    self.check_limit(LimitKind::BigIntBytes, to_u64(b.len()))?;
                }
                Self::int_value(v)
            }
            ArgKind::FloatLine => {
                let line = self.line("float")?;
                Arg::Float(text::parse_float_line(line).map_err(|r| self.bad(r))?)
            }
            ArgKind::QuotedLine => {
                let line = self.line("string")?;
                self.check_limit(LimitKind::BytesLen, to_u64(line.len()))?;
                self.check_alloc(line.len())?;
                let bytes = text::decode_quoted_string(line).map_err(|r| self.bad(r))?;
                Arg::Bytes(Cow::Owned(bytes))
            }
            ArgKind::AsciiLine => {
                let line = self.line("string")?;
                self.check_limit(LimitKind::StrLen, to_u64(line.len()))?;
                if !line.is_ascii() {
                    return Err(self.bad_encoding("ASCII", "persistent id is not ASCII"));
                }
                let s = std::str::from_utf8(line)
                    .map_err(|_| self.bad_encoding("ASCII", "persistent id is not ASCII"))?;
                Arg::Str(Cow::Borrowed(s))
            }
            ArgKind::UnicodeLine => {
                let line = self.line("string")?;
                self.check_limit(LimitKind::StrLen, to_u64(line.len()))?;
                if line.is_ascii() && !line.contains(&b'\\') {
                    let s = std::str::from_utf8(line)
                        .map_err(|_| self.bad_encoding("raw-unicode-escape", "invalid text"))?;
                    Arg::Str(Cow::Borrowed(s))
                } else {
                    let wide = line.iter().filter(|&&b| b >= 0x80).count();
                    self.check_alloc(line.len().saturating_add(wide))?;
                    let s = text::decode_raw_unicode_escape(line)
                        .map_err(|r| self.bad_encoding("raw-unicode-escape", r))?;
                    self.check_limit(LimitKind::StrLen, to_u64(s.len()))?;
                    Arg::Str(Cow::Owned(s))
                }
            }
            ArgKind::NamePair => {
                // `_pickle.c` and `pickle.py` decode GLOBAL names as UTF-8
                // and INST names as ASCII.
                let ascii = self.opcode == Opcode::INST;
                let module = self.name_line(ascii)?;
                let name = self.name_line(ascii)?;
                Arg::Global(Box::new(NamePair { module, name }))
            }
            ArgKind::Bytes1 => {
                let len = self.array::<1>("length")?[0];
                self.payload(u64::from(len))?
            }
            ArgKind::Bytes4 => {
                let len = u32::from_le_bytes(self.array("length")?);
                self.payload(u64::from(len))?
            }
            ArgKind::Bytes4Signed => {
                let len = i32::from_le_bytes(self.array("length")?);
                let len =
                    u64::try_from(len).map_err(|_| self.bad(format!("negative length {len}")))?;
                self.payload(len)?
            }
            ArgKind::Bytes8 => {
                let len = u64::from_le_bytes(self.array("length")?);
                self.payload(len)?
            }
            ArgKind::Long1 => {
                let len = self.array::<1>("length")?[0];
                self.long_payload(u64::from(len))?
            }
            ArgKind::Long4 => {
                let len = i32::from_le_bytes(self.array("length")?);
                let len =
                    u64::try_from(len).map_err(|_| self.bad(format!("negative length {len}")))?;
                self.long_payload(len)?
            }
        })
    }
}

impl fmt::Display for Arg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::None => Ok(()),
            Arg::Uint(v) => write!(f, "{v}"),
            Arg::Int(v) => write!(f, "{v}"),
            Arg::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Arg::BigInt(b) => f.write_str(&text::format_le_int(b)),
            Arg::Float(v) => f.write_str(&text::format_float(*v)),
            Arg::Bytes(b) => f.write_str(&text::repr_bytes(b, 64)),
            Arg::Str(s) => f.write_str(&text::repr_str(s, 64)),
            Arg::Global(pair) => write!(f, "{} {}", pair.module, pair.name),
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn read_all(data: &[u8]) -> Result<Vec<Instruction<'_>>> {
        let mut r = Reader::new(data, 0, Limits::default())?;
        let mut out = Vec::new();
        loop {
            let ins = r.next_instruction()?;
            let stop = ins.opcode == Opcode::STOP;
            out.push(ins);
            if stop {
                r.finish_at_stop(out.last().map_or(0, |i| i.offset))?;
                return Ok(out);
            }
        }
    }

    /// The word-wise check agrees with the standard library on every
    /// length up to 40 (both word sizes, their overlaps and the fallback),
    /// with one byte of each kind at every position.
    #[test]
    fn is_utf8_agrees_with_std() {
        for len in 0..40usize {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(is_utf8(&ascii), "{len}");
            for at in 0..len {
                for byte in [0x7f, 0x80, 0xc3, 0xe2, 0xff] {
                    let mut raw = ascii.clone();
                    raw[at] = byte;
                    assert_eq!(is_utf8(&raw), std::str::from_utf8(&raw).is_ok(), "{raw:?}");
                }
                if at + 1 < len {
                    let mut raw = ascii.clone();
                    raw[at] = 0xc3;
                    raw[at + 1] = 0xa9;
                    assert!(is_utf8(&raw), "{raw:?}");
                }
            }
        }
    }

    #[test]
    fn reads_binary_args() {
        let data = b"\x80\x05K\x07M\x01\x02J\xff\xff\xff\xff\x8c\x02hiC\x01\x00.";
        let ins = read_all(data).unwrap();
        let args: Vec<_> = ins.iter().map(|i| i.arg.clone()).collect();
        assert_eq!(
            args,
            vec![
                Arg::Uint(5),
                Arg::Uint(7),
                Arg::Uint(0x0201),
                Arg::Int(-1),
                Arg::Str(Cow::Borrowed("hi")),
                Arg::Bytes(Cow::Borrowed(b"\x00")),
                Arg::None
            ]
        );
        assert_eq!(ins[3].offset, 7);
        assert_eq!(ins[3].end, 12);
    }

    #[test]
    fn frames() {
        // FRAME 2 { N . } : fine
        assert!(read_all(b"\x95\x02\x00\x00\x00\x00\x00\x00\x00N.").is_ok());
        // Frame longer than the input.
        let e = read_all(b"\x95\x09\x00\x00\x00\x00\x00\x00\x00N.").unwrap_err();
        assert_eq!(e.code(), "pickle.frame_overrun");
        // Opcode straddles the frame end: frame of 2 holds `K` + nothing.
        let e = read_all(b"\x95\x01\x00\x00\x00\x00\x00\x00\x00K\x01.").unwrap_err();
        assert_eq!(e.code(), "pickle.frame_straddle");
        // FRAME inside a frame.
        let e =
            read_all(b"\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00\x00\x00\x00\x00\x00N.")
                .unwrap_err();
        assert_eq!(e.code(), "pickle.frame_nested");
        // STOP inside a frame with bytes left.
        let e = read_all(b"\x95\x03\x00\x00\x00\x00\x00\x00\x00N.N").unwrap_err();
        assert_eq!(e.code(), "pickle.frame_unfinished");
        // Ops after a finished frame are read unframed.
        assert!(read_all(b"\x95\x01\x00\x00\x00\x00\x00\x00\x00NN0.").is_ok());
    }

    #[test]
    fn length_checks_come_before_slicing() {
        let e = read_all(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert_eq!(e.code(), "pickle.truncated");
        let e = read_all(b"T\xff\xff\xff\xff").unwrap_err();
        assert_eq!(e.code(), "pickle.bad_argument");
        let limits = Limits::default().with(LimitKind::BytesLen, 2);
        let mut r = Reader::new(b"C\x03abc.", 0, limits).unwrap();
        assert_eq!(r.next_instruction().unwrap_err().code(), "pickle.limit");
    }

    #[test]
    fn text_args() {
        let ins = read_all(b"I01\nL12L\nF1.5\nS'a\\n'\nVx\\u00e9\ncmod\nname\n.").unwrap();
        assert_eq!(ins[0].arg, Arg::Bool(true));
        assert_eq!(ins[1].arg, Arg::Int(12));
        assert_eq!(ins[2].arg, Arg::Float(1.5));
        assert_eq!(ins[3].arg, Arg::Bytes(Cow::Owned(b"a\n".to_vec())));
        assert_eq!(ins[4].arg, Arg::Str(Cow::Owned("x\u{e9}".to_owned())));
        assert_eq!(
            ins[5].arg,
            Arg::Global(Box::new(NamePair {
                module: Cow::Borrowed("mod"),
                name: Cow::Borrowed("name")
            }))
        );
        let e = read_all(b"cmod\nna").unwrap_err();
        assert_eq!(e.code(), "pickle.truncated");
        let e = read_all(b"imod\xc3\xa9\nname\n").unwrap_err();
        assert_eq!(e.code(), "pickle.bad_encoding");
    }

    #[test]
    fn surrogates_refused() {
        let e = read_all(b"X\x03\x00\x00\x00\xed\xa0\x80.").unwrap_err();
        assert_eq!(e.code(), "pickle.bad_encoding");
        assert!(e.to_string().contains("surrogate"), "{e}");
    }

    /// Lengths near the payload's actual size, so that length-prefixed
    /// opcodes take the fast path often, and fall off it at the edges.
    fn encoded_arg(kind: ArgKind, len: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = match kind {
            ArgKind::Bytes1 => vec![u8::try_from(len % 256).unwrap()],
            ArgKind::Bytes4 => u32::try_from(len).unwrap().to_le_bytes().to_vec(),
            ArgKind::Bytes8 => len.to_le_bytes().to_vec(),
            _ => Vec::new(),
        };
        out.extend_from_slice(payload);
        out
    }

    proptest::proptest! {
        /// Whatever the fast path decodes, the general decoder decodes the
        /// same way, ending at the same position (so errors, which only the
        /// general decoder reports, are unchanged).
        #[test]
        fn fast_path_agrees_with_the_general_decoder(
            op in proptest::sample::select(Opcode::ALL.to_vec()),
            raw in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..12),
            payload in proptest::collection::vec(
                proptest::sample::select(vec![b'a', 0xc3, 0xa9, 0xed, 0xa0, 0xff]),
                0..12,
            ),
            delta in -2i64..=2,
            structured in proptest::arbitrary::any::<bool>(),
            frame in proptest::option::of(1usize..24),
            max_len in proptest::option::of(0u64..8),
        ) {
            use proptest::prop_assert_eq;
            let len = u64::try_from(i64::try_from(payload.len()).unwrap() + delta).unwrap_or(0);
            let mut data = vec![op.byte()];
            if structured {
                data.extend(encoded_arg(op.arg(), len, &payload));
            } else {
                data.extend(&raw);
            }
            let mut limits = Limits::default();
            if let Some(m) = max_len {
                limits = limits.with(LimitKind::StrLen, m).with(LimitKind::BytesLen, m);
            }
            let mut reader = Reader::new(&data, 0, limits).unwrap();
            reader.frame_end = frame.map(|f| f.min(data.len()));
            if let Some((arg, next)) = reader.fast_arg(op, 1) {
                let mut cur = Cursor { reader: &reader, at: 1, offset: 0, opcode: op };
                let slow = cur.read_arg().unwrap();
                // Floats by bits: a NaN must decode to the same NaN.
                let same = match (&slow, &arg) {
                    (Arg::Float(a), Arg::Float(b)) => a.to_bits() == b.to_bits(),
                    _ => slow == arg,
                };
                proptest::prop_assert!(same, "{slow:?} != {arg:?}");
                prop_assert_eq!(cur.at, next);
            }
        }
    }

    #[test]
    fn fast_path_covers_the_common_opcodes() {
        let data = b"K\x07\x8c\x02hi\x96\x01\x00\x00\x00\x00\x00\x00\x00x\x94.";
        let r = Reader::new(data, 0, Limits::default()).unwrap();
        assert_eq!(r.fast_arg(Opcode::BININT1, 1), Some((Arg::Uint(7), 2)));
        let s = r.fast_arg(Opcode::SHORT_BINUNICODE, 3);
        assert_eq!(s, Some((Arg::Str(Cow::Borrowed("hi")), 6)));
        let b = r.fast_arg(Opcode::BYTEARRAY8, 7);
        assert_eq!(b, Some((Arg::Bytes(Cow::Borrowed(b"x")), 16)));
        assert_eq!(r.fast_arg(Opcode::MEMOIZE, 17), Some((Arg::None, 17)));
        // Not on the fast path: text lines and frames.
        assert_eq!(r.fast_arg(Opcode::GLOBAL, 1), None);
        assert_eq!(r.fast_arg(Opcode::FRAME, 1), None);
    }

    #[test]
    fn longs() {
        let ins =
            read_all(b"\x8a\x00\x8a\x02\xff\x7f\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.")
                .unwrap();
        assert_eq!(ins[0].arg, Arg::Int(0));
        assert_eq!(ins[1].arg, Arg::Int(0x7fff));
        assert_eq!(
            ins[2].arg,
            Arg::BigInt(Cow::Borrowed(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0][..]))
        );
        let e = read_all(b"\x8b\xff\xff\xff\xff").unwrap_err();
        assert_eq!(e.code(), "pickle.bad_argument");
    }
}
