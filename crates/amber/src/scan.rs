//! Opening a file by content and scanning whatever it holds.

use std::borrow::Cow;
use std::path::Path;

use amber_format::sniff::{self, Kind};
use amber_format::{Container, Mapping, Source};
use amber_legacy::{Legacy, LegacyError, LegacyKind};
use amber_scan::{
    ArrayBytes, GlobalCount, Limits, Policy, Report, StreamKind, Verdict, refused, scan,
};

use crate::arrays::{ContainerArrays, LegacyArrays, outside_pickles};
use crate::error::Result;

/// The bytes behind an opened amber container.
pub enum Backing {
    /// A read-only map of the file.
    Map(Mapping),
    /// A copy held in memory.
    Owned(Vec<u8>),
    /// A file read in pieces, mapped only if something needs more (a scan).
    Pieces(amber_format::Pieces),
    /// Memory another owner keeps alive and unchanged for as long as this
    /// holds it (the Python binding's `bytes` objects), read in place.
    Shared(std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m.as_ref(),
            Backing::Owned(v) => v,
            Backing::Pieces(p) => p.as_ref(),
            Backing::Shared(s) => (**s).as_ref(),
        }
    }
}

impl Source for Backing {
    fn release(&self, offset: usize, len: usize) {
        match self {
            Backing::Map(m) => m.release(offset, len),
            Backing::Pieces(p) => p.release(offset, len),
            Backing::Owned(_) | Backing::Shared(_) => {}
        }
    }

    fn range(&self, offset: u64, len: u64) -> Option<&[u8]> {
        match self {
            Backing::Pieces(p) => p.range(offset, len),
            Backing::Map(m) => m.range(offset, len),
            Backing::Owned(v) => v.range(offset, len),
            Backing::Shared(_) => {
                let end = usize::try_from(offset.checked_add(len)?).ok()?;
                self.as_ref().get(usize::try_from(offset).ok()?..end)
            }
        }
    }

    fn size(&self) -> u64 {
        match self {
            Backing::Pieces(p) => p.size(),
            Backing::Map(m) => m.size(),
            Backing::Owned(v) => v.size(),
            Backing::Shared(s) => (**s).as_ref().len() as u64,
        }
    }
}

/// A model file, opened by what its bytes are.
pub enum Opened {
    /// An amber file (a zip archive).
    Amber(Container<Backing>),
    /// A plain pickle or a joblib file of any version.
    Legacy(Legacy),
}

/// Opens `path`: an amber container if it is a zip archive, otherwise a
/// pickle or joblib file (companion files of old joblib dumps are looked up
/// beside it).
///
/// # Errors
/// The container's or the legacy reader's error.
pub fn open_path(path: &Path, limits: &amber_legacy::Limits) -> Result<Opened> {
    let map = amber_format::open_file(path)?;
    if sniff::kind(map.as_ref()) == Kind::Zip {
        return Ok(Opened::Amber(Container::parse(Backing::Map(map))?));
    }
    drop(map);
    Ok(Opened::Legacy(amber_legacy::open_path(path, limits)?))
}

/// Opens a file held in memory (see [`open_path`]).
///
/// # Errors
/// The container's or the legacy reader's error.
pub fn open_bytes(data: Vec<u8>, limits: &amber_legacy::Limits) -> Result<Opened> {
    if sniff::kind(&data) == Kind::Zip {
        return Ok(Opened::Amber(Container::parse(Backing::Owned(data))?));
    }
    Ok(Opened::Legacy(amber_legacy::open_bytes(data, limits)?))
}

impl Opened {
    /// What the file is: `amber`, `pickle`, `joblib`, `joblib-zf` or `joblib-multifile`.
    #[must_use]
    pub fn format(&self) -> &'static str {
        match self {
            Opened::Amber(_) => "amber",
            Opened::Legacy(l) => l.kind().label(),
        }
    }

    /// The pickle stream (decoded, CRC checked), how to parse it, and the
    /// bytes of the arrays it refers to: what `amber inspect` walks.
    ///
    /// # Errors
    /// A damaged amber pickle entry.
    pub fn stream(&self) -> Result<StreamView<'_>> {
        Ok(match self {
            Opened::Amber(c) => {
                let arrays = ContainerArrays::new(c);
                StreamView {
                    stream: c.pickle()?,
                    kind: StreamKind::Amber {
                        buffers: arrays.len(),
                    },
                    arrays: Box::new(arrays),
                }
            }
            Opened::Legacy(l) => StreamView {
                stream: Cow::Borrowed(l.stream()),
                kind: legacy_stream_kind(l),
                arrays: Box::new(LegacyArrays(l)),
            },
        })
    }

    /// Analyses the file's pickle stream (and, for legacy files, nested
    /// pickles held outside it).
    ///
    /// # Errors
    /// A damaged amber pickle entry (its CRC is checked before analysis).
    pub fn scan(&self, policy: &Policy, limits: &Limits) -> Result<Report> {
        match self {
            Opened::Amber(c) => {
                let stream = c.pickle()?;
                Ok(scan_container(c, &stream, policy, limits))
            }
            Opened::Legacy(l) => Ok(scan_legacy(l, policy, limits)),
        }
    }
}

