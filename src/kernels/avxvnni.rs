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
//! - Q4_K and Q6_K keep `maddubs` (unsigned levels × signed activations, pair sums at most
//!   2·63·128 in magnitude, so no i16 saturation) and replace `madd` + `add` by `vpdpwssd`,
//!   which multiplies those pair sums by the i16 sub-block scales and accumulates in one step.
//!   (A `vpdpbusd` there would leave 4-value sums that still need a per-sub-block i32 multiply.)
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
use super::{generic, tiles, Kernels, QuantDot, QuantTile, TILE};
use crate::quant::read_f32;

/// The AVX-VNNI table, if this CPU has AVX2, FMA, F16C and AVX-VNNI.
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = avx2::detect().is_some() && is_x86_feature_detected!("avxvnni");
    ok.then_some(&AVXVNNI)
}

static AVXVNNI: Kernels = Kernels {
    name: "avxvnni",
    q4_0_q8_0: q4_0_q8_0_dot,
    q4_1_q8_1: generic::vec_dot_q4_1_q8_1,
    q5_0_q8_0: generic::vec_dot_q5_0_q8_0,
    q5_1_q8_1: generic::vec_dot_q5_1_q8_1,
    q8_0_q8_0: q8_0_q8_0_dot,
    q4_k_q8_k: q4_k_q8_k_dot,
    q5_k_q8_k: generic::vec_dot_q5_k_q8_k,
    q6_k_q8_k: q6_k_q8_k_dot,
    f16_f32: avx2::f16_f32_dot,
    bf16_f32: avx2::bf16_f32_dot,
    f32_f32: avx2::f32_f32_dot,
    q4_0_q8_0_tile,
    q4_1_q8_1_tile: tiles::q4_1_q8_1,
    q5_0_q8_0_tile: tiles::q5_0_q8_0,
    q5_1_q8_1_tile: tiles::q5_1_q8_1,
    q8_0_q8_0_tile,
    q4_k_q8_k_tile,
    q5_k_q8_k_tile: tiles::q5_k_q8_k,
    q6_k_q8_k_tile,
};

tile_kernel!(
    q4_0_q8_0_tile,
    q4_0_q8_0_dot,
    pick_q4_0,
    q4_0_body,
    (32, 18, 34)
);
tile_kernel!(
    q8_0_q8_0_tile,
    q8_0_q8_0_dot,
    pick_q8_0,
    q8_0_body,
    (32, 34, 34)
);
tile_kernel!(
    q4_k_q8_k_tile,
    q4_k_q8_k_dot,
    pick_q4_k,
    q4_k_body,
    (256, 144, 292)
);
tile_kernel!(
    q6_k_q8_k_tile,
    q6_k_q8_k_dot,
    pick_q6_k,
    q6_k_body,
    (256, 210, 292)
);

/// The K-quant tiles and dots, for the AVX-512 table (which requires AVX-VNNI too).
pub(super) const K_QUANTS: [(QuantTile, QuantDot); 2] = [
    (q4_k_q8_k_tile, q4_k_q8_k_dot),
    (q6_k_q8_k_tile, q6_k_q8_k_dot),
];

/// `−k·Σa` over each i32 lane's four activations (`k` the byte in every lane of `k8`, taken as
/// unsigned): the accumulator start that removes an unsigned weight offset `k`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
unsafe fn neg_offset(k8: __m256i, a: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    _mm256_sub_epi32(zero, _mm256_dpbusd_avx_epi32(zero, k8, a))
}

