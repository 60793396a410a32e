//! NumPy arrays described by a pickle graph, decoded without executing anything.
//!
//! A pickled `numpy.ndarray` takes one of three forms, all read here from an
//! [`amber_pickle::Graph`]:
//!
//! - protocol 5: `numpy._core.numeric._frombuffer(buf, dtype, shape, order)`,
//!   `buf` in-band (`bytes`/`bytearray`) or an out-of-band `NEXT_BUFFER`;
//! - protocols 0–4: `numpy._core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`
//!   then `BUILD` with `(version, shape, dtype, is_fortran, rawdata)`, the raw
//!   data as `bytes`, a Python 2 `str`, or `_codecs.encode(text, 'latin1')`;
//! - joblib: a `NumpyArrayWrapper` whose raw bytes follow it in the file
//!   ([`NodeKind::InlineData`]).
//!
//! NumPy 1.x spellings (`numpy.core.*`) are accepted beside `numpy._core.*`.
//! Dtypes are `numpy.dtype(descr, False, True)` plus a `BUILD` state
//! `(3, byteorder, subarray, names, fields, elsize, alignment, flags)`,
//! structured ones included. Out-of-band and inline bytes are not in the
//! graph: the caller supplies them through [`ArrayBytes`].
//!
//! Every length and offset is checked with checked arithmetic against the
//! bytes actually present: shape × itemsize must equal the data length, a
//! field must lie inside its element. Nothing is allocated from a length the
//! file claims; a lie is an [`ArrayError`].
//!
//! ```
//! use amber_scan::ndarray::{self, NoArrays};
//!
//! // pickle.dumps(np.array([7], dtype="<i8"), protocol=5) without FRAME and MEMOIZE
//! let data = b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93(\x96\x08\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02i8\x89\x88\x87R(K\x03\x8c\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbK\x01\x85\x8c\x01CtR.";
//! let pickle = amber_pickle::parse(data)?;
//! let array = ndarray::decode(pickle.graph(), pickle.root(), &NoArrays)?;
//! assert_eq!(array.shape, [1]);
//! assert_eq!(array.values()?.i64(0), Some(7));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use amber_pickle::{Event, EventIndex, EventKind, Graph, Node, NodeId, NodeKind};

/// Where the bytes that are not in the graph come from.
pub trait ArrayBytes: Sync {
    /// The out-of-band buffer `NEXT_BUFFER` number `index` refers to.
    fn buffer(&self, index: u64) -> Option<&[u8]>;
    /// `len` bytes of the input at `offset` (joblib inline array data).
    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]>;
    /// Bytes all out-of-band buffers hold together (without reading them):
    /// with the stream's length it sizes the validators' work budget.
    fn total_len(&self) -> u64 {
        0
    }
    /// Whether the checks that read buffer `index` may be handed to
    /// [`Self::defer`] instead of reading it now: only when the caller copies
    /// the buffer later and runs them on the copy before anything gets it.
    fn deferring(&self, _index: u64) -> bool {
        false
    }
    /// Whether [`Self::deferring`] may accept any buffer: the checks that
    /// read most bytes are then left for later, so what remains is too
    /// little to share out over threads.
    fn defers(&self) -> bool {
        false
    }
    /// Bytes buffer `index` holds, without reading them (for [`Self::deferring`] buffers).
    fn buffer_len(&self, _index: u64) -> Option<u64> {
        None
    }
    /// Takes a check of buffer `index` to run on the bytes that will be loaded
    /// (called only for buffers [`Self::deferring`] accepted).
    fn defer(&self, _index: u64, _check: crate::content::Deferred) {}
    /// Where `payload`, the bytes of an in-band array (a slice of the
    /// stream being analysed), starts in that stream, when the checks that
    /// read it may be handed to [`Self::defer_in_stream`]: only when the
    /// caller hands the unpickler no byte of the stream beyond the start of
    /// an array whose deferred checks have not passed.
    fn deferring_in_stream(&self, _payload: &[u8]) -> Option<u64> {
        None
    }
    /// Takes a check of an in-band array (called only for payloads
    /// [`Self::deferring_in_stream`] placed).
    fn defer_in_stream(&self, _check: crate::content::Deferred) {}
    /// Says that whatever the stream gives buffer `index` to copies it and
    /// keeps no reference (a scikit-learn `Tree`'s node and value arrays):
    /// a load may hand a view of the bytes instead of a copy of them (called
    /// only for buffers [`Self::deferring`] accepted).
    fn lend(&self, _index: u64) {}
}

/// No out-of-band or inline bytes: every array needing them is undecodable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArrays;

impl ArrayBytes for NoArrays {
    fn buffer(&self, _index: u64) -> Option<&[u8]> {
        None
    }

    fn inline(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }
}

/// Out-of-band buffers in `NEXT_BUFFER` order, and the whole input for inline data.
#[derive(Debug, Clone, Copy, Default)]
pub struct SliceArrays<'d> {
    /// Buffer `i` is `buffers[i]`.
    pub buffers: &'d [&'d [u8]],
    /// The parsed input (joblib inline data is addressed in it).
    pub input: &'d [u8],
}

impl ArrayBytes for SliceArrays<'_> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        self.buffers.get(usize::try_from(index).ok()?).copied()
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.input.get(start..end)
    }
}

/// Why an array or dtype could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArrayError {
    /// The node is not one of the array forms.
    #[error("value at offset {offset} is not a NumPy array: {reason}")]
    NotAnArray {
        /// Offset of the node.
        offset: u64,
        /// What it is instead.
        reason: String,
    },
    /// The dtype is not a `numpy.dtype` this module can read.
    #[error("dtype at offset {offset}: {reason}")]
    DType {
        /// Offset of the dtype node.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The array's own arguments or state are malformed.
    #[error("array at offset {offset}: {reason}")]
    Malformed {
        /// Offset of the array node.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Shape × itemsize is not the number of data bytes (or overflows).
    #[error(
        "array at offset {offset}: shape {shape:?} with {itemsize}-byte elements does not match its {len} data bytes"
    )]
    Length {
        /// Offset of the array node.
        offset: u64,
        /// The claimed shape.
        shape: Vec<u64>,
        /// Bytes per element.
        itemsize: u64,
        /// Data bytes present.
        len: u64,
    },
    /// The caller did not supply the out-of-band or inline bytes.
    #[error("array at offset {offset}: {what} was not supplied")]
    MissingBytes {
        /// Offset of the array node.
        offset: u64,
        /// Which bytes.
        what: String,
    },
    /// A field cannot be read as asked.
    #[error("array at offset {offset}: field `{field}` {reason}")]
    Field {
        /// Offset of the array node.
        offset: u64,
        /// The field name (empty for the whole element).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ArrayError {
    /// A stable code for the variant.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            ArrayError::NotAnArray { .. } => "ndarray.not_an_array",
            ArrayError::DType { .. } => "ndarray.dtype",
            ArrayError::Malformed { .. } => "ndarray.malformed",
            ArrayError::Length { .. } => "ndarray.length",
            ArrayError::MissingBytes { .. } => "ndarray.missing_bytes",
            ArrayError::Field { .. } => "ndarray.field",
        }
    }

    /// Offset of the node the error is about.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        match self {
            ArrayError::NotAnArray { offset, .. }
            | ArrayError::DType { offset, .. }
            | ArrayError::Malformed { offset, .. }
            | ArrayError::Length { offset, .. }
            | ArrayError::MissingBytes { offset, .. }
            | ArrayError::Field { offset, .. } => *offset,
        }
    }
}

