//! The opcode table of pickle protocols 0–5.
//!
//! This module owns the *static* facts about each opcode: its byte, its
//! name as CPython's `pickletools` spells it, the protocol that introduced
//! it and the encoding of its inline argument. It knows nothing about the
//! stack or the memo (that is [`crate::parser`]) and does no decoding (that
//! is [`crate::reader`] and [`crate::text`]).

use std::fmt;

/// How an opcode's inline argument is encoded in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgKind {
    /// No inline argument.
    None,
    /// One unsigned byte.
    U8,
    /// Two bytes, unsigned little-endian.
    U16,
    /// Four bytes, unsigned little-endian.
    U32,
    /// Four bytes, signed little-endian.
    I32,
    /// Eight bytes, unsigned little-endian (`FRAME`).
    U64,
    /// Eight bytes, big-endian IEEE 754 double (`BINFLOAT`).
    F64,
    /// Decimal digits and a newline (`INT`, `GET`, `PUT`).
    DecimalLine,
    /// Decimal digits, an optional `L` and a newline (`LONG`).
    LongLine,
    /// A Python float literal and a newline (`FLOAT`).
    FloatLine,
    /// A quoted, backslash-escaped byte string and a newline (`STRING`).
    QuotedLine,
    /// Raw ASCII up to a newline (`PERSID`).
    AsciiLine,
    /// Two newline-terminated names (`GLOBAL`, `INST`).
    NamePair,
    /// `raw-unicode-escape` text up to a newline (`UNICODE`).
    UnicodeLine,
    /// A one-byte length, then that many bytes.
    Bytes1,
    /// A four-byte unsigned length, then that many bytes.
    Bytes4,
    /// A four-byte *signed* length (negative is an error), then the bytes.
    Bytes4Signed,
    /// An eight-byte length, then that many bytes.
    Bytes8,
    /// A one-byte length, then a little-endian two's complement integer.
    Long1,
    /// A four-byte signed length, then a little-endian two's complement integer.
    Long4,
}

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $name:ident = $byte:literal, $arg:ident, $proto:literal; )*) => {
        /// One pickle opcode.
        ///
        /// The discriminant is the opcode byte, so `op as u8` is what
        /// appears in the stream.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[expect(non_camel_case_types, reason = "names match CPython's pickletools exactly")]
        pub enum Opcode {
            $( $(#[$doc])* $name = $byte, )*
        }

        impl Opcode {
            /// Every opcode, in `pickletools` order.
            pub const ALL: &'static [Opcode] = &[ $( Opcode::$name, )* ];

            /// The opcode for a byte, or `None` if the byte is not an opcode.
            #[must_use]
            #[inline]
            #[expect(clippy::indexing_slicing, reason = "a `u8` always indexes a 256-entry table")]
            pub const fn from_byte(byte: u8) -> Option<Opcode> {
                // A table lookup: this runs once per opcode of every stream.
                BY_BYTE[byte as usize]
            }

            /// The name as CPython's `pickletools` spells it (`BINUNICODE`).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $( Opcode::$name => stringify!($name), )*
                }
            }

            /// How the inline argument is encoded.
            #[must_use]
            #[inline]
            #[expect(clippy::indexing_slicing, reason = "a `u8` always indexes a 256-entry table")]
            pub const fn arg(self) -> ArgKind {
                ARG_BY_BYTE[self as usize]
            }
        }

        /// [`Opcode::from_byte`] as a table.
        #[expect(clippy::indexing_slicing, reason = "constant indices, checked at compile time")]
        const BY_BYTE: [Option<Opcode>; 256] = {
            let mut table = [None; 256];
            $( table[$byte as usize] = Some(Opcode::$name); )*
            table
        };

        /// [`Opcode::arg`] as a table indexed by the opcode byte.
        #[expect(clippy::indexing_slicing, reason = "constant indices, checked at compile time")]
        const ARG_BY_BYTE: [ArgKind; 256] = {
            let mut table = [ArgKind::None; 256];
            $( table[$byte as usize] = ArgKind::$arg; )*
            table
        };

        impl Opcode {

            /// The protocol that introduced this opcode.
            ///
            /// Informational only: CPython does not gate opcodes on the
            /// `PROTO` byte, and neither does this parser.
            #[must_use]
            pub const fn protocol(self) -> u8 {
                match self {
                    $( Opcode::$name => $proto, )*
                }
            }
        }
    };
}

