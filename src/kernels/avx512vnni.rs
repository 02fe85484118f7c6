//! x86-64 kernels for AVX-512 VNNI (with AVX-512 F/BW, and AVX-VNNI for the rest of the table):
//! Sapphire Rapids and later, Zen 5.
//!
//! Q4_0 · Q8_0 and Q8_0 · Q8_0 take two 32-value blocks per 512-bit `vpdpbusd`, with the same
//! unsigned-offset formulation as [`super::avxvnni`] (levels `q` or `w + 128` as u8, the
//! accumulator started at `−k·Σa`), so each block's integer sum is the same exact i32. The four
//! weight rows' sums are reduced with unpacks (one µop each) rather than `hadd`, two blocks at a
//! time, and each block is then scaled and added with the generic dot's f32 formula, block after
//! block: the results equal [`super::generic`] bitwise, like the AVX2 and AVX-VNNI tables. An
//! odd last block goes through the AVX-VNNI body. Everything else is the AVX-VNNI table's.
//!
//! Every `unsafe fn` here requires the features in its `target_feature` list; the [`Kernels`]
//! table holding the safe wrappers is only handed out by [`detect`] after run-time detection.

// Tile bodies index fixed-size register arrays by row/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::avx2::{self, f16_at, f16x4, run_tile, store, tile_kernel, Inner};
use super::{avxvnni, Kernels, TILE};

/// The AVX-512 VNNI table, if this CPU has AVX-512 F/BW/VNNI and everything AVX-VNNI needs.
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = avxvnni::detect().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(&AVX512VNNI)
}

static AVX512VNNI: Kernels = Kernels {
    name: "avx512vnni",
    q4_0_q8_0: q4_0_q8_0_dot,
    q8_0_q8_0: q8_0_q8_0_dot,
    q4_0_q8_0_tile,
    q8_0_q8_0_tile,
    // Everything else is AVX2's, as in the AVX-VNNI table.
    ..avx2::AVX2_TABLE
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

/// `−k·Σa` over each i32 lane's four activations (`k` taken as unsigned).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn neg_offset(k8: __m512i, a: __m512i) -> __m512i {
    let zero = _mm512_setzero_si512();
    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k8, a))
}

/// Reduces two blocks' lane sums of four weight rows. Input: `p[r]` with block A in 128-bit
/// lanes 0 and 2 and block B in lanes 1 and 3. Output: `[A r0..r3 | B r0..r3]`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn reduce4(p: &[__m512i; TILE]) -> __m256i {
    // Per 128-bit lane: [p0, p1, p0, p1] partial pairs, then [p0, p1, p2, p3] lane sums.
    let x = _mm512_add_epi32(
        _mm512_unpacklo_epi32(p[0], p[1]),
        _mm512_unpackhi_epi32(p[0], p[1]),
    );
    let y = _mm512_add_epi32(
        _mm512_unpacklo_epi32(p[2], p[3]),
        _mm512_unpackhi_epi32(p[2], p[3]),
    );
    let z = _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
    fold(z)
}

/// Adds 128-bit lanes 0 + 2 and 1 + 3.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn fold(z: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z))
}

/// The two block sums of one row's lanes (block A in 128-bit lanes 0 and 2, B in 1 and 3).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn reduce1(p: __m512i) -> (i32, i32) {
    let h = fold(p);
    let h = _mm256_hadd_epi32(h, h);
    let h = _mm256_hadd_epi32(h, h);
    (_mm256_extract_epi32::<0>(h), _mm256_extract_epi32::<4>(h))
}

/// Reorders the 128-bit lanes `[0, 1, 2, 3]` to `[0, 2, 1, 3]`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn swap_mid(v: __m512i) -> __m512i {
    _mm512_shuffle_i64x2::<0b11_01_10_00>(v, v)
}

/// Two consecutive 32-byte activation blocks' quants (block b at `y + 2`, b + 1 at `y + 36`).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn load_pair(y: *const u8) -> __m512i {
    let a0 = _mm256_loadu_si256(y.add(2).cast());
    let a1 = _mm256_loadu_si256(y.add(36).cast());
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a0), a1)
}

/// The f16 scales of blocks b (lanes 0..4) and b + 1 (lanes 4..8) of the four weight rows.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn scales_pair(wp: &[*const u8; TILE], off: usize, stride: usize) -> __m256 {
    _mm256_set_m128(f16x4(wp, off + stride), f16x4(wp, off))
}

/// Row pointers advanced by `bytes`.
#[inline]
fn advance(p: &[*const u8; TILE], bytes: usize) -> [*const u8; TILE] {
    p.map(|q| q.wrapping_add(bytes))
}

/// Adds the odd last block (computed by the AVX-VNNI body, which starts from zero: `0 + x` is
/// `x`, so `acc + (0 + x)` is bitwise `acc + x`).
#[inline]
fn add_tail<const R: usize, const C: usize>(
    acc4: &mut [__m128; TILE],
    acc1: &mut [f32; TILE],
    tail: &[[f32; TILE]; TILE],
) {
    for c in 0..C {
        if R == 1 {
            acc1[c] += tail[c][0];
        } else {
            // SAFETY: SSE is baseline on x86-64; `tail[c]` holds four f32.
            unsafe {
                acc4[c] = _mm_add_ps(acc4[c], _mm_loadu_ps(tail[c].as_ptr()));
            }
        }
    }
}

