//! The K-quants: 256-element super-blocks with per-sub-block scales, as ggml lays them out.
//!
//! Byte layouts (all little-endian; the structs and the offsets the code uses are in
//! [`super::blocks`]):
//! - Q4_K, 144 bytes: `d: f16 | dmin: f16 | scales: [u8; 12] | qs: [u8; 128]`. Eight sub-blocks
//!   of 32; value = d·sc_j·q − dmin·m_j with 6-bit sc_j, m_j packed in `scales` and 4-bit q. In
//!   each 64-value chunk, `qs[32c + l]` holds value `64c + l` in its low nibble and
//!   `64c + 32 + l` in its high nibble.
//! - Q5_K, 176 bytes: `d | dmin | scales: [u8; 12] | qh: [u8; 32] | qs: [u8; 128]`; as Q4_K
//!   with a fifth bit: bit `2c` of `qh[l]` for value `64c + l`, bit `2c + 1` for `64c + 32 + l`.
//! - Q6_K, 210 bytes: `ql: [u8; 128] | qh: [u8; 64] | scales: [i8; 16] | d: f16`; sixteen
//!   sub-blocks of 16, value = d·scale_j·(q − 32) with 6-bit q split into 4 low bits (`ql`) and
//!   2 high bits (`qh`), see [`quantize_block_q6_k`] for the interleaving.
//! - Q8_K, 292 bytes: `d: f32 | qs: [i8; 256] | bsums: [i16; 16]` (sums of each 16 quants);
//!   the activation format for K-quant dot products, never stored in files.

use super::blocks::{
    Q4_K_BYTES, Q4_K_QS, Q5_K_BYTES, Q5_K_QH, Q5_K_QS, Q6_K_D, Q6_K_SCALES, Q8_K_BSUMS, Q8_K_QS,
};
use super::float::{read_f16, read_f32, write_f16};
use super::search::{
    make_qkx2_quants, make_qx_quants_rmse1, nearest_int, Qkx2Search, GROUP_MAX_EPS,
};
use super::{for_each_block, for_each_block_mut, GgmlType, QuantError, QK_K};

/// Offset of the 12 packed scale/min bytes in Q4_K and Q5_K blocks (after `d` and `dmin`).
const KSCALES: usize = 4;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K/Q5_K
/// block (ggml's `get_scale_min_k4`).
///
/// Packing: sub-blocks 0..4 keep their scale in the low 6 bits of byte `j` and their min in the
/// low 6 bits of byte `j + 4`; sub-blocks 4..8 keep the low 4 bits of scale and min in the two
/// nibbles of byte `j + 4` and their top 2 bits in the top 2 bits of bytes `j - 4` (scale) and
/// `j` (min).
#[inline]
pub fn unpack_scale_min_k4(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let sc = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
        let m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (sc, m)
    }
}

/// Stores the 6-bit scale `ls` and min `lm` of sub-block `j` (inverse of
/// [`unpack_scale_min_k4`]). Sub-blocks must be stored in order 0..8 into zeroed bytes, since
/// 4..8 OR their top bits into bytes written by 0..4.
pub(super) fn pack_scale_min_k4(j: usize, ls: u8, lm: u8, scales: &mut [u8]) {
    if j < 4 {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        scales[j - 4] |= (ls >> 4) << 6;
        scales[j] |= (lm >> 4) << 6;
    }
}

/// The shared first half of ggml's `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: searches
/// a scale and min per 32-value sub-block, quantizes those to 6 bits against the super-block's
/// `d`/`dmin` (written to `y[0..16]`), then re-derives every level (0..=`p.nmax`) from the
/// quantized scales. `x`: 256 values; returns the 256 levels.
fn quantize_superblock_asym(p: &Qkx2Search, x: &[f32], y: &mut [u8]) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 32];
    let mut mins = [0.0f32; QK_K / 32];
    let mut weights = [0.0f32; 32];
    // Both maxima start at 0: scales and mins are never negative.
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(p, xs, &weights, &mut levels[32 * j..32 * j + 32]);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut y[KSCALES..KSCALES + 12];
    packed.fill(0);
    for j in 0..QK_K / 32 {
        // C stores nearest_int's int into a uint8_t (truncating) before clamping to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        pack_scale_min_k4(j, ls, lm, packed);
    }
    write_f16(y, 0, max_scale / 63.0);
    write_f16(y, 2, max_min / 63.0);

    let d_all = read_f16(y, 0);
    let dmin_all = read_f16(y, 2);
    for j in 0..QK_K / 32 {
        let (sc, m) = unpack_scale_min_k4(j, &y[KSCALES..KSCALES + 12]);
        let d = d_all * sc as f32;
        // A zero scale keeps the levels from the search (ggml's `if (!d) continue;`).
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for (l, &v) in levels[32 * j..32 * j + 32]
            .iter_mut()
            .zip(&x[32 * j..32 * j + 32])
        {
            *l = nearest_int((v + dm) / d).clamp(0, p.nmax) as u8;
        }
    }
    levels
}

