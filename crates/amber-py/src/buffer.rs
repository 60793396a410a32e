//! Handing byte ranges between Rust and Python without copying.
//!
//! [`Region`] exposes part of a Rust-owned allocation (a file map, a vector)
//! through Python's buffer protocol, so `pickle` and NumPy can read it in place;
//! it keeps its owner alive for as long as any view exists. [`Borrowed`] is the
//! other direction: the bytes of a Python object for the duration of one call.
//! This module is the only place in the binding that touches raw pointers.
#![expect(
    unsafe_code,
    reason = "the buffer protocol is a raw-pointer C API; each block has a SAFETY note"
)]

use std::ffi::c_int;
use std::sync::Arc;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Something that owns memory a [`Region`] points into.
pub trait Owner: Send + Sync {}
impl<T: Send + Sync> Owner for T {}

/// A read-only (or, for copy-on-write maps, writable) view of Rust-owned bytes.
#[pyclass(frozen, module = "amber._amber")]
pub struct Region {
    _owner: Arc<dyn Owner>,
    ptr: usize,
    len: usize,
    writable: bool,
}

impl Region {
    /// A view of `len` bytes at `ptr`, which must lie inside memory `owner` keeps alive and
    /// unmoved; `writable` only for memory nothing else reads or writes through Rust.
    pub fn new(owner: Arc<dyn Owner>, ptr: *const u8, len: usize, writable: bool) -> Self {
        Self {
            _owner: owner,
            ptr: ptr as usize,
            len,
            writable,
        }
    }
}

#[pymethods]
impl Region {
    fn __len__(&self) -> usize {
        self.len
    }

    /// Whether views of this region may be written to.
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let len =
            isize::try_from(this.len).map_err(|_| PyBufferError::new_err("region too large"))?;
        // SAFETY: `view` comes from the interpreter. The pointer and length describe
        // memory owned by `_owner`, which the view keeps alive through its reference
        // to `slf`; `PyBuffer_FillInfo` refuses writable requests on read-only regions.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr as *mut std::ffi::c_void,
                len,
                c_int::from(!this.writable),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(PyErr::fetch(slf.py()))
        }
    }
}

/// The bytes of a Python buffer object, held for one call.
pub struct Borrowed {
    buffer: PyUntypedBuffer,
}

impl Borrowed {
    /// Gets a C-contiguous buffer from `obj`; `writable` also requires it not read-only.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        let buffer = PyUntypedBuffer::get(obj)?;
        if !buffer.is_c_contiguous() {
            return Err(PyBufferError::new_err("buffer must be C-contiguous"));
        }
        if writable && buffer.readonly() {
            return Err(PyBufferError::new_err("buffer must be writable"));
        }
        Ok(Self { buffer })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        let len = self.buffer.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` contiguous bytes at `buf_ptr` while
        // the buffer is held, and `self` holds it for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr().cast::<u8>(), len) }
    }

    /// The bytes, mutably. Only for buffers obtained with `writable`.
    #[expect(
        clippy::mut_from_ref,
        reason = "the memory belongs to Python, not to `self`"
    )]
    pub fn bytes_mut(&self) -> &mut [u8] {
        let len = self.buffer.len_bytes();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: `get(.., true)` checked the buffer is writable; the caller passes
        // each destination once, so no two mutable slices alias, and Python code
        // cannot run while the slices are in use (they are used inside one call).
        unsafe { std::slice::from_raw_parts_mut(self.buffer.buf_ptr().cast::<u8>(), len) }
    }
}
