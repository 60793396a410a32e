//! The allowlist: which globals a stream may use, and for what.
//!
//! This module owns [`Policy`], [`Role`] and the per-name rules the analyser
//! applies ([`Entry`], [`ArgCheck`], [`StateCheck`]). Names are exact
//! canonical names (`module.qualname` after CPython's `_compat_pickle`
//! mapping); `numpy.core.X` and `numpy._core.X` are one entry. A dotted
//! qualname is allowed only when that full name is listed: nothing walks
//! attributes.
//!
//! The default list is data, in `policy.txt` next to this file (one line per
//! name: the name, its role, options); see that file's header for how it was
//! made. [`Policy::to_json`] lists it for the Python side's second wall.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::error::ScanError;

/// The default allowlist (see its header for the format and its origin).
const DEFAULT_POLICY: &str = include_str!("policy.txt");

/// Extra names accepted only when scanning a joblib stream.
const JOBLIB_POLICY: &str = "\
joblib.numpy_pickle.NumpyArrayWrapper class new build=joblib_wrapper
sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper class new build=joblib_wrapper
joblib.numpy_pickle_compat.NDArrayWrapper class new build=joblib_legacy
joblib.numpy_pickle_compat.ZNDArrayWrapper class new build=joblib_legacy
sklearn.externals.joblib.numpy_pickle_compat.NDArrayWrapper class new build=joblib_legacy
sklearn.externals.joblib.numpy_pickle_compat.ZNDArrayWrapper class new build=joblib_legacy
sklearn.externals.joblib.numpy_pickle.NDArrayWrapper class new build=joblib_legacy
sklearn.externals.joblib.numpy_pickle.ZNDArrayWrapper class new build=joblib_legacy
joblib.numpy_pickle.NDArrayWrapper class new build=joblib_legacy
joblib.numpy_pickle.ZNDArrayWrapper class new build=joblib_legacy
";

/// What a name may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Only referenced as a value (a type or function stored in an
    /// attribute); never called by the stream.
    Reference,
    /// Called by `REDUCE` with a checked argument shape.
    Call,
    /// A class the stream instantiates (`NEWOBJ`, `copyreg._reconstructor`
    /// or, for compiled types, `REDUCE(cls, args)`) and may give a checked
    /// `BUILD` state.
    Class,
    /// Added with [`Policy::trust`]: referenced, called and instantiated
    /// with any arguments and state.
    Trusted,
}

/// How the arguments of a call (`REDUCE`) or of `NEWOBJ` are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgCheck {
    /// Anything (trusted names only).
    Any,
    /// `()`.
    Empty,
    /// A tuple of plain values: no global (type or function) directly as an
    /// argument, so the callee cannot be handed a callable to call.
    Data,
    /// `copyreg._reconstructor(cls, builtins.object, None)` with `cls` a
    /// listed class.
    Reconstructor,
    /// `numpy._core.multiarray._reconstruct(subtype, shape, dtype-code)`
    /// with `subtype` a listed array class.
    NdarrayReconstruct,
    /// `numpy.ma.core._mareconstruct(subtype, baseclass, shape, code)`.
    MaReconstruct,
    /// `numpy._core.numeric._frombuffer(buffer, dtype, shape, order)`.
    Frombuffer,
    /// `numpy._core.multiarray.scalar(dtype, payload)`.
    Scalar,
    /// `_codecs.encode(str, 'latin1')`.
    CodecsEncode,
    /// `numpy.dtype(str, bool, bool)`.
    Dtype,
    /// `numpy.random._pickle.__bit_generator_ctor(cls-or-name)` with a listed
    /// bit generator.
    BitGeneratorCtor,
    /// `__generator_ctor` / `__randomstate_ctor` with one argument (a bit
    /// generator name or object): a second, callable argument is a trampoline.
    RandomCtor,
    /// Cython's `module.__pyx_unpickle_Name(module.Name, checksum, state)`.
    PyxUnpickle,
    /// scikit-learn's `module.newObj(cls)` with a class of the same module.
    NewObj,
    /// `collections.defaultdict()` or `(factory,)` with a plain container or
    /// number type as factory.
    DefaultDict,
    /// `functools.partial(f)` with `f` one of the few functions that are
    /// safe with any arguments (`sklearn.utils.validation.check_array`).
    Partial,
}

