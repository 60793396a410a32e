//! `amber_legacy::open_bytes` on arbitrary bytes: every decompressor (the
//! first byte picks a codec magic to prepend, so each decoder is reached),
//! the joblib hook and the stream rewrite. Nothing may panic, hang or
//! allocate without bound; a successful open must yield a load stream that
//! parses and arrays whose bytes are in range.
//!
//! Seed the corpus with `crates/amber-legacy/tests/it/data/*`.

#![no_main]

use amber_legacy::{Limits, open_bytes};
use libfuzzer_sys::fuzz_target;

const MAGICS: &[&[u8]] = &[b"", b"x", b"\x1f\x8b", b"BZh", b"\x5d\x00\x00", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"ZF"];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let magic = MAGICS.get(usize::from(selector) % MAGICS.len()).copied().unwrap_or_default();
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(data);
    let limits = Limits::default().with_max_decompressed(64 << 20);
    if let Ok(l) = open_bytes(bytes, &limits) {
        assert!(amber_pickle::parse(l.load_stream()).is_ok());
        for k in 0..l.arrays().len() {
            assert!(l.array_bytes(k).is_some());
        }
    }
});
