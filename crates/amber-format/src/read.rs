//! Opening an amber container: structure, manifest and checksums.
//!
//! [`Container::parse`] does the work that must happen before any byte is
//! trusted: the strict zip layout, the `mimetype` signature, the manifest's
//! CRC, JSON and schema, and the agreement between manifest and archive (same
//! entries in the same order with the same sizes and CRCs, valid `.npy`
//! headers, aligned array data). It reads only headers, so it is O(number of
//! entries), not O(file size): that is what makes memory-mapped loads instant.
//! Entry contents are checked on demand: [`Container::pickle`] verifies the
//! pickle stream, [`Container::copy_arrays_into`] verifies arrays while
//! copying them out, and [`Container::verify`] checks everything.

use rayon::prelude::*;

use crate::error::{FormatError, Result};
use crate::manifest::{
    ArrayInfo, EntryInfo, FORMAT_NAME, FORMAT_VERSION, MANIFEST_ENTRY, MAX_MANIFEST_BYTES,
    MIMETYPE, MIMETYPE_ENTRY, Manifest,
};
use crate::npy;
use crate::sniff;
use crate::zip::{self, ZipEntry};

/// Where the content of the `mimetype` entry starts (F-2).
const MIMETYPE_DATA_OFFSET: usize = 64;

/// Chunk size for parallel copying and checksumming.
const CHUNK: usize = 4 << 20;

/// A parsed amber container over bytes the caller owns (a map, a vector, …).
pub struct Container<B> {
    data: B,
    zip_entries: Vec<ZipEntry>,
    manifest: Manifest,
    manifest_bytes: std::ops::Range<usize>,
}

/// Where an array's data lies in the file, for zero-copy views and copies.
#[derive(Debug, Clone)]
pub struct ArrayLocation {
    /// Index of the array among the array entries (its out-of-band buffer number).
    pub index: usize,
    /// Entry name.
    pub name: String,
    /// Absolute offset of the array data in the file (a multiple of 64).
    pub offset: u64,
    /// Bytes of array data.
    pub nbytes: u64,
}