/// A file's pickle stream, ready to parse.
pub struct StreamView<'o> {
    /// The stream.
    pub stream: Cow<'o, [u8]>,
    /// How to parse it.
    pub kind: StreamKind,
    /// The arrays it refers to.
    pub arrays: Box<dyn ArrayBytes + 'o>,
}

/// How a legacy file's stream is parsed: the way joblib reads it when it
/// holds joblib's array wrappers, as a plain pickle otherwise.
fn legacy_stream_kind(legacy: &Legacy) -> StreamKind {
    match legacy.kind() {
        LegacyKind::Pickle { .. } => StreamKind::Pickle,
        _ => StreamKind::Joblib,
    }
}

/// Opens and scans `path`: its format label and the report. A pickle the
/// legacy reader could not parse is a `malformed` report, not an error.
///
/// # Errors
/// The file cannot be read, or is a damaged amber container or compressed stream.
pub fn scan_path(
    path: &Path,
    policy: &Policy,
    limits: &amber_legacy::Limits,
) -> Result<(&'static str, Report)> {
    // Read in pieces: a scan of a large file of few entries reads a few
    // kilobytes of it, and a map would cost more than the whole scan.
    let file = amber_format::open_pieces(path)?;
    let size = file.size();
    if sniff::kind(file.head()) == Kind::Zip {
        return scan_amber(Backing::Pieces(file), policy, limits);
    }
    drop(file);
    // A scan needs the parse, not the stream rewritten for loading.
    let opened = open_scanned(policy, limits, |inspect| {
        amber_legacy::scan_open_path(path, limits, inspect)
    });
    scan_opened(opened, size)
}

/// [`scan_path`] for a file held in memory.
///
/// # Errors
/// As [`scan_path`].
pub fn scan_bytes(
    data: Vec<u8>,
    policy: &Policy,
    limits: &amber_legacy::Limits,
) -> Result<(&'static str, Report)> {
    let size = data.len() as u64;
    if sniff::kind(&data) == Kind::Zip {
        return scan_amber(Backing::Owned(data), policy, limits);
    }
    let opened = open_scanned(policy, limits, |inspect| {
        amber_legacy::scan_open_bytes(data, limits, inspect)
    });
    scan_opened(opened, size)
}

/// The report of an amber container held in `backing`.
fn scan_amber(
    backing: Backing,
    policy: &Policy,
    limits: &amber_legacy::Limits,
) -> Result<(&'static str, Report)> {
    // The scan reads the manifest's entries, never its free fields.
    let opened = Opened::Amber(Container::parse_entries(backing)?);
    Ok((opened.format(), opened.scan(policy, &limits.pickle)?))
}

/// The report of a legacy file opened and scanned; a pickle the legacy
/// reader could not parse is `malformed` (`size` is the file's, for the report).
fn scan_opened(
    opened: std::result::Result<(Legacy, Report), LegacyError>,
    size: u64,
) -> Result<(&'static str, Report)> {
    match opened {
        Ok((legacy, report)) => Ok((legacy.kind().label(), report)),
        Err(LegacyError::Pickle { source }) => Ok(("pickle", refused(&source, size))),
        Err(e) => Err(e.into()),
    }
}

/// Opens the legacy file at `path` and scans it as [`scan_legacy`] does,
/// analysing the graph the open parses anyway instead of parsing the stream
/// a second time.
///
/// # Errors
/// As [`amber_legacy::open_path`].
pub fn open_legacy_path_scanned(
    path: &Path,
    policy: &Policy,
    limits: &amber_legacy::Limits,
) -> std::result::Result<(Legacy, Report), LegacyError> {
    open_scanned(policy, limits, |inspect| {
        amber_legacy::open_path_inspected(path, limits, inspect)
    })
}

/// [`open_legacy_path_scanned`] for a file held in memory.
///
/// # Errors
/// As [`amber_legacy::open_bytes`].
pub fn open_legacy_bytes_scanned(
    data: Vec<u8>,
    policy: &Policy,
    limits: &amber_legacy::Limits,
) -> std::result::Result<(Legacy, Report), LegacyError> {
    open_scanned(policy, limits, |inspect| {
        amber_legacy::open_bytes_inspected(data, limits, inspect)
    })
}

