//! Chunked, parallel compression of entry payloads (zstd or LZ4, with an
//! optional byte-shuffle or bit-shuffle filter).
//!
//! A payload is cut into fixed-size chunks that are compressed independently,
//! so writing and reading both use every core of the current rayon pool. Each
//! chunk is stored compressed only if that makes it smaller; incompressible
//! chunks (random floats) are stored raw and cost a copy, not a compression
//! round-trip on load. For typed arrays a byte-shuffle filter (bytes of equal
//! significance grouped together) and a bit-shuffle filter (bits of equal
//! significance, for small integers: rule F-45) are tried on a sample chunk,
//! and the one that helps most is kept for the whole payload.
//!
//! The chunk index follows the chunks (a footer), so an entry can be written
//! in one pass with bounded memory; its layout is rule F-40 of `docs/FORMAT.md`:
//!
//! ```text
//! chunk 0 | chunk 1 | … | index | footer
//! index  = n × { stored_size: u64, crc32: u32, flags: u32 }   (flags bit 0: stored raw)
//! footer = "AMBERCHK" | version u8 = 1 | codec u8 | filter u8 (0, 1, 2) | 0u8 | itemsize u32
//!          | chunk_size u64 | raw_size u64 | chunk_count u64 | index_offset u64
//!          | 12 zero bytes | crc32 of (index ‖ the first 60 footer bytes)      (64 bytes)
//! ```
//!
//! Chunk CRCs cover the stored chunks and the footer CRC covers the index and
//! the footer, so a payload checks itself: no damaged byte can change the
//! decoded data silently.
//!
//! Every size is checked before any allocation or copy when reading: a chunk
//! never decompresses to more than its declared size, and the declared sizes
//! must add up to the destination exactly.

use rayon::prelude::*;

use crate::bitshuffle;
use crate::error::{FormatError, Result};

/// Default chunk size: large enough for good ratios, small enough to spread over cores.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;
/// Magic at the start of the footer.
pub const FOOTER_MAGIC: &[u8; 8] = b"AMBERCHK";
/// Length of the footer.
pub const FOOTER_LEN: usize = 64;
const INDEX_RECORD_LEN: usize = 16;
const FLAG_RAW: u32 = 1;
/// Largest chunk a reader accepts (bounds the scratch memory per thread).
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;

/// A compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Zstandard at a level from 1 to 22.
    Zstd(i32),
    /// LZ4 block format (one speed).
    Lz4,
}

impl Codec {
    fn id(self) -> u8 {
        match self {
            Self::Zstd(_) => 1,
            Self::Lz4 => 2,
        }
    }

    /// The codec's name as written in manifests.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd(_) => "zstd",
            Self::Lz4 => "lz4",
        }
    }
}

/// Which permutation is applied to each chunk before compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Bytes as they are.
    None,
    /// Bytes grouped by significance, for elements of the given size (F-43).
    Shuffle(u32),
    /// Bits grouped by significance, for elements of 1, 2, 4 or 8 bytes (F-45).
    BitShuffle(u32),
}

impl Filter {
    /// The filter's name as written in manifests.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Shuffle(_) => "shuffle",
            Self::BitShuffle(_) => "bitshuffle",
        }
    }

    /// The footer's filter id and element size (F-40).
    fn id(self) -> (u8, u32) {
        match self {
            Self::None => (0, 1),
            Self::Shuffle(n) => (1, n),
            Self::BitShuffle(n) => (2, n),
        }
    }

    /// `(planes, bytes per plane)` of a filtered chunk of `len` bytes; the
    /// chunk's remaining bytes follow the planes unchanged.
    fn planes(self, len: usize) -> (usize, usize) {
        match self {
            Self::None => (0, 0),
            Self::Shuffle(k) => {
                let k = (k as usize).max(1);
                (k, len / k)
            }
            Self::BitShuffle(k) => bitshuffle::plane_layout(len, k as usize),
        }
    }

    /// Whether a plane of stored size 0 (not raw) means a plane of zeros (F-45);
    /// under F-43 it is an empty compressed plane, which no codec produces.
    fn has_zero_planes(self) -> bool {
        matches!(self, Self::BitShuffle(_))
    }

    /// Applies the permutation (`forward`) or its inverse, `src` into `dst`.
    fn permute(self, src: &[u8], dst: &mut [u8], forward: bool) {
        match (self, forward) {
            (Self::None, _) => dst.copy_from_slice(src),
            (Self::Shuffle(k), true) => shuffle_into(src, k as usize, dst),
            (Self::Shuffle(k), false) => unshuffle_into(src, k as usize, dst),
            (Self::BitShuffle(k), true) => bitshuffle::bitshuffle_into(src, k as usize, dst),
            (Self::BitShuffle(k), false) => bitshuffle::bitunshuffle_into(src, k as usize, dst),
        }
    }
}

/// A piece of a payload and its CRC-32 when the encoder already knows it (a
/// chunk's, from its index record), so that the zip entry's CRC is combined
/// from those rather than computed over the bytes a second time.
pub type Piece<'a> = (&'a [u8], Option<u32>);

/// Where an encoder writes a payload's bytes, in order, a batch of pieces at
/// a time (so the writer can hash a batch while it writes it).
pub type PieceSink<'a> = dyn FnMut(&[Piece<'_>]) -> Result<()> + Send + 'a;

/// How to compress one payload.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The codec.
    pub codec: Codec,
    /// Element size of the data (1 for untyped bytes); shuffle is tried when above 1.
    pub itemsize: usize,
    /// Bytes per chunk.
    pub chunk_size: usize,
}

/// What compressing a payload produced, for the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Codec used.
    pub codec: Codec,
    /// Filter used.
    pub filter: Filter,
    /// Bytes before compression.
    pub raw_size: u64,
    /// Bytes of chunks, index and footer.
    pub stored_size: u64,
}

/// The compressed chunks of one payload, between [`Encoder::pack_all`] and
/// [`Encoder::write_packed`].
pub struct PackedPayload(Vec<(Packed, u32)>);

/// A batch of raw bytes with its packed chunks, waiting to be written.
type Batch<'a> = (&'a [u8], Vec<(Packed, u32)>);

/// One compressed chunk, or a reference to the raw bytes when compression did not pay.
enum Packed {
    Raw,
    Data(Vec<u8>),
}

/// Chunk buffers kept for reuse: a fresh multi-MiB buffer per chunk costs
/// more in page faults than compressing it takes (random planes stored raw).
#[derive(Default)]
struct Pool(std::sync::Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut buffers| buffers.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, packed: Vec<(Packed, u32)>) {
        if let Ok(mut buffers) = self.0.lock() {
            buffers.extend(packed.into_iter().filter_map(|(p, _)| match p {
                Packed::Data(buffer) => Some(buffer),
                Packed::Raw => None,
            }));
        }
    }
}

/// Builds the chunked payload of one entry incrementally.
pub struct Encoder {
    settings: Settings,
    filter: Filter,
    /// Whether unfiltered blocks are probed before being compressed whole
    /// (see [`Choice::probe`]).
    probe: bool,
    /// Output buffers of chunks already written, reused for the next ones.
    pool: Pool,
    index: Vec<u8>,
    written: u64,
    raw_size: u64,
    chunks: u64,
}

impl Encoder {
    /// Starts a payload; `sample` (the first chunk of the data, if known) decides the filter.
    #[must_use]
    pub fn new(settings: Settings, sample: &[u8]) -> Self {
        let filter = choose_filter(&settings, sample);
        Self::with_filter(settings, filter)
    }

    /// Starts a payload with a filter already chosen (by [`Encoder::filter`] of
    /// another payload of data alike), skipping the trial compressions.
    #[must_use]
    pub fn with_filter(settings: Settings, filter: Filter) -> Self {
        Self {
            settings,
            filter,
            probe: true,
            pool: Pool::default(),
            index: Vec::new(),
            written: 0,
            raw_size: 0,
            chunks: 0,
        }
    }

    /// Starts a payload as [`choose`] decided for data like it.
    #[must_use]
    pub fn with_choice(settings: Settings, choice: Choice) -> Self {
        let settings = Settings {
            codec: choice.codec,
            ..settings
        };
        Self {
            probe: choice.probe,
            ..Self::with_filter(settings, choice.filter)
        }
    }

    /// Compresses `data` (whole chunks, except possibly a last partial one at the
    /// end of the payload) in parallel and passes the stored bytes, in order, to `sink`.
    ///
    /// Work goes in batches of a few chunks per thread, so memory stays bounded,
    /// and batch `i` is written while batch `i + 1` is being compressed.
    pub fn encode(&mut self, data: &[u8], sink: &mut PieceSink<'_>) -> Result<()> {
        let settings = self.settings;
        let (filter, probe) = (self.filter, self.probe);
        let chunk_size = settings.chunk_size.max(1);
        let batch = chunk_size * rayon::current_num_threads().max(1) * 2;
        let pool = std::mem::take(&mut self.pool);
        let compress = |group: &[u8]| -> Vec<(Packed, u32)> {
            group
                .par_chunks(chunk_size)
                .map(|chunk| pack(chunk, settings.codec, filter, probe, pool.take()))
                .collect()
        };
        let mut emit = |this: &mut Self, (raw, packed): Batch<'_>| {
            let written = this.emit(raw, &packed, chunk_size, sink);
            pool.give_back(packed);
            written
        };
        let mut previous: Option<Batch<'_>> = None;
        for group in data.chunks(batch) {
            let (packed, written) = rayon::join(
                || compress(group),
                || previous.take().map_or(Ok(()), |batch| emit(self, batch)),
            );
            written?;
            previous = Some((group, packed));
        }
        if let Some(batch) = previous {
            emit(self, batch)?;
        }
        self.pool = pool;
        Ok(())
    }

    /// The filter this payload uses.
    #[must_use]
    pub fn filter(&self) -> Filter {
        self.filter
    }

    /// Bytes per chunk.
    #[must_use]
    pub fn chunk_size(&self) -> usize {
        self.settings.chunk_size.max(1)
    }

    /// Compresses a whole (small) payload on the calling thread; the result goes
    /// to [`Self::write_packed`]. Used to compress many small arrays in parallel.
    #[must_use]
    pub fn pack_all(&self, data: &[u8]) -> PackedPayload {
        let chunk_size = self.settings.chunk_size.max(1);
        PackedPayload(
            data.chunks(chunk_size)
                .map(|chunk| {
                    pack(
                        chunk,
                        self.settings.codec,
                        self.filter,
                        self.probe,
                        Vec::new(),
                    )
                })
                .collect(),
        )
    }

    /// Writes a payload compressed by [`Self::pack_all`] (from the same `data`).
    pub fn write_packed(
        &mut self,
        data: &[u8],
        packed: &PackedPayload,
        sink: &mut PieceSink<'_>,
    ) -> Result<()> {
        let chunk_size = self.settings.chunk_size.max(1);
        self.emit(data, &packed.0, chunk_size, sink)
    }

    /// Writes one compressed batch and records its chunks in the index.
    fn emit(
        &mut self,
        raw: &[u8],
        packed: &[(Packed, u32)],
        chunk_size: usize,
        sink: &mut PieceSink<'_>,
    ) -> Result<()> {
        let mut pieces = Vec::with_capacity(packed.len());
        for ((packed, crc), chunk) in packed.iter().zip(raw.chunks(chunk_size)) {
            let (bytes, flags) = match packed {
                Packed::Raw => (chunk, FLAG_RAW),
                Packed::Data(d) => (d.as_slice(), 0),
            };
            pieces.push((bytes, Some(*crc)));
            self.index
                .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            self.index.extend_from_slice(&crc.to_le_bytes());
            self.index.extend_from_slice(&flags.to_le_bytes());
            self.written += bytes.len() as u64;
            self.chunks += 1;
        }
        sink(&pieces)?;
        self.raw_size += raw.len() as u64;
        Ok(())
    }

    /// Writes the index and footer; returns the summary.
    pub fn finish(self, sink: &mut PieceSink<'_>) -> Result<Summary> {
        let index_offset = self.written;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(FOOTER_MAGIC);
        footer.push(1);
        footer.push(self.settings.codec.id());
        let (filter_id, itemsize) = self.filter.id();
        footer.push(filter_id);
        footer.push(0);
        footer.extend_from_slice(&itemsize.to_le_bytes());
        footer.extend_from_slice(&(self.settings.chunk_size as u64).to_le_bytes());
        footer.extend_from_slice(&self.raw_size.to_le_bytes());
        footer.extend_from_slice(&self.chunks.to_le_bytes());
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.resize(FOOTER_LEN - 4, 0);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.index);
        hasher.update(&footer);
        footer.extend_from_slice(&hasher.finalize().to_le_bytes());
        sink(&[(&self.index, None), (&footer, None)])?;
        Ok(Summary {
            codec: self.settings.codec,
            filter: self.filter,
            raw_size: self.raw_size,
            stored_size: index_offset + self.index.len() as u64 + FOOTER_LEN as u64,
        })
    }
}