type Result<T> = std::result::Result<T, ArrayError>;

/// Byte order of a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// `<`.
    Little,
    /// `>`.
    Big,
    /// `|`: single bytes, structured or flexible types.
    NotApplicable,
}

/// `numpy.dtype.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `b`.
    Bool,
    /// `i`.
    Int,
    /// `u`.
    UInt,
    /// `f`.
    Float,
    /// `c`.
    Complex,
    /// `S`.
    Bytes,
    /// `U`.
    Str,
    /// `V`: raw or structured.
    Void,
    /// `O`: Python objects (never raw data).
    Object,
    /// `M`.
    DateTime,
    /// `m`.
    TimeDelta,
}

/// A decoded `numpy.dtype`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DType {
    /// The kind.
    pub kind: Kind,
    /// Bytes per element.
    pub itemsize: u64,
    /// Byte order of the element (for structured dtypes, see each field).
    pub byte_order: ByteOrder,
    /// Fields in `names` order, for a structured dtype.
    pub fields: Vec<Field>,
    /// `(base, shape)` for a subarray dtype.
    pub subarray: Option<(Box<DType>, Vec<u64>)>,
}

impl DType {
    /// The field with this name.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether any part of it holds Python objects.
    #[must_use]
    pub fn has_object(&self) -> bool {
        self.kind == Kind::Object
            || self.fields.iter().any(|f| f.dtype.has_object())
            || self.subarray.as_ref().is_some_and(|(b, _)| b.has_object())
    }
}

/// One field of a structured dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Byte offset inside the element.
    pub offset: u64,
    /// Its dtype.
    pub dtype: DType,
}

/// Memory order of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Row-major.
    C,
    /// Column-major.
    F,
}

/// An array decoded from the graph: dtype, shape, order and its raw bytes.
#[derive(Debug, Clone)]
pub struct NdArray<'g> {
    /// The dtype (shared: arrays made with one dtype object share its decoding).
    pub dtype: Arc<DType>,
    /// The shape.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Offset of the node that made the array.
    pub offset: u64,
    data: Cow<'g, [u8]>,
    len: usize,
}

impl NdArray<'_> {
    /// Number of elements (shape product; checked when decoded).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes were converted from text (`_codecs.encode`), not borrowed.
    #[must_use]
    pub fn is_converted(&self) -> bool {
        matches!(self.data, Cow::Owned(_))
    }

    /// The raw bytes (`len() * itemsize` of them).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// A reader of one field of every element of a structured array.
    ///
    /// # Errors
    /// [`ArrayError::Field`] if there is no such field or it is not a scalar number.
    pub fn field(&self, name: &str) -> Result<Column<'_>> {
        let fail = |reason: &str| ArrayError::Field {
            offset: self.offset,
            field: name.to_owned(),
            reason: reason.to_owned(),
        };
        let field = self
            .dtype
            .field(name)
            .ok_or_else(|| fail("does not exist"))?;
        let scalar = Scalar::of(&field.dtype).ok_or_else(|| fail("is not a scalar number"))?;
        self.column(field.offset, scalar)
            .ok_or_else(|| fail("lies outside the element"))
    }

    /// A reader of every element of a plain numeric array.
    ///
    /// # Errors
    /// [`ArrayError::Field`] if the dtype is not a scalar number.
    pub fn values(&self) -> Result<Column<'_>> {
        let fail = |reason: &str| ArrayError::Field {
            offset: self.offset,
            field: String::new(),
            reason: reason.to_owned(),
        };
        let scalar = Scalar::of(&self.dtype).ok_or_else(|| fail("is not a scalar number"))?;
        self.column(0, scalar)
            .ok_or_else(|| fail("lies outside the element"))
    }

    fn column(&self, offset: u64, scalar: Scalar) -> Option<Column<'_>> {
        let stride = usize::try_from(self.dtype.itemsize).ok()?;
        let offset = usize::try_from(offset).ok()?;
        if offset.checked_add(scalar.size)? > stride {
            return None;
        }
        Some(Column {
            data: &self.data,
            stride,
            offset,
            scalar,
            len: self.len,
        })
    }
}

/// How a scalar number is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scalar {
    size: usize,
    float: bool,
    signed: bool,
    big: bool,
}

impl Scalar {
    fn of(dtype: &DType) -> Option<Scalar> {
        if !dtype.fields.is_empty() || dtype.subarray.is_some() {
            return None;
        }
        let size = usize::try_from(dtype.itemsize).ok()?;
        let (float, signed) = match dtype.kind {
            Kind::Int => (false, true),
            Kind::UInt | Kind::Bool => (false, false),
            Kind::Float => (true, true),
            _ => return None,
        };
        let ok = if float {
            matches!(size, 4 | 8)
        } else {
            matches!(size, 1 | 2 | 4 | 8)
        };
        ok.then_some(Scalar {
            size,
            float,
            signed,
            big: dtype.byte_order == ByteOrder::Big,
        })
    }
}

/// One field (or the whole element) of every element of an array.
#[derive(Debug, Clone, Copy)]
pub struct Column<'d> {
    data: &'d [u8],
    stride: usize,
    offset: usize,
    scalar: Scalar,
    len: usize,
}

