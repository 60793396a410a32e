//! Array bytes for the content validators.
//!
//! A validator (a tree's child indices, a sparse matrix's `indptr`) needs the
//! bytes of the arrays a stream refers to: out-of-band buffers of an amber
//! file, inline data or companion files of a joblib file. Uncompressed amber
//! entries are slices of the mapped file; compressed ones are decoded (CRCs
//! checked) only when a validator asks, once each.

use std::sync::OnceLock;

use amber_format::{Container, Source};
use amber_legacy::{ArraySource, Legacy};
use amber_scan::ArrayBytes;

/// The array entries of an amber container, as out-of-band buffers.
pub struct ContainerArrays<'c, B> {
    container: &'c Container<B>,
    locations: Vec<(u64, u64, bool)>,
    decoded: Vec<OnceLock<Option<Vec<u8>>>>,
    /// Buffers the caller already decoded (CRC checked), by array index.
    given: Vec<Option<&'c [u8]>>,
}

impl<'c, B: AsRef<[u8]> + Source + Sync> ContainerArrays<'c, B> {
    /// The buffers of `container`, in buffer order.
    #[must_use]
    pub fn new(container: &'c Container<B>) -> Self {
        let locations: Vec<(u64, u64, bool)> = container
            .arrays()
            .iter()
            .map(|(_, loc)| (loc.offset, loc.nbytes, loc.compressed))
            .collect();
        let decoded = locations.iter().map(|_| OnceLock::new()).collect();
        ContainerArrays {
            container,
            locations,
            decoded,
            given: Vec::new(),
        }
    }

    /// [`Self::new`], reading array `i` from `given[i]` where that is
    /// `Some`: the bytes a load already decoded into the memory it will hand
    /// the unpickler (each exactly the array's size, CRC checked by
    /// [`Container::copy_arrays_into`]), so that a compressed entry is
    /// decoded once for the checks and the load together.
    #[must_use]
    pub fn with_decoded(container: &'c Container<B>, given: Vec<Option<&'c [u8]>>) -> Self {
        ContainerArrays {
            given,
            ..Self::new(container)
        }
    }

    /// Number of buffers.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }
}

impl<B: AsRef<[u8]> + Source + Sync> ArrayBytes for ContainerArrays<'_, B> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        let i = usize::try_from(index).ok()?;
        let &(offset, len, compressed) = self.locations.get(i)?;
        if let Some(Some(given)) = self.given.get(i) {
            return (given.len() as u64 == len).then_some(*given);
        }
        if !compressed {
            return slice(self.container.bytes(), offset, len);
        }
        let decoded = self.decoded.get(i)?.get_or_init(|| {
            let mut out = vec![0u8; usize::try_from(len).ok()?];
            self.container
                .copy_arrays_into(vec![(i, out.as_mut_slice())])
                .ok()?;
            Some(out)
        });
        decoded.as_deref()
    }

    fn inline(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }

    fn total_len(&self) -> u64 {
        self.locations
            .iter()
            .fold(0u64, |sum, &(_, len, _)| sum.saturating_add(len))
    }
}

/// The arrays of a legacy file: inline data lies in its stream.
pub struct LegacyArrays<'l>(pub &'l Legacy);

impl ArrayBytes for LegacyArrays<'_> {
    fn buffer(&self, _index: u64) -> Option<&[u8]> {
        None
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.0.inline(offset, len)
    }
}

/// Nested pickles a legacy file holds outside its stream (object arrays in
/// companion `.npy` files), which must be analysed as well.
pub(crate) fn outside_pickles(legacy: &Legacy) -> impl Iterator<Item = (usize, &[u8])> {
    legacy
        .arrays()
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, ArraySource::NpyPickle { .. }))
        .filter_map(|(k, _)| legacy.array_bytes(k).map(|b| (k, b)))
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}
