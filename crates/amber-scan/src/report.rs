//! The result of a scan: [`Report`], [`Finding`], [`Verdict`], [`Severity`].
//!
//! Findings are deduplicated while they are collected (one per code and
//! global, or code and opcode, with a count and the first offset), so a
//! stream that repeats a refused thing ten thousand times yields one
//! finding, and their number is capped.

use std::collections::HashMap;

use serde::Serialize;

/// Most distinct findings kept; one more, `report.truncated`, says how many
/// were dropped.
pub const MAX_FINDINGS: usize = 200;

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every global, call and state is accepted by the policy.
    Safe,
    /// The stream parses, and something in it is refused.
    Unsafe,
    /// The stream is not a valid pickle (or joblib/amber stream).
    Malformed,
}

impl Verdict {
    /// `safe`, `unsafe` or `malformed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Unsafe => "unsafe",
            Verdict::Malformed => "malformed",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational, or a bound that only a huge honest file reaches.
    Low,
    /// Odd, refused, but not known to run code.
    Medium,
    /// Refused construct that can run code or corrupt memory in some setting.
    High,
    /// A known way to run code or crash the process.
    Critical,
}

impl Severity {
    /// `low`, `medium`, `high` or `critical`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One refused thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable dotted code (see `docs/SECURITY.md`).
    pub code: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Byte offset of the first occurrence, where there is one.
    pub offset: Option<u64>,
    /// The opcode involved, by its `pickletools` name.
    pub opcode: Option<&'static str>,
    /// The canonical global involved.
    pub global: Option<String>,
    /// What was found, why it is refused, and how to trust it if that makes sense.
    pub message: String,
    /// How many times the same thing (code and global/opcode) occurred.
    pub count: u64,
}

/// One global the stream references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalCount {
    /// Canonical `module.qualname` (after `_compat_pickle`).
    pub name: String,
    /// `GLOBAL` / `STACK_GLOBAL` / `INST` opcodes naming it.
    pub count: u64,
    /// Whether the policy lists it (for some role).
    pub allowed: bool,
}

/// The result of [`crate::scan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The answer.
    pub verdict: Verdict,
    /// Everything refused, in stream order of first occurrence.
    pub findings: Vec<Finding>,
    /// Every global used, in order of first use.
    pub globals: Vec<GlobalCount>,
    /// Highest `PROTO` seen.
    pub protocol: Option<u8>,
    /// Opcodes executed (nested pickles included).
    pub opcodes: u64,
    /// Bytes scanned.
    pub stream_len: u64,
    /// Arrays found in a joblib stream.
    pub joblib_arrays: u64,
}

impl Report {
    /// Canonical names the stream uses that the policy accepted: the only
    /// names the loader's `find_class` may return.
    #[must_use]
    pub fn allowed_globals(&self) -> Vec<String> {
        self.globals
            .iter()
            .filter(|g| g.allowed)
            .map(|g| g.name.clone())
            .collect()
    }

    /// Whether the verdict is [`Verdict::Safe`].
    #[must_use]
    pub fn is_safe(&self) -> bool {
        self.verdict == Verdict::Safe
    }

    /// Whether some finding has this code.
    #[must_use]
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    /// One line per finding (severity, code, offset, opcode, count, message),
    /// then a hint on trusting names if some global was refused: the text of
    /// `amber scan` and of the loader's `UnsafeModelError`.
    #[must_use]
    pub fn render_findings(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for f in &self.findings {
            let at = f
                .offset
                .map_or_else(String::new, |o| format!(" at byte {o:#x}"));
            let op = f.opcode.map_or_else(String::new, |o| format!(" ({o})"));
            let times = if f.count > 1 {
                format!(" [{} times]", f.count)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:8} {}{at}{op}{times}: {}",
                f.severity.as_str(),
                f.code,
                f.message
            );
        }
        let refused: Vec<&str> = self
            .globals
            .iter()
            .filter(|g| !g.allowed)
            .map(|g| g.name.as_str())
            .collect();
        if !refused.is_empty() {
            let _ = writeln!(
                out,
                "  names not in the policy: {}; if you trust this file's source, allow them with trusted=[...] (CLI: --trust NAME)",
                refused.join(", ")
            );
        }
        out
    }

    /// The report as one JSON object.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Collects findings, merging repeats and capping the total.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
    index: HashMap<(&'static str, Option<String>, Option<&'static str>), usize>,
    dropped: u64,
}

impl Findings {
    pub(crate) fn push(&mut self, finding: Finding) {
        let key = (finding.code, finding.global.clone(), finding.opcode);
        if let Some(&i) = self.index.get(&key) {
            if let Some(f) = self.list.get_mut(i) {
                f.count = f.count.saturating_add(1);
                if f.offset.is_none() {
                    f.offset = finding.offset;
                }
            }
            return;
        }
        if self.list.len() >= MAX_FINDINGS {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.index.insert(key, self.list.len());
        self.list.push(finding);
    }

    pub(crate) fn into_vec(mut self) -> Vec<Finding> {
        self.list.sort_by_key(|f| f.offset.unwrap_or(u64::MAX));
        if self.dropped > 0 {
            self.list.push(Finding {
                code: "report.truncated",
                severity: Severity::Low,
                offset: None,
                opcode: None,
                global: None,
                message: format!(
                    "{} more distinct findings were not listed (at most {MAX_FINDINGS} are kept)",
                    self.dropped
                ),
                count: self.dropped,
            });
        }
        self.list
    }
}