impl Column<'_> {
    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the values are floats (else integers or bools).
    #[must_use]
    pub fn is_float(&self) -> bool {
        self.scalar.float
    }

    /// The bytes of element `i`.
    #[inline(always)]
    fn bytes(&self, i: usize) -> Option<&[u8]> {
        let start = i.checked_mul(self.stride)?.checked_add(self.offset)?;
        self.data.get(start..start.checked_add(self.scalar.size)?)
    }

    fn raw(&self, bytes: &[u8]) -> Option<[u8; 8]> {
        let mut out = [0u8; 8];
        if self.scalar.big {
            for (o, b) in out.iter_mut().zip(bytes.iter().rev()) {
                *o = *b;
            }
        } else {
            out.get_mut(..bytes.len())?.copy_from_slice(bytes);
        }
        Some(out)
    }

    /// Element `i` as an integer (floats truncate toward zero and saturate;
    /// unsigned values above `i64::MAX` saturate), `None` past the end.
    #[must_use]
    #[inline(always)]
    pub fn i64(&self, i: usize) -> Option<i64> {
        self.int_of(self.bytes(i)?)
    }

    /// The elements' bytes in order, one slice each: what
    /// [`Column::i64_in`] reads this column's field (or that of another
    /// column of the same array) from, without a multiplication per element.
    pub(crate) fn elements(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks_exact(self.stride.max(1)).take(self.len)
    }

    /// This column's value in one of [`Column::elements`], as [`Column::i64`].
    #[inline(always)]
    pub(crate) fn i64_in(&self, element: &[u8]) -> Option<i64> {
        self.int_of(element.get(self.offset..self.offset.checked_add(self.scalar.size)?)?)
    }

    /// [`Column::i64_in`] for a column for which [`Column::is_le_i64`]
    /// holds (for any other it misreads).
    #[inline(always)]
    pub(crate) fn le_i64_in(&self, element: &[u8]) -> Option<i64> {
        let bytes = element.get(self.offset..self.offset.checked_add(8)?)?;
        Some(i64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A column of little-endian `i64` fields, for tests of the walks.
    #[cfg(test)]
    pub(crate) fn le_i64_for_tests(data: &[u8], stride: usize, offset: usize) -> Column<'_> {
        Column {
            data,
            stride,
            offset,
            scalar: Scalar {
                size: 8,
                float: false,
                signed: true,
                big: false,
            },
            len: data.len() / stride,
        }
    }

    /// Whether the elements are little-endian 8-byte signed integers
    /// (`<i8`, NumPy's `intp`): the layout of scikit-learn's index arrays,
    /// which [`Column::le_i64_in`] reads without dispatching on the type.
    #[must_use]
    pub(crate) fn is_le_i64(&self) -> bool {
        let s = self.scalar;
        s.size == 8 && s.signed && !s.float && !s.big
    }

    /// Whether the elements are little-endian `u32` (`<u4`): the child and
    /// bitset indices of HistGradientBoosting's predictor nodes.
    #[must_use]
    pub(crate) fn is_le_u32(&self) -> bool {
        let s = self.scalar;
        s.size == 4 && !s.signed && !s.float && !s.big
    }

    /// Whether the elements are single bytes holding integers (`u1`, `i1`, `?`).
    #[must_use]
    pub(crate) fn is_byte(&self) -> bool {
        self.scalar.size == 1 && !self.scalar.float
    }

    /// [`Column::i64_in`] for a column for which [`Column::is_le_u32`] holds.
    #[inline(always)]
    pub(crate) fn le_u32_in(&self, element: &[u8]) -> Option<i64> {
        let bytes = element.get(self.offset..self.offset.checked_add(4)?)?;
        Some(i64::from(u32::from_le_bytes(bytes.try_into().ok()?)))
    }

    /// Whether the byte of a column for which [`Column::is_byte`] holds is
    /// non-zero (what a flag's value is compared with).
    #[inline(always)]
    pub(crate) fn flag_in(&self, element: &[u8]) -> Option<bool> {
        element.get(self.offset).map(|&b| b != 0)
    }

    /// One element's value from its `scalar.size` bytes.
    #[inline(always)]
    fn int_of(&self, bytes: &[u8]) -> Option<i64> {
        let s = self.scalar;
        // The layouts of real index arrays, read directly.
        if !s.float && !s.big {
            match (s.size, s.signed) {
                (8, true) => return Some(i64::from_le_bytes(bytes.try_into().ok()?)),
                (4, true) => return Some(i64::from(i32::from_le_bytes(bytes.try_into().ok()?))),
                (4, false) => return Some(i64::from(u32::from_le_bytes(bytes.try_into().ok()?))),
                (1, _) => {
                    let b = *bytes.first()?;
                    return Some(if s.signed {
                        i64::from(i8::from_le_bytes([b]))
                    } else {
                        i64::from(b)
                    });
                }
                _ => {}
            }
        }
        self.int_of_any(bytes)
    }

    #[inline(never)]
    fn int_of_any(&self, bytes: &[u8]) -> Option<i64> {
        let s = self.scalar;
        if s.float {
            return self.float_of(bytes).map(|v| v as i64);
        }
        let unsigned = u64::from_le_bytes(self.raw(bytes)?);
        if !s.signed {
            return Some(i64::try_from(unsigned).unwrap_or(i64::MAX));
        }
        let bits = u32::try_from(s.size * 8).ok()?;
        let shift = 64u32.checked_sub(bits)?;
        // Sign-extend from `bits`.
        Some(((unsigned << shift) as i64) >> shift)
    }

    /// Element `i` as a float, `None` past the end.
    #[must_use]
    pub fn f64(&self, i: usize) -> Option<f64> {
        self.float_of(self.bytes(i)?)
    }

    fn float_of(&self, bytes: &[u8]) -> Option<f64> {
        if !self.scalar.float {
            return self.int_of(bytes).map(|v| v as f64);
        }
        let raw = self.raw(bytes)?;
        Some(match self.scalar.size {
            4 => {
                let [a, b, c, d, ..] = raw;
                f64::from(f32::from_le_bytes([a, b, c, d]))
            }
            _ => f64::from_le_bytes(raw),
        })
    }
}

/// numpy's `NPY_MAXDIMS`.
const MAX_DIMS: usize = 64;
/// Nesting of structured dtypes inside structured dtypes.
const MAX_DTYPE_DEPTH: u32 = 8;
/// Fields of one structured dtype.
const MAX_FIELDS: usize = 4096;
/// Dtypes reached while decoding one dtype, by default.
const MAX_DTYPES: u32 = 16_384;
/// Events scanned after a node to find its `BUILD`: in a real pickle the
/// `BUILD` follows its object after only the builds of nested dtypes.
pub(crate) const MAX_BUILD_SCAN: usize = 4096;

const OBJECT_ARRAY: &str = "an object array holds Python objects, not raw data";

const FROMBUFFER: &[&str] = &[
    "numpy._core.numeric._frombuffer",
    "numpy.core.numeric._frombuffer",
];
const RECONSTRUCT: &[&str] = &[
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
];
const JOBLIB_WRAPPERS: &[&str] = &[
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
];

/// The canonical dotted name if `id` is a global.
pub(crate) fn global_name(graph: &Graph<'_>, id: NodeId) -> Option<String> {
    graph.get(id).and_then(Node::as_global).map(|g| g.dotted())
}

/// Whether `id` is a global whose canonical dotted name is one of `names`
/// ([`global_name`] without building the name).
pub(crate) fn global_is(graph: &Graph<'_>, id: NodeId, names: &[&str]) -> bool {
    graph.get(id).and_then(Node::as_global).is_some_and(|g| {
        let (module, name) = g.canonical();
        names.iter().any(|dotted| {
            dotted
                .strip_prefix(module)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(name)
        })
    })
}

fn offset_of(graph: &Graph<'_>, id: NodeId) -> u64 {
    graph.get(id).map_or(0, Node::offset)
}

/// How the first `BUILD` of an object is found, and which `BUILD`s count.
///
/// [`Builds::scan`] (the default) looks at the events that follow the
/// object, at most a fixed number of them: no set-up, and enough for every
/// real pickle, where an object's `BUILD` follows it after only the builds
/// of its own nested dtypes. [`Builds::indexed`] looks the object up in a
/// [`Graph::event_index`] built once per graph: exact and O(1) per object,
/// for callers that validate many objects. [`Builds::before`] makes a
/// `BUILD` at or after an offset not count (it has not run yet when the
/// opcode at that offset runs).
#[derive(Debug, Clone, Copy)]
pub struct Builds<'i> {
    index: Option<&'i EventIndex>,
    before: u64,
    budget: Option<&'i Cell<usize>>,
    max_dtypes: u32,
    cache: Option<&'i DTypeCache>,
    /// While a dtype is decoded for the cache: the `before` offsets for
    /// which every `BUILD` looked up counts (or not) as it did.
    seen: Option<&'i Cell<(u64, u64)>>,
}