/// Q4_K's scale search: 4-bit levels, inverse scales (15 + (−1 + 0.1·k)) / range, k = 0..=20.
const Q4_K_SEARCH: Qkx2Search = Qkx2Search {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
};

/// Q5_K's scale search: 5-bit levels, inverse scales (31 + (−0.5 + 0.1·k)) / range, k = 0..=15.
const Q5_K_SEARCH: Qkx2Search = Qkx2Search {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
};

/// Quantizes 256 values into one 144-byte Q4_K block (ggml's `quantize_row_q4_K_ref`).
fn quantize_block_q4_k(x: &[f32], y: &mut [u8]) {
    let levels = quantize_superblock_asym(&Q4_K_SEARCH, x, y);
    let qs = &mut y[Q4_K_QS..Q4_K_BYTES];
    for c in 0..QK_K / 64 {
        for l in 0..32 {
            qs[32 * c + l] = levels[64 * c + l] | (levels[64 * c + 32 + l] << 4);
        }
    }
}

/// Quantizes 256 values into one 176-byte Q5_K block (ggml's `quantize_row_q5_K_ref`).
fn quantize_block_q5_k(x: &[f32], y: &mut [u8]) {
    let levels = quantize_superblock_asym(&Q5_K_SEARCH, x, y);
    let (qh, qs) = y[Q5_K_QH..Q5_K_BYTES].split_at_mut(Q5_K_QS - Q5_K_QH);
    qh.fill(0);
    for c in 0..QK_K / 64 {
        let (lo_bit, hi_bit) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let mut lo = levels[64 * c + l];
            let mut hi = levels[64 * c + 32 + l];
            if lo > 15 {
                lo -= 16;
                qh[l] |= lo_bit;
            }
            if hi > 15 {
                hi -= 16;
                qh[l] |= hi_bit;
            }
            qs[32 * c + l] = lo | (hi << 4);
        }
    }
}

/// Expands one Q4_K or Q5_K block (`qh` = None for Q4_K) to 256 values.
fn dequantize_superblock_asym(x: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    let dmin = read_f16(x, 2);
    let scales = &x[KSCALES..KSCALES + 12];
    for c in 0..QK_K / 64 {
        for half in 0..2 {
            let j = 2 * c + half;
            let (sc, m) = unpack_scale_min_k4(j, scales);
            let d1 = d * sc as f32;
            let m1 = dmin * m as f32;
            for l in 0..32 {
                let nibble = (qs[32 * c + l] >> (4 * half)) & 0xF;
                let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
                y[32 * j + l] = d1 * (nibble | high) as f32 - m1;
            }
        }
    }
}

/// Quantizes 256 values into one 210-byte Q6_K block (ggml's `quantize_row_q6_K_ref`).
///
/// Interleaving, per 128-value half `h` (`ql[64h..]`, `qh[32h..]`), for l in 0..32: `ql[l]`
/// holds the low nibbles of values l (low) and l + 64 (high), `ql[l + 32]` those of l + 32 and
/// l + 96; `qh[l]` holds the top 2 bits of values l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6.
fn quantize_block_q6_k(x: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = make_qx_quants_rmse1(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut levels[16 * ib..16 * ib + 16],
        );
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = *scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }

    let iscale = -128.0 / max_scale;
    write_f16(y, Q6_K_D, 1.0 / iscale);
    for (ib, &scale) in scales.iter().enumerate() {
        y[Q6_K_SCALES + ib] = nearest_int(iscale * scale).min(127) as i8 as u8;
    }
    let d_all = read_f16(y, Q6_K_D);
    for j in 0..QK_K / 16 {
        let d = d_all * (y[Q6_K_SCALES + j] as i8) as f32;
        // A zero scale keeps the levels from the search (ggml's `if (!d) continue;`).
        if d == 0.0 {
            continue;
        }
        for (l, &v) in levels[16 * j..16 * j + 16]
            .iter_mut()
            .zip(&x[16 * j..16 * j + 16])
        {
            *l = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
        }
    }

    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for h in 0..QK_K / 128 {
        let lv = &levels[128 * h..128 * h + 128];
        let ql = &mut ql[64 * h..64 * h + 64];
        let qh = &mut qh[32 * h..32 * h + 32];
        for l in 0..32 {
            ql[l] = (lv[l] & 0xF) | ((lv[l + 64] & 0xF) << 4);
            ql[l + 32] = (lv[l + 32] & 0xF) | ((lv[l + 96] & 0xF) << 4);
            qh[l] = (lv[l] >> 4)
                | ((lv[l + 32] >> 4) << 2)
                | ((lv[l + 64] >> 4) << 4)
                | ((lv[l + 96] >> 4) << 6);
        }
    }
}