impl<B: AsRef<[u8]> + Sync> Container<B> {
    /// Validates the structure and manifest of an amber file held in `data`.
    pub fn parse(data: B) -> Result<Self> {
        let bytes = data.as_ref();
        if !bytes.starts_with(b"PK\x03\x04") {
            return Err(FormatError::NotAmber {
                reason: sniff::describe(bytes),
            });
        }
        // F-2: the signature is at fixed offsets, so "some other zip" is told
        // apart from "a damaged amber file" before the directory is read.
        let signature_end = MIMETYPE_DATA_OFFSET + MIMETYPE.len();
        if bytes.len() < signature_end {
            return Err(FormatError::Truncated {
                what: "amber signature",
                offset: 0,
                needed: signature_end as u64,
                available: bytes.len() as u64,
            });
        }
        if bytes.get(30..38) != Some(MIMETYPE_ENTRY.as_bytes())
            || bytes.get(MIMETYPE_DATA_OFFSET..signature_end) != Some(MIMETYPE)
        {
            return Err(FormatError::NotAmber {
                reason: "a zip archive, but not an amber file (its first entry is not amber's `mimetype`)".into(),
            });
        }
        let zip_entries = zip::read_directory(bytes)?;
        let first = zip_entries.first().ok_or_else(|| FormatError::NotAmber {
            reason: "an empty zip archive".into(),
        })?;
        if first.name != MIMETYPE_ENTRY || slice(bytes, first) != MIMETYPE {
            return Err(FormatError::NotAmber {
                reason: "a zip archive, but its first entry is not amber's `mimetype`".into(),
            });
        }
        let last = zip_entries
            .last()
            .filter(|e| e.name == MANIFEST_ENTRY)
            .ok_or_else(|| FormatError::Manifest {
                reason: format!("the last entry must be `{MANIFEST_ENTRY}`"),
            })?;
        if last.size > MAX_MANIFEST_BYTES {
            return Err(FormatError::Limit {
                what: "manifest size",
                value: last.size,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let raw = slice(bytes, last);
        check_crc(raw, last)?;
        let manifest: Manifest =
            serde_json::from_slice(raw).map_err(|e| FormatError::Manifest {
                reason: format!("{e}"),
            })?;
        if manifest.format != FORMAT_NAME {
            return Err(FormatError::Manifest {
                reason: format!(
                    "`format` is `{}`, expected `{FORMAT_NAME}`",
                    manifest.format
                ),
            });
        }
        if manifest.format_version > FORMAT_VERSION || manifest.format_version == 0 {
            return Err(FormatError::Unsupported {
                what: format!(
                    "format version {} (this amber reads up to version {FORMAT_VERSION}; upgrade amber)",
                    manifest.format_version
                ),
            });
        }
        let manifest_bytes = last.data_offset as usize..(last.data_offset + last.size) as usize;
        let container = Self {
            data,
            zip_entries,
            manifest,
            manifest_bytes,
        };
        container.check_entries()?;
        Ok(container)
    }

    /// Checks that the manifest lists exactly the archive's inner entries.
    fn check_entries(&self) -> Result<()> {
        let inner = self.inner_zip_entries();
        let listed = &self.manifest.entries;
        if inner.len() != listed.len() {
            return Err(FormatError::Manifest {
                reason: format!(
                    "it lists {} entries, the archive holds {} (besides `mimetype` and `manifest.json`)",
                    listed.len(),
                    inner.len()
                ),
            });
        }
        let mut pickles = 0;
        let mut arrays = 0u64;
        let mut buffers = 0u64;
        for (zip_entry, info) in inner.iter().zip(listed) {
            let mismatch = |what: String| FormatError::Mismatch {
                entry: zip_entry.name.clone(),
                what,
            };
            if zip_entry.name != info.name() {
                return Err(mismatch(format!(
                    "the manifest lists `{}` at this position",
                    info.name()
                )));
            }
            if zip_entry.size != info.size() {
                return Err(mismatch(format!(
                    "size is {}, the manifest says {}",
                    zip_entry.size,
                    info.size()
                )));
            }
            if zip_entry.crc32 != info.crc32() {
                return Err(mismatch("CRC-32 differs from the manifest".into()));
            }
            match info {
                EntryInfo::Pickle { buffers: b, .. } => {
                    pickles += 1;
                    buffers = *b;
                }
                EntryInfo::Array(array) => {
                    arrays += 1;
                    if array.data_offset.checked_add(array.nbytes) != Some(array.size) {
                        return Err(mismatch(format!(
                            "header ({}) and data ({}) do not add up to the entry size ({})",
                            array.data_offset, array.nbytes, array.size
                        )));
                    }
                    if (zip_entry.data_offset + array.data_offset) % zip::ALIGNMENT != 0 {
                        return Err(mismatch("array data is not 64-byte aligned".into()));
                    }
                    let header =
                        npy::parse_header(slice(self.data.as_ref(), zip_entry), &zip_entry.name)?;
                    npy::check_against(&header, array)?;
                }
            }
        }
        if pickles != 1 {
            return Err(FormatError::Manifest {
                reason: format!("it lists {pickles} pickle entries, expected exactly one"),
            });
        }
        if buffers != arrays {
            return Err(FormatError::Manifest {
                reason: format!(
                    "the pickle takes {buffers} buffers, but there are {arrays} array entries"
                ),
            });
        }
        Ok(())
    }

    fn inner_zip_entries(&self) -> &[ZipEntry] {
        let n = self.zip_entries.len();
        self.zip_entries
            .get(1..n.saturating_sub(1))
            .unwrap_or_default()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// The decoded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as stored (already checked against its CRC).
    pub fn manifest_bytes(&self) -> &[u8] {
        self.data
            .as_ref()
            .get(self.manifest_bytes.clone())
            .unwrap_or_default()
    }

    /// Every zip entry, including `mimetype` and `manifest.json`, in file order.
    pub fn zip_entries(&self) -> &[ZipEntry] {
        &self.zip_entries
    }

    /// The pickle stream, after checking its CRC.
    pub fn pickle(&self) -> Result<&[u8]> {
        let entry = self
            .inner_zip_entries()
            .iter()
            .zip(&self.manifest.entries)
            .find_map(|(z, info)| matches!(info, EntryInfo::Pickle { .. }).then_some(z))
            .ok_or_else(|| FormatError::Manifest {
                reason: "no pickle entry".into(),
            })?;
        let data = slice(self.data.as_ref(), entry);
        check_crc(data, entry)?;
        Ok(data)
    }

    /// The array entries in buffer order, with their manifest records.
    pub fn arrays(&self) -> Vec<(&ArrayInfo, ArrayLocation)> {
        let mut out = Vec::new();
        for (z, info) in self.inner_zip_entries().iter().zip(&self.manifest.entries) {
            if let EntryInfo::Array(array) = info {
                out.push((
                    array,
                    ArrayLocation {
                        index: out.len(),
                        name: array.name.clone(),
                        offset: z.data_offset + array.data_offset,
                        nbytes: array.nbytes,
                    },
                ));
            }
        }
        out
    }

    /// Copies array data into caller-provided buffers, checking every CRC.
    ///
    /// `dests` pairs an array index (as in [`Self::arrays`]) with a buffer of
    /// exactly its `nbytes`. Work is spread over all threads of the current
    /// rayon pool, by array and by chunk. On error the buffers hold partial
    /// data and must be discarded.
    pub fn copy_arrays_into(&self, dests: Vec<(usize, &mut [u8])>) -> Result<()> {
        let arrays = self.array_zip_entries();
        let bytes = self.data.as_ref();
        let mut jobs = Vec::with_capacity(dests.len());
        for (index, dest) in dests {
            let (zip_entry, info) =
                arrays
                    .get(index)
                    .copied()
                    .ok_or_else(|| FormatError::Usage {
                        what: format!("array index {index} out of range"),
                    })?;
            if dest.len() as u64 != info.nbytes {
                return Err(FormatError::Usage {
                    what: format!(
                        "buffer for `{}` has {} bytes, the array has {}",
                        info.name,
                        dest.len(),
                        info.nbytes
                    ),
                });
            }
            jobs.push((zip_entry, info, dest));
        }
        jobs.into_par_iter()
            .try_for_each(|(zip_entry, info, dest)| {
                let entry = slice(bytes, zip_entry);
                let (header, data) = entry.split_at((info.data_offset as usize).min(entry.len()));
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(header);
                let parts: Vec<crc32fast::Hasher> = dest
                    .par_chunks_mut(CHUNK)
                    .zip(data.par_chunks(CHUNK))
                    .map(|(d, s)| {
                        d.copy_from_slice(s);
                        let mut h = crc32fast::Hasher::new();
                        h.update(d);
                        h
                    })
                    .collect();
                for part in &parts {
                    hasher.combine(part);
                }
                let actual = hasher.finalize();
                if actual == zip_entry.crc32 {
                    Ok(())
                } else {
                    Err(FormatError::Checksum {
                        entry: zip_entry.name.clone(),
                        expected: zip_entry.crc32,
                        actual,
                    })
                }
            })
    }

    fn array_zip_entries(&self) -> Vec<(&ZipEntry, &ArrayInfo)> {
        self.inner_zip_entries()
            .iter()
            .zip(&self.manifest.entries)
            .filter_map(|(z, info)| match info {
                EntryInfo::Array(a) => Some((z, a)),
                EntryInfo::Pickle { .. } => None,
            })
            .collect()
    }

    /// Checks the CRC of every entry, calling `progress` with byte counts as it goes.
    ///
    /// Reports the first damaged entry in file order.
    pub fn verify(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let bytes = self.data.as_ref();
        let results: Vec<Result<()>> = self
            .zip_entries
            .par_iter()
            .map(|entry| {
                let data = slice(bytes, entry);
                let parts: Vec<crc32fast::Hasher> = data
                    .par_chunks(CHUNK)
                    .map(|c| {
                        let mut h = crc32fast::Hasher::new();
                        h.update(c);
                        progress(c.len() as u64);
                        h
                    })
                    .collect();
                let mut hasher = crc32fast::Hasher::new();
                for part in &parts {
                    hasher.combine(part);
                }
                let actual = hasher.finalize();
                if actual == entry.crc32 {
                    Ok(())
                } else {
                    Err(FormatError::Checksum {
                        entry: entry.name.clone(),
                        expected: entry.crc32,
                        actual,
                    })
                }
            })
            .collect();
        results.into_iter().collect()
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> B {
        self.data
    }
}

fn slice<'a>(bytes: &'a [u8], entry: &ZipEntry) -> &'a [u8] {
    // `read_directory` checked every entry lies inside the file.
    bytes
        .get(entry.data_offset as usize..(entry.data_offset + entry.size) as usize)
        .unwrap_or_default()
}

fn check_crc(data: &[u8], entry: &ZipEntry) -> Result<()> {
    let actual = crc32fast::hash(data);
    if actual == entry.crc32 {
        Ok(())
    } else {
        Err(FormatError::Checksum {
            entry: entry.name.clone(),
            expected: entry.crc32,
            actual,
        })
    }
}