/// Dtypes already decoded, by node, for the checks of one graph: a model
/// shares one dtype object among all its arrays of a kind (the memo), so
/// each is decoded once. An entry is reused only where it reads the same:
/// with an index, for a `before` offset on the same side of every `BUILD`
/// it looked up, within the same count of dtypes.
#[derive(Debug, Default)]
pub(crate) struct DTypeCache {
    map: RefCell<HashMap<NodeId, CachedDType>>,
}

#[derive(Debug)]
struct CachedDType {
    dtype: Arc<DType>,
    /// Dtypes it is made of, as counted against [`Builds::max_dtypes`].
    dtypes: u32,
    /// Lowest and highest `before` for which it reads the same.
    valid: (u64, u64),
}

impl Default for Builds<'_> {
    fn default() -> Self {
        Builds::scan()
    }
}

impl<'i> Builds<'i> {
    /// Scan the events after each object (bounded).
    #[must_use]
    pub const fn scan() -> Self {
        Builds {
            index: None,
            before: u64::MAX,
            budget: None,
            max_dtypes: MAX_DTYPES,
            cache: None,
            seen: None,
        }
    }

    /// Look `BUILD`s up in `index`, made by [`Graph::event_index`] of the same graph.
    #[must_use]
    pub const fn indexed(index: &'i EventIndex) -> Self {
        Builds {
            index: Some(index),
            ..Builds::scan()
        }
    }

    /// Count only `BUILD`s at offsets below `offset`.
    #[must_use]
    pub const fn before(self, offset: u64) -> Self {
        Builds {
            before: offset,
            ..self
        }
    }

    /// When scanning, take the events looked at from `budget`, shared by
    /// every lookup made with these settings; none are found once it is spent.
    #[must_use]
    pub const fn scan_budget(self, budget: &'i Cell<usize>) -> Self {
        Builds {
            budget: Some(budget),
            ..self
        }
    }

    /// Refuse a dtype made of more than `n` dtypes (fields and subarrays,
    /// counted each time they are reached: shared parts count again).
    #[must_use]
    pub const fn max_dtypes(self, n: u32) -> Self {
        Builds {
            max_dtypes: n,
            ..self
        }
    }

    /// Reuse the dtypes decoded in `cache` (indexed lookups only).
    #[must_use]
    pub(crate) const fn cached(self, cache: &'i DTypeCache) -> Self {
        Builds {
            cache: Some(cache),
            ..self
        }
    }

    /// Record in `seen` the lowest and highest `before` offsets for which
    /// every `BUILD` looked up with these settings counts (or not) as it does
    /// now: a decode made with them reads the same for any `before` in that
    /// range (start `seen` at `(0, u64::MAX)`).
    pub(crate) const fn tracking(self, seen: &'i Cell<(u64, u64)>) -> Self {
        Builds {
            seen: Some(seen),
            ..self
        }
    }

    /// Whether a decode [`Self::tracking`] found valid for `valid` reads
    /// the same with these settings.
    pub(crate) fn reads_as(&self, valid: (u64, u64)) -> bool {
        (valid.0..=valid.1).contains(&self.before)
    }

    /// Narrows the range [`Self::tracking`] records to `valid`.
    fn narrow(&self, valid: (u64, u64)) {
        if let Some(seen) = self.seen {
            let (low, high) = seen.get();
            seen.set((low.max(valid.0), high.min(valid.1)));
        }
    }

    pub(crate) const fn index(&self) -> Option<&'i EventIndex> {
        self.index
    }

    /// The first `BUILD` on `id`: its offset and state.
    pub(crate) fn first(&self, graph: &Graph<'_>, id: NodeId) -> Option<(u64, NodeId)> {
        let events = graph.events();
        let build = |e: &Event| match e.kind {
            EventKind::Build { state } if e.target == id => Some((e.offset, state)),
            _ => None,
        };
        if let Some(index) = self.index {
            return index
                .of(id)
                .iter()
                .find_map(|&i| events.get(usize::try_from(i).ok()?).and_then(build));
        }
        let at = graph.get(id)?.offset();
        let first = events.partition_point(|e| e.offset <= at);
        let limit = MAX_BUILD_SCAN.min(self.budget.map_or(usize::MAX, Cell::get));
        let mut scanned = 0usize;
        let found = events.get(first..)?.iter().take(limit).find_map(|e| {
            scanned += 1;
            build(e)
        });
        if let Some(budget) = self.budget {
            budget.set(budget.get().saturating_sub(scanned));
        }
        found
    }

    /// The state of the first `BUILD` on `id`, if it counts.
    pub(crate) fn state(&self, graph: &Graph<'_>, id: NodeId) -> Option<NodeId> {
        let first = self.first(graph, id);
        if let (Some(seen), Some((at, _))) = (self.seen, first) {
            let (low, high) = seen.get();
            seen.set(if at < self.before {
                (low.max(at.saturating_add(1)), high)
            } else {
                (low, high.min(at))
            });
        }
        first
            .filter(|&(at, _)| at < self.before)
            .map(|(_, state)| state)
    }
}

fn tuple<'g>(graph: &'g Graph<'_>, id: NodeId) -> Option<&'g [NodeId]> {
    graph.get(id).and_then(Node::as_tuple)
}

fn int(graph: &Graph<'_>, id: NodeId) -> Option<i64> {
    graph.get(id).and_then(Node::as_i64)
}

fn is_none(graph: &Graph<'_>, id: NodeId) -> bool {
    matches!(graph.kind(id), Some(NodeKind::None))
}

/// Decode the array made by node `id`, with every `BUILD` in the stream
/// ([`Builds::scan`]).
///
/// # Errors
/// Any [`ArrayError`]: not an array form, an unreadable dtype, malformed
/// arguments, missing bytes, or a shape that does not match the bytes.
pub fn decode<'g>(
    graph: &'g Graph<'_>,
    id: NodeId,
    arrays: &'g dyn ArrayBytes,
) -> Result<NdArray<'g>> {
    decode_with(graph, id, arrays, Builds::scan())
}

/// Decode the array made by node `id`, finding `BUILD`s as `builds` says:
/// with [`Builds::before`], as the array is when that opcode runs (an
/// array or dtype built only later is an error or unbuilt).
///
/// Each object's *first* `BUILD` is read; a stream that builds one object
/// twice must be refused by the caller.
///
/// # Errors
/// As [`decode`].
pub fn decode_with<'g>(
    graph: &'g Graph<'_>,
    id: NodeId,
    arrays: &'g dyn ArrayBytes,
    builds: Builds<'_>,
) -> Result<NdArray<'g>> {
    let offset = offset_of(graph, id);
    let not_array = |reason: String| ArrayError::NotAnArray { offset, reason };
    let node = graph
        .get(id)
        .ok_or_else(|| not_array("no such node".to_owned()))?;
    let (dtype, shape, order, data) = match node.kind() {
        NodeKind::Reduce { callable, args } => {
            if global_is(graph, callable, FROMBUFFER) {
                from_buffer(graph, args, arrays, offset, builds)?
            } else if global_is(graph, callable, RECONSTRUCT) {
                reconstruct(graph, id, args, offset, builds)?
            } else {
                let name = global_name(graph, callable).ok_or_else(|| {
                    not_array("a call of something that is not a global".to_owned())
                })?;
                return Err(not_array(format!("a call of `{name}`")));
            }
        }
        NodeKind::InlineData {
            wrapper,
            offset: at,
            len,
        } => {
            let (dtype, shape, order) = joblib_wrapper(graph, wrapper, offset, builds)?;
            let data = arrays
                .inline(at, len)
                .ok_or_else(|| ArrayError::MissingBytes {
                    offset,
                    what: format!("inline data of {len} bytes at {at}"),
                })?;
            (dtype, shape, order, Cow::Borrowed(data))
        }
        other => return Err(not_array(format!("a {}", other.name()))),
    };
    let data_len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    let len = element_count(&dtype, &shape, data_len, offset)?;
    Ok(NdArray {
        dtype,
        shape,
        order,
        offset,
        data,
        len,
    })
}

