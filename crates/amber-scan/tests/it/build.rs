//! A tiny pickle assembler for hostile test streams.

use amber_scan::{Limits, NoArrays, Policy, Report, StreamKind, scan};

/// Opcode bytes, named as in `pickletools`.
pub mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const NONE: u8 = b'N';
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const NEWOBJ: u8 = 0x81;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const OBJ: u8 = b'o';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const BINPERSID: u8 = b'Q';
}

/// Assembles a pickle stream.
#[derive(Debug, Clone, Default)]
pub struct P(pub Vec<u8>);

impl P {
    /// A stream starting with `PROTO n` (no PROTO for 0).
    pub fn proto(n: u8) -> Self {
        if n == 0 {
            P(Vec::new())
        } else {
            P(vec![0x80, n])
        }
    }

    pub fn op(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `GLOBAL module name` (protocol 0 text form).
    pub fn global(self, module: &str, name: &str) -> Self {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }

    /// `SHORT_BINUNICODE`.
    pub fn s(mut self, text: &str) -> Self {
        self.0.push(0x8c);
        self.0.push(u8::try_from(text.len()).unwrap());
        self.0.extend_from_slice(text.as_bytes());
        self
    }

    /// `STACK_GLOBAL` from two constants.
    pub fn sg(self, module: &str, name: &str) -> Self {
        self.s(module).s(name).op(op::STACK_GLOBAL)
    }

    /// `BININT1` / `BININT`.
    pub fn int(mut self, v: i32) -> Self {
        if let Ok(b) = u8::try_from(v) {
            self.0.push(b'K');
            self.0.push(b);
        } else {
            self.0.push(b'J');
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `SHORT_BINBYTES`.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.push(b'C');
        self.0.push(u8::try_from(b.len()).unwrap());
        self.0.extend_from_slice(b);
        self
    }

    /// `BINPUT i`.
    pub fn put(mut self, i: u8) -> Self {
        self.0.push(b'q');
        self.0.push(i);
        self
    }

    /// `BINGET i`.
    pub fn get(mut self, i: u8) -> Self {
        self.0.push(b'h');
        self.0.push(i);
        self
    }

    /// `REDUCE` with the `n` items on top as arguments (0 to 3).
    pub fn call(self, n: usize) -> Self {
        let tuple = [op::EMPTY_TUPLE, op::TUPLE1, op::TUPLE2, op::TUPLE3];
        self.op(tuple[n]).op(op::REDUCE)
    }

    /// `NEWOBJ` with no arguments.
    pub fn new0(self) -> Self {
        self.op(op::EMPTY_TUPLE).op(op::NEWOBJ)
    }

    /// `BUILD` with `{key: int}` as state.
    pub fn build_attr(self, key: &str, value: i32) -> Self {
        self.op(op::EMPTY_DICT)
            .s(key)
            .int(value)
            .op(op::SETITEM)
            .op(op::BUILD)
    }

    pub fn stop(self) -> Vec<u8> {
        self.op(op::STOP).0
    }

    /// `numpy.dtype(code, False, True)` with its BUILD state, via STACK_GLOBAL.
    pub fn dtype(self, code: &str, byteorder: &str) -> Self {
        self.sg("numpy", "dtype")
            .s(code)
            .op(op::NEWFALSE)
            .op(op::NEWTRUE)
            .op(op::TUPLE3)
            .op(op::REDUCE)
            .op(op::MARK)
            .int(3)
            .s(byteorder)
            .op(op::NONE)
            .op(op::NONE)
            .op(op::NONE)
            .int(-1)
            .int(-1)
            .int(0)
            .op(op::TUPLE)
            .op(op::BUILD)
    }
}

pub fn scan_as(data: &[u8], kind: StreamKind) -> Report {
    scan(
        data,
        kind,
        &NoArrays,
        &Policy::default_policy(),
        &Limits::default(),
    )
}

pub fn scan_pickle(data: &[u8]) -> Report {
    scan_as(data, StreamKind::Pickle)
}

/// The report must carry `code`; returns the report for more checks.
#[track_caller]
pub fn refused(data: &[u8], code: &str) -> Report {
    refused_as(data, StreamKind::Pickle, code)
}

#[track_caller]
pub fn refused_as(data: &[u8], kind: StreamKind, code: &str) -> Report {
    let report = scan_as(data, kind);
    assert!(!report.is_safe(), "scanned safe, expected {code}");
    assert!(
        report.has(code),
        "expected {code}, got {:#?}",
        report.findings
    );
    for f in &report.findings {
        assert!(
            f.offset.is_some() || f.code == "report.truncated",
            "finding without offset: {f:?}"
        );
        assert!(!f.message.is_empty());
    }
    report
}
