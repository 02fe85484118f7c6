//! ggml's original 32-value block formats.
//!
//! Byte layouts (little-endian; `d`, `m`, `s` are IEEE halves; the structs and the offsets the
//! code uses are in [`super::blocks`]):
//! - Q4_0, 18 bytes: `d | qs: [u8; 16]`; value = d·(q − 8); `qs[l]` holds value l in its low
//!   nibble and value l + 16 in its high nibble.
//! - Q4_1, 20 bytes: `d | m | qs: [u8; 16]`; value = d·q + m, nibbles as Q4_0.
//! - Q5_0, 22 bytes: `d | qh: u32 | qs: [u8; 16]`; value = d·(q − 16), bit i of `qh` is the
//!   fifth bit of value i.
//! - Q5_1, 24 bytes: `d | m | qh: u32 | qs: [u8; 16]`; value = d·q + m.
//! - Q8_0, 34 bytes: `d | qs: [i8; 32]`; value = d·q.
//! - Q8_1, 36 bytes: `d | s | qs: [i8; 32]`; value = d·q, s = d·Σq (rounded to f16), used by
//!   dot products with Q4_1/Q5_1 weights to apply their min.

use super::blocks::{
    Q4_0_QS, Q4_1_QS, Q5_0_BYTES, Q5_0_QH, Q5_0_QS, Q5_1_BYTES, Q5_1_QH, Q5_1_QS, Q8_0_BYTES,
    Q8_0_QS, Q8_1_BYTES, Q8_1_QS,
};
use super::float::{read_f16, write_f16};
use super::{for_each_block, for_each_block_mut, GgmlType, QuantError};

/// Values per block of every format in this module.
const QK: usize = 32;

/// The value of largest magnitude, keeping its sign (the first one on ties).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The smallest and the largest value.
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Largest magnitude, with ggml's `MAX(amax, fabsf(v))` (NaN-ignoring like `f32::max`).
fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(
        0.0f32,
        |amax, &v| if amax > v.abs() { amax } else { v.abs() },
    )
}

/// Inverse of `d`, or 0 for a zero scale (an all-zero block).
#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// ggml's `(int8_t)(v)`: truncation toward zero into a signed byte (v is always in range for
/// finite blocks; out-of-range values wrap like the x86 conversion ggml compiles to).
#[inline]
fn trunc_i8(v: f32) -> i8 {
    v as i32 as i8
}

/// Q4_0: d = max / −8 where `max` is the signed value of largest magnitude (so it maps to
/// level 0 exactly), q = min(15, trunc(x/d + 8.5)).
fn quantize_block_q4_0(x: &[f32], y: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inverse(d);
    write_f16(y, 0, d);
    for j in 0..QK / 2 {
        let lo = trunc_i8(x[j] * id + 8.5).min(15) as u8;
        let hi = trunc_i8(x[j + QK / 2] * id + 8.5).min(15) as u8;
        y[Q4_0_QS + j] = lo | (hi << 4);
    }
}