type Parts<'g> = (Arc<DType>, Vec<u64>, Order, Cow<'g, [u8]>);

/// Where the bytes of a `_frombuffer` array are.
enum Bytes<'g> {
    /// In the stream (`bytes`/`bytearray`).
    In(&'g [u8]),
    /// Out-of-band buffer `NEXT_BUFFER` number.
    Buffer(u64),
}

/// The bytes `buf` (`_frombuffer`'s first argument) stands for.
fn buffer_of<'g>(graph: &'g Graph<'_>, buf: NodeId) -> Option<Bytes<'g>> {
    let mut buf = buf;
    if let Some(NodeKind::ReadOnly { inner }) = graph.kind(buf) {
        buf = inner;
    }
    match graph.kind(buf)? {
        NodeKind::Bytes(b) | NodeKind::ByteArray(b) => Some(Bytes::In(b)),
        NodeKind::Buffer { index } => Some(Bytes::Buffer(index)),
        _ => None,
    }
}

/// The element count of an array of `shape` whose bytes are `data_len`
/// long, refusing object and zero-size elements and any mismatch.
fn element_count(dtype: &DType, shape: &[u64], data_len: u64, offset: u64) -> Result<usize> {
    let malformed = |reason: &str| ArrayError::Malformed {
        offset,
        reason: reason.to_owned(),
    };
    if dtype.has_object() {
        return Err(malformed(OBJECT_ARRAY));
    }
    // Zero-size elements would let any element count match zero bytes.
    if dtype.itemsize == 0 {
        return Err(malformed("its elements have no bytes"));
    }
    let length_error = || ArrayError::Length {
        offset,
        shape: shape.to_vec(),
        itemsize: dtype.itemsize,
        len: data_len,
    };
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(length_error)?;
    let nbytes = count.checked_mul(dtype.itemsize).ok_or_else(length_error)?;
    if nbytes != data_len {
        return Err(length_error());
    }
    usize::try_from(count).map_err(|_| length_error())
}

/// Where the bytes of a [`Later`] array lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In out-of-band buffer `NEXT_BUFFER` number `.0`.
    Buffer(u64),
    /// In the pickle stream, from byte `start` on (an in-band array).
    Stream {
        /// Where the payload starts in the stream.
        start: u64,
        /// Its length.
        len: u64,
    },
}

/// An array whose checks are deferred: everything [`decode_with`] knows of
/// it but its bytes, which the load copies later (an out-of-band buffer)
/// or hands the unpickler later (an in-band array).
#[derive(Debug, Clone)]
pub struct Later {
    /// The dtype.
    pub dtype: Arc<DType>,
    /// The shape.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Offset of the node that made the array.
    pub offset: u64,
    /// Where its bytes lie.
    pub place: Place,
    len: usize,
    data_len: u64,
}

impl Later {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The array over `data`, the buffer's bytes as they are loaded.
    ///
    /// # Errors
    /// [`ArrayError::Length`] if `data` is not as long as the buffer was.
    pub fn with_bytes<'d>(&self, data: &'d [u8]) -> Result<NdArray<'d>> {
        let data_len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if data_len != self.data_len {
            return Err(ArrayError::Length {
                offset: self.offset,
                shape: self.shape.clone(),
                itemsize: self.dtype.itemsize,
                len: data_len,
            });
        }
        Ok(NdArray {
            dtype: Arc::clone(&self.dtype),
            shape: self.shape.clone(),
            order: self.order,
            offset: self.offset,
            data: Cow::Borrowed(data),
            len: self.len,
        })
    }
}

/// The array node `id` makes as a [`Later`], when it is `_frombuffer` of an
/// out-of-band buffer or in-band bytes whose checks `arrays` defers
/// ([`ArrayBytes::deferring`], [`ArrayBytes::deferring_in_stream`]); `Ok(None)` for any other
/// array (decode it with [`decode_with`]). Validates what [`decode_with`]
/// would, but the bytes.
///
/// # Errors
/// As [`decode_with`].
pub fn decode_later(
    graph: &Graph<'_>,
    id: NodeId,
    arrays: &dyn ArrayBytes,
    builds: Builds<'_>,
) -> Result<Option<Later>> {
    let offset = offset_of(graph, id);
    let Some(NodeKind::Reduce { callable, args }) = graph.kind(id) else {
        return Ok(None);
    };
    if !global_is(graph, callable, FROMBUFFER) {
        return Ok(None);
    }
    let Some([buf, dtype, shape, order]) =
        tuple(graph, args).and_then(|t| <[NodeId; 4]>::try_from(t).ok())
    else {
        return Ok(None);
    };
    let (place, data_len) = match buffer_of(graph, buf) {
        Some(Bytes::Buffer(index)) if arrays.deferring(index) => {
            let Some(data_len) = arrays.buffer_len(index) else {
                return Ok(None);
            };
            (Place::Buffer(index), data_len)
        }
        Some(Bytes::In(payload)) => {
            let Some(start) = arrays.deferring_in_stream(payload) else {
                return Ok(None);
            };
            let len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
            (Place::Stream { start, len }, len)
        }
        _ => return Ok(None),
    };
    let (Some(shape), Some(order)) = (read_shape(graph, shape), order_of(graph, order)) else {
        return Ok(None);
    };
    let dtype = array_dtype(graph, dtype, builds)?;
    let len = element_count(&dtype, &shape, data_len, offset)?;
    Ok(Some(Later {
        dtype,
        shape,
        order,
        offset,
        place,
        len,
        data_len,
    }))
}

fn order_of(graph: &Graph<'_>, order: NodeId) -> Option<Order> {
    match text_of(graph, order) {
        Some("C") => Some(Order::C),
        Some("F") => Some(Order::F),
        _ => None,
    }
}

