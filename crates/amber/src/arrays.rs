//! Array bytes for the content validators.
//!
//! A validator (a tree's child indices, a sparse matrix's `indptr`) needs the
//! bytes of the arrays a stream refers to: out-of-band buffers of an amber
//! file, inline data or companion files of a joblib file. Uncompressed amber
//! entries are slices of the mapped file; compressed ones are decoded (CRCs
//! checked) only when a validator asks, once each.
//!
//! A load gives [`ContainerArrays::with_destinations`] the memory it will
//! hand the unpickler for some arrays (amber's loads: the compressed ones):
//! such an array is copied there when a validator first asks for it (CRC
//! checked, decoded if compressed) and checked in place. So it is decoded
//! once, and what is unpickled is exactly what was checked.

use std::sync::{Mutex, OnceLock};

use amber_format::{Container, FormatError, Source};
use amber_legacy::{ArraySource, Legacy};
use amber_scan::ArrayBytes;

/// The array entries of an amber container, as out-of-band buffers.
pub struct ContainerArrays<'c, B> {
    container: &'c Container<B>,
    locations: Vec<(u64, u64, bool)>,
    decoded: Vec<OnceLock<Option<Vec<u8>>>>,
    /// The caller's memory for each array, filled on the first request.
    dests: Vec<Dest<'c>>,
    /// The first error met filling one.
    failed: Mutex<Option<FormatError>>,
}

/// Where one array goes, and what it holds once filled.
struct Dest<'c> {
    empty: Mutex<Option<&'c mut [u8]>>,
    filled: OnceLock<Option<&'c [u8]>>,
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
            dests: Vec::new(),
            failed: Mutex::new(None),
        }
    }

    /// [`Self::new`], with `dests[i]` (exactly array `i`'s size) the memory
    /// array `i` is copied into, CRC checked, when a validator first asks for
    /// it; it is read there from then on. See [`Self::filled`].
    #[must_use]
    pub fn with_destinations(
        container: &'c Container<B>,
        dests: Vec<Option<&'c mut [u8]>>,
    ) -> Self {
        let dests = dests
            .into_iter()
            .map(|d| Dest {
                empty: Mutex::new(d),
                filled: OnceLock::new(),
            })
            .collect();
        ContainerArrays {
            dests,
            ..Self::new(container)
        }
    }

    /// For each array, whether its destination now holds it (copied and
    /// CRC checked); a load copies the others itself.
    ///
    /// # Errors
    /// The first error met filling a destination (a damaged entry): the
    /// analysis saw that array as missing, and the load must stop.
    pub fn filled(self) -> Result<Vec<bool>, FormatError> {
        if let Some(e) = self.failed.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(self
            .dests
            .iter()
            .map(|d| matches!(d.filled.get(), Some(Some(_))))
            .collect())
    }

    fn fill(&self, index: usize, dest: &Dest<'c>) -> Option<&'c [u8]> {
        let buffer = dest.empty.lock().ok()?.take()?;
        match self.container.copy_arrays_into(vec![(index, &mut *buffer)]) {
            Ok(()) => Some(buffer),
            Err(e) => {
                if let Ok(mut failed) = self.failed.lock() {
                    failed.get_or_insert(e);
                }
                None
            }
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
        if let Some(dest) = self.dests.get(i) {
            let filled = *dest.filled.get_or_init(|| self.fill(i, dest));
            if filled.is_some() {
                return filled;
            }
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