/// The shuffle width for elements of `itemsize` bytes: the element itself up to
/// 8 bytes; for wider records (structured dtypes such as tree nodes, made of
/// 8-, 4- or 2-byte fields) the widest field size that divides the record.
#[must_use]
pub fn shuffle_width(itemsize: usize) -> usize {
    match itemsize {
        0 | 1 => 1,
        2..=8 => itemsize,
        _ => [8, 4, 2]
            .into_iter()
            .find(|w| itemsize.is_multiple_of(*w))
            .unwrap_or(1),
    }
}

/// How to compress a payload, decided by [`choose`] on a sample of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The filter ([`Encoder::filter`] of an encoder made on the sample).
    pub filter: Filter,
    /// The codec: the one asked for, or zstd level 1 in place of levels 2
    /// and 3 when the sample says that costs almost nothing in size.
    pub codec: Codec,
    /// Whether unfiltered blocks are first probed for compressibility; not
    /// when the sample compressed well (a probe is then a small compression
    /// spent for nothing: a fifth more work on a forest's value arrays).
    pub probe: bool,
}

/// At zstd levels 2 and 3, level 1 is used instead when it leaves the
/// unfiltered sample at most 1/`FAST_LEVEL_SLACK` larger (1.6%): on a forest's
/// node arrays (whose 64-byte records give zstd's match search little to
/// find) level 1 is 5-7% faster to write and 6% faster to read, for 0.3% more
/// bytes; on its value arrays it costs 9%, and level 3 stays.
const FAST_LEVEL_SLACK: usize = 64;
/// The same for byte-shuffled data, at most 1/`SHUFFLED_FAST_LEVEL_SLACK`
/// larger (0.4%).
const SHUFFLED_FAST_LEVEL_SLACK: usize = 256;
/// A sample compressed to less than this fraction of its size needs no probes.
const NO_PROBE_RATIO: f64 = 0.9;

/// The filter, codec and probing for a payload of which `sample` is a part
/// (for arrays of one kind, windows of several of them): [`choose_filter`],
/// then for unfiltered data the level and probing, from one or two more
/// compressions of the sample.
#[must_use]
pub fn choose(settings: &Settings, sample: &[u8]) -> Choice {
    let (filter, plain) = filter_trials(settings, sample);
    let mut choice = Choice {
        filter,
        codec: settings.codec,
        probe: true,
    };
    if let (Filter::Shuffle(_), Codec::Zstd(2 | 3)) = (filter, settings.codec) {
        // Byte planes are mostly literals to zstd (a float's exponent and top
        // mantissa bits) or long runs, which level 1 codes as well, 8-25%
        // faster per plane; kept where its matches do cost a little.
        let sample = filter_sample(sample, shuffle_width(settings.itemsize));
        let slow = compressed_len(&sample, settings.codec, filter);
        let fast = compressed_len(&sample, Codec::Zstd(1), filter);
        if fast <= slow + slow / SHUFFLED_FAST_LEVEL_SLACK {
            choice.codec = Codec::Zstd(1);
        }
        return choice;
    }
    if filter != Filter::None || sample.len() < FILTER_SAMPLE_MIN {
        return choice;
    }
    // The level is judged on more of the sample than the filter: on a forest's
    // node records, the filter's 16 KiB said level 1 costs 2%, the 128 KiB of
    // eight trees' windows 0.9%, the whole arrays 0.3%.
    let whole = sample.len() <= FILTER_SAMPLE_MAX;
    let sample = if whole {
        std::borrow::Cow::Borrowed(sample)
    } else {
        filter_sample(sample, shuffle_width(settings.itemsize))
    };
    let mut plain = match plain {
        Some(plain) if !whole => plain,
        _ => compressed_len(&sample, settings.codec, Filter::None),
    };
    if let Codec::Zstd(2 | 3) = settings.codec {
        let fast = compressed_len(&sample, Codec::Zstd(1), Filter::None);
        if fast <= plain + plain / FAST_LEVEL_SLACK {
            choice.codec = Codec::Zstd(1);
            plain = fast;
        }
    }
    choice.probe = plain as f64 >= sample.len() as f64 * NO_PROBE_RATIO;
    choice
}

fn choose_filter(settings: &Settings, sample: &[u8]) -> Filter {
    filter_trials(settings, sample).0
}

/// [`choose_filter`], and the compressed size of the unfiltered sample when
/// it was tried.
fn filter_trials(settings: &Settings, sample: &[u8]) -> (Filter, Option<usize>) {
    let width = shuffle_width(settings.itemsize);
    // Bit planes of small chunks are too small to compress one by one: each
    // codec call costs more than its plane saves (64 of them for 8-byte items).
    let bit_planes_pay = sample.len() / width.max(1) / 8 >= MIN_BIT_PLANE;
    let Ok(itemsize) = u32::try_from(width) else {
        return (Filter::None, None);
    };
    // Single bytes (bools, small codes) have bit planes but no byte planes.
    if sample.len() < width.max(8) * 16 || (itemsize <= 1 && settings.itemsize != 1) {
        return (Filter::None, None);
    }
    // A small sample decides: trying a layout costs a compression of it.
    let sample = filter_sample(sample, width);
    let plain = compressed_len(&sample, settings.codec, Filter::None);
    let mut best = (Filter::None, plain);
    if itemsize > 1 {
        let shuffle = Filter::Shuffle(itemsize);
        let shuffled = compressed_len(&sample, settings.codec, shuffle);
        if shuffled >= plain {
            // Bit planes refine byte planes: where grouping bytes does not pay
            // (tree nodes, whose fields have nothing in common) neither does
            // grouping bits, and models have hundreds of such arrays.
            return (Filter::None, Some(plain));
        }
        best = (shuffle, shuffled);
    } else if plain >= sample.len() || !bit_planes_pay {
        // Bytes the codec cannot shrink have no skewed bits either (those
        // would skew the byte values, which its entropy coder exploits).
        return (Filter::None, Some(plain));
    }
    // Bit planes take longer to undo than byte planes (about half the speed
    // on load), so they must save at least 1/BIT_GAIN of the sample to be kept.
    let bits = Filter::BitShuffle(itemsize);
    if bit_planes_pay
        && bitshuffle::supports(width)
        && compressed_len(&sample, settings.codec, bits) < best.1 - best.1 / BIT_GAIN
    {
        (bits, Some(plain))
    } else {
        (best.0, Some(plain))
    }
}

/// The bytes the filter is chosen on: 1/16 of `data` (within bounds), taken
/// as a few element-aligned windows spread over it, so that neither a leading
/// run of zeros nor a sorted array's head decides for the whole. Models have
/// many arrays of a few hundred KiB, for which trying both layouts on the
/// whole array (or a large part of it) cost more than compressing it; a
/// sample much smaller than this misjudges smooth series, whose planes only
/// show their long repeats in long planes.
fn filter_sample(data: &[u8], width: usize) -> std::borrow::Cow<'_, [u8]> {
    let len = (data.len() / 16).clamp(FILTER_SAMPLE_MIN, FILTER_SAMPLE_MAX);
    let window = len / FILTER_WINDOWS / width.max(1) * width.max(1);
    if data.len() <= len || window == 0 {
        return std::borrow::Cow::Borrowed(data);
    }
    let elements = data.len() / width.max(1);
    let mut out = Vec::with_capacity(window * FILTER_WINDOWS);
    for i in 0..FILTER_WINDOWS {
        let start = elements * i / FILTER_WINDOWS * width;
        out.extend_from_slice(data.get(start..start + window).unwrap_or_default());
    }
    std::borrow::Cow::Owned(out)
}

/// The size of `data` packed, less the plane table: the table's few hundred
/// bytes per chunk would weigh on the choice, made on a sample, as they do
/// not on a whole chunk.
fn compressed_len(data: &[u8], codec: Codec, filter: Filter) -> usize {
    let mut out = Vec::new();
    if pack_into(data, codec, filter, true, &mut out).is_some() {
        out.len().saturating_sub(4 * filter.planes(data.len()).0)
    } else {
        data.len()
    }
}

/// Makes `out` hold `chunk` filtered and compressed and returns `true`, or
/// `false` when that does not make it smaller (`out` then holds no meaning).
/// `out` may hold anything before: a reused buffer is not cleared first.
/// Without `probe`, an unfiltered chunk is compressed whole at once.
/// Returns `None` for "not smaller", else `Some` of the CRC-32 of `out` when
/// it was taken on the way (by [`pack_shuffled`]).
fn pack_into(
    chunk: &[u8],
    codec: Codec,
    filter: Filter,
    probe: bool,
    out: &mut Vec<u8>,
) -> Option<Option<u32>> {
    let crc = match filter {
        Filter::None => {
            out.clear();
            // A ratio of 1 or more lets every probe through: no probe is made.
            let worth = if probe { PROBE_RATIO } else { f64::INFINITY };
            pack_block(chunk, codec, worth, out).then_some(None)
        }
        Filter::Shuffle(2) => pack_shuffled::<2>(chunk, codec, out).map(Some),
        Filter::Shuffle(4) => pack_shuffled::<4>(chunk, codec, out).map(Some),
        Filter::Shuffle(8) => pack_shuffled::<8>(chunk, codec, out).map(Some),
        filter => pack_planes(chunk, filter, codec, out).map(|()| None),
    }?;
    (out.len() < chunk.len()).then_some(crc)
}

/// Compresses one chunk into `out` (a reused buffer), or marks it raw.
fn pack(
    chunk: &[u8],
    codec: Codec,
    filter: Filter,
    probe: bool,
    mut out: Vec<u8>,
) -> (Packed, u32) {
    match pack_into(chunk, codec, filter, probe, &mut out) {
        Some(crc) => {
            let crc = crc.unwrap_or_else(|| crc32fast::hash(&out));
            (Packed::Data(out), crc)
        }
        None => (Packed::Raw, crc32fast::hash(chunk)),
    }
}

thread_local! {
    /// One zstd context per thread and level: creating a context costs more than
    /// compressing a small block, and models have many small blocks.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// One zstd decompression context per thread, for the same reason.
    static DZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Inputs up to this size are compressed at the fast zstd levels (up to 3)
/// with match tables of 2^[`SMALL_TABLES_LOG`] entries, which stay in the
/// core's cache, instead of the level's 2^16–2^17: on a forest's node and
/// value arrays (a few hundred KiB each) that was 5–8% faster for sizes
/// within 0.2% either way.
const SMALL_TABLES_MAX: usize = 1 << 20;
/// See [`SMALL_TABLES_MAX`].
const SMALL_TABLES_LOG: u32 = 15;

/// Appends `input` compressed to `out`; returns the compressed length.
fn compress_chunk(input: &[u8], codec: Codec, out: &mut Vec<u8>) -> Option<usize> {
    let start = out.len();
    match codec {
        Codec::Zstd(level) => ZSTD.with(|cell| {
            let mut cell = cell.try_borrow_mut().ok()?;
            if cell.as_ref().is_none_or(|(l, _)| *l != level) {
                *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, compressor) = cell.as_mut()?;
            // 0 restores the level's own table sizes.
            let small = level <= 3 && input.len() <= SMALL_TABLES_MAX;
            let log = if small { SMALL_TABLES_LOG } else { 0 };
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::HashLog(log))
                .ok()?;
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::ChainLog(log))
                .ok()?;
            out.reserve(zstd::zstd_safe::compress_bound(input.len()));
            // Written straight into `out`'s spare capacity, after what it holds.
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(start as u64);
            compressor.compress_to_buffer(input, &mut cursor).ok()
        }),
        Codec::Lz4 => {
            out.extend_from_slice(&lz4_flex::compress(input));
            Some(out.len() - start)
        }
    }
}

/// Bounds of the sample compressed both with and without the shuffle filter to choose one.
const FILTER_SAMPLE_MIN: usize = 16 << 10;
const FILTER_SAMPLE_MAX: usize = 128 << 10;
/// Windows the sample is made of.
const FILTER_WINDOWS: usize = 4;

