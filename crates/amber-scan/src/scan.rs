//! The entry point: parse one stream the way its format requires, analyse
//! it, and build the [`Report`].
//!
//! Parse errors become a `malformed.*` finding (verdict `malformed`), limits
//! a `limit.*` finding (verdict `unsafe`), bytes after `STOP` a
//! `stream.trailing` finding.

use amber_pickle::{LimitKind, Limits, Parser, Pickle, PickleError, joblib::JoblibHook};

use crate::analyse::Analyser;
use crate::ndarray::ArrayBytes;
use crate::policy::Policy;
use crate::report::{Finding, Findings, GlobalCount, Report, Severity, Verdict};

/// What the bytes are, which decides how they are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The pickle entry of an amber file, whose arrays are `buffers`
    /// out-of-band buffers (`NEXT_BUFFER` with an index below `buffers`).
    Amber {
        /// Number of array entries in the file.
        buffers: u64,
    },
    /// A plain pickle.
    Pickle,
    /// An uncompressed joblib file: raw array bytes after each
    /// `NumpyArrayWrapper` are skipped, nested object-array pickles analysed.
    Joblib,
}

/// Scan one stream.
///
/// `arrays` gives content validators the bytes of out-of-band buffers
/// (amber) and of inline arrays (joblib: offsets into `data`).
#[must_use]
pub fn scan(
    data: &[u8],
    kind: StreamKind,
    arrays: &dyn ArrayBytes,
    policy: &Policy,
    limits: &Limits,
) -> Report {
    let mut hook = JoblibHook::counting();
    let mut parser = Parser::new(data).limits(*limits).allow_trailing(true);
    match kind {
        StreamKind::Amber { buffers } => parser = parser.out_of_band_buffers(buffers),
        StreamKind::Joblib => parser = parser.hook(&mut hook),
        StreamKind::Pickle => {}
    }
    let stream_len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    let pickle = match parser.parse() {
        Ok(p) => p,
        Err(e) => return refused(&e, stream_len),
    };
    let joblib_arrays = hook.count();
    scan_parsed(&pickle, data, kind, arrays, policy, joblib_arrays)
}

/// [`scan`] of a stream the caller parsed itself (the reader of legacy files
/// parses while opening, with the same hook and limits): `pickle` must be
/// `data` parsed as [`scan`] parses it for `kind`; `joblib_arrays` is the
/// number of arrays the joblib hook found.
#[must_use]
pub fn scan_parsed(
    pickle: &Pickle<'_>,
    data: &[u8],
    kind: StreamKind,
    arrays: &dyn ArrayBytes,
    policy: &Policy,
    joblib_arrays: u64,
) -> Report {
    let stream_len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    let joblib = kind == StreamKind::Joblib;
    let mut findings = Findings::default();
    if pickle.end() < stream_len {
        let remaining = stream_len - pickle.end();
        findings.push(Finding {
            code: "stream.trailing",
            severity: Severity::High,
            offset: Some(pickle.end()),
            opcode: None,
            global: None,
            message: format!(
                "{remaining} bytes follow the pickle's STOP: a file holds exactly one stream (a second pickle or another format hidden after it is refused)"
            ),
            count: 1,
        });
    }
    let arrays = InlineFromStream { data, arrays };
    Analyser {
        graph: pickle.graph(),
        policy,
        joblib,
        buffers_allowed: matches!(kind, StreamKind::Amber { .. }),
        arrays: &arrays,
        findings: &mut findings,
        // Each array is read by at most two validators in real models.
        content_budget: stream_len
            .saturating_add(arrays.total_len())
            .saturating_mul(2)
            .saturating_add(1 << 20),
        root: pickle.root(),
    }
    .run();
    let globals = pickle
        .globals()
        .iter()
        .map(|g| {
            let mut name = String::with_capacity(g.module.len() + 1 + g.name.len());
            name.push_str(&g.module);
            name.push('.');
            name.push_str(&g.name);
            let allowed = policy.entry(&name, joblib).is_some();
            GlobalCount {
                name,
                count: g.count,
                allowed,
            }
        })
        .collect();
    let findings = findings.into_vec();
    Report {
        verdict: if findings.is_empty() {
            Verdict::Safe
        } else {
            Verdict::Unsafe
        },
        findings,
        globals,
        protocol: pickle.highest_protocol(),
        opcodes: pickle.stats().opcodes,
        stream_len,
        joblib_arrays,
    }
}

