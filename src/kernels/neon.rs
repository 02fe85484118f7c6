//! Baseline ARMv8.0 NEON kernels (every aarch64 CPU: Raspberry Pi 3/4 Cortex-A53/A72 and up).
//!
//! The integer sums are computed with widening multiplies (`vmull_s8` → i16) accumulated into
//! i32 lanes; the float steps are done exactly as in [`super::generic`] (same operations, same
//! order), so the quantized kernels return **bit-identical** results to the generic twins:
//! - Q4_0/Q8_0 and Q8_0/Q8_0: one exact integer sum per block, then ggml's scalar float
//!   expression.
//! - Q4_K/Q6_K: ggml's eight integer lanes (value `i` goes to lane `i % 8`) come out of
//!   `vmull_s8` naturally: an 8-wide product vector *is* the eight lanes, and `vmlal_s16`
//!   multiplies it by the sub-block scale into two i32x4 accumulators; the f32 lane sums then
//!   use separate multiply and add (not fused), like the scalar code.
//!
//! The float kernels (f16/f32 weights) sum f32 products in f64 like the generic ones but in a
//! different order (two f64 lanes), so they agree to f64 rounding, not bit for bit. BF16 and
//! the Q4_1/Q5_x kernels use the generic code.
//!
//! Every kernel checks its slice lengths once (blocks beyond the shorter input are skipped, as
//! in the generic kernels) and then reads with unaligned NEON loads inside those bounds.

use std::arch::aarch64::*;

use super::{generic, tiles, Kernels};
use crate::quant::{read_f16, read_f32, unpack_scale_min_k4, GgmlType, QK_K};

/// The baseline NEON table.
pub static NEON: Kernels = NEON_TABLE;

/// [`NEON`] as a constant, for tables that replace only some of its entries.
pub(crate) const NEON_TABLE: Kernels = Kernels {
    name: "neon",
    q4_0_q8_0: vec_dot_q4_0_q8_0,
    q4_1_q8_1: generic::vec_dot_q4_1_q8_1,
    q5_0_q8_0: generic::vec_dot_q5_0_q8_0,
    q5_1_q8_1: generic::vec_dot_q5_1_q8_1,
    q8_0_q8_0: vec_dot_q8_0_q8_0,
    q4_k_q8_k: vec_dot_q4_k_q8_k,
    q5_k_q8_k: generic::vec_dot_q5_k_q8_k,
    q6_k_q8_k: vec_dot_q6_k_q8_k,
    f16_f32: vec_dot_f16_f32,
    bf16_f32: generic::vec_dot_bf16_f32,
    f32_f32: vec_dot_f32,
    // Tiles: the portable ones (bitwise equal to the generic dots, which the baseline NEON
    // dots above also equal).
    q4_0_q8_0_tile: tiles::q4_0_q8_0,
    q4_1_q8_1_tile: tiles::q4_1_q8_1,
    q5_0_q8_0_tile: tiles::q5_0_q8_0,
    q5_1_q8_1_tile: tiles::q5_1_q8_1,
    q8_0_q8_0_tile: tiles::q8_0_q8_0,
    q4_k_q8_k_tile: tiles::q4_k_q8_k,
    q5_k_q8_k_tile: tiles::q5_k_q8_k,
    q6_k_q8_k_tile: tiles::q6_k_q8_k,
    wide: &[],
    packings: &[],
    rows: super::neon_rows::ROWS,
    exp: super::neon_rows::EXP,
};

/// Whole blocks present in both rows (`n` values; extra bytes ignored, missing blocks skipped).
#[inline]
pub(crate) fn n_blocks(n: usize, wt: GgmlType, w: &[u8], at: GgmlType, a: &[u8]) -> usize {
    let nb = n / wt.block_size();
    debug_assert_eq!(
        n % wt.block_size(),
        0,
        "{wt}: {n} values is not a whole number of blocks"
    );
    debug_assert!(w.len() >= nb * wt.type_size(), "{wt}: weight row too short");
    debug_assert!(
        a.len() >= nb * at.type_size(),
        "{at}: activation row too short"
    );
    nb.min(w.len() / wt.type_size())
        .min(a.len() / at.type_size())
}