/// The items of an object array (`dtype=object`) made by node `id`, its
/// `BUILD` found as `builds` says: `_reconstruct` whose `BUILD` state holds a list,
/// or a joblib wrapper followed by a nested pickle of such an array.
///
/// # Errors
/// [`ArrayError::NotAnArray`] or [`ArrayError::Malformed`] for anything else.
pub fn object_items<'g>(
    graph: &'g Graph<'_>,
    id: NodeId,
    builds: Builds<'_>,
) -> Result<&'g [NodeId]> {
    let offset = offset_of(graph, id);
    let malformed = |reason: &str| ArrayError::Malformed {
        offset,
        reason: reason.to_owned(),
    };
    let mut id = id;
    if let Some(NodeKind::NestedPickle { root, .. }) = graph.kind(id) {
        id = root;
    }
    let Some(NodeKind::Reduce { callable, args }) = graph.kind(id) else {
        return Err(ArrayError::NotAnArray {
            offset,
            reason: "not `_reconstruct(...)`".to_owned(),
        });
    };
    let name = global_name(graph, callable).unwrap_or_default();
    let cls = tuple(graph, args).and_then(|t| t.first().copied());
    if !RECONSTRUCT.contains(&name.as_str())
        || cls.and_then(|c| global_name(graph, c)).as_deref() != Some("numpy.ndarray")
    {
        return Err(ArrayError::NotAnArray {
            offset,
            reason: format!("a call of `{name}`"),
        });
    }
    let state = builds
        .state(graph, id)
        .ok_or_else(|| malformed("the array is not built before it is used"))?;
    let raw = tuple(graph, state)
        .and_then(|t| t.last().copied())
        .ok_or_else(|| malformed("state is not a tuple"))?;
    match graph.kind(raw) {
        Some(NodeKind::List(items)) => Ok(items),
        _ => Err(malformed("an object array's state holds no list")),
    }
}

/// `_frombuffer(buf, dtype, shape, order)`.
fn from_buffer<'g>(
    graph: &'g Graph<'_>,
    args: NodeId,
    arrays: &'g dyn ArrayBytes,
    offset: u64,
    builds: Builds<'_>,
) -> Result<Parts<'g>> {
    let malformed = |reason: &str| ArrayError::Malformed {
        offset,
        reason: format!("`_frombuffer` {reason}"),
    };
    let [buf, dtype, shape, order] = tuple(graph, args)
        .and_then(|t| <[NodeId; 4]>::try_from(t).ok())
        .ok_or_else(|| malformed("takes (buffer, dtype, shape, order)"))?;
    let data: &'g [u8] = match buffer_of(graph, buf) {
        Some(Bytes::In(b)) => b,
        Some(Bytes::Buffer(index)) => {
            arrays
                .buffer(index)
                .ok_or_else(|| ArrayError::MissingBytes {
                    offset,
                    what: format!("out-of-band buffer {index}"),
                })?
        }
        None => return Err(malformed("buffer is not bytes, a bytearray or a buffer")),
    };
    let dtype = array_dtype(graph, dtype, builds)?;
    let shape =
        read_shape(graph, shape).ok_or_else(|| malformed("shape is not a tuple of sizes"))?;
    let order = order_of(graph, order).ok_or_else(|| malformed("order is not 'C' or 'F'"))?;
    Ok((dtype, shape, order, Cow::Borrowed(data)))
}

/// `_reconstruct(numpy.ndarray, (0,), b'b')` plus its `BUILD` state.
fn reconstruct<'g>(
    graph: &'g Graph<'_>,
    id: NodeId,
    args: NodeId,
    offset: u64,
    builds: Builds<'_>,
) -> Result<Parts<'g>> {
    let malformed = |reason: &str| ArrayError::Malformed {
        offset,
        reason: reason.to_owned(),
    };
    let cls = tuple(graph, args)
        .and_then(|t| t.first().copied())
        .ok_or_else(|| malformed("`_reconstruct` has no class argument"))?;
    if !global_is(graph, cls, &["numpy.ndarray"]) {
        return Err(malformed("`_reconstruct` does not make a `numpy.ndarray`"));
    }
    let state = builds
        .state(graph, id)
        .ok_or_else(|| malformed("the array is not built before it is used"))?;
    let items = tuple(graph, state).ok_or_else(|| malformed("state is not a tuple"))?;
    let items = match items {
        [version, rest @ ..] if rest.len() == 4 => {
            if int(graph, *version) != Some(1) {
                return Err(malformed("state version is not 1"));
            }
            rest
        }
        rest if rest.len() == 4 => rest,
        _ => {
            return Err(malformed(
                "state is not (version, shape, dtype, is_fortran, data)",
            ));
        }
    };
    let [shape, dtype, fortran, raw] = <[NodeId; 4]>::try_from(items)
        .map_err(|_| malformed("state is not (version, shape, dtype, is_fortran, data)"))?;
    let shape =
        read_shape(graph, shape).ok_or_else(|| malformed("shape is not a tuple of sizes"))?;
    let dtype = array_dtype(graph, dtype, builds)?;
    if dtype.has_object() {
        return Err(malformed(OBJECT_ARRAY));
    }
    let order = match graph.get(fortran).and_then(Node::as_i64) {
        Some(0) => Order::C,
        Some(1) => Order::F,
        _ => return Err(malformed("is_fortran is not a bool")),
    };
    let data = raw_data(graph, raw).ok_or_else(|| malformed("raw data is not bytes"))?;
    Ok((dtype, shape, order, data))
}

/// `bytes`, a Python 2 `str`, or `_codecs.encode(text, 'latin1')`.
fn raw_data<'g>(graph: &'g Graph<'_>, id: NodeId) -> Option<Cow<'g, [u8]>> {
    match graph.kind(id)? {
        NodeKind::Bytes(b) | NodeKind::LegacyStr(b) | NodeKind::ByteArray(b) => {
            Some(Cow::Borrowed(b))
        }
        NodeKind::Reduce { callable, args } => {
            let name = global_name(graph, callable)?;
            let args = tuple(graph, args)?;
            // Protocols 0–2 write `b''` as `bytes()`.
            if name == "builtins.bytes" && args.is_empty() {
                return Some(Cow::Borrowed(&[]));
            }
            if name != "_codecs.encode" {
                return None;
            }
            let [text, encoding] = <[NodeId; 2]>::try_from(args).ok()?;
            let encoding = text_of(graph, encoding)?;
            if !matches!(encoding, "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1") {
                return None;
            }
            latin1(graph.get(text)?.as_str()?).map(Cow::Owned)
        }
        _ => None,
    }
}

/// A `str`, or a Python 2 `str` that is ASCII (as it reads under any encoding).
pub(crate) fn text_of<'g>(graph: &'g Graph<'_>, id: NodeId) -> Option<&'g str> {
    match graph.kind(id)? {
        NodeKind::Str(s) => Some(s),
        NodeKind::LegacyStr(b) if b.is_ascii() => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// joblib's wrapper state: `shape`, `dtype`, `order`.
fn joblib_wrapper(
    graph: &Graph<'_>,
    wrapper: NodeId,
    offset: u64,
    builds: Builds<'_>,
) -> Result<(Arc<DType>, Vec<u64>, Order)> {
    let malformed = |reason: &str| ArrayError::Malformed {
        offset,
        reason: format!("joblib array wrapper {reason}"),
    };
    let class = match graph.kind(wrapper) {
        Some(NodeKind::NewObj { cls, .. }) => Some(cls),
        Some(NodeKind::Reduce { args, .. }) => tuple(graph, args).and_then(|t| t.first().copied()),
        _ => None,
    };
    if !class.is_some_and(|c| global_is(graph, c, JOBLIB_WRAPPERS)) {
        return Err(malformed("is not a `NumpyArrayWrapper`"));
    }
    let state = builds
        .state(graph, wrapper)
        .ok_or_else(|| malformed("is not built before it is used"))?;
    let Some(NodeKind::Dict(pairs)) = graph.kind(state) else {
        return Err(malformed("state is not a dict"));
    };
    // Keys compared as bytes: a `str` is not decoded again for each.
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| {
                graph
                    .str_bytes(*k)
                    .or_else(|| text_of(graph, *k).map(str::as_bytes))
                    == Some(key.as_bytes())
            })
            .map(|&(_, v)| v)
    };
    let shape = get("shape")
        .and_then(|s| read_shape(graph, s))
        .ok_or_else(|| malformed("has no shape"))?;
    let dtype = array_dtype(
        graph,
        get("dtype").ok_or_else(|| malformed("has no dtype"))?,
        builds,
    )?;
    let order = match get("order").and_then(|o| text_of(graph, o)) {
        Some("C") => Order::C,
        Some("F") => Order::F,
        _ => return Err(malformed("order is not 'C' or 'F'")),
    };
    Ok((dtype, shape, order))
}