/// The bit-shuffle is tried only when the first chunk's bit planes have at
/// least this many bytes.
const MIN_BIT_PLANE: usize = 4 << 10;

/// The bit-shuffle is kept when it makes the sample smaller by at least
/// 1/`BIT_GAIN` of its byte-shuffled size (2%).
const BIT_GAIN: usize = 50;

/// Bytes of a block tried first: if even they do not compress, the block is stored raw.
const PROBE: usize = 16 << 10;
/// A probe that does not shrink below this fraction marks the block incompressible.
const PROBE_RATIO: f64 = 0.97;
/// The same for a byte plane at the fast settings (LZ4, zstd up to level 3):
/// a plane is one byte of every element, as uniform as the data, so its head
/// speaks for it, and one that saves under 10% (random floats' low mantissa
/// saves 3%, for a full compression at a third of the speed of the rest of
/// the chunk's work) is stored raw. Unshuffled blocks keep [`PROBE_RATIO`]:
/// a pickle stream's head says little about the rest of it.
const PLANE_RATIO_FAST: f64 = 0.90;

/// The probe ratio for byte planes; at higher zstd levels the user asked for
/// the smallest file.
fn plane_ratio(codec: Codec) -> f64 {
    match codec {
        Codec::Zstd(level) if level > 3 => PROBE_RATIO,
        _ => PLANE_RATIO_FAST,
    }
}

/// Appends a block compressed to `out` and returns `true`, or leaves `out` as it
/// was and returns `false` when the block does not shrink (judged on a probe
/// first, so random data costs a small compression, not a full one).
fn pack_block(block: &[u8], codec: Codec, worth: f64, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    if block.len() > 4 * PROBE && worth < 1.0 {
        let probe = block.get(..PROBE).unwrap_or_default();
        let probed = compress_chunk(probe, codec, out);
        out.truncate(start);
        if probed.is_none_or(|n| n as f64 >= probe.len() as f64 * worth) {
            return false;
        }
    }
    let shrinks = compress_chunk(block, codec, out).is_some_and(|n| n < block.len());
    if !shrinks {
        out.truncate(start);
    }
    shrinks
}

/// High bit of a plane size: the plane is stored raw.
const PLANE_RAW: u32 = 1 << 31;

/// `chunk` permuted by `filter` as its `k` planes of `m` bytes compressed (or
/// stored raw, or left out when zero) one by one, into `out`: `k × u32` sizes
/// (high bit: raw), the planes, then the trailing bytes.
///
/// The permutation is written straight into `out`, each plane where it goes
/// if stored raw; a plane that compresses is compressed aside and copied back
/// over it, and the planes after it move up. Random planes, most of a random
/// float's, are so never copied after the permutation.
fn pack_planes(chunk: &[u8], filter: Filter, codec: Codec, out: &mut Vec<u8>) -> Option<()> {
    let (k, m) = filter.planes(chunk.len());
    let zero_planes = filter.has_zero_planes();
    let table = 4 * k;
    let body = m.checked_mul(k)?;
    // Every byte of `out` is overwritten below: a reused buffer is not zeroed.
    out.resize(table + chunk.len(), 0);
    out.truncate(table + chunk.len());
    filter.permute(chunk, out.get_mut(table..)?, true);
    let mut packed = PLANE_OUT.take();
    let mut at = table;
    for j in 0..k {
        let start = table + j * m;
        let plane = out.get(start..start + m)?;
        let word = if zero_planes && m > 0 && is_zero(plane) {
            0
        } else {
            let (word, len, _) = store_plane(out, start..start + m, at, codec, &mut packed, false)?;
            at += len;
            word
        };
        out.get_mut(4 * j..4 * j + 4)?
            .copy_from_slice(&word.to_le_bytes());
    }
    end_planes(out, table + body, at, packed)
}

/// Stores the plane at `plane` in `out` from offset `at` (at most its
/// start): compressed (through `packed`) when that pays, else as it is, moved
/// up when `at` is before it. Returns its size word for the plane table, its
/// stored length and, with `crc`, the CRC-32 of its compressed bytes.
fn store_plane(
    out: &mut [u8],
    plane: std::ops::Range<usize>,
    at: usize,
    codec: Codec,
    packed: &mut Vec<u8>,
    crc: bool,
) -> Option<(u32, usize, Option<u32>)> {
    packed.clear();
    if pack_block(out.get(plane.clone())?, codec, plane_ratio(codec), packed) {
        // Shorter than the plane, so it ends before the next one starts.
        out.get_mut(at..at + packed.len())?.copy_from_slice(packed);
        let crc = crc.then(|| crc32fast::hash(packed));
        Some((u32::try_from(packed.len()).ok()?, packed.len(), crc))
    } else {
        let m = plane.len();
        if at != plane.start {
            out.copy_within(plane, at);
        }
        Some((u32::try_from(m).ok()? | PLANE_RAW, m, None))
    }
}

/// Moves the trailing bytes, from `tail` on, up to `at` where the stored
/// planes end, and keeps the thread's plane buffer for its next chunk.
fn end_planes(out: &mut Vec<u8>, tail: usize, at: usize, packed: Vec<u8>) -> Option<()> {
    let tail_len = out.len().checked_sub(tail)?;
    out.copy_within(tail.., at);
    out.truncate(at + tail_len);
    if packed.capacity() <= KEEP_SCRATCH {
        PLANE_OUT.set(packed);
    }
    Some(())
}

/// Bytes of a chunk that [`pack_shuffled`] shuffles at a time: their planes'
/// pieces are still in the core's first-level cache when their CRC is taken.
const SHUFFLE_BLOCK: usize = 16 << 10;

/// [`pack_planes`] for the byte shuffle of `K`-byte elements (2, 4 or 8) in
/// one pass over memory: the chunk is shuffled a [`SHUFFLE_BLOCK`] at a time
/// straight into its planes' places in `out`, and the CRC of each plane's new
/// piece is taken then, from cache, rather than in a second pass over the
/// whole stored chunk once it has left the cache. A plane stored raw in place
/// is not moved at all. Returns the CRC-32 of what `out` then holds (the
/// plane table, the planes as stored, the trailing bytes), combined from the
/// planes' CRCs.
fn pack_shuffled<const K: usize>(chunk: &[u8], codec: Codec, out: &mut Vec<u8>) -> Option<u32> {
    let m = chunk.len() / K;
    let table = 4 * K;
    let body = m.checked_mul(K)?;
    // Every byte of `out` is overwritten below: a reused buffer is not zeroed.
    out.resize(table + chunk.len(), 0);
    out.truncate(table + chunk.len());
    let mut raw_crcs: [crc32fast::Hasher; 8] = Default::default();
    {
        let (planes, tail) = out.get_mut(table..)?.split_at_mut(body);
        let block = (SHUFFLE_BLOCK / K).max(32);
        for (b, src) in chunk.get(..body)?.chunks(block * K).enumerate() {
            let first = b * block;
            let n = src.len() / K;
            shuffle_strided::<K>(src, planes.get_mut(first..)?, m);
            for (j, hasher) in raw_crcs.iter_mut().enumerate().take(K) {
                hasher.update(planes.get(j * m + first..j * m + first + n)?);
            }
        }
        tail.copy_from_slice(chunk.get(body..)?);
    }
    let mut packed = PLANE_OUT.take();
    let mut stored: [(u32, u64); 8] = [(0, 0); 8];
    let mut at = table;
    for j in 0..K {
        let start = table + j * m;
        let (word, len, crc) = store_plane(out, start..start + m, at, codec, &mut packed, true)?;
        let crc = match crc {
            Some(crc) => crc,
            None => raw_crcs.get(j)?.clone().finalize(),
        };
        at += len;
        *stored.get_mut(j)? = (crc, len as u64);
        out.get_mut(4 * j..4 * j + 4)?
            .copy_from_slice(&word.to_le_bytes());
    }
    end_planes(out, table + body, at, packed)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(out.get(..table)?);
    for &(plane_crc, len) in stored.get(..K)? {
        crc.combine(&crc32fast::Hasher::new_with_initial_len(plane_crc, len));
    }
    crc.update(out.get(at..)?);
    Some(crc.finalize())
}

/// Whether every byte of `bytes` is zero, 256 bytes at a time (a byte loop
/// took a fifteenth of a bit-shuffled write: most of a small integer's bit
/// planes are zero and read to their end).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let (blocks, rest) = bytes.as_chunks::<256>();
    blocks
        .iter()
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
        && rest.iter().all(|&b| b == 0)
}

