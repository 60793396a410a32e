//! Access to array bytes that live outside the pickle graph.
//!
//! Placeholder for the merge: the content-validation branch owns this module
//! (NumPy array decoding from the graph). The scanner needs only
//! [`ArrayBytes`] and [`NoArrays`], with exactly this shape.

/// Gives content validators the bytes of out-of-band buffers (amber files)
/// and of joblib inline arrays.
pub trait ArrayBytes {
    /// The bytes of out-of-band buffer `index` (`NEXT_BUFFER` order).
    fn buffer(&self, index: u64) -> Option<&[u8]>;
    /// `len` bytes of the scanned input at `offset` (joblib inline data).
    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]>;
}

/// No array bytes available: validators that need them report so.
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
