//! Unquantized element types: F32, F16 and BF16 rows, and the half-float helpers every block
//! format uses for its scales.
//!
//! Conversions to F16 and BF16 round to nearest, ties to even, like ggml's
//! `GGML_FP32_TO_FP16` / `GGML_FP32_TO_BF16` (the `half` crate implements exactly that; NaN stays
//! a quiet NaN). Conversions back are exact.

use half::{bf16, f16};

use super::{for_each_block, for_each_block_mut, GgmlType, QuantError};

/// Reads the little-endian IEEE half at `b[off..off + 2]` as f32.
#[inline]
pub(crate) fn read_f16(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Writes `v`, rounded to IEEE half (nearest, ties to even), at `b[off..off + 2]`.
#[inline]
pub(crate) fn write_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Reads the little-endian bfloat16 at `b[off..off + 2]` as f32.
#[inline]
pub(crate) fn read_bf16(b: &[u8], off: usize) -> f32 {
    bf16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Reads the little-endian f32 at `b[off..off + 4]`.
#[inline]
pub(crate) fn read_f32(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Stores a row of f32 as little-endian bytes. `dst`: `4 * src.len()` bytes.
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::F32, src, dst, |x, y| {
        y.copy_from_slice(&x[0].to_le_bytes())
    })
}

/// Reads a row of little-endian f32. `src`: `4 * dst.len()` bytes.
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::F32, src, dst, |x, y| y[0] = read_f32(x, 0))
}

/// Rounds a row to IEEE half. `dst`: `2 * src.len()` bytes.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::F16, src, dst, |x, y| write_f16(y, 0, x[0]))
}

/// Widens a row of IEEE halves to f32 (exact). `src`: `2 * dst.len()` bytes.
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::F16, src, dst, |x, y| y[0] = read_f16(x, 0))
}

/// Rounds a row to bfloat16 (nearest, ties to even; NaN stays quiet NaN). `dst`: `2 * src.len()`
/// bytes.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    for_each_block(GgmlType::BF16, src, dst, |x, y| {
        y.copy_from_slice(&bf16::from_f32(x[0]).to_bits().to_le_bytes())
    })
}

/// Widens a row of bfloat16 to f32 (exact). `src`: `2 * dst.len()` bytes.
pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    for_each_block_mut(GgmlType::BF16, src, dst, |x, y| y[0] = read_bf16(x, 0))
}