thread_local! {
    /// The thread's buffer for compressing one plane aside.
    static PLANE_OUT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Inverse of [`pack_planes`] into `out` (the chunk's raw length), undoing the filter as well.
///
/// With `parallel`, the planes are decompressed on the pool when the chunk is
/// large enough to pay for it: a caller that decodes a model's many
/// single-chunk arrays one at a time has no other parallelism. Callers that
/// spread the arrays over threads themselves ([`decode_chunk`] without
/// `parallel`) keep each chunk on one thread.
fn unpack_planes(
    src: &[u8],
    filter: Filter,
    codec: Codec,
    out: &mut [u8],
    parallel: bool,
) -> std::result::Result<(), String> {
    let (k, m) = filter.planes(out.len());
    let zero_planes = filter.has_zero_planes();
    let table_len = 4 * k;
    let table = src.get(..table_len).ok_or("plane table truncated")?;
    let mut planes_src = Vec::with_capacity(k);
    let mut at = table_len;
    for (j, word) in table.chunks_exact(4).enumerate() {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(word);
        let word = u32::from_le_bytes(bytes);
        let len = (word & !PLANE_RAW) as usize;
        let end = at.checked_add(len).ok_or("plane size overflows")?;
        let block = src
            .get(at..end)
            .ok_or_else(|| format!("plane {j} runs past the chunk"))?;
        let raw = word & PLANE_RAW != 0;
        if raw && len != m {
            return Err(format!("raw plane {j} has {len} bytes, expected {m}"));
        }
        planes_src.push((block, raw));
        at = end;
    }
    let tail = src.get(at..).unwrap_or_default();
    if tail.len() != out.len() - m * k {
        return Err(format!(
            "chunk ends with {} bytes, expected {}",
            tail.len(),
            out.len() - m * k
        ));
    }
    with_scratch(out.len(), |scratch| {
        let (planes, tail_out) = scratch.split_at_mut(m * k);
        // Bit planes stored raw or left out as zero are read where they are
        // (most of a bit-shuffled chunk): only compressed ones need the scratch.
        let unpack_one = |(plane_out, &(block, raw)): (&mut [u8], &PlaneSrc<'_>)| {
            if !raw && block.is_empty() && zero_planes {
                return Ok(());
            }
            if !raw {
                return decompress_exact(block, codec, plane_out);
            }
            if !zero_planes {
                plane_out.copy_from_slice(block);
            }
            Ok(())
        };
        if m > 0 && parallel && out.len() >= PARALLEL_PLANES {
            planes
                .par_chunks_mut(m)
                .zip(planes_src.par_iter())
                .try_for_each(unpack_one)?;
        } else if m > 0 {
            planes
                .chunks_mut(m)
                .zip(planes_src.iter())
                .try_for_each(unpack_one)?;
        }
        if let Filter::BitShuffle(k) = filter {
            let zeros = if planes_src.iter().any(|&(b, raw)| !raw && b.is_empty()) {
                vec![0u8; m]
            } else {
                Vec::new()
            };
            let views: Vec<&[u8]> = planes_src
                .iter()
                .enumerate()
                .map(|(j, &(block, raw))| match (raw, block.is_empty()) {
                    (true, _) => block,
                    (false, true) => zeros.as_slice(),
                    (false, false) => planes.get(j * m..(j + 1) * m).unwrap_or_default(),
                })
                .collect();
            return if bitshuffle::bitunshuffle_planes(&views, tail, k as usize, out) {
                Ok(())
            } else {
                Err("bit planes do not fit the chunk".to_owned())
            };
        }
        tail_out.copy_from_slice(tail);
        filter.permute(scratch, out, false);
        Ok(())
    })
}

/// One stored plane of a chunk and whether it is raw.
type PlaneSrc<'a> = (&'a [u8], bool);

/// Chunks at least this large have their planes decompressed in parallel.
const PARALLEL_PLANES: usize = 64 << 10;
/// Scratch buffers up to this size are kept for the thread's next chunk.
const KEEP_SCRATCH: usize = 2 * DEFAULT_CHUNK_SIZE;

thread_local! {
    /// The thread's scratch buffer for unshuffling: reusing it saves zeroing
    /// and faulting in fresh pages for every chunk.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` bytes (contents unspecified).
pub(crate) fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    // Taken out of the cell, so a nested call on this thread (rayon may run
    // another chunk here while `f` waits) gets a buffer of its own.
    let mut buf = SCRATCH.take();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let result = f(buf.get_mut(..len).unwrap_or_default());
    if buf.len() <= KEEP_SCRATCH {
        SCRATCH.set(buf);
    }
    result
}

/// Groups byte `j` of every element together: `out[j * n + i] = data[i * k + j]`.
/// Trailing bytes that do not fill an element are kept at the end as they are.
#[must_use]
pub fn shuffle(data: &[u8], itemsize: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    shuffle_into(data, itemsize, &mut out);
    out
}

/// [`shuffle`] into `out` (same length as `data`).
pub(crate) fn byte_transpose(data: &[u8], itemsize: usize, out: &mut [u8]) {
    shuffle_into(data, itemsize, out);
}

/// [`shuffle`] into `out` (same length as `data`).
fn shuffle_into(data: &[u8], itemsize: usize, out: &mut [u8]) {
    if out.len() != data.len() {
        return;
    }
    let k = itemsize.max(1);
    let n = data.len() / k;
    let (body, tail) = data.split_at(n * k);
    let (out_body, out_tail) = out.split_at_mut(n * k);
    match k {
        2 => transpose::<2>(body, out_body, n, true),
        4 => transpose::<4>(body, out_body, n, true),
        8 => transpose::<8>(body, out_body, n, true),
        _ => {
            for (j, plane) in out_body.chunks_exact_mut(n.max(1)).enumerate() {
                for (slot, byte) in plane.iter_mut().zip(body.iter().skip(j).step_by(k)) {
                    *slot = *byte;
                }
            }
        }
    }
    out_tail.copy_from_slice(tail);
}

/// The inverse of [`shuffle`], written into `out` (same length as `data`).
pub fn unshuffle_into(data: &[u8], itemsize: usize, out: &mut [u8]) {
    let k = itemsize.max(1);
    let n = data.len() / k;
    let (body, tail) = data.split_at(n * k);
    let (out_body, out_tail) = out.split_at_mut((n * k).min(out.len()));
    match k {
        2 => transpose::<2>(body, out_body, n, false),
        4 => transpose::<4>(body, out_body, n, false),
        8 => transpose::<8>(body, out_body, n, false),
        _ => {
            for (j, plane) in body.chunks_exact(n.max(1)).enumerate() {
                for (slot, byte) in out_body.iter_mut().skip(j).step_by(k).zip(plane) {
                    *slot = *byte;
                }
            }
        }
    }
    let len = out_tail.len().min(tail.len());
    if let (Some(dst), Some(src)) = (out_tail.get_mut(..len), tail.get(..len)) {
        dst.copy_from_slice(src);
    }
}

/// Shuffles (`forward`) or unshuffles `n` elements of `K` bytes (2, 4 or 8)
/// between interleaved and planar layouts. Both slices hold exactly `n * K`
/// bytes. On x86-64 in SSE2 registers ([`sse2`]; the forward shuffle in
/// AVX2 registers, [`avx2`], where the processor has them), elsewhere as
/// words ([`transpose_scalar`]).
fn transpose<const K: usize>(src: &[u8], dst: &mut [u8], n: usize, forward: bool) {
    if src.len() != n * K || dst.len() != n * K || n == 0 || K > 8 {
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        let avx2 = forward && std::arch::is_x86_feature_detected!("avx2");
        #[expect(unsafe_code, reason = "calling SSE2 and AVX2 functions")]
        // SAFETY: the functions are safe but for the instructions they use:
        // SSE2's, which this build targets (`target_feature = "sse2"`, part of
        // the x86-64 baseline), so every processor that runs it has them, and
        // AVX2's, called only where the processor says it has them.
        let done = unsafe {
            if avx2 {
                avx2::shuffle::<K>(src, dst, n, n)
            } else if forward {
                sse2::shuffle::<K>(src, dst, n, n)
            } else {
                sse2::unshuffle::<K>(src, dst, n)
            }
        };
        // The last elements, fewer than 32, one byte at a time.
        for e in done..n {
            for j in 0..K {
                let (from, to) = if forward {
                    (e * K + j, j * n + e)
                } else {
                    (j * n + e, e * K + j)
                };
                if let (Some(out), Some(byte)) = (dst.get_mut(to), src.get(from)) {
                    *out = *byte;
                }
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    transpose_scalar::<K>(src, dst, n, forward);
}

/// The byte shuffle of the whole elements of `src` (`n` of `K` bytes, 2, 4
/// or 8) into `K` planes `stride` bytes apart in `dst`: plane `j` is
/// `dst[j·stride .. j·stride + n]`. Lets a chunk be shuffled a cache-sized
/// block at a time straight into its planes ([`pack_shuffled`]).
fn shuffle_strided<const K: usize>(src: &[u8], dst: &mut [u8], stride: usize) {
    let n = src.len() / K;
    if n == 0 || K > 8 || stride < n || dst.len() < (K - 1) * stride + n {
        return;
    }
    let src = src.get(..n * K).unwrap_or_default();
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    let done = {
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[expect(unsafe_code, reason = "calling SSE2 and AVX2 functions")]
        // SAFETY: as in `transpose`.
        unsafe {
            if avx2 {
                avx2::shuffle::<K>(src, dst, n, stride)
            } else {
                sse2::shuffle::<K>(src, dst, n, stride)
            }
        }
    };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    let done = 0;
    for e in done..n {
        for j in 0..K {
            if let (Some(out), Some(byte)) = (dst.get_mut(j * stride + e), src.get(e * K + j)) {
                *out = *byte;
            }
        }
    }
}

/// [`transpose`] without SSE2: groups of `K` elements are a `K`×`K` byte
/// matrix, transposed in registers as `K` words ([`transpose_words`]), so
/// every plane is read or written a word at a time; the planes are indexed
/// directly (not walked by iterators held in memory), which lets the
/// compiler keep the loop in registers.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    expect(
        dead_code,
        reason = "the SSE2 path replaces it here; tests compare the two"
    )
)]
fn transpose_scalar<const K: usize>(src: &[u8], dst: &mut [u8], n: usize, forward: bool) {
    if src.len() != n * K || dst.len() != n * K || n == 0 || K > 8 {
        return;
    }
    let whole = n / K * K;
    if forward {
        let (groups, _) = src.get(..whole * K).unwrap_or_default().as_chunks::<K>();
        let mut planes: [&mut [[u8; K]]; 8] = Default::default();
        for (slot, plane) in planes.iter_mut().zip(dst.chunks_exact_mut(n)) {
            *slot = plane
                .get_mut(..whole)
                .unwrap_or_default()
                .as_chunks_mut::<K>()
                .0;
        }
        for (g, group) in groups.chunks_exact(K).enumerate() {
            let mut words = [0u64; K];
            for (word, element) in words.iter_mut().zip(group) {
                *word = load_word(element);
            }
            transpose_words(&mut words);
            for (plane, word) in planes.iter_mut().zip(words) {
                if let Some(out) = plane.get_mut(g) {
                    store_word(out, word);
                }
            }
        }
        for e in whole..n {
            for (j, plane) in dst.chunks_exact_mut(n).enumerate() {
                if let (Some(out), Some(byte)) = (plane.get_mut(e), src.get(e * K + j)) {
                    *out = *byte;
                }
            }
        }
    } else {
        let mut planes: [&[[u8; K]]; 8] = Default::default();
        for (slot, plane) in planes.iter_mut().zip(src.chunks_exact(n)) {
            *slot = plane.get(..whole).unwrap_or_default().as_chunks::<K>().0;
        }
        let (groups, _) = dst
            .get_mut(..whole * K)
            .unwrap_or_default()
            .as_chunks_mut::<K>();
        for (g, group) in groups.chunks_exact_mut(K).enumerate() {
            let mut words = [0u64; K];
            for (word, plane) in words.iter_mut().zip(&planes) {
                if let Some(bytes) = plane.get(g) {
                    *word = load_word(bytes);
                }
            }
            transpose_words(&mut words);
            for (element, word) in group.iter_mut().zip(words) {
                store_word(element, word);
            }
        }
        for e in whole..n {
            for (j, plane) in src.chunks_exact(n).enumerate() {
                if let (Some(out), Some(byte)) = (dst.get_mut(e * K + j), plane.get(e)) {
                    *out = *byte;
                }
            }
        }
    }
}

/// The byte shuffle 32 elements at a time in AVX2 registers, where the
/// processor has them: twice the work of [`sse2::shuffle`] per instruction,
/// which took a third of a compressed write of random floats (the codec's
/// work on their few compressible planes is less than the shuffle's).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_loadu2_m128i, _mm256_setzero_si256, _mm256_storeu_si256,
        _mm256_unpackhi_epi8, _mm256_unpacklo_epi8,
    };

    /// [`super::sse2::shuffle`] on two groups of 16 elements at once: the low
    /// lane of register `i` holds block `i` of the first group, its high lane
    /// block `i` of the second, and AVX2's unpacks work on each lane as SSE2's
    /// do on a register. After the same rounds each register holds 16 bytes
    /// of one plane from each group, which follow each other in the plane.
    #[target_feature(enable = "avx2")]
    pub(super) fn shuffle<const K: usize>(
        src: &[u8],
        dst: &mut [u8],
        n: usize,
        stride: usize,
    ) -> usize {
        if src.len() != n * K || !matches!(K, 2 | 4 | 8) || stride < n {
            return 0;
        }
        let groups = n / 32;
        let (blocks, _) = src.as_chunks::<16>();
        let mut planes: [&mut [[u8; 32]]; 8] = Default::default();
        let mut found = 0;
        for (slot, plane) in planes.iter_mut().zip(dst.chunks_mut(stride)).take(K) {
            let Some(plane) = plane.get_mut(..n) else {
                return 0;
            };
            *slot = plane.as_chunks_mut::<32>().0;
            found += 1;
        }
        if found != K {
            return 0;
        }
        for (g, group) in blocks.chunks_exact(2 * K).take(groups).enumerate() {
            let (first, second) = group.split_at(K);
            let mut regs = [_mm256_setzero_si256(); 8];
            for ((reg, lo), hi) in regs.iter_mut().zip(first).zip(second) {
                #[expect(unsafe_code, reason = "an unaligned AVX2 load")]
                // SAFETY: both pointers come from references to 16 bytes.
                unsafe {
                    *reg = _mm256_loadu2_m128i(hi.as_ptr().cast(), lo.as_ptr().cast());
                }
            }
            match K {
                2 => {
                    round::<K, 0>(&mut regs);
                    round::<K, 0>(&mut regs);
                    round::<K, 0>(&mut regs);
                    round::<K, 0>(&mut regs);
                }
                4 => {
                    round::<K, 1>(&mut regs);
                    round::<K, 0>(&mut regs);
                    round::<K, 1>(&mut regs);
                    round::<K, 0>(&mut regs);
                }
                _ => {
                    round::<K, 2>(&mut regs);
                    round::<K, 1>(&mut regs);
                    round::<K, 0>(&mut regs);
                    round::<K, 2>(&mut regs);
                }
            }
            for (i, reg) in regs.iter().take(K).enumerate() {
                let plane = super::sse2::plane_of(K, i);
                if let Some(out) = planes.get_mut(plane).and_then(|p| p.get_mut(g)) {
                    #[expect(unsafe_code, reason = "an unaligned AVX2 store")]
                    // SAFETY: the pointer comes from a mutable reference to 32 bytes.
                    unsafe {
                        _mm256_storeu_si256(out.as_mut_ptr().cast(), *reg);
                    }
                }
            }
        }
        32 * groups
    }

    /// One unpack round on register-index bit `BIT` (see `sse2::unpack_rounds`),
    /// with constant indices so that the registers stay in registers.
    #[target_feature(enable = "avx2")]
    #[inline]
    #[expect(
        clippy::indexing_slicing,
        reason = "`i + step` is checked below `K`, and `K` is at most 8, the array's length"
    )]
    fn round<const K: usize, const BIT: usize>(regs: &mut [__m256i; 8]) {
        let step = 1usize << BIT;
        for i in 0..K.min(8) {
            if i & step == 0 && i + step < K.min(8) {
                let (a, b) = (regs[i], regs[i + step]);
                regs[i] = _mm256_unpacklo_epi8(a, b);
                regs[i + step] = _mm256_unpackhi_epi8(a, b);
            }
        }
    }
}

