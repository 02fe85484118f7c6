//! aarch64 float tiles ([`super::FloatTile`]): f32, f16 (`fcvtl`/`fcvtl2`) and bf16 (widening
//! shift by 16) weight rows × f32 activation rows in FMA register tiles.
//!
//! The same formula as the x86 tiles ([`super::tiles::float_lanes8`]): each output owns eight
//! f32 lanes, here two q registers (lanes 0–3 and 4–7), `fmla`-accumulated over the whole row,
//! folded in the fixed order and finished by a scalar `fma` tail; every tile equals the twin
//! bitwise, whatever its shape. Register tiles are `R` weight rows × `C` activation rows with
//! `2·R·C + 2·C + 2 ≤ 32` q registers: 12×1, 6×2, 3×3, 2×4.
//!
//! One generic register-tile body serves the three weight formats, which differ only in their
//! [`Weights`] (bytes per weight, the 8-weight load, the scalar read); the driver that clamps
//! lengths and walks the rows is [`super::tiles::run_float_tile`], shared with the x86 tiles.
//! NEON and `fcvtl` are baseline on aarch64: the `unsafe fn`s here need no detection, only
//! in-bounds pointers.

// Register tiles index fixed-size arrays by row/column up to the const-generic tile shape.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::tiles::{run_float_tile, FloatBody};
use crate::quant::{read_bf16, read_f16, read_f32};

/// Eight f32 lanes: lanes 0–3, lanes 4–7.
#[derive(Clone, Copy)]
struct V8(float32x4_t, float32x4_t);

/// `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))`, as in [`super::tiles::float_lanes8`].
#[inline(always)]
fn fold(v: V8) -> f32 {
    // SAFETY: register-only NEON operations.
    unsafe {
        let h = vaddq_f32(v.0, v.1);
        let p = vadd_f32(vget_low_f32(h), vget_high_f32(h));
        vget_lane_f32::<0>(p) + vget_lane_f32::<1>(p)
    }
}

/// A weight format the tiles read: the only thing that differs between the three tiles.
trait Weights {
    /// Bytes per weight.
    const WIDTH: usize;
    /// Eight weights at `p` (any alignment) as f32 lanes; `p` must hold `8·WIDTH` bytes.
    unsafe fn load(p: *const u8) -> V8;
    /// Weight `i` of the row `w`.
    fn scalar(w: &[u8], i: usize) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl Weights for F32 {
    const WIDTH: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> V8 {
        V8(
            vreinterpretq_f32_u8(vld1q_u8(p)),
            vreinterpretq_f32_u8(vld1q_u8(p.add(16))),
        )
    }
    #[inline(always)]
    fn scalar(w: &[u8], i: usize) -> f32 {
        read_f32(w, 4 * i)
    }
}

impl Weights for F16 {
    const WIDTH: usize = 2;
    /// Widened with `fcvtl`, `fcvtl2` (base AdvSIMD; the `float16x8_t` intrinsics are not
    /// stable, so this is inline assembly on the raw bits).
    #[inline(always)]
    unsafe fn load(p: *const u8) -> V8 {
        let h = vld1q_u8(p);
        let (lo, hi): (float32x4_t, float32x4_t);
        std::arch::asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            // `lo` is written before `h` is last read, so it must not share `h`'s register.
            lo = out(vreg) lo,
            hi = lateout(vreg) hi,
            h = in(vreg) h,
            options(pure, nomem, nostack),
        );
        V8(lo, hi)
    }
    #[inline(always)]
    fn scalar(w: &[u8], i: usize) -> f32 {
        read_f16(w, 2 * i)
    }
}

impl Weights for Bf16 {
    const WIDTH: usize = 2;
    /// Each bf16 shifted into the top half of its lane.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> V8 {
        let h = vreinterpretq_u16_u8(vld1q_u8(p));
        V8(
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        )
    }
    #[inline(always)]
    fn scalar(w: &[u8], i: usize) -> f32 {
        read_bf16(w, 2 * i)
    }
}

/// An `R`×`C` register tile of weight format `W` (see [`FloatBody`]).
unsafe fn body<W: Weights, const R: usize, const C: usize>(
    n: usize,
    wp: &[*const u8],
    ap: &[*const f32],
    res: &mut [f32],
) {
    let w: [*const u8; R] = std::array::from_fn(|r| wp[r]);
    let x: [*const f32; C] = std::array::from_fn(|c| ap[c]);
    let n8 = n / 8 * 8;
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[V8(zero, zero); C]; R];
    let mut i = 0;
    while i < n8 {
        let mut xv = [V8(zero, zero); C];
        for c in 0..C {
            xv[c] = V8(vld1q_f32(x[c].add(i)), vld1q_f32(x[c].add(i + 4)));
        }
        for r in 0..R {
            let wv = W::load(w[r].add(W::WIDTH * i));
            for c in 0..C {
                let a = &mut acc[r][c];
                a.0 = vfmaq_f32(a.0, wv.0, xv[c].0);
                a.1 = vfmaq_f32(a.1, wv.1, xv[c].1);
            }
        }
        i += 8;
    }
    for r in 0..R {
        let wr = std::slice::from_raw_parts(w[r], W::WIDTH * n);
        for c in 0..C {
            let mut s = fold(acc[r][c]);
            for i in n8..n {
                s = W::scalar(wr, i).mul_add(*x[c].add(i), s);
            }
            res[r * C + c] = s;
        }
    }
}

/// Register-tile heights for 1..4 activation rows (`2·R·C + 2·C + 2 ≤ 32` q registers).
const HEIGHTS: [usize; 4] = [12, 6, 3, 2];

/// Register-tile body for `tall` (the full height for `na` columns) or one row.
fn pick<W: Weights>(tall: bool, na: usize) -> FloatBody {
    match (tall, na) {
        (false, 1) => body::<W, 1, 1>,
        (false, 2) => body::<W, 1, 2>,
        (false, 3) => body::<W, 1, 3>,
        (false, _) => body::<W, 1, 4>,
        (true, 1) => body::<W, 12, 1>,
        (true, 2) => body::<W, 6, 2>,
        (true, 3) => body::<W, 3, 3>,
        (true, _) => body::<W, 2, 4>,
    }
}

/// The f32 tile.
pub(super) fn f32_neon(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
    run_float_tile(n, w, a, out, (F32::WIDTH, HEIGHTS), pick::<F32>)
}

/// The f16 tile.
pub(super) fn f16_neon(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
    run_float_tile(n, w, a, out, (F16::WIDTH, HEIGHTS), pick::<F16>)
}

/// The bf16 tile.
pub(super) fn bf16_neon(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
    run_float_tile(n, w, a, out, (Bf16::WIDTH, HEIGHTS), pick::<Bf16>)
}
