//! The activation side of 16×16 matrix tiles (Intel AMX `tdpbusd`, and the AVX-512 VNNI Q8_0
//! tile that puts one activation row per 32-bit lane): up to 16 quantized
//! activation rows (Q8_0 or Q8_K) laid out block by block the way the tile instruction reads
//! its second operand, with each column's sums and scale next to it. Plain byte shuffling, done
//! once per product.

use crate::quant::blocks::{Q8_0_BYTES, Q8_0_QS, Q8_K_BSUMS, Q8_K_BYTES};
use crate::quant::{read_f16, read_f32, GgmlType};

/// Columns (activation rows) per tile.
pub const COLS: usize = 16;
/// Bytes of one laid-out Q8_0 block: the 8×64-byte operand, 16 f32 scales.
pub const ACT_RECORD: usize = 512 + 64;
/// Bytes of one laid-out Q8_K super-block: eight 8×64-byte operands (one per 32 values), the
/// 32-value quant sums as four 64-byte vectors of i16 pairs, the 16-value sums as eight such
/// vectors, 16 f32 scales.
pub const ACT_RECORD_K: usize = 8 * 512 + 256 + 512 + 64;
/// Offsets in a laid-out Q8_K super-block: the 32-value sum pairs, the 16-value sum pairs, the
/// scales.
pub const K_SUMS32: usize = 4096;
pub const K_SUMS16: usize = 4352;
pub const K_SCALES: usize = 4864;

/// Bytes of `kdim` values of one column tile laid out for activation type `at`, or `None`
/// where tiles do not take that type.
pub fn act_bytes(at: GgmlType, kdim: usize) -> Option<usize> {
    match at {
        GgmlType::Q8_0 => Some(kdim / 32 * ACT_RECORD),
        GgmlType::Q8_K => Some(kdim / 256 * ACT_RECORD_K),
        _ => None,
    }
}

/// Lays out up to [`COLS`] activation rows of type `at` and `kdim` values into `out`
/// ([`act_bytes`] long): [`layout_q8_0`] or [`layout_q8_k`].
pub fn layout(at: GgmlType, kdim: usize, rows: &[&[u8]], out: &mut [u8]) {
    match at {
        GgmlType::Q8_0 => layout_q8_0(kdim / 32, rows, out),
        GgmlType::Q8_K => layout_q8_k(kdim / 256, rows, out),
        _ => {}
    }
}

/// Writes 32 quants of column `c` as one operand: `B[i][4c + j] = q[4i + j]` (i < 8, j < 4: the
/// "VNNI" layout, four consecutive values of one column per 32-bit element).
fn operand(q: &[u8], c: usize, b: &mut [u8]) {
    for (k, &v) in q[..32].iter().enumerate() {
        b[(k / 4) * 64 + 4 * c + k % 4] = v;
    }
}

/// Lays out `nb` blocks of up to [`COLS`] Q8_0 activation rows into `out` (`nb` records of
/// [`ACT_RECORD`] bytes). Per block: the [`operand`], then `d_c` as f32 for every column.
/// Columns beyond `rows` are zero (their results are zero and dropped). Does nothing when
/// `out` has the wrong size or a row is too short.
pub fn layout_q8_0(nb: usize, rows: &[&[u8]], out: &mut [u8]) {
    if out.len() != nb * ACT_RECORD
        || rows.len() > COLS
        || rows.iter().any(|r| r.len() < nb * Q8_0_BYTES)
    {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(ACT_RECORD).enumerate() {
        rec.fill(0);
        for (c, row) in rows.iter().enumerate() {
            let block = &row[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            operand(&block[Q8_0_QS..], c, &mut rec[..512]);
            rec[512 + 4 * c..516 + 4 * c].copy_from_slice(&read_f16(block, 0).to_le_bytes());
        }
    }
}

/// Lays out `nb` super-blocks of up to [`COLS`] Q8_K activation rows into `out` (`nb` records
/// of [`ACT_RECORD_K`] bytes). Per super-block: the eight 32-value [`operand`]s (the first and
/// second halves of each are the operands of its two 16-value groups), then at [`K_SUMS32`]
/// for each pair `p` of 32-value groups the i16 pair `(Σ q over group 2p, Σ q over group
/// 2p + 1)` of every column (the stored 16-value sums added), at [`K_SUMS16`] the same pairs
/// for the sixteen 16-value groups (the stored sums), then at [`K_SCALES`] `d_c` as f32.
/// Columns beyond `rows` are zero. Does nothing when `out` has the wrong size or a row is too
/// short.
pub fn layout_q8_k(nb: usize, rows: &[&[u8]], out: &mut [u8]) {
    if out.len() != nb * ACT_RECORD_K
        || rows.len() > COLS
        || rows.iter().any(|r| r.len() < nb * Q8_K_BYTES)
    {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(ACT_RECORD_K).enumerate() {
        rec.fill(0);
        for (c, row) in rows.iter().enumerate() {
            let block = &row[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
            let bsum16 = |g: usize| {
                i16::from_le_bytes([block[Q8_K_BSUMS + 2 * g], block[Q8_K_BSUMS + 1 + 2 * g]])
            };
            for j in 0..8 {
                operand(&block[4 + 32 * j..], c, &mut rec[512 * j..512 * (j + 1)]);
                // |Σ| ≤ 32·128: fits an i16.
                let sum = bsum16(2 * j).wrapping_add(bsum16(2 * j + 1));
                let at = K_SUMS32 + 64 * (j / 2) + 4 * c + 2 * (j % 2);
                rec[at..at + 2].copy_from_slice(&sum.to_le_bytes());
            }
            for g in 0..16 {
                let at = K_SUMS16 + 64 * (g / 2) + 4 * c + 2 * (g % 2);
                rec[at..at + 2].copy_from_slice(&bsum16(g).to_le_bytes());
            }
            let at = K_SCALES + 4 * c;
            rec[at..at + 4].copy_from_slice(&read_f32(block, 0).to_le_bytes());
        }
    }
}