fn open_scanned(
    policy: &Policy,
    limits: &amber_legacy::Limits,
    open: impl FnOnce(
        &mut dyn FnMut(&amber_legacy::Parse<'_, '_>),
    ) -> std::result::Result<Legacy, LegacyError>,
) -> std::result::Result<(Legacy, Report), LegacyError> {
    let mut report = None;
    let legacy = open(&mut |parse| {
        let kind = if parse.joblib {
            StreamKind::Joblib
        } else {
            StreamKind::Pickle
        };
        report = Some(amber_scan::scan_parsed(
            parse.pickle,
            parse.stream,
            kind,
            &amber_scan::NoArrays,
            policy,
            parse.joblib_arrays,
        ));
    })?;
    let report = match report {
        Some(mut r) => {
            scan_outside(&legacy, &mut r, policy, &limits.pickle);
            r
        }
        // The open showed no parse (it cannot succeed without one): scan afresh.
        None => scan_legacy(&legacy, policy, &limits.pickle),
    };
    Ok((legacy, report))
}

/// A policy: the default allowlist plus the exact names in `trusted`.
///
/// # Errors
/// A name that is not an exact dotted `module.qualname`.
pub fn policy(trusted: &[String]) -> Result<Policy> {
    let mut policy = Policy::default_policy();
    for name in trusted {
        policy.trust(name)?;
    }
    Ok(policy)
}

/// [`policy`], without building the default policy again for each call
/// when `trusted` is empty: that one is built once per process and shared.
///
/// # Errors
/// As [`policy`].
pub fn shared_policy(trusted: &[String]) -> Result<Cow<'static, Policy>> {
    static DEFAULT: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    if trusted.is_empty() {
        return Ok(Cow::Borrowed(DEFAULT.get_or_init(Policy::default_policy)));
    }
    policy(trusted).map(Cow::Owned)
}

/// Analyses `stream`, the pickle entry of `container` (the caller passes the
/// exact bytes it will unpickle), with the container's arrays as its
/// out-of-band buffers.
#[must_use]
pub fn scan_container<B: AsRef<[u8]> + Source + Sync>(
    container: &Container<B>,
    stream: &[u8],
    policy: &Policy,
    limits: &Limits,
) -> Report {
    scan_container_arrays(&ContainerArrays::new(container), stream, policy, limits)
}

/// [`scan_container`] with the container's arrays given (see
/// [`ContainerArrays::with_destinations`]).
#[must_use]
pub fn scan_container_arrays<B: AsRef<[u8]> + Source + Sync>(
    arrays: &ContainerArrays<'_, B>,
    stream: &[u8],
    policy: &Policy,
    limits: &Limits,
) -> Report {
    let kind = StreamKind::Amber {
        buffers: arrays.len(),
    };
    scan(stream, kind, arrays, policy, limits)
}

/// Analyses a legacy file: its (decompressed) stream, parsed the way joblib
/// reads it when it is a joblib file, and every object-array pickle kept in a
/// companion file.
#[must_use]
pub fn scan_legacy(legacy: &Legacy, policy: &Policy, limits: &Limits) -> Report {
    let mut report = scan(
        legacy.stream(),
        legacy_stream_kind(legacy),
        &LegacyArrays(legacy),
        policy,
        limits,
    );
    scan_outside(legacy, &mut report, policy, limits);
    report
}

/// Folds into `report` the analysis of every object-array pickle `legacy`
/// keeps in a companion file.
fn scan_outside(legacy: &Legacy, report: &mut Report, policy: &Policy, limits: &Limits) {
    for (k, nested) in outside_pickles(legacy) {
        let sub = scan(
            nested,
            StreamKind::Pickle,
            &amber_scan::NoArrays,
            policy,
            limits,
        );
        merge(report, sub, k);
    }
}

/// Folds the report of companion pickle `k` into `report`.
fn merge(report: &mut Report, sub: Report, k: usize) {
    report.verdict = match (report.verdict, sub.verdict) {
        (Verdict::Malformed, _) | (_, Verdict::Malformed) => Verdict::Malformed,
        (Verdict::Unsafe, _) | (_, Verdict::Unsafe) => Verdict::Unsafe,
        _ => Verdict::Safe,
    };
    for mut finding in sub.findings {
        finding.message = format!(
            "in the object array of companion file {k}: {}",
            finding.message
        );
        report.findings.push(finding);
    }
    for g in sub.globals {
        match report.globals.iter_mut().find(|o| o.name == g.name) {
            Some(o) => {
                o.count = o.count.saturating_add(g.count);
                o.allowed &= g.allowed;
            }
            None => report.globals.push(GlobalCount { ..g }),
        }
    }
    report.opcodes = report.opcodes.saturating_add(sub.opcodes);
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_default_policy_is_shared_and_a_trusted_one_is_its_own() {
        let (a, b) = (shared_policy(&[]).unwrap(), shared_policy(&[]).unwrap());
        assert!(matches!((&a, &b), (Cow::Borrowed(x), Cow::Borrowed(y)) if std::ptr::eq(*x, *y)));
        let name = "mypkg.models.MyModel".to_owned();
        let own = shared_policy(std::slice::from_ref(&name)).unwrap();
        assert!(matches!(own, Cow::Owned(_)));
        assert!(own.entry(&name, false).is_some());
        assert!(a.entry(&name, false).is_none());
        assert!(shared_policy(&["no_dot".to_owned()]).is_err());
    }
}
