//! The bit-shuffle permutation of rule F-45 of `docs/FORMAT.md`: bit `b` of
//! byte `j` of every element of a chunk goes to bit plane `8·j + b`.
//!
//! Integers drawn from a small range (labels, counts, bin indices, node
//! indices) leave most bits of every element at zero and the rest nearly
//! random: as bit planes, the first kind costs nothing compressed and the
//! second is stored as it is, which is what the data's entropy allows, where a
//! byte plane mixing both kinds makes the codec search for matches that are
//! not there.
//!
//! A chunk of `len` bytes holds `m = len / k` whole `k`-byte elements; the
//! first `n = 8·⌊m/8⌋` of them become `8·k` planes of `w = n/8` bytes (element
//! `8·i + t` gives bit `t` of byte `i` of each plane) and the rest of the chunk
//! follows unchanged. Groups of 64 elements are transposed in registers: their
//! bytes `j` gathered into words (a byte transpose), each word's 8×8 bit matrix
//! transposed, then 8 such words byte-transposed again, so every plane is
//! written a word at a time.

use crate::codec::{load_word, store_word, transpose_words};

/// Element sizes the filter is defined for.
pub(crate) fn supports(itemsize: usize) -> bool {
    matches!(itemsize, 1 | 2 | 4 | 8)
}

/// `(planes, bytes per plane)` of a chunk of `len` bytes of `itemsize`-byte elements.
pub(crate) fn plane_layout(len: usize, itemsize: usize) -> (usize, usize) {
    let k = itemsize.max(1);
    (8 * k, len / k / 8)
}

/// Bit-shuffles `data` into `out` (same length); sizes other than 1, 2, 4 and
/// 8 leave `out` untouched, as callers check [`supports`] first.
pub(crate) fn bitshuffle_into(data: &[u8], itemsize: usize, out: &mut [u8]) {
    apply(data, itemsize, out, true);
}

/// The inverse of [`bitshuffle_into`].
pub(crate) fn bitunshuffle_into(data: &[u8], itemsize: usize, out: &mut [u8]) {
    apply(data, itemsize, out, false);
}

fn apply(data: &[u8], itemsize: usize, out: &mut [u8], forward: bool) {
    if out.len() != data.len() || !supports(itemsize) {
        return;
    }
    let (planes, w) = plane_layout(data.len(), itemsize);
    let body = planes * w;
    let (src, tail) = data.split_at(body);
    let (dst, out_tail) = out.split_at_mut(body);
    match itemsize {
        1 => transpose::<1>(src, dst, w, forward),
        2 => transpose::<2>(src, dst, w, forward),
        4 => transpose::<4>(src, dst, w, forward),
        _ => transpose::<8>(src, dst, w, forward),
    }
    out_tail.copy_from_slice(tail);
}