/// The report of a stream the parser refused: `malformed`, or `unsafe` when
/// a limit stopped it. Also for callers that parsed the stream themselves
/// (the reader of legacy files parses while opening).
#[must_use]
pub fn refused(e: &PickleError, stream_len: u64) -> Report {
    let mut findings = Findings::default();
    findings.push(error_finding(e));
    Report {
        verdict: if matches!(e, PickleError::Limit { .. }) {
            Verdict::Unsafe
        } else {
            Verdict::Malformed
        },
        findings: findings.into_vec(),
        globals: Vec::new(),
        protocol: None,
        opcodes: 0,
        stream_len,
        joblib_arrays: 0,
    }
}

/// Joblib's inline arrays lie in the scanned stream itself: the caller's
/// [`ArrayBytes`] is asked first, the stream answers what it does not.
struct InlineFromStream<'d> {
    data: &'d [u8],
    arrays: &'d dyn ArrayBytes,
}

impl ArrayBytes for InlineFromStream<'_> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        self.arrays.buffer(index)
    }

    fn total_len(&self) -> u64 {
        self.arrays.total_len()
    }

    fn deferring(&self, index: u64) -> bool {
        self.arrays.deferring(index)
    }

    fn defers(&self) -> bool {
        self.arrays.defers()
    }

    fn buffer_len(&self, index: u64) -> Option<u64> {
        self.arrays.buffer_len(index)
    }

    fn defer(&self, index: u64, check: crate::Deferred) {
        self.arrays.defer(index, check);
    }

    fn lend(&self, index: u64) {
        self.arrays.lend(index);
    }

    fn deferring_in_stream(&self, payload: &[u8]) -> Option<u64> {
        self.arrays.deferring_in_stream(payload)
    }

    fn defer_in_stream(&self, check: crate::Deferred) {
        self.arrays.defer_in_stream(check);
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.arrays.inline(offset, len).or_else(|| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            self.data.get(start..end)
        })
    }
}

fn error_finding(e: &PickleError) -> Finding {
    let (code, severity) = match e {
        PickleError::Limit { limit, .. } => (limit_code(*limit), Severity::High),
        other => (malformed_code(other.code()), Severity::High),
    };
    Finding {
        code,
        severity,
        offset: Some(e.offset()),
        opcode: e.opcode().map(amber_pickle::Opcode::name),
        global: None,
        message: format!("[{}] {e}", e.code()),
        count: 1,
    }
}

fn limit_code(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Opcodes => "limit.opcodes",
        LimitKind::Nodes => "limit.nodes",
        LimitKind::StackDepth => "limit.stack",
        LimitKind::NestingDepth => "limit.depth",
        LimitKind::MemoEntries => "limit.memo",
        LimitKind::MemoIndex => "limit.memo_index",
        LimitKind::MemoGets => "limit.memo_gets",
        LimitKind::StrLen => "limit.str_len",
        LimitKind::BytesLen => "limit.bytes_len",
        LimitKind::BigIntBytes => "limit.bigint",
        LimitKind::NestedPickles => "limit.nested",
        LimitKind::GraphBytes => "limit.graph_bytes",
        _ => "limit.other",
    }
}

/// `pickle.X` parser codes as `malformed.X`.
fn malformed_code(code: &str) -> &'static str {
    match code {
        "pickle.truncated" => "malformed.truncated",
        "pickle.bad_opcode" => "malformed.bad_opcode",
        "pickle.bad_argument" => "malformed.bad_argument",
        "pickle.bad_encoding" => "malformed.bad_encoding",
        "pickle.unsupported_protocol" => "malformed.unsupported_protocol",
        "pickle.frame_overrun" => "malformed.frame_overrun",
        "pickle.frame_straddle" => "malformed.frame_straddle",
        "pickle.frame_nested" => "malformed.frame_nested",
        "pickle.frame_unfinished" => "malformed.frame_unfinished",
        "pickle.stack_underflow" => "malformed.stack_underflow",
        "pickle.mark_missing" => "malformed.mark_missing",
        "pickle.memo_missing" => "malformed.memo_missing",
        "pickle.bad_operands" => "malformed.bad_operands",
        "pickle.bad_stop" => "malformed.bad_stop",
        "pickle.trailing_bytes" => "malformed.trailing_bytes",
        "pickle.buffer_missing" => "malformed.buffer_missing",
        "pickle.hook" => "malformed.joblib",
        "pickle.bad_start" => "malformed.bad_start",
        _ => "malformed.other",
    }
}