/// The signed 6-bit quant (−32..=31) of value `64 * quarter + l` (quarter 0..4, l 0..32) within
/// a 128-value half of a Q6_K block, from that half's `ql` (64 bytes) and `qh` (32 bytes).
#[inline]
pub(crate) fn q6_k_quant(ql: &[u8], qh: &[u8], quarter: usize, l: usize) -> i8 {
    // Quarters 0 and 1 use the low nibbles of ql[l] / ql[l + 32], 2 and 3 the high nibbles.
    let low = (ql[l + 32 * (quarter & 1)] >> (4 * (quarter >> 1))) & 0xF;
    let high = (qh[l] >> (2 * quarter)) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Expands one Q6_K block to 256 values.
fn dequantize_block_q6_k(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, Q6_K_D);
    for h in 0..QK_K / 128 {
        let ql = &x[64 * h..64 * h + 64];
        let qh = &x[128 + 32 * h..128 + 32 * h + 32];
        for quarter in 0..4 {
            for l in 0..32 {
                let i = 128 * h + 32 * quarter + l;
                let sc = x[Q6_K_SCALES + i / 16] as i8;
                y[i] = d * sc as f32 * q6_k_quant(ql, qh, quarter, l) as f32;
            }
        }
    }
}

/// Quantizes 256 values into one 292-byte Q8_K block (ggml's `quantize_row_q8_K_ref`):
/// q = round(−127·x / max) where `max` is the value of largest magnitude, so that value maps to
/// exactly ∓127; d = 1 / that inverse scale, kept in f32; `bsums` are the sums of each 16 quants.
fn quantize_block_q8_k(x: &[f32], y: &mut [u8]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let av = v.abs();
        if av > amax {
            amax = av;
            max = v;
        }
    }
    if amax == 0.0 {
        y.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let (qs, bsums) = y[Q8_K_QS..].split_at_mut(QK_K);
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for (g, sum) in bsums.chunks_exact_mut(2).enumerate() {
        let s: i16 = qs[16 * g..16 * g + 16]
            .iter()
            .map(|&q| q as i8 as i16)
            .sum();
        sum.copy_from_slice(&s.to_le_bytes());
    }
    y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// Expands one Q8_K block to 256 values.
fn dequantize_block_q8_k(x: &[u8], y: &mut [f32]) {
    let d = read_f32(x, 0);
    for (v, &q) in y.iter_mut().zip(&x[Q8_K_QS..Q8_K_BSUMS]) {
        *v = d * (q as i8) as f32;
    }
}

/// Quantizes a row (length a multiple of 256) to Q4_K, bit-exact with ggml's
/// `quantize_row_q4_K_ref`. `dst`: 144 bytes per 256 values.
pub fn quantize_row_q4_k(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q4_K, src, dst, quantize_block_q4_k)
}

/// Expands a Q4_K row; `dst.len()` is the number of values.
pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q4_K, src, dst, |x, y| {
        dequantize_superblock_asym(x, None, &x[Q4_K_QS..Q4_K_BYTES], y)
    })
}

/// Quantizes a row (length a multiple of 256) to Q5_K, bit-exact with ggml's
/// `quantize_row_q5_K_ref`. `dst`: 176 bytes per 256 values.
pub fn quantize_row_q5_k(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q5_K, src, dst, quantize_block_q5_k)
}

/// Expands a Q5_K row; `dst.len()` is the number of values.
pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q5_K, src, dst, |x, y| {
        dequantize_superblock_asym(x, Some(&x[Q5_K_QH..Q5_K_QS]), &x[Q5_K_QS..Q5_K_BYTES], y)
    })
}

/// Quantizes a row (length a multiple of 256) to Q6_K, bit-exact with ggml's
/// `quantize_row_q6_K_ref`. `dst`: 210 bytes per 256 values.
pub fn quantize_row_q6_k(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q6_K, src, dst, quantize_block_q6_k)
}

/// Expands a Q6_K row; `dst.len()` is the number of values.
pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q6_K, src, dst, dequantize_block_q6_k)
}

/// Quantizes a row (length a multiple of 256) to Q8_K, the activation format of K-quant dot
/// products, bit-exact with ggml's `quantize_row_q8_K_ref`. `dst`: 292 bytes per 256 values.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q8_K, src, dst, quantize_block_q8_k)
}

/// Expands a Q8_K row; `dst.len()` is the number of values.
pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q8_K, src, dst, dequantize_block_q8_k)
}