/// Transposes the 8×8 bit matrix whose row `r` is byte `r` of `x` (bit `c`
/// of the row is bit `c` of the byte): afterwards bit `r` of byte `c` is what
/// bit `c` of byte `r` was. Blocks of 1, 2 and 4 bits swap across the diagonal.
fn transpose_bits(x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    let x = x ^ t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    let x = x ^ t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Byte `j` of 8 consecutive elements as word `j` (byte `r` from element `r`).
fn gather<const K: usize>(elements: &[[u8; K]]) -> [u64; K] {
    let mut out = [0u64; K];
    for (b, block) in elements.chunks_exact(K).enumerate() {
        let mut words = [0u64; K];
        for (word, element) in words.iter_mut().zip(block) {
            *word = load_word(element);
        }
        transpose_words(&mut words);
        let shift = 8 * K * b;
        for (o, word) in out.iter_mut().zip(words) {
            *o |= (word & low_bytes(K)) << shift;
        }
    }
    out
}

/// The inverse of [`gather`], into 8 elements.
fn scatter<const K: usize>(words: &[u64; K], elements: &mut [[u8; K]]) {
    for (b, block) in elements.chunks_exact_mut(K).enumerate() {
        let shift = 8 * K * b;
        let mut part = [0u64; K];
        for (p, word) in part.iter_mut().zip(words) {
            *p = word >> shift;
        }
        transpose_words(&mut part);
        for (element, word) in block.iter_mut().zip(part) {
            store_word(element, word);
        }
    }
}

/// A mask of the low `k` bytes of a word (`k` ≤ 8).
fn low_bytes(k: usize) -> u64 {
    u64::MAX >> (64 - 8 * k.clamp(1, 8))
}

/// Between `8·w` interleaved `K`-byte elements (`src` when `forward`) and
/// `8·K` planes of `w` bytes; both slices hold `8·w·K` bytes.
fn transpose<const K: usize>(src: &[u8], dst: &mut [u8], w: usize, forward: bool) {
    if src.len() != 8 * w * K || dst.len() != src.len() || w == 0 {
        return;
    }
    if forward {
        forward_planes::<K>(src, dst, w);
    } else {
        inverse_planes::<K>(src, dst, w);
    }
}

fn forward_planes<const K: usize>(src: &[u8], dst: &mut [u8], w: usize) {
    let (elements, _) = src.as_chunks::<K>();
    let wide = w / 8 * 8;
    let mut planes: Vec<&mut [u8]> = dst.chunks_exact_mut(w).collect();
    {
        let mut words: Vec<_> = planes
            .iter_mut()
            .map(|p| {
                p.get_mut(..wide)
                    .unwrap_or_default()
                    .as_chunks_mut::<8>()
                    .0
                    .iter_mut()
            })
            .collect();
        for group in elements.chunks_exact(64).take(wide / 8) {
            // cols[j][s]: the 8 plane bytes of byte j for elements 8s..8s+8.
            let mut cols = [[0u64; 8]; K];
            for (s, sub) in group.chunks_exact(8).enumerate() {
                for (col, word) in cols.iter_mut().zip(gather::<K>(sub)) {
                    if let Some(slot) = col.get_mut(s) {
                        *slot = transpose_bits(word);
                    }
                }
            }
            let mut outs = words.iter_mut();
            for col in &mut cols {
                transpose_words(col);
                for word in col.iter() {
                    if let Some(out) = outs.next().and_then(Iterator::next) {
                        *out = word.to_le_bytes();
                    }
                }
            }
        }
    }
    for (i, sub) in elements.chunks_exact(8).enumerate().skip(wide) {
        for (j, word) in gather::<K>(sub).into_iter().enumerate() {
            let bits = transpose_bits(word).to_le_bytes();
            for (b, byte) in bits.into_iter().enumerate() {
                if let Some(out) = planes.get_mut(8 * j + b).and_then(|p| p.get_mut(i)) {
                    *out = byte;
                }
            }
        }
    }
}

fn inverse_planes<const K: usize>(src: &[u8], dst: &mut [u8], w: usize) {
    let (elements, _) = dst.as_chunks_mut::<K>();
    let wide = w / 8 * 8;
    let planes: Vec<&[u8]> = src.chunks_exact(w).collect();
    let mut words: Vec<_> = planes
        .iter()
        .map(|p| p.get(..wide).unwrap_or_default().as_chunks::<8>().0.iter())
        .collect();
    let (head, rest) = elements.split_at_mut((wide * 8).min(elements.len()));
    for group in head.chunks_exact_mut(64) {
        let mut cols = [[0u64; 8]; K];
        let mut ins = words.iter_mut();
        for col in &mut cols {
            for slot in col.iter_mut() {
                if let Some(bytes) = ins.next().and_then(Iterator::next) {
                    *slot = u64::from_le_bytes(*bytes);
                }
            }
            transpose_words(col);
        }
        for (s, sub) in group.chunks_exact_mut(8).enumerate() {
            let mut element_words = [0u64; K];
            for (word, col) in element_words.iter_mut().zip(&cols) {
                *word = transpose_bits(col.get(s).copied().unwrap_or_default());
            }
            scatter::<K>(&element_words, sub);
        }
    }
    for (i, sub) in rest.chunks_exact_mut(8).enumerate() {
        let i = wide + i;
        let mut element_words = [0u64; K];
        for (j, word) in element_words.iter_mut().enumerate() {
            let mut bits = [0u8; 8];
            for (b, byte) in bits.iter_mut().enumerate() {
                *byte = planes
                    .get(8 * j + b)
                    .and_then(|p| p.get(i))
                    .copied()
                    .unwrap_or_default();
            }
            *word = transpose_bits(u64::from_le_bytes(bits));
        }
        scatter::<K>(&element_words, sub);
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    /// F-45 read literally, one bit at a time.
    fn reference(data: &[u8], k: usize) -> Vec<u8> {
        let (planes, w) = plane_layout(data.len(), k);
        let mut out = vec![0u8; data.len()];
        for p in 0..planes {
            let (j, b) = (p / 8, p % 8);
            for i in 0..w {
                for t in 0..8 {
                    let bit = (data[(8 * i + t) * k + j] >> b) & 1;
                    out[p * w + i] |= bit << t;
                }
            }
        }
        out[planes * w..].copy_from_slice(&data[planes * w..]);
        out
    }

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_rule_bit_by_bit_and_inverts_for_every_size() {
        for k in [1usize, 2, 4, 8] {
            // Lengths around the 8-element and 64-element group edges, with tails.
            for len in [
                0,
                1,
                7,
                8 * k - 1,
                8 * k,
                8 * k + 3,
                64 * k,
                64 * k + 5,
                72 * k + 1,
                1000 * k + 7,
            ] {
                let data = noise(len, 0x9e37_79b9_7f4a_7c15 ^ (len as u64) ^ (k as u64) << 32);
                let mut planes = vec![0u8; len];
                bitshuffle_into(&data, k, &mut planes);
                assert_eq!(planes, reference(&data, k), "k={k} len={len}");
                let mut back = vec![0u8; len];
                bitunshuffle_into(&planes, k, &mut back);
                assert_eq!(back, data, "k={k} len={len}");
            }
        }
    }

    #[test]
    fn small_integers_leave_their_high_planes_zero() {
        let values: Vec<u8> = (0..4096u32)
            .flat_map(|i| (i * 7919 % 1000).to_le_bytes())
            .collect();
        let mut planes = vec![0u8; values.len()];
        bitshuffle_into(&values, 4, &mut planes);
        let (count, w) = plane_layout(values.len(), 4);
        let nonzero: Vec<usize> = (0..count)
            .filter(|p| planes[p * w..(p + 1) * w].iter().any(|&b| b != 0))
            .collect();
        assert_eq!(nonzero, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn bit_transpose_is_its_own_inverse_and_moves_single_bits() {
        for r in 0..8 {
            for c in 0..8 {
                assert_eq!(transpose_bits(1 << (8 * r + c)), 1 << (8 * c + r));
            }
        }
        let x = 0x0123_4567_89ab_cdef_u64;
        assert_eq!(transpose_bits(transpose_bits(x)), x);
    }
}