fn dequantize_block_q4_0(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    for j in 0..QK / 2 {
        let q = x[Q4_0_QS + j];
        y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: d = (max − min) / 15, m = min, q = min(15, trunc((x − min)/d + 0.5)).
fn quantize_block_q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    write_f16(y, 0, d);
    write_f16(y, 2, min);
    for j in 0..QK / 2 {
        let lo = trunc_i8((x[j] - min) * id + 0.5).min(15) as u8;
        let hi = trunc_i8((x[j + QK / 2] - min) * id + 0.5).min(15) as u8;
        y[Q4_1_QS + j] = lo | (hi << 4);
    }
}

fn dequantize_block_q4_1(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    let m = read_f16(x, 2);
    for j in 0..QK / 2 {
        let q = x[Q4_1_QS + j];
        y[j] = (q & 0xF) as f32 * d + m;
        y[j + QK / 2] = (q >> 4) as f32 * d + m;
    }
}

/// Packs 32 five-bit levels into `qh` (fifth bits, little-endian u32) and `qs` (nibbles).
fn pack_q5(levels: &[u8; QK], qh: &mut [u8], qs: &mut [u8]) {
    let mut high = 0u32;
    for j in 0..QK / 2 {
        let (lo, hi) = (levels[j], levels[j + QK / 2]);
        qs[j] = (lo & 0xF) | ((hi & 0xF) << 4);
        high |= (((lo & 0x10) >> 4) as u32) << j;
        high |= (((hi & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    qh.copy_from_slice(&high.to_le_bytes());
}

/// The 32 five-bit levels (0..32) of a Q5 block from its `qh` (4 bytes) and `qs` (16 bytes).
fn unpack_q5(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut levels = [0u8; QK];
    for j in 0..QK / 2 {
        levels[j] = (qs[j] & 0xF) | ((((high >> j) & 1) as u8) << 4);
        levels[j + QK / 2] = (qs[j] >> 4) | ((((high >> (j + QK / 2)) & 1) as u8) << 4);
    }
    levels
}

/// Q5_0: d = max / −16 (signed value of largest magnitude), q = min(31, trunc(x/d + 16.5)).
fn quantize_block_q5_0(x: &[f32], y: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inverse(d);
    write_f16(y, 0, d);
    let mut levels = [0u8; QK];
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = trunc_i8(v * id + 16.5).min(31) as u8;
    }
    let (qh, qs) = y[Q5_0_QH..Q5_0_BYTES].split_at_mut(Q5_0_QS - Q5_0_QH);
    pack_q5(&levels, qh, qs);
}

fn dequantize_block_q5_0(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    let levels = unpack_q5(&x[Q5_0_QH..Q5_0_QS], &x[Q5_0_QS..Q5_0_BYTES]);
    for (v, &q) in y.iter_mut().zip(&levels) {
        *v = (q as i32 - 16) as f32 * d;
    }
}

/// Q5_1: d = (max − min) / 31, m = min, q = trunc((x − min)/d + 0.5) — ggml clamps nothing
/// here (a level of 32 from rounding would lose its top bit; it cannot occur for finite rows).
fn quantize_block_q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    write_f16(y, 0, d);
    write_f16(y, 2, min);
    let mut levels = [0u8; QK];
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = ((v - min) * id + 0.5) as i32 as u8;
    }
    let (qh, qs) = y[Q5_1_QH..Q5_1_BYTES].split_at_mut(Q5_1_QS - Q5_1_QH);
    pack_q5(&levels, qh, qs);
}

fn dequantize_block_q5_1(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    let m = read_f16(x, 2);
    let levels = unpack_q5(&x[Q5_1_QH..Q5_1_QS], &x[Q5_1_QS..Q5_1_BYTES]);
    for (v, &q) in y.iter_mut().zip(&levels) {
        *v = q as f32 * d + m;
    }
}

/// The 32 bytes of Q8 quants round(x/d) (half away from zero, C's `roundf`) with d = amax/127;
/// returns d.
fn quantize_q8_values(x: &[f32], qs: &mut [u8]) -> f32 {
    let d = abs_max(x) / 127.0;
    let id = inverse(d);
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
    d
}

/// Q8_0: d = amax / 127, q = round(x / d).
fn quantize_block_q8_0(x: &[f32], y: &mut [u8]) {
    let d = quantize_q8_values(x, &mut y[Q8_0_QS..Q8_0_BYTES]);
    write_f16(y, 0, d);
}

fn dequantize_block_q8_0(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    for (v, &q) in y.iter_mut().zip(&x[Q8_0_QS..Q8_0_BYTES]) {
        *v = (q as i8) as f32 * d;
    }
}

/// Q8_1: as Q8_0, plus s = d·Σq (the sum computed in integers, the product in f32).
fn quantize_block_q8_1(x: &[f32], y: &mut [u8]) {
    let d = quantize_q8_values(x, &mut y[Q8_1_QS..Q8_1_BYTES]);
    let sum: i32 = y[Q8_1_QS..Q8_1_BYTES]
        .iter()
        .map(|&q| (q as i8) as i32)
        .sum();
    write_f16(y, 0, d);
    write_f16(y, 2, sum as f32 * d);
}

fn dequantize_block_q8_1(x: &[u8], y: &mut [f32]) {
    let d = read_f16(x, 0);
    for (v, &q) in y.iter_mut().zip(&x[Q8_1_QS..Q8_1_BYTES]) {
        *v = (q as i8) as f32 * d;
    }
}

/// Quantizes a row (length a multiple of 32) to Q4_0, bit-exact with ggml's
/// `quantize_row_q4_0_ref`. `dst`: 18 bytes per 32 values.
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q4_0, src, dst, quantize_block_q4_0)
}

/// Expands a Q4_0 row; `dst.len()` is the number of values.
pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q4_0, src, dst, dequantize_block_q4_0)
}

/// Quantizes a row (length a multiple of 32) to Q4_1, bit-exact with ggml's
/// `quantize_row_q4_1_ref`. `dst`: 20 bytes per 32 values.
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q4_1, src, dst, quantize_block_q4_1)
}

/// Expands a Q4_1 row; `dst.len()` is the number of values.
pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q4_1, src, dst, dequantize_block_q4_1)
}

/// Quantizes a row (length a multiple of 32) to Q5_0, bit-exact with ggml's
/// `quantize_row_q5_0_ref`. `dst`: 22 bytes per 32 values.
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q5_0, src, dst, quantize_block_q5_0)
}

/// Expands a Q5_0 row; `dst.len()` is the number of values.
pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q5_0, src, dst, dequantize_block_q5_0)
}

/// Quantizes a row (length a multiple of 32) to Q5_1, bit-exact with ggml's
/// `quantize_row_q5_1_ref`. `dst`: 24 bytes per 32 values.
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q5_1, src, dst, quantize_block_q5_1)
}

/// Expands a Q5_1 row; `dst.len()` is the number of values.
pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q5_1, src, dst, dequantize_block_q5_1)
}

/// Quantizes a row (length a multiple of 32) to Q8_0, bit-exact with ggml's
/// `quantize_row_q8_0_ref`. `dst`: 34 bytes per 32 values.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q8_0, src, dst, quantize_block_q8_0)
}

/// Expands a Q8_0 row; `dst.len()` is the number of values.
pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q8_0, src, dst, dequantize_block_q8_0)
}

/// Quantizes a row (length a multiple of 32) to Q8_1 (activations for Q4_1/Q5_1 weights),
/// bit-exact with ggml's `quantize_row_q8_1_ref`. `dst`: 36 bytes per 32 values.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::Q8_1, src, dst, quantize_block_q8_1)
}

/// Expands a Q8_1 row; `dst.len()` is the number of values.
pub fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::Q8_1, src, dst, dequantize_block_q8_1)
}
