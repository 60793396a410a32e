//! Handing byte ranges between Rust and Python without copying.
//!
//! [`Region`] exposes part of a Rust-owned allocation (a file map, a vector)
//! through Python's buffer protocol, so `pickle` and NumPy can read it in place;
//! it keeps its owner alive for as long as any view exists. [`Borrowed`] is the
//! other direction: the bytes of a Python object for the duration of one call,
//! and [`FrozenBytes`] those of a `bytes` object for as long as it is held.
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
use pyo3::types::PyBytes;

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

/// A Python `bytes` object's content, readable without the GIL: a reader's
/// file read into `bytes` once, which the container parses and analyses in
/// place and the unpickler then reads, so the stream is never copied.
pub struct FrozenBytes {
    object: Py<PyBytes>,
    ptr: usize,
    len: usize,
}

impl FrozenBytes {
    /// Holds `bytes` (a reference to it) for reading its content.
    pub fn new(bytes: &Bound<'_, PyBytes>) -> Self {
        let content = bytes.as_bytes();
        Self {
            ptr: content.as_ptr() as usize,
            len: content.len(),
            object: bytes.clone().unbind(),
        }
    }

    /// The `bytes` object.
    pub fn object<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.object.bind(py).clone()
    }
}

impl AsRef<[u8]> for FrozenBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr`/`len` are the content of the `bytes` object `object`
        // holds a reference to, so it stays allocated and in place while
        // `self` lives; `bytes` are immutable, so nothing writes to it.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
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

/// Writable buffers lent to a job on another thread, so that filling them
/// (copying or decompressing arrays) overlaps Python code running meanwhile.
/// The buffers stay held until the job has finished: [`InFlight::wait`]
/// and dropping both block until it has, so the memory cannot be released
/// while the job writes to it.
pub struct InFlight<R> {
    done: Option<std::sync::mpsc::Receiver<R>>,
    _held: Vec<(usize, Borrowed)>,
}

/// Hands `job` mutable slices of `held`'s buffers (obtained with `writable`),
/// through `spawn`, which must run it on another thread.
///
/// The caller's contract: each buffer appears once in `held`, and nothing
/// reads or writes those buffers until [`InFlight::wait`] returns (amber's
/// loads lend memory they allocated and reach only through the result).
pub fn fill_in_background<R: Send + 'static>(
    held: Vec<(usize, Borrowed)>,
    spawn: impl FnOnce(Box<dyn FnOnce() + Send>),
    job: impl FnOnce(Vec<(usize, &mut [u8])>) -> R + Send + 'static,
) -> InFlight<R> {
    let raw: Vec<(usize, usize, usize)> = held
        .iter()
        .map(|(i, b)| (*i, b.buffer.buf_ptr() as usize, b.buffer.len_bytes()))
        .collect();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    spawn(Box::new(move || {
        let dests = raw
            .into_iter()
            .map(|(i, ptr, len)| {
                let slice: &mut [u8] = if len == 0 {
                    &mut []
                } else {
                    // SAFETY: `ptr`/`len` describe a writable, C-contiguous buffer that
                    // the `InFlight` holds until this job has sent its result (its
                    // `wait` and `Drop` block on that), so the memory stays valid; each
                    // buffer is lent once and nothing else touches it meanwhile (the
                    // contract above), so this is the only reference to it.
                    unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) }
                };
                (i, slice)
            })
            .collect();
        let _ = tx.send(job(dests));
    }));
    InFlight {
        done: Some(rx),
        _held: held,
    }
}

impl<R> InFlight<R> {
    /// Blocks until the job has finished; its result, or `None` if it was
    /// already taken or the job died without one.
    pub fn wait(&mut self) -> Option<R> {
        self.done.take().and_then(|rx| rx.recv().ok())
    }
}

impl<R> Drop for InFlight<R> {
    fn drop(&mut self) {
        // The job may still be writing into the held buffers.
        let _ = self.wait();
    }
}

/// Writable buffers lent to work `W` that several threads do at once (each
/// buffer handed out once, as a `&mut` slice, by `W` itself), so that the
/// thread that waits for it can help. The buffers stay held until `settle`
/// has returned, which the owner runs before releasing them (on drop).
pub struct Shared<W> {
    work: Arc<W>,
    settle: fn(&W),
    _held: Vec<(usize, Borrowed)>,
}

/// Builds work over `held`'s buffers (obtained with `writable`) with `make`.
///
/// The caller's contract: each buffer appears once in `held`; nothing else
/// reads or writes those buffers until `settle` has returned; `W` uses each
/// slice at most once and `settle` returns only when no thread is using
/// (or can still take) any of them.
pub fn share<W>(
    held: Vec<(usize, Borrowed)>,
    make: impl FnOnce(Vec<(usize, &'static mut [u8])>) -> W,
    settle: fn(&W),
) -> Shared<W> {
    let dests = held
        .iter()
        .map(|(i, b)| {
            let len = b.buffer.len_bytes();
            let slice: &'static mut [u8] = if len == 0 {
                &mut []
            } else {
                // SAFETY: the buffer is writable and C-contiguous (`Borrowed::get`
                // with `writable`) and stays held by the `Shared` until `settle`
                // has returned, after which, by the contract above, no thread uses
                // the slice: the `'static` lifetime is never relied on past that.
                // Each buffer is lent once and nothing else touches it meanwhile,
                // so this is the only reference to it.
                unsafe { std::slice::from_raw_parts_mut(b.buffer.buf_ptr().cast::<u8>(), len) }
            };
            (*i, slice)
        })
        .collect();
    Shared {
        work: Arc::new(make(dests)),
        settle,
        _held: held,
    }
}

impl<W> Shared<W> {
    /// The work, for the threads that do it.
    pub fn work(&self) -> &Arc<W> {
        &self.work
    }
}

impl<W> Drop for Shared<W> {
    fn drop(&mut self) {
        // Threads may still be writing into the held buffers.
        (self.settle)(&self.work);
    }
}