opcodes! {
    /// Text integer; `00`/`01` are the booleans of protocol 0.
    INT = b'I', DecimalLine, 0;
    /// Signed four-byte integer.
    BININT = b'J', I32, 1;
    /// Unsigned one-byte integer.
    BININT1 = b'K', U8, 1;
    /// Unsigned two-byte integer.
    BININT2 = b'M', U16, 1;
    /// Text long integer with an optional `L` suffix.
    LONG = b'L', LongLine, 0;
    /// Long integer with a one-byte length.
    LONG1 = 0x8a, Long1, 2;
    /// Long integer with a four-byte length.
    LONG4 = 0x8b, Long4, 2;
    /// Quoted, escaped Python 2 `str`.
    STRING = b'S', QuotedLine, 0;
    /// Python 2 `str` with a four-byte signed length.
    BINSTRING = b'T', Bytes4Signed, 1;
    /// Python 2 `str` with a one-byte length.
    SHORT_BINSTRING = b'U', Bytes1, 1;
    /// `bytes` with a four-byte length.
    BINBYTES = b'B', Bytes4, 3;
    /// `bytes` with a one-byte length.
    SHORT_BINBYTES = b'C', Bytes1, 3;
    /// `bytes` with an eight-byte length.
    BINBYTES8 = 0x8e, Bytes8, 4;
    /// `bytearray` with an eight-byte length.
    BYTEARRAY8 = 0x96, Bytes8, 5;
    /// Next out-of-band buffer.
    NEXT_BUFFER = 0x97, None, 5;
    /// Make the buffer on top of the stack read-only.
    READONLY_BUFFER = 0x98, None, 5;
    /// `None`.
    NONE = b'N', None, 0;
    /// `True`.
    NEWTRUE = 0x88, None, 2;
    /// `False`.
    NEWFALSE = 0x89, None, 2;
    /// `str` in `raw-unicode-escape`, newline-terminated.
    UNICODE = b'V', UnicodeLine, 0;
    /// UTF-8 `str` with a one-byte length.
    SHORT_BINUNICODE = 0x8c, Bytes1, 4;
    /// UTF-8 `str` with a four-byte length.
    BINUNICODE = b'X', Bytes4, 1;
    /// UTF-8 `str` with an eight-byte length.
    BINUNICODE8 = 0x8d, Bytes8, 4;
    /// Text float.
    FLOAT = b'F', FloatLine, 0;
    /// Big-endian double.
    BINFLOAT = b'G', F64, 1;
    /// Push an empty list.
    EMPTY_LIST = b']', None, 1;
    /// Append one item to the list below it.
    APPEND = b'a', None, 0;
    /// Extend the list below the mark with the items above it.
    APPENDS = b'e', None, 1;
    /// Build a list from the items above the mark.
    LIST = b'l', None, 0;
    /// Push an empty tuple.
    EMPTY_TUPLE = b')', None, 1;
    /// Build a tuple from the items above the mark.
    TUPLE = b't', None, 0;
    /// Build a one-tuple.
    TUPLE1 = 0x85, None, 2;
    /// Build a two-tuple.
    TUPLE2 = 0x86, None, 2;
    /// Build a three-tuple.
    TUPLE3 = 0x87, None, 2;
    /// Push an empty dict.
    EMPTY_DICT = b'}', None, 1;
    /// Build a dict from the key/value pairs above the mark.
    DICT = b'd', None, 0;
    /// Set one key in the dict below it.
    SETITEM = b's', None, 0;
    /// Set the key/value pairs above the mark in the dict below it.
    SETITEMS = b'u', None, 1;
    /// Push an empty set.
    EMPTY_SET = 0x8f, None, 4;
    /// Add the items above the mark to the set below it.
    ADDITEMS = 0x90, None, 4;
    /// Build a frozenset from the items above the mark.
    FROZENSET = 0x91, None, 4;
    /// Discard the top item (or the top mark when nothing is above it).
    POP = b'0', None, 0;
    /// Duplicate the top item.
    DUP = b'2', None, 0;
    /// Push a mark.
    MARK = b'(', None, 0;
    /// Discard everything down to and including the top mark.
    POP_MARK = b'1', None, 1;
    /// Push a memo entry (text index).
    GET = b'g', DecimalLine, 0;
    /// Push a memo entry (one-byte index).
    BINGET = b'h', U8, 1;
    /// Push a memo entry (four-byte index).
    LONG_BINGET = b'j', U32, 1;
    /// Store the top item in the memo (text index).
    PUT = b'p', DecimalLine, 0;
    /// Store the top item in the memo (one-byte index).
    BINPUT = b'q', U8, 1;
    /// Store the top item in the memo (four-byte index).
    LONG_BINPUT = b'r', U32, 1;
    /// Store the top item at index `len(memo)`.
    MEMOIZE = 0x94, None, 4;
    /// Extension registry reference (one-byte code).
    EXT1 = 0x82, U8, 2;
    /// Extension registry reference (two-byte code).
    EXT2 = 0x83, U16, 2;
    /// Extension registry reference (four-byte signed code).
    EXT4 = 0x84, I32, 2;
    /// Global by newline-terminated module and name.
    GLOBAL = b'c', NamePair, 0;
    /// Global from two `str` items on the stack.
    STACK_GLOBAL = 0x93, None, 4;
    /// Call `callable(*args)`.
    REDUCE = b'R', None, 0;
    /// Apply state to an object (`__setstate__` or `__dict__` update).
    BUILD = b'b', None, 0;
    /// Look up a class by name and call it with the items above the mark.
    INST = b'i', NamePair, 0;
    /// Call the first item above the mark with the rest.
    OBJ = b'o', None, 1;
    /// `cls.__new__(cls, *args)`.
    NEWOBJ = 0x81, None, 2;
    /// `cls.__new__(cls, *args, **kwargs)`.
    NEWOBJ_EX = 0x92, None, 4;
    /// Protocol number.
    PROTO = 0x80, U8, 2;
    /// End of the pickle.
    STOP = b'.', None, 0;
    /// Start of a frame of the given length.
    FRAME = 0x95, U64, 4;
    /// Persistent id, ASCII text.
    PERSID = b'P', AsciiLine, 0;
    /// Persistent id from the stack.
    BINPERSID = b'Q', None, 1;
}

impl Opcode {
    /// The byte that encodes this opcode.
    #[must_use]
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// Whether the opcode consumes the topmost mark.
    #[must_use]
    pub const fn pops_mark(self) -> bool {
        matches!(
            self,
            Opcode::APPENDS
                | Opcode::LIST
                | Opcode::TUPLE
                | Opcode::DICT
                | Opcode::SETITEMS
                | Opcode::ADDITEMS
                | Opcode::FROZENSET
                | Opcode::POP_MARK
                | Opcode::INST
                | Opcode::OBJ
        )
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        assert_eq!(Opcode::ALL.len(), 68);
        for &op in Opcode::ALL {
            assert_eq!(Opcode::from_byte(op.byte()), Some(op), "{op}");
            assert!(op.protocol() <= 5);
        }
        let mut bytes: Vec<u8> = Opcode::ALL.iter().map(|o| o.byte()).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 68, "opcode bytes are unique");
        assert_eq!(Opcode::from_byte(0xff), None);
        assert_eq!(Opcode::from_byte(b'Z'), None);
        assert_eq!(Opcode::BINUNICODE.name(), "BINUNICODE");
        assert_eq!(Opcode::FRAME.arg(), ArgKind::U64);
    }
}