/// The byte shuffle and its inverse 16 elements at a time in SSE2 registers,
/// which every x86-64 processor has: 1.3-4x the speed of the word transpose.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(crate) mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cvtsi128_si64, _mm_set_epi64x, _mm_srli_si128, _mm_unpackhi_epi8,
        _mm_unpacklo_epi8,
    };

    /// 16 bytes into a register (the compiler makes it one unaligned load).
    #[target_feature(enable = "sse2")]
    pub(crate) fn load(block: &[u8; 16]) -> __m128i {
        let (lo, hi) = block.split_at(8);
        let word = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
            i64::from_le_bytes(a)
        };
        _mm_set_epi64x(word(hi), word(lo))
    }

    /// A register into 16 bytes.
    #[target_feature(enable = "sse2")]
    fn store(reg: __m128i, out: &mut [u8; 16]) {
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&_mm_cvtsi128_si64(reg).to_le_bytes());
        b.copy_from_slice(&_mm_cvtsi128_si64(_mm_srli_si128::<8>(reg)).to_le_bytes());
    }

    /// Unpacks the first `K` registers in pairs that differ in register-index
    /// bit `bit`, for each bit of `rounds` in turn (the pair's low halves
    /// interleaved go where the bit is 0, the high halves where it is 1).
    #[target_feature(enable = "sse2")]
    fn unpack_rounds<const K: usize>(regs: &mut [__m128i; 8], rounds: &[usize]) {
        for &bit in rounds {
            let step = 1usize << bit;
            for i in (0..K).filter(|i| i & step == 0) {
                if let (Some(&a), Some(&b)) = (regs.get(i), regs.get(i + step)) {
                    if let Some(r) = regs.get_mut(i) {
                        *r = _mm_unpacklo_epi8(a, b);
                    }
                    if let Some(r) = regs.get_mut(i + step) {
                        *r = _mm_unpackhi_epi8(a, b);
                    }
                }
            }
        }
    }

    /// Register `i` after the rounds of [`shuffle`] holds byte plane `plane_of(K, i)`.
    pub(super) fn plane_of(k: usize, register: usize) -> usize {
        match k {
            // Register bits (j0 j2 j1), see `shuffle`.
            8 => ((register >> 2) & 1) | ((register & 1) << 1) | (((register >> 1) & 1) << 2),
            _ => register,
        }
    }

    /// Shuffles the first whole groups of 16 elements of `K` bytes (2, 4 or
    /// 8) of `src` into the planes of `dst` (`K` planes of `n` bytes); returns
    /// how many elements that was.
    ///
    /// The 16 elements are `K` registers, byte `j` of element `e` at bit
    /// address `16·K·…`: register `e / (16/K)`, lane `(e mod 16/K)·K + j`. An
    /// unpack of two registers that differ in one register-index bit shifts
    /// every lane index up one bit, takes that register bit in at the bottom
    /// and moves the lane's top bit into the register bit. Four rounds, on
    /// the register bit holding the highest element bit left each time, put
    /// the element bits (e3 e2 e1 e0) in the lane and the byte index in the
    /// register index: each register is then 16 bytes of one plane.
    #[target_feature(enable = "sse2")]
    pub(super) fn shuffle<const K: usize>(
        src: &[u8],
        dst: &mut [u8],
        n: usize,
        stride: usize,
    ) -> usize {
        let rounds: &[usize] = match K {
            2 => &[0, 0, 0, 0],
            4 => &[1, 0, 1, 0],
            8 => &[2, 1, 0, 2],
            _ => return 0,
        };
        if src.len() != n * K || stride < n {
            return 0;
        }
        let groups = n / 16;
        let (blocks, _) = src.as_chunks::<16>();
        let mut planes: Vec<&mut [[u8; 16]]> = Vec::with_capacity(K);
        for plane in dst.chunks_mut(stride).take(K) {
            let Some(plane) = plane.get_mut(..n) else {
                return 0;
            };
            planes.push(plane.as_chunks_mut::<16>().0);
        }
        if planes.len() != K {
            return 0;
        }
        for (g, group) in blocks.chunks_exact(K).take(groups).enumerate() {
            let mut regs = [_mm_set_epi64x(0, 0); 8];
            for (reg, block) in regs.iter_mut().zip(group) {
                *reg = load(block);
            }
            unpack_rounds::<K>(&mut regs, rounds);
            for (i, reg) in regs.iter().take(K).enumerate() {
                if let Some(out) = planes.get_mut(plane_of(K, i)).and_then(|p| p.get_mut(g)) {
                    store(*reg, out);
                }
            }
        }
        16 * groups
    }

    /// The inverse of [`shuffle`]: register `j` loaded from plane `j` holds
    /// byte `j` of 16 elements (register bits: the byte index, lane bits
    /// e3 e2 e1 e0); rounds on the register bits from the highest down bring
    /// the byte index into the lane, under the low element bits, and the
    /// high element bits into the register index: each register is then
    /// `16 / K` elements in memory order.
    #[target_feature(enable = "sse2")]
    pub(super) fn unshuffle<const K: usize>(src: &[u8], dst: &mut [u8], n: usize) -> usize {
        let rounds: &[usize] = match K {
            2 => &[0],
            4 => &[1, 0],
            8 => &[2, 1, 0],
            _ => return 0,
        };
        if src.len() != n * K || dst.len() != n * K {
            return 0;
        }
        let groups = n / 16;
        let planes: Vec<&[[u8; 16]]> = src.chunks_exact(n).map(|p| p.as_chunks::<16>().0).collect();
        let (blocks, _) = dst.as_chunks_mut::<16>();
        for (g, group) in blocks.chunks_exact_mut(K).take(groups).enumerate() {
            let mut regs = [_mm_set_epi64x(0, 0); 8];
            for (reg, plane) in regs.iter_mut().zip(&planes) {
                if let Some(block) = plane.get(g) {
                    *reg = load(block);
                }
            }
            unpack_rounds::<K>(&mut regs, rounds);
            for (out, reg) in group.iter_mut().zip(&regs) {
                store(*reg, out);
            }
        }
        16 * groups
    }
}

pub(crate) fn load_word<const K: usize>(bytes: &[u8; K]) -> u64 {
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(bytes) {
        *w = *b;
    }
    u64::from_le_bytes(word)
}

pub(crate) fn store_word<const K: usize>(bytes: &mut [u8; K], word: u64) {
    for (b, w) in bytes.iter_mut().zip(word.to_le_bytes()) {
        *b = w;
    }
}

/// Transposes the `K`×`K` byte matrix whose row `i` is the low `K` bytes of
/// `words[i]` (`K` = 2, 4 or 8): afterwards byte `i` of word `j` is what
/// byte `j` of word `i` was. Blocks of 1, 2 and 4 bytes swap across the
/// diagonal in turn, as masked shifts.
#[expect(
    clippy::indexing_slicing,
    reason = "`i` and `i + step` are below `K`, the array's length"
)]
pub(crate) fn transpose_words<const K: usize>(words: &mut [u64; K]) {
    for (step, mask) in [
        (1usize, 0x00FF_00FF_00FF_00FF_u64),
        (2, 0x0000_FFFF_0000_FFFF),
        (4, 0x0000_0000_FFFF_FFFF),
    ] {
        if step >= K {
            break;
        }
        let shift = 8 * step as u32;
        for i in (0..K).filter(|i| i & step == 0) {
            let t = ((words[i] >> shift) ^ words[i + step]) & mask;
            words[i + step] ^= t;
            words[i] ^= t << shift;
        }
    }
}

/// A parsed footer and index.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Codec.
    pub codec: Codec,
    /// Filter.
    pub filter: Filter,
    /// Bytes per chunk before compression.
    pub chunk_size: u64,
    /// Bytes before compression.
    pub raw_size: u64,
    /// `(offset, stored size, crc32, raw)` per chunk, offsets relative to the payload.
    pub chunks: Vec<(u64, u64, u32, bool)>,
}

/// Reads and checks the footer and index of a payload.
pub fn read_layout(payload: &[u8], entry: &str) -> Result<Layout> {
    let bad = |what: String| FormatError::Mismatch {
        entry: entry.to_owned(),
        what: format!("compressed payload: {what}"),
    };
    let footer_at = payload
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or_else(|| bad("shorter than its footer".into()))?;
    let footer = payload
        .get(footer_at..)
        .ok_or_else(|| bad("no footer".into()))?;
    let u64_at = |at: usize| -> u64 {
        let mut a = [0u8; 8];
        if let Some(b) = footer.get(at..at + 8) {
            a.copy_from_slice(b);
        }
        u64::from_le_bytes(a)
    };
    if footer.get(..8) != Some(FOOTER_MAGIC.as_slice()) || footer.get(8) != Some(&1) {
        return Err(bad("bad footer magic or version".into()));
    }
    let codec = match footer.get(9) {
        Some(1) => Codec::Zstd(0),
        Some(2) => Codec::Lz4,
        other => {
            return Err(FormatError::Unsupported {
                what: format!("compression codec id {other:?} in entry `{entry}`"),
            });
        }
    };
    let mut itemsize = [0u8; 4];
    if let Some(b) = footer.get(12..16) {
        itemsize.copy_from_slice(b);
    }
    let itemsize = u32::from_le_bytes(itemsize);
    let filter = match footer.get(10) {
        Some(0) => Filter::None,
        Some(1) if itemsize > 1 => Filter::Shuffle(itemsize),
        Some(2) if bitshuffle::supports(itemsize as usize) => Filter::BitShuffle(itemsize),
        Some(&id) if id > 2 => {
            return Err(FormatError::Unsupported {
                what: format!("filter id {id} in entry `{entry}`"),
            });
        }
        _ => return Err(bad(format!("bad filter for item size {itemsize}"))),
    };
    let index_start = usize::try_from(u64_at(40)).unwrap_or(usize::MAX);
    let covered = payload.get(index_start..footer_at + FOOTER_LEN - 4);
    let mut stored_crc = [0u8; 4];
    if let Some(b) = footer.get(FOOTER_LEN - 4..) {
        stored_crc.copy_from_slice(b);
    }
    match covered {
        Some(bytes) if crc32fast::hash(bytes) == u32::from_le_bytes(stored_crc) => {}
        _ => return Err(bad("index or footer is damaged (CRC mismatch)".into())),
    }
    if footer
        .get(48..FOOTER_LEN - 4)
        .is_some_and(|r| r.iter().any(|&b| b != 0))
    {
        return Err(bad("reserved footer bytes are not zero".into()));
    }
    let chunk_size = u64_at(16);
    let raw_size = u64_at(24);
    let count = u64_at(32);
    let index_offset = u64_at(40);
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(bad(format!("chunk size {chunk_size} out of range")));
    }
    if count != raw_size.div_ceil(chunk_size) {
        return Err(bad(format!(
            "{count} chunks cannot hold {raw_size} bytes in chunks of {chunk_size}"
        )));
    }
    let index_len = count
        .checked_mul(INDEX_RECORD_LEN as u64)
        .filter(|&len| index_offset.checked_add(len) == Some(footer_at as u64))
        .ok_or_else(|| bad("index does not sit between the chunks and the footer".into()))?;
    let index = payload
        .get(index_offset as usize..(index_offset + index_len) as usize)
        .ok_or_else(|| bad("index outside the payload".into()))?;
    let mut chunks = Vec::with_capacity(count as usize);
    let mut offset = 0u64;
    for (i, record) in index.chunks_exact(INDEX_RECORD_LEN).enumerate() {
        let mut stored = [0u8; 8];
        let mut crc = [0u8; 4];
        let mut flags = [0u8; 4];
        stored.copy_from_slice(record.get(..8).unwrap_or(&[0; 8]));
        crc.copy_from_slice(record.get(8..12).unwrap_or(&[0; 4]));
        flags.copy_from_slice(record.get(12..16).unwrap_or(&[0; 4]));
        let stored = u64::from_le_bytes(stored);
        let flags = u32::from_le_bytes(flags);
        let raw_len = chunk_size.min(raw_size - chunk_size * i as u64);
        let is_raw = flags & FLAG_RAW != 0;
        if flags & !FLAG_RAW != 0 || (is_raw && stored != raw_len) {
            return Err(bad(format!("chunk {i} has an invalid index record")));
        }
        chunks.push((offset, stored, u32::from_le_bytes(crc), is_raw));
        offset = offset
            .checked_add(stored)
            .ok_or_else(|| bad(format!("chunk {i} size overflows")))?;
    }
    if offset != index_offset {
        return Err(bad(format!(
            "chunks take {offset} bytes, the index starts at {index_offset}"
        )));
    }
    Ok(Layout {
        codec,
        filter,
        chunk_size,
        raw_size,
        chunks,
    })
}

