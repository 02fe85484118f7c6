//! aarch64 float tiles ([`super::FloatTile`]): f32, f16 (`fcvtl`/`fcvtl2`) and bf16 (widening
//! shift by 16) weight rows × f32 activation rows in FMA register tiles.
//!
//! The same formula as the x86 tiles ([`super::tiles::float_lanes8`]): each output owns eight
//! f32 lanes, here two q registers (lanes 0–3 and 4–7), `fmla`-accumulated over the whole row,
//! folded in the fixed order and finished by a scalar `fma` tail; every tile equals the twin
//! bitwise, whatever its shape. Register tiles are `R` weight rows × `C` activation rows with
//! `2·R·C + 2·C + 2 ≤ 32` q registers: 12×1, 6×2, 3×3, 2×4.
//!
//! NEON and `fcvtl` are baseline on aarch64: the `unsafe fn`s here need no detection, only
//! in-bounds pointers.

// Register tiles index fixed-size arrays by row/column up to the const-generic tile shape.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::{FLOAT_TILE_ROWS, TILE};
use crate::quant::{read_bf16, read_f16, read_f32};

/// Eight f32 lanes: lanes 0–3, lanes 4–7.
#[derive(Clone, Copy)]
struct V8(float32x4_t, float32x4_t);

/// A register-tile body: `(n, weight rows, activation rows, res)`, `res[r·C + c]`.
type Body = unsafe fn(usize, &[*const u8], &[*const f32], &mut [f32]);

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

/// Eight f32 at `p` (any alignment).
#[inline(always)]
unsafe fn load_f32(p: *const u8) -> V8 {
    V8(
        vreinterpretq_f32_u8(vld1q_u8(p)),
        vreinterpretq_f32_u8(vld1q_u8(p.add(16))),
    )
}

/// Eight f16 at `p` widened to f32 (`fcvtl`, `fcvtl2`: base AdvSIMD; the `float16x8_t`
/// intrinsics are not stable, so this is inline assembly on the raw bits).
#[inline(always)]
unsafe fn load_f16(p: *const u8) -> V8 {
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

/// Eight bf16 at `p` widened to f32 (each shifted into the top half of its lane).
#[inline(always)]
unsafe fn load_bf16(p: *const u8) -> V8 {
    let h = vreinterpretq_u16_u8(vld1q_u8(p));
    V8(
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

/// Defines the safe tile `$name` for one weight type: `$width` bytes per weight, `$load` eight
/// weights as a [`V8`], `scalar(row, i)` weight `i`.
macro_rules! float_tile {
    ($name:ident, $body:ident, $pick:ident, $width:expr, $load:ident, |$w:ident, $i:ident| $scalar:expr) => {
        unsafe fn $body<const R: usize, const C: usize>(
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
                    let wv = $load(w[r].add($width * i));
                    for c in 0..C {
                        let a = &mut acc[r][c];
                        a.0 = vfmaq_f32(a.0, wv.0, xv[c].0);
                        a.1 = vfmaq_f32(a.1, wv.1, xv[c].1);
                    }
                }
                i += 8;
            }
            for r in 0..R {
                let $w = std::slice::from_raw_parts(w[r], $width * n);
                for c in 0..C {
                    let mut s = fold(acc[r][c]);
                    for $i in n8..n {
                        s = ($scalar).mul_add(*x[c].add($i), s);
                    }
                    res[r * C + c] = s;
                }
            }
        }

        /// Register-tile body for `tall` (the full height for `na` columns) or one row.
        fn $pick(tall: bool, na: usize) -> Body {
            match (tall, na) {
                (false, 1) => $body::<1, 1>,
                (false, 2) => $body::<1, 2>,
                (false, 3) => $body::<1, 3>,
                (false, _) => $body::<1, 4>,
                (true, 1) => $body::<12, 1>,
                (true, 2) => $body::<6, 2>,
                (true, 3) => $body::<3, 3>,
                (true, _) => $body::<2, 4>,
            }
        }

        pub(super) fn $name(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
            let (nw, na) = (w.len().min(FLOAT_TILE_ROWS), a.len().min(TILE));
            if nw == 0 || na == 0 {
                return;
            }
            // Values missing from a too-short row are left out of every output.
            let mut n = n;
            for row in &w[..nw] {
                n = n.min(row.len() / $width);
            }
            for row in &a[..na] {
                n = n.min(row.len());
            }
            let mut wp = [w[0].as_ptr(); FLOAT_TILE_ROWS];
            for (p, row) in wp.iter_mut().zip(&w[..nw]) {
                *p = row.as_ptr();
            }
            let mut ap = [a[0].as_ptr(); TILE];
            for (p, row) in ap.iter_mut().zip(&a[..na]) {
                *p = row.as_ptr();
            }
            let mut res = [0f32; FLOAT_TILE_ROWS * TILE];
            let height = [12, 6, 3, 2][na - 1];
            let mut r0 = 0;
            while r0 < nw {
                let tall = nw - r0 >= height;
                // SAFETY: NEON is baseline on aarch64; each weight pointer starts a row of at
                // least `n` weights and each activation pointer one of at least `n` floats,
                // and the body reads no further; `res` holds the rows `r0..r0 + height`
                // (≤ FLOAT_TILE_ROWS) of `na` outputs.
                unsafe { $pick(tall, na)(n, &wp[r0..nw], &ap[..na], &mut res[r0 * na..]) };
                r0 += if tall { height } else { 1 };
            }
            for (o, &v) in out.iter_mut().zip(&res[..nw * na]) {
                *o = v;
            }
        }
    };
}

float_tile!(f32_neon, f32_body, pick_f32, 4, load_f32, |w, i| read_f32(
    w,
    4 * i
));
float_tile!(f16_neon, f16_body, pick_f16, 2, load_f16, |w, i| read_f16(
    w,
    2 * i
));
float_tile!(bf16_neon, bf16_body, pick_bf16, 2, load_bf16, |w, i| {
    read_bf16(w, 2 * i)
});
