//! x86-64 float tiles ([`super::FloatTile`]): f32, f16 (F16C `vcvtph2ps`) and bf16 (widen and
//! shift by 16) weight rows × f32 activation rows in 8-lane FMA register tiles.
//!
//! Each output owns one 8-lane accumulator for the whole row length (`acc = fma(w, x, acc)` per
//! 8 values), folded in a fixed order and finished by a scalar `fma` tail: the formula of
//! [`super::tiles::float_lanes8`], which every tile here equals bitwise, whatever its shape.
//! A register tile is `R` weight rows × `C` activation rows: per 8 values, `C` activation
//! loads, `R` weight loads (converted once, used `C` times) and `R·C` FMAs. `R` is picked per
//! `C` so that the accumulators, the activation vectors and one weight vector fit the register
//! file: 16 ymm registers with AVX2 (`R·C ≤ 12`), 32 with AVX-512 VL (`R·C ≤ 24`; same 8-lane
//! vectors, hence the same numbers, with twice the registers).
//!
//! The macro below makes each tile's body (a macro because the loads must inline with the
//! body's target features); lengths and the walk down the rows are
//! [`super::tiles::run_float_tile`]'s, shared with the NEON tiles.
//!
//! Every `unsafe fn` needs the target features named on it; the safe wrappers are only placed
//! in tables that [`super::avx2`]'s (or [`super::avx512vnni`]'s) detection hands out after
//! checking those features.

// Register tiles index fixed-size arrays by row/column up to the const-generic tile shape.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::tiles::{run_float_tile, FloatBody as Body};
use crate::quant::{read_bf16, read_f16, read_f32};

/// Defines the 8-lane fold for a set of target features: `((s0 + s4) + (s2 + s6)) + ((s1 +
/// s5) + (s3 + s7))`, as in [`super::tiles::float_lanes8`].
macro_rules! fold {
    ($fold:ident, $features:literal) => {
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $fold(v: __m256) -> f32 {
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let q = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
        }
    };
}

fold!(fold_avx2, "avx2,fma,f16c");
fold!(fold_avx512, "avx2,fma,f16c,avx512f,avx512vl");

/// Defines the safe tile `$name` for one weight type and set of target features: `$width`
/// bytes per weight, `load(p)` 8 weights at `p` as f32 lanes, `scalar(row, i)` weight `i`,
/// register-tile heights `[h1, h2, h3, h4]` for 1..4 activation rows (each dividing
/// [`super::FLOAT_TILE_ROWS`]).
macro_rules! float_tile {
    (
        $name:ident, $body:ident, $pick:ident, $features:literal, $fold:ident, $width:expr,
        |$p:ident| $load:expr, |$w:ident, $i:ident| $scalar:expr,
        [$h1:literal, $h2:literal, $h3:literal, $h4:literal]
    ) => {
        #[target_feature(enable = $features)]
        unsafe fn $body<const R: usize, const C: usize>(
            n: usize,
            wp: &[*const u8],
            ap: &[*const f32],
            res: &mut [f32],
        ) {
            // A macro, not a closure, so the loads inline with the target features.
            macro_rules! load {
                ($q:expr) => {{
                    let $p: *const u8 = $q;
                    $load
                }};
            }
            let w: [*const u8; R] = std::array::from_fn(|r| wp[r]);
            let x: [*const f32; C] = std::array::from_fn(|c| ap[c]);
            let n8 = n / 8 * 8;
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let mut i = 0;
            while i < n8 {
                let mut xv = [_mm256_setzero_ps(); C];
                for c in 0..C {
                    xv[c] = _mm256_loadu_ps(x[c].add(i));
                }
                for r in 0..R {
                    let wv = load!(w[r].add($width * i));
                    for c in 0..C {
                        acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                    }
                }
                i += 8;
            }
            for r in 0..R {
                let $w = std::slice::from_raw_parts(w[r], $width * n);
                for c in 0..C {
                    let mut s = $fold(acc[r][c]);
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
                (true, 1) => $body::<$h1, 1>,
                (true, 2) => $body::<$h2, 2>,
                (true, 3) => $body::<$h3, 3>,
                (true, _) => $body::<$h4, 4>,
            }
        }

        pub(super) fn $name(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
            let geometry = ($width, [$h1, $h2, $h3, $h4]);
            run_float_tile(n, w, a, out, geometry, $pick)
        }
    };
}

float_tile!(
    f32_avx2,
    f32_avx2_body,
    pick_f32_avx2,
    "avx2,fma,f16c",
    fold_avx2,
    4,
    |p| _mm256_loadu_ps(p.cast()),
    |w, i| read_f32(w, 4 * i),
    [6, 6, 3, 2]
);
float_tile!(
    f16_avx2,
    f16_avx2_body,
    pick_f16_avx2,
    "avx2,fma,f16c",
    fold_avx2,
    2,
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    |w, i| read_f16(w, 2 * i),
    [6, 6, 3, 2]
);
float_tile!(
    bf16_avx2,
    bf16_avx2_body,
    pick_bf16_avx2,
    "avx2,fma,f16c",
    fold_avx2,
    2,
    |p| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast())
    ))),
    |w, i| read_bf16(w, 2 * i),
    [6, 6, 3, 2]
);
float_tile!(
    f32_avx512,
    f32_avx512_body,
    pick_f32_avx512,
    "avx2,fma,f16c,avx512f,avx512vl",
    fold_avx512,
    4,
    |p| _mm256_loadu_ps(p.cast()),
    |w, i| read_f32(w, 4 * i),
    [12, 12, 6, 6]
);
float_tile!(
    f16_avx512,
    f16_avx512_body,
    pick_f16_avx512,
    "avx2,fma,f16c,avx512f,avx512vl",
    fold_avx512,
    2,
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    |w, i| read_f16(w, 2 * i),
    [12, 12, 6, 6]
);
float_tile!(
    bf16_avx512,
    bf16_avx512_body,
    pick_bf16_avx512,
    "avx2,fma,f16c,avx512f,avx512vl",
    fold_avx512,
    2,
    |p| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast())
    ))),
    |w, i| read_bf16(w, 2 * i),
    [12, 12, 6, 6]
);