/// Decompresses a payload into `dest` (exactly `raw_size` bytes), checking every
/// chunk's CRC and size, on all threads of the current pool.
pub fn decode_into(payload: &[u8], entry: &str, dest: &mut [u8]) -> Result<()> {
    decode_into_with(payload, entry, dest, &|_| {})
}

/// The CRC-32 of `header` followed by `payload`, computed from the chunk CRCs in
/// the (already checked) index and the index and footer bytes, without reading
/// the chunks: [`decode_into`] then checks each chunk against its index CRC, so
/// together they verify the entry's zip CRC in a single pass over the data.
#[must_use]
pub fn entry_crc(header: &[u8], payload: &[u8], layout: &Layout) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    let mut end = 0u64;
    for &(offset, stored, crc, _) in &layout.chunks {
        hasher.combine(&crc32fast::Hasher::new_with_initial_len(crc, stored));
        end = offset + stored;
    }
    hasher.update(payload.get(end as usize..).unwrap_or_default());
    hasher.finalize()
}

/// [`decode_into`], calling `done` with each chunk's stored bytes once decoded.
pub fn decode_into_with(
    payload: &[u8],
    entry: &str,
    dest: &mut [u8],
    done: &(dyn Fn(&[u8]) + Sync),
) -> Result<()> {
    let layout = read_layout(payload, entry)?;
    if dest.len() as u64 != layout.raw_size {
        return Err(FormatError::Mismatch {
            entry: entry.to_owned(),
            what: format!(
                "payload decompresses to {} bytes, the array needs {}",
                layout.raw_size,
                dest.len()
            ),
        });
    }
    dest.par_chunks_mut(layout.chunk_size as usize)
        .enumerate()
        .try_for_each(|(i, out)| decode_chunk(payload, entry, &layout, i, out, true, done))
}

/// Decodes chunk `i` of a payload whose `layout` was read (and checked) by
/// [`read_layout`] into `out` (exactly its raw length), checking its CRC and
/// size, then calls `done` with its stored bytes. With `parallel`, the byte
/// planes of a large shuffled chunk are decompressed on the pool; without,
/// everything runs on this thread (for callers that spread the chunks of
/// many arrays over threads themselves).
///
/// # Errors
/// [`FormatError::Checksum`] for a damaged chunk, [`FormatError::Corrupt`] for
/// one that does not decode to its length, [`FormatError::Usage`] for an `i`
/// or `out` that does not match the layout.
pub fn decode_chunk(
    payload: &[u8],
    entry: &str,
    layout: &Layout,
    i: usize,
    out: &mut [u8],
    parallel: bool,
    done: &(dyn Fn(&[u8]) + Sync),
) -> Result<()> {
    let &(offset, stored, crc, raw) = layout.chunks.get(i).ok_or_else(|| FormatError::Usage {
        what: format!("entry `{entry}` has no chunk {i}"),
    })?;
    let raw_len = layout.chunk_size.min(
        layout
            .raw_size
            .saturating_sub(layout.chunk_size.saturating_mul(i as u64)),
    );
    if out.len() as u64 != raw_len {
        return Err(FormatError::Usage {
            what: format!(
                "entry `{entry}` chunk {i} decodes to {raw_len} bytes, not {}",
                out.len()
            ),
        });
    }
    let damaged = |what: &str| FormatError::Corrupt {
        what: format!("entry `{entry}` chunk {i}: {what}"),
        offset,
    };
    let src = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(stored).ok())
        .and_then(|(start, len)| payload.get(start..start.checked_add(len)?))
        .ok_or_else(|| damaged("outside the payload"))?;
    let actual = crc32fast::hash(src);
    if actual != crc {
        return Err(FormatError::Checksum {
            entry: entry.to_owned(),
            chunk: Some(i as u64),
            expected: crc,
            actual,
        });
    }
    let decoded = if raw {
        out.copy_from_slice(src);
        Ok(())
    } else {
        match layout.filter {
            Filter::None => decompress_exact(src, layout.codec, out),
            filter => unpack_planes(src, filter, layout.codec, out, parallel),
        }
        .map_err(|w| damaged(&w))
    };
    done(src);
    decoded
}