fn read_shape(graph: &Graph<'_>, id: NodeId) -> Option<Vec<u64>> {
    let items = tuple(graph, id)?;
    if items.len() > MAX_DIMS {
        return None;
    }
    let mut shape = Vec::with_capacity(items.len());
    for &d in items {
        shape.push(u64::try_from(int(graph, d)?).ok()?);
    }
    Some(shape)
}

/// Decode the `numpy.dtype` made by node `id`.
///
/// # Errors
/// [`ArrayError::DType`] if it is not `numpy.dtype(descr, ...)` with a
/// version 3 or 4 state this module can read, or its sizes and offsets do
/// not fit together.
pub fn decode_dtype(graph: &Graph<'_>, id: NodeId) -> Result<DType> {
    dtype_at(graph, id, 0, Builds::scan(), &Cell::new(MAX_DTYPES))
}

/// The dtype of an array, from `builds`' cache when it holds it.
fn array_dtype(graph: &Graph<'_>, id: NodeId, builds: Builds<'_>) -> Result<Arc<DType>> {
    let fresh = || Cell::new(builds.max_dtypes);
    let (Some(cache), Some(_)) = (builds.cache, builds.index) else {
        return dtype_at(graph, id, 0, builds, &fresh()).map(Arc::new);
    };
    if let Some(hit) = cache.map.borrow().get(&id) {
        let (low, high) = hit.valid;
        if (low..=high).contains(&builds.before) && hit.dtypes <= builds.max_dtypes {
            builds.narrow(hit.valid);
            return Ok(Arc::clone(&hit.dtype));
        }
    }
    let seen = Cell::new((0, u64::MAX));
    let left = fresh();
    let dtype = Arc::new(dtype_at(graph, id, 0, builds.tracking(&seen), &left)?);
    builds.narrow(seen.get());
    cache.map.borrow_mut().insert(
        id,
        CachedDType {
            dtype: Arc::clone(&dtype),
            dtypes: builds.max_dtypes.saturating_sub(left.get()),
            valid: seen.get(),
        },
    );
    Ok(dtype)
}

fn dtype_at(
    graph: &Graph<'_>,
    id: NodeId,
    depth: u32,
    builds: Builds<'_>,
    left: &Cell<u32>,
) -> Result<DType> {
    let offset = offset_of(graph, id);
    let fail = |reason: String| ArrayError::DType { offset, reason };
    if depth > MAX_DTYPE_DEPTH {
        return Err(fail("structured dtypes nest too deeply".to_owned()));
    }
    let Some(n) = left.get().checked_sub(1) else {
        return Err(fail("the dtype has too many fields".to_owned()));
    };
    left.set(n);
    let Some(NodeKind::Reduce { callable, args }) = graph.kind(id) else {
        return Err(fail("not a call of `numpy.dtype`".to_owned()));
    };
    if !global_is(graph, callable, &["numpy.dtype"]) {
        return Err(fail("not a call of `numpy.dtype`".to_owned()));
    }
    let descr = tuple(graph, args)
        .filter(|t| (1..=3).contains(&t.len()))
        .and_then(|t| t.first())
        .and_then(|&d| text_of(graph, d))
        .ok_or_else(|| fail("`numpy.dtype` takes (descr, align, copy)".to_owned()))?;
    let (kind, descr_size) =
        parse_descr(descr).ok_or_else(|| fail(format!("unknown descr `{descr}`")))?;

    let Some(state) = builds.state(graph, id) else {
        // An unbuilt builtin dtype is native-endian with its descr's size.
        let byte_order = if descr_size <= 1 || matches!(kind, Kind::Void | Kind::Bytes) {
            ByteOrder::NotApplicable
        } else if cfg!(target_endian = "big") {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        };
        return Ok(DType {
            kind,
            itemsize: descr_size,
            byte_order,
            fields: Vec::new(),
            subarray: None,
        });
    };
    let items = tuple(graph, state).ok_or_else(|| fail("state is not a tuple".to_owned()))?;
    let version = items.first().and_then(|&v| int(graph, v));
    let expected_len = match version {
        Some(3) => 8,
        Some(4) => 9,
        _ => return Err(fail("state version is not 3 or 4".to_owned())),
    };
    let [
        _,
        endian,
        subarray,
        names,
        fields,
        elsize,
        _alignment,
        _flags,
        ..,
    ] = items
    else {
        return Err(fail("state is too short".to_owned()));
    };
    if items.len() != expected_len {
        return Err(fail(format!("state has {} items", items.len())));
    }
    let byte_order = match text_of(graph, *endian) {
        Some("<") => ByteOrder::Little,
        Some(">") => ByteOrder::Big,
        Some("|") => ByteOrder::NotApplicable,
        Some("=") if cfg!(target_endian = "big") => ByteOrder::Big,
        Some("=") => ByteOrder::Little,
        _ => return Err(fail("byte order is not one of `<>|=`".to_owned())),
    };
    let elsize =
        int(graph, *elsize).ok_or_else(|| fail("element size is not an int".to_owned()))?;
    let itemsize = if matches!(kind, Kind::Void | Kind::Bytes | Kind::Str) {
        let e = u64::try_from(elsize).map_err(|_| fail(format!("element size {elsize}")))?;
        if descr_size != 0 && descr_size != e {
            return Err(fail(format!("`{descr}` has element size {e}")));
        }
        e
    } else {
        if elsize != -1 && u64::try_from(elsize).ok() != Some(descr_size) {
            return Err(fail(format!("`{descr}` has element size {elsize}")));
        }
        descr_size
    };

    let subarray = if is_none(graph, *subarray) {
        None
    } else {
        let [base, shape] = tuple(graph, *subarray)
            .and_then(|t| <[NodeId; 2]>::try_from(t).ok())
            .ok_or_else(|| fail("subarray is not (dtype, shape)".to_owned()))?;
        let base = dtype_at(graph, base, depth + 1, builds, left)?;
        let shape = read_shape(graph, shape)
            .ok_or_else(|| fail("subarray shape is not a tuple of sizes".to_owned()))?;
        let total = shape
            .iter()
            .try_fold(base.itemsize, |acc, &d| acc.checked_mul(d));
        if total != Some(itemsize) {
            return Err(fail(
                "subarray size does not match the element size".to_owned(),
            ));
        }
        Some((Box::new(base), shape))
    };

    let fields =
        read_fields(graph, *names, *fields, itemsize, depth, builds, left).map_err(fail)?;
    if kind != Kind::Void && !fields.is_empty() {
        return Err(fail(format!("`{descr}` cannot have fields")));
    }
    Ok(DType {
        kind,
        itemsize,
        byte_order,
        fields,
        subarray,
    })
}