impl ArgCheck {
    /// Whether the call makes an instance of its first argument (a class).
    pub(crate) fn makes_first_arg(self) -> bool {
        matches!(
            self,
            ArgCheck::Reconstructor
                | ArgCheck::NdarrayReconstruct
                | ArgCheck::MaReconstruct
                | ArgCheck::PyxUnpickle
                | ArgCheck::NewObj
        )
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "empty" => ArgCheck::Empty,
            "data" => ArgCheck::Data,
            "reconstructor" => ArgCheck::Reconstructor,
            "ndarray_reconstruct" => ArgCheck::NdarrayReconstruct,
            "mareconstruct" => ArgCheck::MaReconstruct,
            "frombuffer" => ArgCheck::Frombuffer,
            "scalar" => ArgCheck::Scalar,
            "codecs_encode" => ArgCheck::CodecsEncode,
            "dtype" => ArgCheck::Dtype,
            "bit_generator_ctor" => ArgCheck::BitGeneratorCtor,
            "random_ctor" => ArgCheck::RandomCtor,
            "pyx_unpickle" => ArgCheck::PyxUnpickle,
            "new_obj" => ArgCheck::NewObj,
            "defaultdict" => ArgCheck::DefaultDict,
            "partial" => ArgCheck::Partial,
            _ => return None,
        })
    }
}

/// What `BUILD` may give an object made from a listed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateCheck {
    /// Anything (trusted names only).
    Any,
    /// A dict of attributes: `str` keys, none of them dunder names; no
    /// slot-state tuple.
    Attrs,
    /// Any plain value handed to the type's own `__setstate__` (NumPy and
    /// Cython types); compiled scikit-learn types are then content-checked.
    Data,
    /// joblib's `NumpyArrayWrapper` state: its six known keys, `subclass`
    /// a listed array class.
    JoblibWrapper,
    /// joblib's legacy `NDArrayWrapper` / `ZNDArrayWrapper` state: known
    /// keys, `filename` a bare file name.
    JoblibLegacy,
    /// [`StateCheck::Attrs`], and `func` / `inverse_func` (called later on
    /// the caller's data with `kw_args` the file chose) are `None`, NumPy
    /// functions or a listed `functools.partial`.
    FunctionTransformer,
    /// `functools.partial` state `(f, args, kwargs, dict)` with `f` as for
    /// [`ArgCheck::Partial`] and plain arguments.
    Partial,
}

impl StateCheck {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "attrs" => StateCheck::Attrs,
            "data" => StateCheck::Data,
            "joblib_wrapper" => StateCheck::JoblibWrapper,
            "joblib_legacy" => StateCheck::JoblibLegacy,
            "partial" => StateCheck::Partial,
            "function_transformer" => StateCheck::FunctionTransformer,
            _ => return None,
        })
    }
}

/// The rules for one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The role.
    pub role: Role,
    /// `REDUCE(name, args)` is allowed with this check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<ArgCheck>,
    /// `NEWOBJ(name, args)` with plain-data args, and
    /// `copyreg._reconstructor(name, object, None)`, are allowed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// `BUILD` on an object made from this name is allowed with this check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<StateCheck>,
    /// `APPEND(S)` / `SETITEM(S)` / `ADDITEMS` on such an object are allowed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub items: bool,
}

impl Entry {
    fn trusted() -> Self {
        Entry {
            role: Role::Trusted,
            call: Some(ArgCheck::Any),
            new: true,
            build: Some(StateCheck::Any),
            items: true,
        }
    }
}