/// 16 signed bytes from `b[off..off + 16]` (bounds checked by the slice index).
#[inline]
pub(crate) fn load_s8(b: &[u8], off: usize) -> int8x16_t {
    let s = &b[off..off + 16];
    // SAFETY: `s` holds 16 readable bytes; vld1q has no alignment requirement.
    unsafe { vld1q_s8(s.as_ptr() as *const i8) }
}

/// The 32 Q4_0 levels of a block's 16 packed bytes, minus 8: (values 0..16, values 16..32).
#[inline]
pub(crate) fn q4_0_levels(qs: &[u8]) -> (int8x16_t, int8x16_t) {
    let s = &qs[..16];
    // SAFETY: 16 readable bytes; the rest are register operations, always available on aarch64.
    unsafe {
        let q = vld1q_u8(s.as_ptr());
        let m = vdupq_n_u8(0x0F);
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m)), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
        (lo, hi)
    }
}

/// Σ a·b over 16 signed bytes, added to four i32 lanes (which lane gets what is unspecified).
#[inline]
fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only NEON operations (baseline on aarch64). |a·b| <= 16384 fits i16.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Horizontal sum of four i32 lanes.
#[inline]
fn hsum(v: int32x4_t) -> i32 {
    // SAFETY: register-only NEON operation.
    unsafe { vaddvq_s32(v) }
}