/// Q4_0 · Q8_0 tile body, two blocks per step: per block `acc += ((Σ (q−8)·a) · d_w) · d_a`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn q4_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let k8 = _mm512_set1_epi8(8);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    let mut b = 0;
    while b + 2 <= nb {
        // Weights as [lo_b, lo_b+1, hi_b, hi_b+1] (16 levels each, unsigned 0..15).
        let mut wv = [_mm512_setzero_si512(); TILE];
        for r in 0..R {
            let x = wp[r].add(b * 18 + 2);
            let q = _mm256_set_m128i(_mm_loadu_si128(x.add(18).cast()), _mm_loadu_si128(x.cast()));
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            wv[r] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        }
        let dw = scales_pair(wp, b * 18, 18);
        for c in 0..C {
            let y = ap[c].add(b * 34);
            // Activations [a_b 0..16, a_b+1 0..16, a_b 16..32, a_b+1 16..32] to match.
            let av = swap_mid(load_pair(y));
            let (da0, da1) = (f16_at(y), f16_at(y.add(34)));
            let off = neg_offset(k8, av);
            let mut p = [_mm512_setzero_si512(); TILE];
            for r in 0..R {
                p[r] = _mm512_dpbusd_epi32(off, wv[r], av);
            }
            if R == 1 {
                let (s0, s1) = reduce1(p[0]);
                let (d0, d1) = (
                    _mm256_cvtss_f32(dw),
                    _mm_cvtss_f32(_mm256_extractf128_ps::<1>(dw)),
                );
                acc1[c] += s0 as f32 * d0 * da0;
                acc1[c] += s1 as f32 * d1 * da1;
            } else {
                let s = _mm256_cvtepi32_ps(reduce4(&p));
                let da = _mm256_set_m128(_mm_set1_ps(da1), _mm_set1_ps(da0));
                let t = _mm256_mul_ps(_mm256_mul_ps(s, dw), da);
                acc4[c] = _mm_add_ps(acc4[c], _mm256_castps256_ps128(t));
                acc4[c] = _mm_add_ps(acc4[c], _mm256_extractf128_ps::<1>(t));
            }
        }
        b += 2;
    }
    if b < nb {
        let mut tail = [[0f32; TILE]; TILE];
        avxvnni::q4_0_body::<R, C>(1, &advance(wp, b * 18), &advance(ap, b * 34), &mut tail);
        add_tail::<R, C>(&mut acc4, &mut acc1, &tail);
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q8_0 · Q8_0 tile body, two blocks per step: per block `acc += (Σ q_w·q_a) · (d_w·d_a)`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn q8_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let k128 = _mm512_set1_epi8(i8::MIN);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    let mut b = 0;
    while b + 2 <= nb {
        // Weights flipped to w + 128; blocks b and b + 1 fill 128-bit lanes (0, 1) and (2, 3),
        // reordered (like the activations) so that the reductions see them in (0, 2), (1, 3).
        let mut wu = [_mm512_setzero_si512(); TILE];
        for r in 0..R {
            wu[r] = swap_mid(_mm512_xor_si512(load_pair(wp[r].add(b * 34)), k128));
        }
        let dw = scales_pair(wp, b * 34, 34);
        for c in 0..C {
            let y = ap[c].add(b * 34);
            let av = swap_mid(load_pair(y));
            let (da0, da1) = (f16_at(y), f16_at(y.add(34)));
            let off = neg_offset(k128, av);
            let mut p = [_mm512_setzero_si512(); TILE];
            for r in 0..R {
                p[r] = _mm512_dpbusd_epi32(off, wu[r], av);
            }
            if R == 1 {
                let (s0, s1) = reduce1(p[0]);
                let (d0, d1) = (
                    _mm256_cvtss_f32(dw),
                    _mm_cvtss_f32(_mm256_extractf128_ps::<1>(dw)),
                );
                acc1[c] += s0 as f32 * (d0 * da0);
                acc1[c] += s1 as f32 * (d1 * da1);
            } else {
                let s = _mm256_cvtepi32_ps(reduce4(&p));
                let da = _mm256_set_m128(_mm_set1_ps(da1), _mm_set1_ps(da0));
                let t = _mm256_mul_ps(s, _mm256_mul_ps(dw, da));
                acc4[c] = _mm_add_ps(acc4[c], _mm256_castps256_ps128(t));
                acc4[c] = _mm_add_ps(acc4[c], _mm256_extractf128_ps::<1>(t));
            }
        }
        b += 2;
    }
    if b < nb {
        let mut tail = [[0f32; TILE]; TILE];
        avxvnni::q8_0_body::<R, C>(1, &advance(wp, b * 34), &advance(ap, b * 34), &mut tail);
        add_tail::<R, C>(&mut acc4, &mut acc1, &tail);
    }
    store::<R, C>(&acc4, &acc1, res);
}