fn read_fields(
    graph: &Graph<'_>,
    names: NodeId,
    fields: NodeId,
    itemsize: u64,
    depth: u32,
    builds: Builds<'_>,
    left: &Cell<u32>,
) -> std::result::Result<Vec<Field>, String> {
    match (is_none(graph, names), is_none(graph, fields)) {
        (true, true) => return Ok(Vec::new()),
        (false, false) => {}
        _ => return Err("names and fields must both be given".to_owned()),
    }
    let names = tuple(graph, names).ok_or("names is not a tuple")?;
    let Some(NodeKind::Dict(pairs)) = graph.kind(fields) else {
        return Err("fields is not a dict".to_owned());
    };
    if names.len() > MAX_FIELDS || pairs.len() > 2 * MAX_FIELDS {
        return Err(format!("{} fields", names.len()));
    }
    let mut by_name: HashMap<&str, NodeId> = HashMap::with_capacity(pairs.len());
    for &(k, v) in pairs {
        let key = text_of(graph, k).ok_or("a field key is not a str")?;
        if by_name.insert(key, v).is_some() {
            return Err(format!("field `{key}` is given twice"));
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for &n in names {
        let name = text_of(graph, n).ok_or("a field name is not a str")?;
        if out.iter().any(|f: &Field| f.name == name) {
            return Err(format!("field `{name}` is named twice"));
        }
        let entry = by_name
            .get(name)
            .and_then(|&v| tuple(graph, v))
            .ok_or_else(|| format!("field `{name}` has no (dtype, offset)"))?;
        let (dt, off) = match entry {
            [dt, off] | [dt, off, _] => (*dt, *off),
            _ => return Err(format!("field `{name}` is not (dtype, offset[, title])")),
        };
        let dtype = dtype_at(graph, dt, depth + 1, builds, left).map_err(|e| e.to_string())?;
        let offset = int(graph, off)
            .and_then(|o| u64::try_from(o).ok())
            .ok_or_else(|| format!("field `{name}` offset is not a size"))?;
        if offset
            .checked_add(dtype.itemsize)
            .is_none_or(|end| end > itemsize)
        {
            return Err(format!(
                "field `{name}` lies outside the {itemsize}-byte element"
            ));
        }
        out.push(Field {
            name: name.to_owned(),
            offset,
            dtype,
        });
    }
    Ok(out)
}

/// Kind and size implied by a descriptor: `f8`, `V64`, `U10` (40 bytes), `b1`.
fn parse_descr(descr: &str) -> Option<(Kind, u64)> {
    let digits_at = descr.find(|c: char| c.is_ascii_digit())?;
    let (kind, digits) = descr.split_at(digits_at);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let kind = match kind {
        "b" => Kind::Bool,
        "i" => Kind::Int,
        "u" => Kind::UInt,
        "f" => Kind::Float,
        "c" => Kind::Complex,
        "S" => Kind::Bytes,
        "U" => return Some((Kind::Str, n.checked_mul(4)?)),
        "V" => Kind::Void,
        "O" => Kind::Object,
        "M" => Kind::DateTime,
        "m" => Kind::TimeDelta,
        _ => return None,
    };
    Some((kind, n))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn descriptors() {
        assert_eq!(parse_descr("f8"), Some((Kind::Float, 8)));
        assert_eq!(parse_descr("U10"), Some((Kind::Str, 40)));
        assert_eq!(parse_descr("V64"), Some((Kind::Void, 64)));
        assert_eq!(parse_descr("x8"), None);
        assert_eq!(parse_descr("f"), None);
        assert_eq!(parse_descr("f8x"), None);
    }

    #[test]
    fn columns_decode_every_width_and_order() {
        let data = [0xfeu8, 0xff, 0xff, 0xff, 0x00, 0x00, 0x80, 0x3f];
        let col = |size: usize, float: bool, signed: bool, big: bool| Column {
            data: &data,
            stride: size,
            offset: 0,
            scalar: Scalar {
                size,
                float,
                signed,
                big,
            },
            len: data.len() / size,
        };
        assert_eq!(col(4, false, true, false).i64(0), Some(-2));
        assert_eq!(col(4, false, false, false).i64(0), Some(0xffff_fffe));
        assert_eq!(col(1, false, true, false).i64(0), Some(-2));
        assert_eq!(col(2, false, true, true).i64(0), Some(-257));
        assert_eq!(col(4, true, true, false).f64(1), Some(1.0));
        assert_eq!(col(8, false, true, false).i64(1), None);
        let all_ones = [0xffu8; 8];
        let c = Column {
            data: &all_ones,
            stride: 8,
            offset: 0,
            scalar: Scalar {
                size: 8,
                float: false,
                signed: false,
                big: false,
            },
            len: 1,
        };
        assert_eq!(c.i64(0), Some(i64::MAX));
        assert_eq!(latin1("a\u{ff}").unwrap(), vec![b'a', 0xff]);
        assert_eq!(latin1("\u{100}"), None);
    }
}

#[cfg(test)]
mod tracking_tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// A decode made with [`Builds::tracking`] records the `before` offsets
    /// for which it reads the same, whether its dtype is decoded or cached.
    #[test]
    fn tracking_records_where_a_decode_reads_the_same() {
        let data = include_bytes!("../tests/content/fixtures/decision_tree.p4.pkl");
        let pickle = amber_pickle::Parser::new(data).parse().unwrap();
        let graph = pickle.graph();
        let (id, _) = graph
            .iter()
            .find(|(id, _)| match graph.kind(*id) {
                Some(NodeKind::Reduce { callable, .. }) => global_is(graph, callable, RECONSTRUCT),
                _ => false,
            })
            .unwrap();
        let index = graph.event_index();
        let build = Builds::indexed(&index).first(graph, id).unwrap().0;
        let cache = DTypeCache::default();
        let mut ranges = Vec::new();
        for builds in [
            Builds::indexed(&index),
            Builds::indexed(&index).cached(&cache),
            Builds::indexed(&index).cached(&cache),
        ] {
            let seen = Cell::new((0, u64::MAX));
            let at = builds.before(build + 1);
            decode_with(graph, id, &NoArrays, at.tracking(&seen)).unwrap();
            let valid = seen.get();
            assert!(
                valid.0 > build,
                "{valid:?} must exclude the BUILD at {build}"
            );
            assert!(at.reads_as(valid) && builds.reads_as(valid));
            assert!(!builds.before(build).reads_as(valid));
            ranges.push(valid);
        }
        // Decoded, then decoded for the cache, then a cache hit: one range.
        assert!(
            ranges.windows(2).all(|w| w.first() == w.get(1)),
            "{ranges:?}"
        );
        // Where the BUILD does not count, the decode reads otherwise (unbuilt).
        let seen = Cell::new((0, u64::MAX));
        let unbuilt = decode_with(
            graph,
            id,
            &NoArrays,
            Builds::indexed(&index).before(build).tracking(&seen),
        );
        assert!(unbuilt.is_err());
    }
}