fn decompress_exact(src: &[u8], codec: Codec, out: &mut [u8]) -> std::result::Result<(), String> {
    let written = match codec {
        Codec::Zstd(_) => DZSTD.with(|cell| {
            let mut cell = cell.try_borrow_mut().map_err(|e| format!("zstd: {e}"))?;
            if cell.is_none() {
                *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
            }
            cell.as_mut()
                .ok_or_else(|| "zstd: no context".to_owned())?
                .decompress_to_buffer(src, out)
                .map_err(|e| format!("zstd: {e}"))
        })?,
        Codec::Lz4 => lz4_flex::decompress_into(src, out).map_err(|e| format!("lz4: {e}"))?,
    };
    if written == out.len() {
        Ok(())
    } else {
        Err(format!(
            "decompressed to {written} bytes, expected {}",
            out.len()
        ))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn encode(data: &[u8], settings: Settings) -> (Vec<u8>, Summary) {
        let sample = data.get(..settings.chunk_size.min(data.len())).unwrap();
        encode_by(Encoder::new(settings, sample), data)
    }

    /// The payload `enc` makes of `data`, and its summary.
    fn encode_by(mut enc: Encoder, data: &[u8]) -> (Vec<u8>, Summary) {
        let mut out = Vec::new();
        enc.encode(data, &mut |pieces| {
            pieces.iter().for_each(|(b, _)| out.extend_from_slice(b));
            Ok(())
        })
        .unwrap();
        let summary = enc
            .finish(&mut |pieces| {
                pieces.iter().for_each(|(b, _)| out.extend_from_slice(b));
                Ok(())
            })
            .unwrap();
        (out, summary)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32).flat_map(|i| (i / 7).to_le_bytes()).collect()
    }

    #[test]
    fn round_trips_every_codec_and_size() {
        for codec in [Codec::Zstd(3), Codec::Lz4] {
            for n in [0usize, 1, 1000, 70_000] {
                let data = sample(n);
                let (payload, summary) = encode(
                    &data,
                    Settings {
                        codec,
                        itemsize: 4,
                        chunk_size: 65_536,
                    },
                );
                assert_eq!(summary.stored_size, payload.len() as u64);
                let mut out = vec![0u8; data.len()];
                decode_into(&payload, "x", &mut out).unwrap();
                assert_eq!(out, data);
            }
        }
    }

    #[test]
    fn shuffle_is_chosen_for_typed_data_inverts_and_checks_plane_sizes() {
        // A smooth float64 series: the exponent and high mantissa bytes repeat,
        // the low ones do not, which is what the filter is for.
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (f64::from(i) * 0.001).to_le_bytes())
            .collect();
        let (payload, summary) = encode(
            &data,
            Settings {
                codec: Codec::Zstd(3),
                itemsize: 8,
                chunk_size: 1 << 20,
            },
        );
        assert_eq!(summary.filter, Filter::Shuffle(8));
        // Chunks this large have their planes decompressed in parallel.
        let mut out = vec![0u8; data.len()];
        decode_into(&payload, "x", &mut out).unwrap();
        assert_eq!(out, data);
        // Behind the chunk CRC (which catches damage to the data), the plane
        // table is still checked: any changed size no longer adds up.
        let (offset, stored, _, raw) = read_layout(&payload, "x").unwrap().chunks[0];
        assert!(!raw);
        let chunk = &payload[offset as usize..(offset + stored) as usize];
        let mut out = vec![0u8; 1 << 20];
        for at in [0usize, 5, 13, 30] {
            let mut bad = chunk.to_vec();
            bad[at] ^= 0x5a;
            assert!(
                unpack_planes(&bad, Filter::Shuffle(8), Codec::Zstd(3), &mut out, true).is_err()
            );
        }
        for cut in [0, 31, chunk.len() / 2, chunk.len() - 1] {
            assert!(
                unpack_planes(
                    &chunk[..cut],
                    Filter::Shuffle(8),
                    Codec::Zstd(3),
                    &mut out,
                    true
                )
                .is_err()
            );
        }
        for k in [2usize, 4, 8] {
            // Around the edges of the groups of 16 and of `k` elements.
            for len in [
                0usize,
                1,
                15 * k + 1,
                16 * k,
                16 * k + k - 1,
                33 * k + 5,
                4099,
            ] {
                let bytes: Vec<u8> = (0..len as u32).map(|i| (i * 37 % 253) as u8).collect();
                let planar = shuffle(&bytes, k);
                let n = len / k;
                for (at, byte) in planar.iter().enumerate() {
                    let want = if at < n * k {
                        bytes[(at % n) * k + at / n]
                    } else {
                        bytes[at]
                    };
                    assert_eq!(*byte, want, "k={k} len={len} at={at}");
                }
                let mut back = vec![0u8; len];
                unshuffle_into(&planar, k, &mut back);
                assert_eq!(back, bytes, "k={k} len={len}");
                // The word transpose (other processors) agrees both ways.
                let body = n * k;
                let mut scalar = vec![0u8; body];
                let run = |src: &[u8], dst: &mut [u8], forward| match k {
                    2 => transpose_scalar::<2>(src, dst, n, forward),
                    4 => transpose_scalar::<4>(src, dst, n, forward),
                    _ => transpose_scalar::<8>(src, dst, n, forward),
                };
                run(&bytes[..body], &mut scalar, true);
                assert_eq!(scalar, planar[..body], "k={k} len={len}");
                run(&planar[..body], &mut scalar, false);
                assert_eq!(scalar, bytes[..body], "k={k} len={len}");
            }
        }
        for k in [2usize, 3, 4, 8, 24] {
            let bytes: Vec<u8> = (0..1001u32).map(|i| (i * 31 % 251) as u8).collect();
            let mut back = vec![0u8; bytes.len()];
            unshuffle_into(&shuffle(&bytes, k), k, &mut back);
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn the_filter_is_chosen_on_the_whole_chunk_not_its_head() {
        // A quarter of zeros (which compress best unshuffled), then a smooth
        // series of 24-byte records (shuffled by 8-byte words): the sample
        // spans the chunk, so the records decide.
        let mut data = vec![0u8; 3 * 8 * 20_000];
        for i in 0..60_000u32 {
            data.extend_from_slice(&(f64::from(i) * 0.37).to_le_bytes());
        }
        let (payload, summary) = encode(
            &data,
            Settings {
                codec: Codec::Zstd(3),
                itemsize: 24,
                chunk_size: 4 << 20,
            },
        );
        assert_eq!(summary.filter, Filter::Shuffle(8));
        let mut out = vec![0u8; data.len()];
        decode_into(&payload, "x", &mut out).unwrap();
        assert_eq!(out, data);
        let sample = filter_sample(&data, 8);
        assert!(sample.len() <= data.len() / 16 && sample.len().is_multiple_of(8));
        assert!(sample.iter().any(|&b| b != 0) && sample.starts_with(&[0; 64]));
    }

    #[test]
    fn planes_saving_little_are_stored_raw_at_fast_levels() {
        // Random bytes, a tenth of them zero: about 4% smaller compressed.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let block: Vec<u8> = (0..256 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(10) {
                    0
                } else {
                    (x >> 32) as u8
                }
            })
            .collect();
        let mut out = Vec::new();
        assert!(pack_block(
            &block,
            Codec::Zstd(19),
            plane_ratio(Codec::Zstd(19)),
            &mut out
        ));
        assert!(out.len() < block.len() && out.len() > block.len() * 9 / 10);
        for codec in [Codec::Zstd(1), Codec::Zstd(3), Codec::Lz4] {
            let mut out = b"kept".to_vec();
            assert!(
                !pack_block(&block, codec, plane_ratio(codec), &mut out),
                "{codec:?}"
            );
            assert_eq!(out, b"kept");
        }
        // Unshuffled chunks (a pickle stream, whose head may say little about
        // the rest) are still compressed for a few percent.
        let (packed, _) = pack(&block, Codec::Zstd(3), Filter::None, true, Vec::new());
        assert!(matches!(packed, Packed::Data(d) if d.len() < block.len()));
    }

    #[test]
    fn fused_shuffle_gives_the_planes_and_the_crc_of_a_separate_pass() {
        // Random low bytes, skewed high bytes: some planes raw, some compressed,
        // so raw planes stay in place or move up behind compressed ones.
        let mut next = xorshift(7);
        for k in [2usize, 4, 8] {
            for len in [0, 1, k - 1, k, 33 * k + 1, 5000 * k + 3, (1 << 20) + 7] {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        let r = next() as u8;
                        if i % k % 2 == 1 { r & 3 } else { r }
                    })
                    .collect();
                let m = len / k;
                let mut strided = vec![0xAAu8; k * (m + 5)];
                shuffle_strided_dyn(k, &data, &mut strided, m + 5);
                let whole = shuffle(&data, k);
                for j in 0..k {
                    assert_eq!(
                        strided[j * (m + 5)..j * (m + 5) + m],
                        whole[j * m..(j + 1) * m],
                        "k {k} len {len} plane {j}"
                    );
                }
                let filter = Filter::Shuffle(k as u32);
                let (packed, crc) = pack(&data, Codec::Zstd(3), filter, true, Vec::new());
                let stored: &[u8] = match &packed {
                    Packed::Data(d) => d,
                    Packed::Raw => &data,
                };
                assert_eq!(crc, crc32fast::hash(stored), "k {k} len {len}");
                if let Packed::Data(d) = &packed {
                    let mut back = vec![0u8; len];
                    unpack_planes(d, filter, Codec::Zstd(3), &mut back, false).unwrap();
                    assert_eq!(back, data, "k {k} len {len}");
                }
            }
        }
    }

    fn shuffle_strided_dyn(k: usize, src: &[u8], dst: &mut [u8], stride: usize) {
        match k {
            2 => shuffle_strided::<2>(src, dst, stride),
            4 => shuffle_strided::<4>(src, dst, stride),
            _ => shuffle_strided::<8>(src, dst, stride),
        }
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (payload, summary) = encode(
            &data,
            Settings {
                codec: Codec::Zstd(3),
                itemsize: 8,
                chunk_size: 65_536,
            },
        );
        let layout = read_layout(&payload, "x").unwrap();
        assert!(
            layout.chunks.iter().all(|c| c.3),
            "random chunks must be raw"
        );
        assert!(summary.stored_size < data.len() as u64 + 200);
    }

    #[test]
    fn damage_is_detected_never_silent() {
        let data = sample(50_000);
        let (payload, _) = encode(
            &data,
            Settings {
                codec: Codec::Zstd(3),
                itemsize: 4,
                chunk_size: 16_384,
            },
        );
        for i in (0..payload.len()).step_by(97) {
            let mut bad = payload.clone();
            bad[i] ^= 0x04;
            let mut out = vec![0u8; data.len()];
            if decode_into(&bad, "x", &mut out).is_ok() {
                assert_eq!(out, data, "flip at {i} gave a wrong result silently");
            }
        }
        for cut in (0..payload.len()).step_by(101) {
            let mut out = vec![0u8; data.len()];
            assert!(decode_into(&payload[..cut], "x", &mut out).is_err());
        }
        let mut small = vec![0u8; data.len() - 1];
        assert!(decode_into(&payload, "x", &mut small).is_err());
    }

    #[test]
    fn raw_planes_after_a_compressed_one_move_up_into_place() {
        // u16 values whose low byte is constant and high byte random: byte
        // plane 0 compresses to almost nothing, plane 1 is stored raw and has
        // to move up behind it, as do the trailing byte and the next chunks.
        let mut x: u32 = 12345;
        let mut data: Vec<u8> = (0..300_001)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                [7u8, (x >> 24) as u8]
            })
            .collect();
        data.push(9);
        let settings = Settings {
            codec: Codec::Zstd(3),
            itemsize: 2,
            chunk_size: 1 << 18,
        };
        let (payload, summary) = encode(&data, settings);
        assert_eq!(summary.filter, Filter::Shuffle(2));
        let layout = read_layout(&payload, "x").unwrap();
        let (offset, _, _, raw) = layout.chunks[0];
        assert!(!raw);
        let word = |at: usize| {
            u32::from_le_bytes(payload[offset as usize + at..][..4].try_into().unwrap())
        };
        assert_eq!(word(0) & PLANE_RAW, 0);
        assert_eq!(word(4), PLANE_RAW | (1 << 17));
        assert!(
            summary.stored_size < data.len() as u64 * 53 / 100,
            "{summary:?}"
        );
        let mut out = vec![0u8; data.len()];
        decode_into(&payload, "x", &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn small_inputs_get_small_tables_and_large_ones_the_levels_own() {
        // The thread's context is reused: after a small input, a large one must
        // be compressed exactly as a fresh context at the level does it.
        let large: Vec<u8> = (0..3u32 << 20)
            .map(|i| (i / 7 % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let small = large.get(..100_000).unwrap();
        let mut out = Vec::new();
        compress_chunk(small, Codec::Zstd(3), &mut out).unwrap();
        let mut tuned = zstd::bulk::Compressor::new(3).unwrap();
        tuned
            .set_parameter(zstd::zstd_safe::CParameter::HashLog(SMALL_TABLES_LOG))
            .unwrap();
        tuned
            .set_parameter(zstd::zstd_safe::CParameter::ChainLog(SMALL_TABLES_LOG))
            .unwrap();
        assert_eq!(out, tuned.compress(small).unwrap());
        out.clear();
        compress_chunk(&large, Codec::Zstd(3), &mut out).unwrap();
        assert_eq!(out, zstd::bulk::compress(&large, 3).unwrap());
        assert_eq!(zstd::bulk::decompress(&out, large.len()).unwrap(), large);
    }

    /// `n` bytes of 4 random bits each: entropy coding halves them and
    /// there are no matches to find, which is what level 3's match search
    /// finds little more of than level 1's on a forest's node records.
    fn skewed_noise(n: usize) -> Vec<u8> {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        (0..n).map(|_| (next() >> 40) as u8 & 0x0F).collect()
    }

    /// A xorshift generator from `seed`.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn level_one_replaces_the_fast_levels_only_where_it_costs_almost_nothing() {
        let nodes = skewed_noise(64 * 8000);
        let settings = |codec| Settings {
            codec,
            itemsize: 64,
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        let choice = choose(&settings(Codec::Zstd(3)), &nodes);
        assert_eq!(
            choice,
            Choice {
                filter: Filter::None,
                codec: Codec::Zstd(1),
                probe: false
            }
        );
        // Asked for level 4 or more, the user wants the smallest file.
        assert_eq!(
            choose(&settings(Codec::Zstd(6)), &nodes).codec,
            Codec::Zstd(6)
        );
        // Class fractions of a forest's leaves (k/n and 1 - k/n, n small), as
        // float64: level 3's match finder pays, and is kept.
        let mut next = xorshift(11);
        let fractions: Vec<u8> = (0..8000)
            .flat_map(|_| {
                let n = 1 + next() % 40;
                let p = (next() % (n + 1)) as f64 / n as f64;
                [p.to_le_bytes(), (1.0 - p).to_le_bytes()].concat()
            })
            .collect();
        assert!(fractions.len() <= FILTER_SAMPLE_MAX);
        let at = |level| compressed_len(&fractions, Codec::Zstd(level), Filter::None);
        assert!(
            at(1) > at(3) + at(3) / FAST_LEVEL_SLACK,
            "{} vs {}",
            at(1),
            at(3)
        );
        let kept = choose(&settings(Codec::Zstd(3)), &fractions);
        assert_eq!((kept.filter, kept.codec), (Filter::None, Codec::Zstd(3)));
        // Noise is probed (and stored raw); filtered data keeps its codec.
        let mut next = xorshift(3);
        let noise: Vec<u8> = (0..1 << 20).map(|_| (next() >> 32) as u8).collect();
        let noisy = choose(&settings(Codec::Zstd(3)), &noise);
        assert!(noisy.probe, "{noisy:?}");
        let ints = small_ints(1 << 18);
        let c = choose(&INTS, &ints);
        assert_eq!((c.filter, c.codec), (Filter::BitShuffle(4), Codec::Zstd(3)));
        // Random floats in [0, 1), byte-shuffled: their planes are literals
        // and runs, which level 1 codes as small; asked for level 6, it stays.
        let mut next = xorshift(5);
        let floats: Vec<u8> = (0..1 << 17)
            .flat_map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64).to_le_bytes())
            .collect();
        let float_settings = |codec| Settings {
            itemsize: 8,
            ..settings(codec)
        };
        let f = choose(&float_settings(Codec::Zstd(3)), &floats);
        assert_eq!((f.filter, f.codec), (Filter::Shuffle(8), Codec::Zstd(1)));
        let f = choose(&float_settings(Codec::Zstd(6)), &floats);
        assert_eq!((f.filter, f.codec), (Filter::Shuffle(8), Codec::Zstd(6)));
        // Smooth series, whose shuffled planes level 3's match finder shrinks
        // more than 0.4% below level 1's: level 3 is kept.
        let series: Vec<u8> = (0..1 << 15)
            .flat_map(|i| ((f64::from(i) * 0.01).sin() * 1000.0).round().to_le_bytes())
            .collect();
        let sample = filter_sample(&series, 8);
        let at = |level| compressed_len(&sample, Codec::Zstd(level), Filter::Shuffle(8));
        let s = choose(&float_settings(Codec::Zstd(3)), &series);
        assert_eq!(s.filter, Filter::Shuffle(8));
        assert_eq!(
            s.codec == Codec::Zstd(1),
            at(1) <= at(3) + at(3) / SHUFFLED_FAST_LEVEL_SLACK,
            "{s:?}: {} vs {}",
            at(1),
            at(3)
        );
        // A payload packed as chosen reads back.
        for data in [&nodes, &noise] {
            let choice = choose(&settings(Codec::Zstd(3)), data);
            let (payload, _) =
                encode_by(Encoder::with_choice(settings(Codec::Zstd(3)), choice), data);
            let mut out = vec![0u8; data.len()];
            decode_into(&payload, "e", &mut out).unwrap();
            assert!(&out == data);
        }
    }

    /// How [`small_ints`] are compressed.
    const INTS: Settings = Settings {
        codec: Codec::Zstd(3),
        itemsize: 4,
        chunk_size: 1 << 20,
    };

    /// `n` int32 values uniform in 0..1000: 10 random bits in every 32.
    fn small_ints(n: usize) -> Vec<u8> {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        (0..n)
            .flat_map(|_| ((next() >> 32) as u32 % 1000).to_le_bytes())
            .collect()
    }

    #[test]
    fn bitshuffle_is_chosen_for_small_integers_and_reaches_their_entropy() {
        // Not a whole number of chunks, of 8-element groups, nor of elements:
        // every kind of tail F-45 describes.
        let mut data = small_ints(600_005);
        data.extend_from_slice(&[1, 2, 3]);
        let (payload, summary) = encode(&data, INTS);
        assert_eq!(summary.filter, Filter::BitShuffle(4));
        assert_eq!(summary.filter.name(), "bitshuffle");
        // 10 bits per value and the tables; byte-shuffled it takes more.
        let bound = data.len() as u64 * 10 / 32;
        assert!(summary.stored_size < bound + bound / 100, "{summary:?}");
        let layout = read_layout(&payload, "x").unwrap();
        assert_eq!(layout.filter, Filter::BitShuffle(4));
        assert!(layout.chunks.iter().all(|c| !c.3));
        let mut out = vec![0u8; data.len()];
        decode_into(&payload, "x", &mut out).unwrap();
        assert_eq!(out, data);
        let mut shuffled = Encoder::new(INTS, &[]);
        shuffled.filter = Filter::Shuffle(4);
        let packed = shuffled.pack_all(&data);
        let mut bytes = 0;
        shuffled
            .write_packed(&data, &packed, &mut |pieces| {
                bytes += pieces.iter().map(|(b, _)| b.len()).sum::<usize>();
                Ok(())
            })
            .unwrap();
        assert!(summary.stored_size * 21 / 20 < bytes as u64, "{bytes}");
    }

    #[test]
    fn single_bytes_are_bit_shuffled_when_few_of_their_bits_vary() {
        // A bool mask takes one bit a value; random bytes stay as they are.
        let mask: Vec<u8> = small_ints(1 << 20).chunks(4).map(|v| v[0] & 1).collect();
        let noise: Vec<u8> = small_ints(1 << 18).chunks(4).map(|v| v[0]).collect();
        let settings = Settings {
            itemsize: 1,
            ..INTS
        };
        let (payload, summary) = encode(&mask, settings);
        assert_eq!(summary.filter, Filter::BitShuffle(1));
        assert!(
            summary.stored_size < mask.len() as u64 / 8 + 1024,
            "{summary:?}"
        );
        let mut out = vec![0u8; mask.len()];
        decode_into(&payload, "x", &mut out).unwrap();
        assert_eq!(out, mask);
        assert_eq!(encode(&noise, settings).1.filter, Filter::None);
        // Untyped bytes (the pickle stream, itemsize 0 here) are never filtered.
        let untyped = Settings {
            itemsize: 0,
            ..INTS
        };
        assert_eq!(encode(&mask, untyped).1.filter, Filter::None);
    }

    #[test]
    fn a_plane_is_zero_only_when_every_byte_is() {
        for len in [0usize, 1, 255, 256, 257, 1000] {
            let mut plane = vec![0u8; len];
            assert!(is_zero(&plane));
            for at in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&a| a < len)
            {
                plane[at] = 0x40;
                assert!(!is_zero(&plane), "len={len} at={at}");
                plane[at] = 0;
            }
        }
    }

    #[test]
    fn bitshuffle_round_trips_every_item_size_and_codec() {
        for codec in [Codec::Zstd(3), Codec::Lz4] {
            for k in [1u32, 2, 4, 8] {
                for n in [0usize, 5, 64, 1000, 70_001] {
                    let data: Vec<u8> = small_ints(n / 4 + 1).into_iter().take(n).collect();
                    let settings = Settings {
                        codec,
                        itemsize: k as usize,
                        chunk_size: 16_384,
                    };
                    let mut enc = Encoder::new(settings, &[]);
                    enc.filter = Filter::BitShuffle(k);
                    let mut payload = Vec::new();
                    let mut sink = |pieces: &[Piece<'_>]| {
                        pieces
                            .iter()
                            .for_each(|(b, _)| payload.extend_from_slice(b));
                        Ok(())
                    };
                    enc.encode(&data, &mut sink).unwrap();
                    enc.finish(&mut sink).unwrap();
                    let mut out = vec![0u8; n];
                    decode_into(&payload, "x", &mut out).unwrap();
                    assert_eq!(out, data, "{codec:?} k={k} n={n}");
                }
            }
        }
    }

    /// Rewrites the chunk CRCs and the footer CRC of `payload` after its chunks changed.
    fn repair_crcs(payload: &mut [u8]) {
        let footer_at = payload.len() - FOOTER_LEN;
        let index_at =
            u64::from_le_bytes(payload[footer_at + 40..footer_at + 48].try_into().unwrap());
        let mut at = 0usize;
        let mut record = index_at as usize;
        while record < footer_at {
            let stored =
                u64::from_le_bytes(payload[record..record + 8].try_into().unwrap()) as usize;
            let crc = crc32fast::hash(&payload[at..at + stored]);
            payload[record + 8..record + 12].copy_from_slice(&crc.to_le_bytes());
            at += stored;
            record += INDEX_RECORD_LEN;
        }
        let crc = crc32fast::hash(&payload[index_at as usize..payload.len() - 4]);
        let end = payload.len();
        payload[end - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_damaged_bitshuffled_chunk_is_an_error_naming_entry_and_chunk() {
        let data = small_ints(700_000);
        let (payload, summary) = encode(&data, INTS);
        assert_eq!(summary.filter, Filter::BitShuffle(4));
        let layout = read_layout(&payload, "x").unwrap();
        let (offset, stored, _, _) = layout.chunks[2];
        let mut out = vec![0u8; data.len()];
        // Caught by the chunk CRC first...
        let mut bad = payload.clone();
        bad[offset as usize + 40] ^= 1;
        let err = decode_into(&bad, "x", &mut out).unwrap_err();
        assert_eq!(
            (err.code(), err.entry(), err.chunk()),
            ("format.checksum", Some("x"), Some(2))
        );
        // ...and behind it by the plane table: a plane size that no longer
        // adds up, a zero plane (31) given a byte, a raw plane (9) said to be
        // compressed.
        let table: Vec<u32> = payload[offset as usize..][..4 * 32]
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert_eq!(table[31], 0);
        assert_eq!(table[9], PLANE_RAW | ((stored as u32 - 4 * 32) / 10));
        for (at, value) in [(0usize, 0x7f_u8), (4 * 31, 0x01), (4 * 9 + 3, 0x80)] {
            let mut bad = payload.clone();
            bad[offset as usize + at] ^= value;
            repair_crcs(&mut bad);
            let err = decode_into(&bad, "x", &mut out).unwrap_err();
            assert_eq!(err.code(), "format.corrupt", "{err}");
            assert!(err.to_string().contains("entry `x` chunk 2"), "{err}");
        }
        // A bit-shuffle footer with an element size the rule does not define.
        let mut bad = payload.clone();
        let footer_at = bad.len() - FOOTER_LEN;
        bad[footer_at + 12] = 3;
        repair_crcs(&mut bad);
        let err = read_layout(&bad, "x").unwrap_err();
        assert!(err.to_string().contains("bad filter"), "{err}");
        // A filter this reader does not know: a newer file, not a damaged one.
        bad[footer_at + 10] = 3;
        repair_crcs(&mut bad);
        let err = read_layout(&bad, "x").unwrap_err();
        assert_eq!(err.code(), "format.unsupported", "{err}");
    }
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "timing probe"
)]
mod timing {
    use super::*;