/// Q4_0 weights · Q8_0 activations (bit-identical to the generic kernel).
pub fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q4_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(nb) {
        let (lo, hi) = q4_0_levels(&x[2..18]);
        // SAFETY: register-only NEON operation.
        let acc = dot16(
            dot16(unsafe { vdupq_n_s32(0) }, lo, load_s8(y, 2)),
            hi,
            load_s8(y, 18),
        );
        sumf = (hsum(acc) as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q8_0 weights · Q8_0 activations (bit-identical to the generic kernel).
pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q8_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)).take(nb) {
        // SAFETY: register-only NEON operation.
        let zero = unsafe { vdupq_n_s32(0) };
        let acc = dot16(
            dot16(zero, load_s8(x, 2), load_s8(y, 2)),
            load_s8(x, 18),
            load_s8(y, 18),
        );
        sumf = (hsum(acc) as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// ggml's eight K-quant lanes: adds `scale · levels[k] · q8[k]` for 16 consecutive values
/// starting at a multiple of 8 into lanes `k % 8` (`lanes.0` = lanes 0..4, `lanes.1` = 4..8).
#[inline]
fn lanes16(lanes: &mut (int32x4_t, int32x4_t), levels: int8x16_t, q8: int8x16_t, scale: i16) {
    // SAFETY: register-only NEON operations. Products fit i16 (|level| <= 64, |q8| <= 128);
    // the scaled sums are formed in i32 by vmlal.
    unsafe {
        let sc = vdup_n_s16(scale);
        let p0 = vmull_s8(vget_low_s8(levels), vget_low_s8(q8));
        let p1 = vmull_high_s8(levels, q8);
        lanes.0 = vmlal_s16(lanes.0, vget_low_s16(p0), sc);
        lanes.1 = vmlal_high_s16(lanes.1, p0, vdupq_n_s16(scale));
        lanes.0 = vmlal_s16(lanes.0, vget_low_s16(p1), sc);
        lanes.1 = vmlal_high_s16(lanes.1, p1, vdupq_n_s16(scale));
    }
}

/// `sums[l] += d · lanes[l]` with a separate multiply and add per lane, as the scalar code.
#[inline]
fn add_lanes(sums: &mut (float32x4_t, float32x4_t), lanes: (int32x4_t, int32x4_t), d: f32) {
    // SAFETY: register-only NEON operations.
    unsafe {
        let dv = vdupq_n_f32(d);
        sums.0 = vaddq_f32(sums.0, vmulq_f32(dv, vcvtq_f32_s32(lanes.0)));
        sums.1 = vaddq_f32(sums.1, vmulq_f32(dv, vcvtq_f32_s32(lanes.1)));
    }
}

/// `init + sums[0] + ... + sums[7]`, left to right like the scalar fold.
#[inline]
fn fold_lanes(init: f32, sums: (float32x4_t, float32x4_t)) -> f32 {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` has room for 8 f32.
    unsafe {
        vst1q_f32(out.as_mut_ptr(), sums.0);
        vst1q_f32(out.as_mut_ptr().add(4), sums.1);
    }
    out.iter().fold(init, |acc, &s| acc + s)
}

#[inline]
fn zero_lanes() -> (int32x4_t, int32x4_t) {
    // SAFETY: register-only NEON operation.
    unsafe { (vdupq_n_s32(0), vdupq_n_s32(0)) }
}

#[inline]
fn zero_sums() -> (float32x4_t, float32x4_t) {
    // SAFETY: register-only NEON operation.
    unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) }
}

/// Q4_K weights · Q8_K activations (bit-identical to the generic kernel).
///
/// Q4_K block (144 bytes): d f16, dmin f16, 12 bytes of 6-bit scales/mins, 128 bytes of
/// nibbles: chunk c (32 bytes) holds values 64c..64c+32 in its low nibbles (sub-block 2c) and
/// 64c+32..64c+64 in its high nibbles (sub-block 2c+1). Q8_K block (292 bytes): d f32, 256 q8,
/// 16 i16 sums of 16 q8 each.
pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q4_K, w, GgmlType::Q8_K, a);
    let mut sums = zero_sums();
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)).take(nb) {
        let packed = &x[4..16];
        // The mins' contribution from the 16-value sums of q8, as the generic kernel.
        let sumi: i32 = (0..QK_K / 16)
            .map(|g| {
                let bsum = i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]) as i32;
                bsum * unpack_scale_min_k4(g / 2, packed).1 as i32
            })
            .sum();
        let mut lanes = zero_lanes();
        for c in 0..QK_K / 64 {
            let (sc_lo, sc_hi) = (
                unpack_scale_min_k4(2 * c, packed).0 as i16,
                unpack_scale_min_k4(2 * c + 1, packed).0 as i16,
            );
            for half in 0..2 {
                let off = 16 + 32 * c + 16 * half;
                let q = &x[off..off + 16];
                // SAFETY: 16 readable bytes; register-only operations after the load.
                let (lo, hi) = unsafe {
                    let v = vld1q_u8(q.as_ptr());
                    (
                        vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))),
                        vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
                    )
                };
                let base = 64 * c + 16 * half;
                lanes16(&mut lanes, lo, load_s8(y, 4 + base), sc_lo);
                lanes16(&mut lanes, hi, load_s8(y, 4 + base + 32), sc_hi);
            }
        }
        let yd = read_f32(y, 0);
        add_lanes(&mut sums, lanes, read_f16(x, 0) * yd);
        let dmin = read_f16(x, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    fold_lanes(sumf, sums)
}

/// Q6_K weights · Q8_K activations (bit-identical to the generic kernel).
///
/// Q6_K block (210 bytes): 128 bytes ql (low nibbles), 64 bytes qh (2 high bits each), 16 i8
/// scales (one per 16 values), d f16. Half h (128 values) uses ql[64h..64h+64] and
/// qh[32h..32h+32]; value 128h + 32·quarter + l has low nibble
/// `ql[l + 32·(quarter & 1)] >> (4·(quarter >> 1))` and high bits `qh[l] >> 2·quarter`.
pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q6_K, w, GgmlType::Q8_K, a);
    let mut sums = zero_sums();
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)).take(nb) {
        let mut lanes = zero_lanes();
        for h in 0..2 {
            for part in 0..2 {
                // Values l = 16·part .. 16·part + 16 of each quarter.
                let l0 = 16 * part;
                let ql0 = &x[64 * h + l0..64 * h + l0 + 16];
                let ql1 = &x[64 * h + 32 + l0..64 * h + 32 + l0 + 16];
                let qh = &x[128 + 32 * h + l0..128 + 32 * h + l0 + 16];
                // SAFETY: three 16-byte loads inside the slices above; register-only after.
                let quarters = unsafe {
                    let (a0, a1, b) = (
                        vld1q_u8(ql0.as_ptr()),
                        vld1q_u8(ql1.as_ptr()),
                        vld1q_u8(qh.as_ptr()),
                    );
                    let m4 = vdupq_n_u8(0x0F);
                    let m2 = vdupq_n_u8(0x03);
                    let level = |low: uint8x16_t, high: uint8x16_t| {
                        let v = vorrq_u8(low, vshlq_n_u8::<4>(vandq_u8(high, m2)));
                        vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32))
                    };
                    [
                        level(vandq_u8(a0, m4), b),
                        level(vandq_u8(a1, m4), vshrq_n_u8::<2>(b)),
                        level(vshrq_n_u8::<4>(a0), vshrq_n_u8::<4>(b)),
                        level(vshrq_n_u8::<4>(a1), vshrq_n_u8::<6>(b)),
                    ]
                };
                for (quarter, lv) in quarters.into_iter().enumerate() {
                    let base = 128 * h + 32 * quarter + l0;
                    let scale = x[192 + base / 16] as i8 as i16;
                    lanes16(&mut lanes, lv, load_s8(y, 4 + base), scale);
                }
            }
        }
        add_lanes(&mut sums, lanes, read_f16(x, 208) * read_f32(y, 0));
    }
    fold_lanes(0.0, sums)
}

/// Four f16 (little-endian bytes `b[off..off + 8]`) widened to f32 (`fcvtl`, base AdvSIMD;
/// the `float16x4_t` intrinsics are not stable, so this is inline assembly on the raw bits).
#[inline]
fn f16x4_to_f32(b: &[u8], off: usize) -> float32x4_t {
    let s = &b[off..off + 8];
    // SAFETY: 8 readable bytes; `fcvtl` exists on every aarch64 CPU and touches only registers.
    unsafe {
        let h = vld1_u16(s.as_ptr() as *const u16);
        let out: float32x4_t;
        std::arch::asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack),
        );
        out
    }
}

/// Adds the four f32 products `p` to two f64x2 accumulators.
#[inline]
fn acc_f64(acc: &mut (float64x2_t, float64x2_t), p: float32x4_t) {
    // SAFETY: register-only NEON operations.
    unsafe {
        acc.0 = vaddq_f64(acc.0, vcvt_f64_f32(vget_low_f32(p)));
        acc.1 = vaddq_f64(acc.1, vcvt_high_f64_f32(p));
    }
}

#[inline]
fn sum_f64(acc: (float64x2_t, float64x2_t)) -> f64 {
    // SAFETY: register-only NEON operations.
    unsafe { vaddvq_f64(vaddq_f64(acc.0, acc.1)) }
}

/// F16 weights · f32 activations: f32 products summed in f64 (four lanes at a time).
pub fn vec_dot_f16_f32(n: usize, w: &[u8], x: &[f32]) -> f32 {
    let n = n.min(w.len() / 2).min(x.len());
    let n4 = n / 4 * 4;
    // SAFETY: register-only NEON operation.
    let mut acc = unsafe { (vdupq_n_f64(0.0), vdupq_n_f64(0.0)) };
    for i in (0..n4).step_by(4) {
        let wv = f16x4_to_f32(w, 2 * i);
        let xs = &x[i..i + 4];
        // SAFETY: 4 readable f32.
        let p = unsafe { vmulq_f32(wv, vld1q_f32(xs.as_ptr())) };
        acc_f64(&mut acc, p);
    }
    let tail: f64 = (n4..n).map(|i| (read_f16(w, 2 * i) * x[i]) as f64).sum();
    (sum_f64(acc) + tail) as f32
}

/// F32 weights (little-endian bytes, any alignment) · f32 activations, summed in f64.
pub fn vec_dot_f32(n: usize, w: &[u8], x: &[f32]) -> f32 {
    let n = n.min(w.len() / 4).min(x.len());
    let n4 = n / 4 * 4;
    // SAFETY: register-only NEON operation.
    let mut acc = unsafe { (vdupq_n_f64(0.0), vdupq_n_f64(0.0)) };
    for i in (0..n4).step_by(4) {
        let ws = &w[4 * i..4 * i + 16];
        let xs = &x[i..i + 4];
        // SAFETY: 16 readable bytes (unaligned load of u8 reinterpreted) and 4 readable f32.
        let p = unsafe {
            let wv = vreinterpretq_f32_u8(vld1q_u8(ws.as_ptr()));
            vmulq_f32(wv, vld1q_f32(xs.as_ptr()))
        };
        acc_f64(&mut acc, p);
    }
    let tail: f64 = (n4..n).map(|i| (read_f32(w, 4 * i) * x[i]) as f64).sum();
    (sum_f64(acc) + tail) as f32
}