/// Q4_0 · Q8_0 tile body. Per block: `acc += ((Σ (q−8)·a) · d_w) · d_a`, as in the generic dot;
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
            let q = _mm_loadu_si128(wp[r].add(b * 18 + 2).cast());
            let lo = _mm_and_si128(q, mlo);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mlo);
            wv[r] = _mm256_set_m128i(hi, lo);
        }
        let dw = f16x4(wp, b * 18);
        for c in 0..C {
            let y = ap[c].add(b * 34);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let off = neg_offset(k8, av);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = _mm256_dpbusd_avx_epi32(off, wv[r], av);
            }
            if R == 1 {
                acc1[c] += hsum1(p[0]) as f32 * _mm_cvtss_f32(dw) * da;
            } else {
                let s = _mm_cvtepi32_ps(hsum4(&p));
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(_mm_mul_ps(s, dw), _mm_set1_ps(da)));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q8_0 · Q8_0 tile body. Per block: `acc += (Σ q_w·q_a) · (d_w·d_a)`, as in the generic dot;
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
            wu[r] = _mm256_xor_si256(_mm256_loadu_si256(wp[r].add(b * 34 + 2).cast()), k128);
        }
        let dw = f16x4(wp, b * 34);
        for c in 0..C {
            let y = ap[c].add(b * 34);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let off = neg_offset(k128, av);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = _mm256_dpbusd_avx_epi32(off, wu[r], av);
            }
            if R == 1 {
                acc1[c] += hsum1(p[0]) as f32 * (_mm_cvtss_f32(dw) * da);
            } else {
                let s = _mm_cvtepi32_ps(hsum4(&p));
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(s, _mm_mul_ps(dw, _mm_set1_ps(da))));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q4_K · Q8_K tile body; the formula of [`tiles::q4_k_q8_k_exact`].
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn q4_k_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut sc = [[0i16; 8]; TILE];
        let mut mins = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            let packed = std::slice::from_raw_parts(wp[r].add(b * 144 + 4), 12);
            let mut mn = [0i16; 8];
            for j in 0..8 {
                let (s, m) = crate::quant::unpack_scale_min_k4(j, packed);
                sc[r][j] = s as i16;
                mn[j] = m as i16;
            }
            // Lane g (a group of 16 activations) gets the min of sub-block g / 2.
            let m = _mm_loadu_si128(mn.as_ptr().cast());
            mins[r] = _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m));
        }
        let mut isum = [[_mm256_setzero_si256(); TILE]; TILE];
        for k in 0..4 {
            // 32 bytes: sub-block 2k in the low nibbles, 2k + 1 in the high nibbles.
            let mut lo = [_mm256_setzero_si256(); TILE];
            let mut hi = [_mm256_setzero_si256(); TILE];
            let mut sc_lo = [_mm256_setzero_si256(); TILE];
            let mut sc_hi = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                let q = _mm256_loadu_si256(wp[r].add(b * 144 + 16 + 32 * k).cast());
                lo[r] = _mm256_and_si256(q, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                sc_lo[r] = _mm256_set1_epi16(sc[r][2 * k]);
                sc_hi[r] = _mm256_set1_epi16(sc[r][2 * k + 1]);
            }
            for c in 0..C {
                let y = ap[c].add(b * 292 + 4 + 64 * k);
                let a_lo = _mm256_loadu_si256(y.cast());
                let a_hi = _mm256_loadu_si256(y.add(32).cast());
                for r in 0..R {
                    // Pair sums of 15·(±128) fit i16; vpdpwssd scales and accumulates them.
                    let p_lo = _mm256_maddubs_epi16(lo[r], a_lo);
                    let p_hi = _mm256_maddubs_epi16(hi[r], a_hi);
                    isum[c][r] = _mm256_dpwssd_avx_epi32(isum[c][r], p_lo, sc_lo[r]);
                    isum[c][r] = _mm256_dpwssd_avx_epi32(isum[c][r], p_hi, sc_hi[r]);
                }
            }
        }
        for c in 0..C {
            let y = ap[c].add(b * 292);
            let bsums = _mm256_loadu_si256(y.add(260).cast());
            let yd = read_f32(std::slice::from_raw_parts(y, 4), 0);
            let mut msum = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                msum[r] = _mm256_madd_epi16(bsums, mins[r]);
            }
            if R == 1 {
                let x = wp[0].add(b * 144);
                acc1[c] += (f16_at(x) * yd) * hsum1(isum[c][0]) as f32;
                acc1[c] -= (f16_at(x.add(2)) * yd) * hsum1(msum[0]) as f32;
            } else {
                let yd = _mm_set1_ps(yd);
                let is = _mm_cvtepi32_ps(hsum4(&isum[c]));
                let ms = _mm_cvtepi32_ps(hsum4(&msum));
                let d = _mm_mul_ps(f16x4(wp, b * 144), yd);
                let dmin = _mm_mul_ps(f16x4(wp, b * 144 + 2), yd);
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(d, is));
                acc4[c] = _mm_sub_ps(acc4[c], _mm_mul_ps(dmin, ms));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q6_K · Q8_K tile body; the formula of [`tiles::q6_k_q8_k_exact`].
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn q6_k_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let m30 = _mm256_set1_epi8(0x30);
    // Within each 128-bit half, repeat i16 lane 0 (low half) or lane 1 (high half).
    let pair = _mm256_setr_epi8(
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3,
    );
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut sc16 = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp[r].add(b * 210 + 192).cast()));
        }
        let mut isum = [[_mm256_setzero_si256(); TILE]; TILE];
        for h in 0..2 {
            let mut q = [[_mm256_setzero_si256(); 4]; TILE];
            for r in 0..R {
                let x = wp[r].add(b * 210);
                let ql0 = _mm256_loadu_si256(x.add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(x.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(x.add(128 + 32 * h).cast());
                // Quarter i takes its low 4 bits from ql (low/high nibbles of ql0/ql1) and its
                // top 2 bits from bits 2i..2i+2 of qh; levels are unsigned 0..64 here.
                q[r][0] = _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3)),
                );
                q[r][1] = _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                );
                q[r][2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m30),
                );
                q[r][3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                );
            }
            for quarter in 0..4 {
                // Values 128h + 32·quarter.. are sub-blocks 2t and 2t + 1 with t = 4h + quarter;
                // i32 lane t of sc16 holds exactly that pair of i16 scales.
                let t = _mm256_set1_epi32((4 * h + quarter) as i32);
                let mut scv = [_mm256_setzero_si256(); TILE];
                for r in 0..R {
                    scv[r] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16[r], t), pair);
                }
                for c in 0..C {
                    let y = ap[c].add(b * 292 + 4 + 128 * h + 32 * quarter);
                    let av = _mm256_loadu_si256(y.cast());
                    for r in 0..R {
                        // Pair sums of 63·(±128) fit i16; vpdpwssd scales and accumulates them.
                        let p = _mm256_maddubs_epi16(q[r][quarter], av);
                        isum[c][r] = _mm256_dpwssd_avx_epi32(isum[c][r], p, scv[r]);
                    }
                }
            }
        }
        for c in 0..C {
            let y = ap[c].add(b * 292);
            let bsums = _mm256_loadu_si256(y.add(260).cast());
            let yd = read_f32(std::slice::from_raw_parts(y, 4), 0);
            // The −32 offset of the levels: Σ_j sc_j·(Σ_i q_i a_i − 32·bsum_j).
            let mut tot = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                let ms = _mm256_madd_epi16(bsums, sc16[r]);
                tot[r] = _mm256_sub_epi32(isum[c][r], _mm256_slli_epi32::<5>(ms));
            }
            if R == 1 {
                acc1[c] += (f16_at(wp[0].add(b * 210 + 208)) * yd) * hsum1(tot[0]) as f32;
            } else {
                let d = _mm_mul_ps(f16x4(wp, b * 210 + 208), _mm_set1_ps(yd));
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(d, _mm_cvtepi32_ps(hsum4(&tot))));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}