/// An allowlist of exact canonical names, each with its [`Entry`].
#[derive(Debug, Clone)]
pub struct Policy {
    /// Shared with every policy made from the default until one is changed.
    entries: Arc<HashMap<String, Entry>>,
    joblib: Arc<HashMap<String, Entry>>,
}

type Table = Arc<HashMap<String, Entry>>;

/// The default tables, parsed once per process (a load makes a policy).
fn default_tables() -> &'static (Table, Table) {
    static TABLES: OnceLock<(Table, Table)> = OnceLock::new();
    TABLES.get_or_init(|| {
        (
            Arc::new(parse_table(DEFAULT_POLICY)),
            Arc::new(parse_table(JOBLIB_POLICY)),
        )
    })
}

impl Default for Policy {
    fn default() -> Self {
        Self::default_policy()
    }
}

impl Policy {
    /// The default policy: every global that real scikit-learn, NumPy and
    /// SciPy pickles use, plus plain Python data types.
    #[must_use]
    pub fn default_policy() -> Self {
        let (entries, joblib) = default_tables();
        Policy {
            entries: Arc::clone(entries),
            joblib: Arc::clone(joblib),
        }
    }

    /// A policy that accepts no global at all (plain data only).
    #[must_use]
    pub fn empty() -> Self {
        Policy {
            entries: Arc::new(HashMap::new()),
            joblib: Arc::clone(&default_tables().1),
        }
    }

    /// Trust `name` (an exact dotted `module.qualname`): the stream may
    /// reference it, call it and instantiate it with any arguments, and give
    /// its objects any state.
    ///
    /// # Errors
    /// [`ScanError::BadName`] if `name` is not a dotted sequence of Python
    /// identifiers.
    pub fn trust(&mut self, name: &str) -> Result<(), ScanError> {
        validate_name(name)?;
        Arc::make_mut(&mut self.entries).insert(alias(name).into_owned(), Entry::trusted());
        Ok(())
    }

    /// Every listed name and its role (joblib-only names excluded), sorted.
    pub fn names(&self) -> impl Iterator<Item = (&str, Role)> {
        let mut names: Vec<(&str, Role)> = self
            .entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.role))
            .collect();
        names.sort_unstable_by_key(|(k, _)| *k);
        names.into_iter()
    }

    /// The rules for a canonical name, if it is listed. Joblib-only names
    /// are found only with `joblib`.
    #[must_use]
    pub fn entry(&self, name: &str, joblib: bool) -> Option<&Entry> {
        let key = alias(name);
        self.entries
            .get(key.as_ref())
            .or_else(|| joblib.then(|| self.joblib.get(key.as_ref())).flatten())
    }

    /// The policy as JSON: `{"names": {name: entry}, "joblib": {name: entry}}`
    /// with each entry's role, call check, state check and flags.
    #[must_use]
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Listing<'p> {
            names: std::collections::BTreeMap<&'p str, &'p Entry>,
            joblib: std::collections::BTreeMap<&'p str, &'p Entry>,
        }
        let listing = Listing {
            names: self.entries.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            joblib: self.joblib.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        };
        serde_json::to_string_pretty(&listing).unwrap_or_default()
    }
}

/// `numpy.core.X` (NumPy 1.x) and `numpy._core.X` (2.x) are one entry: the
/// one spelling of a name for comparisons (NumPy 2's).
#[must_use]
pub fn alias(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix("numpy.core.") {
        Some(rest) => std::borrow::Cow::Owned(format!("numpy._core.{rest}")),
        None => std::borrow::Cow::Borrowed(name),
    }
}

fn validate_name(name: &str) -> Result<(), ScanError> {
    let bad = |reason: &str| ScanError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parts = 0usize;
    for part in name.split('.') {
        let mut chars = part.chars();
        let first = chars.next().ok_or_else(|| bad("empty name segment"))?;
        if !(first == '_' || first.is_alphabetic())
            || !chars.all(|c| c == '_' || c.is_alphanumeric())
        {
            return Err(bad("each segment must be a Python identifier"));
        }
        parts += 1;
    }
    if parts < 2 {
        return Err(bad("expected `module.name`"));
    }
    Ok(())
}