    /// Encodes `data` with `filter` forced; returns the payload.
    fn encode_with(data: &[u8], itemsize: usize, filter: Filter) -> Vec<u8> {
        let settings = Settings {
            codec: Codec::Zstd(3),
            itemsize,
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        let mut enc = Encoder::new(settings, &[]);
        enc.filter = filter;
        let mut out = Vec::with_capacity(data.len());
        let mut sink = |pieces: &[Piece<'_>]| {
            pieces.iter().for_each(|(b, _)| out.extend_from_slice(b));
            Ok(())
        };
        enc.encode(data, &mut sink).unwrap();
        enc.finish(&mut sink).unwrap();
        out
    }

    #[test]
    #[ignore = "timing probe, run by hand with --release"]
    fn probe_filters_end_to_end() {
        let mut x: u64 = 7;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 1usize << 24;
        let cases: Vec<(&str, usize, Vec<u8>)> = vec![
            (
                "int32 0..999",
                4,
                (0..n)
                    .flat_map(|_| ((next() >> 20) as u32 % 1000).to_le_bytes())
                    .collect(),
            ),
            (
                "int64 0..999",
                8,
                (0..n / 2)
                    .flat_map(|_| ((next() >> 20) % 1000).to_le_bytes())
                    .collect(),
            ),
            (
                "f32 smooth",
                4,
                (0..n)
                    .flat_map(|i| ((i as f32) * 1e-4).sin().to_le_bytes())
                    .collect(),
            ),
            (
                "f64 random",
                8,
                (0..n / 2)
                    .flat_map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64).to_le_bytes())
                    .collect(),
            ),
        ];
        for (name, k, data) in &cases {
            for filter in [Filter::Shuffle(*k as u32), Filter::BitShuffle(*k as u32)] {
                let mut enc_t = std::time::Duration::MAX;
                let mut dec_t = std::time::Duration::MAX;
                let mut size = 0;
                let mut back = vec![0u8; data.len()];
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    let payload = encode_with(data, *k, filter);
                    enc_t = enc_t.min(t.elapsed());
                    size = payload.len();
                    let t = std::time::Instant::now();
                    decode_into(&payload, "x", &mut back).unwrap();
                    dec_t = dec_t.min(t.elapsed());
                }
                assert_eq!(&back, data);
                println!(
                    "{name:14} {filter:14?} {:6.1} MB of {} MB  encode {enc_t:7.1?}  decode {dec_t:7.1?}",
                    size as f64 / 1e6,
                    data.len() >> 20
                );
            }
            let settings = Settings {
                codec: Codec::Zstd(3),
                itemsize: *k,
                chunk_size: DEFAULT_CHUNK_SIZE,
            };
            println!(
                "{name:14} chosen {:?}",
                choose_filter(&settings, &data[..DEFAULT_CHUNK_SIZE])
            );
        }
    }

    #[test]
    #[ignore = "timing probe, run by hand with --release"]
    fn probe_speeds() {
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..(64usize << 20) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = (x >> 11) as f64 / (1u64 << 53) as f64;
                f.to_le_bytes()
            })
            .collect();
        let t = std::time::Instant::now();
        for c in data.chunks(DEFAULT_CHUNK_SIZE) {
            std::hint::black_box(shuffle(c, 8));
        }
        println!("shuffle {:?}", t.elapsed());
        let mut planes = vec![0u8; DEFAULT_CHUNK_SIZE];
        let t = std::time::Instant::now();
        for c in data.chunks(DEFAULT_CHUNK_SIZE) {
            transpose::<8>(c, &mut planes, c.len() / 8, true);
        }
        println!("transpose into a reused buffer {:?}", t.elapsed());
        let mut back = vec![0u8; DEFAULT_CHUNK_SIZE];
        let t = std::time::Instant::now();
        for _ in data.chunks(DEFAULT_CHUNK_SIZE) {
            transpose::<8>(&planes, &mut back, planes.len() / 8, false);
        }
        println!("inverse transpose {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let mut total = 0;
        for c in data.chunks(DEFAULT_CHUNK_SIZE) {
            total += pack(c, Codec::Zstd(3), Filter::Shuffle(8), true, Vec::new()).1 as usize;
        }
        println!("pack {:?} {total}", t.elapsed());
        let t = std::time::Instant::now();
        for c in data.chunks(DEFAULT_CHUNK_SIZE) {
            std::hint::black_box(crc32fast::hash(c));
        }
        println!("crc {:?}", t.elapsed());
        let sh = shuffle(data.get(..DEFAULT_CHUNK_SIZE).unwrap(), 8);
        let t = std::time::Instant::now();
        for plane in sh.chunks(DEFAULT_CHUNK_SIZE / 8) {
            std::hint::black_box(pack_block(plane, Codec::Zstd(3), 0.9, &mut Vec::new()));
        }
        println!("planes of one chunk {:?}", t.elapsed());
        // Small integers (uniform in 0..999, as int32): the bit-shuffle's case.
        let ints: Vec<u8> = data
            .chunks_exact(8)
            .flat_map(|c| (u32::from(c[0]) * 4 % 1000).to_le_bytes())
            .collect();
        for (name, k, bytes) in [("int32", 4, &ints), ("float64", 8, &data)] {
            let t = std::time::Instant::now();
            for c in bytes.chunks(DEFAULT_CHUNK_SIZE) {
                bitshuffle::bitshuffle_into(c, k, &mut planes[..c.len()]);
            }
            println!(
                "bitshuffle {name} {} MiB {:?}",
                bytes.len() >> 20,
                t.elapsed()
            );
            let t = std::time::Instant::now();
            for c in bytes.chunks(DEFAULT_CHUNK_SIZE) {
                bitshuffle::bitunshuffle_into(c, k, &mut back[..c.len()]);
            }
            println!("bitunshuffle {name} {:?}", t.elapsed());
            for filter in [Filter::Shuffle(k as u32), Filter::BitShuffle(k as u32)] {
                let t = std::time::Instant::now();
                let mut total = 0;
                for c in bytes.chunks(DEFAULT_CHUNK_SIZE) {
                    let mut out = Vec::new();
                    total += if pack_into(c, Codec::Zstd(3), filter, true, &mut out).is_some() {
                        out.len()
                    } else {
                        c.len()
                    };
                }
                println!("pack {name} {filter:?} {:?} {total}", t.elapsed());
            }
            let t = std::time::Instant::now();
            let settings = Settings {
                codec: Codec::Zstd(3),
                itemsize: k,
                chunk_size: DEFAULT_CHUNK_SIZE,
            };
            let chosen = choose_filter(&settings, &bytes[..DEFAULT_CHUNK_SIZE]);
            println!("choice {name} {chosen:?} {:?}", t.elapsed());
        }
    }
}
