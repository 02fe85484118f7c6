//! x86-64 kernels for AVX2 + FMA + F16C + AVX-VNNI (Alder Lake / Sapphire Rapids and later,
//! Zen 5): the [`super::avx2`] kernels with the integer products done by the VNNI
//! multiply-accumulate instructions.
//!
//! - Q4_0 and Q8_0 use `vpdpbusd` (u8 × i8, four products summed into each i32 lane and added to
//!   the accumulator). The weights are made unsigned by an offset instead of AVX2's sign trick:
//!   Q4_0 levels stay 0..15 (the stored nibble), Q8_0 weights are flipped to `w + 128` (xor
//!   0x80). The offset times the activation sum, `k·Σa` per lane (itself one `vpdpbusd` of the
//!   constant `k` with the activations, shared by every weight row), is subtracted from the
//!   accumulator's starting value, so one `vpdpbusd` per (weight row, activation row) yields
//!   `Σ (q − k)·a` exactly — for every i8 activation, −128 included.
//! - Q4_K and Q6_K are the AVX2 kernels: a `vpdpwssd` version (replacing `madd` + `add`) was
//!   measured no faster (Q4_K GEMM 85.6 vs 93.4 GFLOP/s, Q6_K 78.9 vs 81.6 on a Sapphire-Rapids
//!   class Xeon), because those kernels are bound by per-block scale gathers and reductions;
//!   a `vpdpbusd` would leave 4-value sums that still need a per-sub-block i32 multiply.
//!
//! Every block's integer sum is the same exact i32 as in the AVX2 kernels and is scaled by the
//! same f32 formula, so this table computes bitwise what the AVX2 table computes: Q4_0/Q8_0
//! equal [`super::generic`], Q4_K/Q6_K equal the exact-sum twins in [`super::tiles`]. Everything
//! else is the AVX2 table's.
//!
//! Every `unsafe fn` here requires AVX2, FMA, F16C and AVX-VNNI; the [`Kernels`] table holding
//! the safe wrappers is only handed out by [`detect`] after run-time detection.

// Tile bodies index fixed-size register arrays by row/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::avx2::{self, f16_at, f16x4, hsum1, hsum4, run_tile, store, tile_kernel, Inner};
use super::{Kernels, TILE};
use crate::quant::blocks::{Q4_0_BYTES, Q4_0_QS, Q8_0_BYTES, Q8_0_QS};
use crate::quant::GgmlType;

/// The AVX-VNNI table, if this CPU has AVX2, FMA, F16C and AVX-VNNI.
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = avx2::detect().is_some() && is_x86_feature_detected!("avxvnni");
    ok.then_some(&AVXVNNI)
}

static AVXVNNI: Kernels = Kernels {
    name: "avxvnni",
    // Every other row, Q4_K/Q6_K included (VNNI measured no faster there), is AVX2's.
    weights: avx2::AVX2_TABLE
        .weights
        .quant(GgmlType::Q4_0, q4_0_q8_0_dot, q4_0_q8_0_tile)
        .quant(GgmlType::Q8_0, q8_0_q8_0_dot, q8_0_q8_0_tile),
    ..avx2::AVX2_TABLE
};

tile_kernel!(
    q4_0_q8_0_tile,
    q4_0_q8_0_dot,
    pick_q4_0,
    q4_0_body,
    (32, Q4_0_BYTES, Q8_0_BYTES)
);
tile_kernel!(
    q8_0_q8_0_tile,
    q8_0_q8_0_dot,
    pick_q8_0,
    q8_0_body,
    (32, Q8_0_BYTES, Q8_0_BYTES)
);

/// `−k·Σa` over each i32 lane's four activations (`k` the byte in every lane of `k8`, taken as
/// unsigned): the accumulator start that removes an unsigned weight offset `k`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
unsafe fn neg_offset(k8: __m256i, a: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    _mm256_sub_epi32(zero, _mm256_dpbusd_avx_epi32(zero, k8, a))
}

/// Q4_0 · Q8_0 tile body. Per block: `acc = fma(Σ (q−8)·a, d_w·d_a, acc)`, as in the generic dot;
/// the sum is `vpdpbusd(−8·Σa, q, a)` with the levels q unsigned 0..15.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) unsafe fn q4_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let mlo = _mm_set1_epi8(0x0F);
    let k8 = _mm256_set1_epi8(8);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            // Byte i holds value i (low nibble) and value i + 16 (high nibble).
            let q = _mm_loadu_si128(wp[r].add(b * Q4_0_BYTES + Q4_0_QS).cast());
            let lo = _mm_and_si128(q, mlo);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mlo);
            wv[r] = _mm256_set_m128i(hi, lo);
        }
        let dw = f16x4(wp, b * Q4_0_BYTES);
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let off = neg_offset(k8, av);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = _mm256_dpbusd_avx_epi32(off, wv[r], av);
            }
            if R == 1 {
                acc1[c] = (hsum1(p[0]) as f32).mul_add(_mm_cvtss_f32(dw) * da, acc1[c]);
            } else {
                let s = _mm_cvtepi32_ps(hsum4(&p));
                acc4[c] = _mm_fmadd_ps(s, _mm_mul_ps(dw, _mm_set1_ps(da)), acc4[c]);
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q8_0 · Q8_0 tile body. Per block: `acc = fma(Σ q_w·q_a, d_w·d_a, acc)`, as in the generic dot;
/// the sum is `vpdpbusd(−128·Σa, q_w + 128, a)`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) unsafe fn q8_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let k128 = _mm256_set1_epi8(i8::MIN);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut wu = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            // Flipping the top bit maps i8 w to the u8 w + 128.
            wu[r] = _mm256_xor_si256(
                _mm256_loadu_si256(wp[r].add(b * Q8_0_BYTES + Q8_0_QS).cast()),
                k128,
            );
        }
        let dw = f16x4(wp, b * Q8_0_BYTES);
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let off = neg_offset(k128, av);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = _mm256_dpbusd_avx_epi32(off, wu[r], av);
            }
            if R == 1 {
                acc1[c] = (hsum1(p[0]) as f32).mul_add(_mm_cvtss_f32(dw) * da, acc1[c]);
            } else {
                let s = _mm_cvtepi32_ps(hsum4(&p));
                acc4[c] = _mm_fmadd_ps(s, _mm_mul_ps(dw, _mm_set1_ps(da)), acc4[c]);
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}