/// Parse the table format of `policy.txt`. The table is compiled in and
/// covered by tests, so a line that does not parse is skipped rather than
/// failing at run time.
fn parse_table(text: &str) -> HashMap<String, Entry> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some((name, entry)) = parse_line(line) {
            out.insert(alias(name).into_owned(), entry);
        }
    }
    out
}

pub(crate) fn parse_line(line: &str) -> Option<(&str, Entry)> {
    let mut words = line.split_whitespace();
    let name = words.next()?;
    let mut entry = Entry {
        role: match words.next()? {
            "ref" => Role::Reference,
            "call" => Role::Call,
            "class" => Role::Class,
            _ => return None,
        },
        call: None,
        new: false,
        build: None,
        items: false,
    };
    if entry.role == Role::Call {
        entry.call = Some(ArgCheck::parse(words.next()?)?);
    }
    for word in words {
        match word.split_once('=') {
            None if word == "new" && entry.role == Role::Class => entry.new = true,
            None if word == "items" && entry.role != Role::Reference => entry.items = true,
            Some(("reduce", check)) if entry.role == Role::Class => {
                entry.call = Some(ArgCheck::parse(check)?);
            }
            Some(("build", state)) if entry.role != Role::Reference => {
                entry.build = Some(StateCheck::parse(state)?);
            }
            _ => return None,
        }
    }
    Some((name, entry))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn every_line_of_the_table_parses() {
        for text in [DEFAULT_POLICY, JOBLIB_POLICY] {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if !line.is_empty() {
                    let (name, _) = parse_line(line).unwrap_or_else(|| {
                        unreachable!("bad policy line: {line}");
                    });
                    validate_name(name).unwrap();
                }
            }
        }
    }

    #[test]
    fn numpy_core_spellings_are_one_entry() {
        let p = Policy::default_policy();
        assert_eq!(
            p.entry("numpy.core.multiarray._reconstruct", false),
            p.entry("numpy._core.multiarray._reconstruct", false)
        );
        assert!(
            p.entry("numpy._core.multiarray._reconstruct", false)
                .is_some()
        );
    }

    #[test]
    fn trust_validates_names() {
        let mut p = Policy::default_policy();
        assert!(p.trust("mypkg.models.MyModel").is_ok());
        assert_eq!(
            p.entry("mypkg.models.MyModel", false).map(|e| e.role),
            Some(Role::Trusted)
        );
        for bad in ["", "x", "a..b", "a.b c", "os.system;", "1a.b", ".a.b"] {
            assert!(p.trust(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn never_allowed_names_are_absent() {
        let p = Policy::default_policy();
        for name in [
            "os.system",
            "posix.system",
            "builtins.eval",
            "builtins.exec",
            "builtins.getattr",
            "builtins.__import__",
            "builtins.open",
            "subprocess.Popen",
            "operator.attrgetter",
            "copyreg.__newobj__",
            "copyreg.add_extension",
            "numpy.load",
            "numpy.lib._datasource.os.system",
            "pickle.loads",
            "joblib.load",
            "importlib.import_module",
            "builtins.map",
            "builtins.type",
        ] {
            assert!(p.entry(name, true).is_none(), "{name}");
        }
        assert!(
            p.entry("joblib.numpy_pickle.NumpyArrayWrapper", false)
                .is_none()
        );
        assert!(
            p.entry("joblib.numpy_pickle.NumpyArrayWrapper", true)
                .is_some()
        );
    }

    #[test]
    fn json_listing() {
        let json = Policy::default_policy().to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["names"]["copyreg._reconstructor"]["role"], "call");
        assert_eq!(
            v["joblib"]["joblib.numpy_pickle.NumpyArrayWrapper"]["build"],
            "joblib_wrapper"
        );
    }
}
