//! x86-64 kernels for AVX2 + FMA + F16C (Haswell and later, Zen 1 and later).
//!
//! Integer dots follow the usual AVX2 recipe: weights unpacked to signed bytes, the sign of each
//! weight moved onto the activation (`maddubs` multiplies unsigned × signed), pairwise i16 sums
//! widened to i32 by `madd`. Unlike ggml's AVX2 code, every block's integer sum is reduced
//! exactly (4 weight rows at a time with `hadd`) before it is scaled, and the f32 scaling is the
//! scalar formula, lane for lane:
//! - Q4_0 and Q8_0 reproduce [`super::generic`] bitwise;
//! - Q4_K and Q6_K reproduce [`super::tiles::q4_k_q8_k_exact`] / `q6_k_q8_k_exact` bitwise
//!   (one exact i32 per super-block), which differ from the generic eight-lane sums only by f32
//!   rounding.
//!
//! So every output is the same number whatever tile shape computed it. Q4_1, Q5_0, Q5_1 and
//! Q5_K use the generic kernels (they are rare in 7B files: Q5_0/Q5_1 only appear as fallbacks
//! for rows that do not divide into 256-blocks).
//!
//! Float dots (f32/f16/bf16 weights · f32) use four 8-lane FMA accumulators in a fixed order;
//! matrix products with float weights run the tiles of [`super::float_x86`] instead.
//!
//! Every `unsafe fn` here requires AVX2, FMA and F16C; the [`Kernels`] table holding the safe
//! wrappers is only handed out by [`detect`] after run-time detection, so the wrappers are
//! unreachable on other CPUs.

// Tile bodies index fixed-size register arrays by row/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::rows::{Gemm, RowOps};
use super::{Kernels, TILE};
use crate::quant::blocks::{
    Q4_0_BYTES, Q4_0_QS, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K_BYTES, Q6_K_D,
    Q6_K_SCALES, Q8_0_BYTES, Q8_0_QS, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{read_bf16, read_f16, read_f32, GgmlType};
use half::f16;

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    ok.then_some(&AVX2)
}

/// The AVX2 attention row primitives, part of [`AVX2_TABLE`]; also the base of the AVX-512
/// ones, which replace some entries. Only in tables handed out after detection has seen AVX2,
/// FMA and F16C.
pub(super) const AVX2_ROWS: RowOps = RowOps {
    dot_f32: row_dot_f32,
    dot_f16: row_dot_f16,
    dots_f16: row_dots_f16,
    axpy_f32: row_axpy_f32,
    axpy_f16: row_axpy_f16,
    gemm_f32: row_gemm_f32,
    quantize_q8_0: crate::quant::quantize_row_q8_0,
    quantize_q8_k: crate::quant::quantize_row_q8_k,
    wsum_f16: row_wsum_f16,
};

static AVX2: Kernels = AVX2_TABLE;

/// [`AVX2`] as a constant, for the VNNI tables, which replace only some of its entries. Like
/// the static, it must only be handed out after [`detect`] has seen the features.
pub(super) const AVX2_TABLE: Kernels = Kernels {
    name: "avx2",
    // Q4_1, Q5_0, Q5_1 and Q5_K keep the generic rows.
    weights: super::GENERIC_WEIGHTS
        .float(GgmlType::F32, f32_f32_dot, super::float_x86::f32_avx2)
        .float(GgmlType::F16, f16_f32_dot, super::float_x86::f16_avx2)
        .float(GgmlType::BF16, bf16_f32_dot, super::float_x86::bf16_avx2)
        .quant(GgmlType::Q4_0, q4_0_q8_0_dot, q4_0_q8_0_tile)
        .quant(GgmlType::Q8_0, q8_0_q8_0_dot, q8_0_q8_0_tile)
        .quant(GgmlType::Q4_K, q4_k_q8_k_dot, q4_k_q8_k_tile)
        .quant(GgmlType::Q6_K, q6_k_q8_k_dot, q6_k_q8_k_tile),
    packings: &[],
    rows: AVX2_ROWS,
    exp: super::exp::AVX2,
};

/// A monomorphized tile body: `nb` blocks, 4 weight-row and 4 activation-row pointers (unused
/// ones alias row 0), results as `res[c][r]`.
pub(super) type Inner =
    unsafe fn(usize, &[*const u8; TILE], &[*const u8; TILE], &mut [[f32; TILE]; TILE]);

/// Block geometry of a (weight, activation) pair: values per block, bytes per weight block,
/// bytes per activation block.
pub(super) type Geometry = (usize, usize, usize);

/// Checks a tile call's slices, gathers row pointers and runs the body picked for its shape.
/// Blocks missing from a too-short slice are skipped (like the generic kernels), rows beyond
/// [`TILE`] are ignored, and outputs that do not fit `out` are dropped: nothing panics and
/// nothing is read out of bounds. Shared with the sibling x86 tables: `pick` must come from a
/// table whose `detect` verified the target features of the bodies it returns.
pub(super) fn run_tile(
    n: usize,
    w: &[&[u8]],
    a: &[&[u8]],
    out: &mut [f32],
    (bs, wsize, asize): Geometry,
    pick: fn(bool, usize) -> Inner,
) {
    let (nw, na) = (w.len().min(TILE), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut nb = n / bs;
    for row in &w[..nw] {
        nb = nb.min(row.len() / wsize);
    }
    for row in &a[..na] {
        nb = nb.min(row.len() / asize);
    }
    let mut wp = [w[0].as_ptr(); TILE];
    let mut ap = [a[0].as_ptr(); TILE];
    for (p, row) in wp.iter_mut().zip(&w[..nw]) {
        *p = row.as_ptr();
    }
    for (p, row) in ap.iter_mut().zip(&a[..na]) {
        *p = row.as_ptr();
    }
    let mut res = [[0f32; TILE]; TILE];
    let body = pick(nw == 1, na);
    // SAFETY: `body` needs the target features of the table it belongs to (AVX2/FMA/F16C here,
    // plus AVX-VNNI or AVX-512 for the tables in the sibling modules), which that table's
    // `detect` verified before the table could be obtained; every pointer starts a slice
    // holding at least `nb` blocks of its type, so the body's reads stay in bounds.
    unsafe { body(nb, &wp, &ap, &mut res) };
    for r in 0..nw {
        for c in 0..na {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = res[c][r];
            }
        }
    }
}

/// Defines the safe tile wrapper, the shape picker and the safe single dot for one kernel body
/// (`run_tile` and `Inner` must be in scope where it is used).
macro_rules! tile_kernel {
    ($tile:ident, $dot:ident, $pick:ident, $body:ident, $geom:expr) => {
        fn $pick(one_row: bool, na: usize) -> Inner {
            match (one_row, na) {
                (true, 1) => $body::<1, 1>,
                (true, 2) => $body::<1, 2>,
                (true, 3) => $body::<1, 3>,
                (true, _) => $body::<1, 4>,
                (false, 1) => $body::<4, 1>,
                (false, 2) => $body::<4, 2>,
                (false, 3) => $body::<4, 3>,
                (false, _) => $body::<4, 4>,
            }
        }
        pub(super) fn $tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
            run_tile(n, w, a, out, $geom, $pick)
        }
        pub(super) fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let mut out = [0f32];
            $tile(n, &[w], &[a], &mut out);
            out[0]
        }
    };
}
pub(super) use tile_kernel;

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
tile_kernel!(
    q4_k_q8_k_tile,
    q4_k_q8_k_dot,
    pick_q4_k,
    q4_k_body,
    (256, Q4_K_BYTES, Q8_K_BYTES)
);
tile_kernel!(
    q6_k_q8_k_tile,
    q6_k_q8_k_dot,
    pick_q6_k,
    q6_k_body,
    (256, Q6_K_BYTES, Q8_K_BYTES)
);

/// How far ahead a one-column (decode) tile prefetches its weight rows, in bytes: decode
/// streams every weight once from DRAM, a few rows in lock-step, and the hardware prefetchers
/// alone leave much of the read bandwidth unused (see `avx512vnni`).
pub(super) const PREFETCH_AHEAD: usize = 512;

/// Prefetch hints for `len` bytes at `off` of each of the first `R` rows (one per cache line).
#[inline(always)]
unsafe fn prefetch_rows<const R: usize>(wp: &[*const u8; TILE], off: usize, len: usize) {
    for r in 0..R {
        let mut o = 0;
        while o < len {
            // A hint only: prefetching past the row's end cannot fault.
            _mm_prefetch::<_MM_HINT_T0>(wp[r].wrapping_add(off + o).cast());
            o += 64;
        }
    }
}

/// Unaligned little-endian u16 at `p`.
#[inline]
pub(super) unsafe fn rd16(p: *const u8) -> u16 {
    std::ptr::read_unaligned(p.cast::<u16>())
}

/// The f16 at `p` as f32 (exact).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(rd16(p) as i32)))
}

/// The f16s at `off` of the four weight rows, as f32 lanes 0..4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn f16x4(wp: &[*const u8; TILE], off: usize) -> __m128 {
    let (h0, h1) = (rd16(wp[0].add(off)) as i16, rd16(wp[1].add(off)) as i16);
    let (h2, h3) = (rd16(wp[2].add(off)) as i16, rd16(wp[3].add(off)) as i16);
    _mm_cvtph_ps(_mm_setr_epi16(h0, h1, h2, h3, 0, 0, 0, 0))
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn hsum1(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// The lane sums of four i32×8 vectors, as lanes 0..4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn hsum4(p: &[__m256i; TILE]) -> __m128i {
    // hadd works within 128-bit halves: after two rounds each half holds, per row, the sum of
    // that row's four lanes in the half; adding the halves finishes the reduction.
    let a = _mm256_hadd_epi32(p[0], p[1]);
    let b = _mm256_hadd_epi32(p[2], p[3]);
    let c = _mm256_hadd_epi32(a, b);
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// Σ w·a over 32 signed bytes each, as eight i32 partial sums (`|w|` passed in precomputed).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_i8(w: __m256i, w_abs: __m256i, a: __m256i) -> __m256i {
    // maddubs takes unsigned × signed: multiply |w| by a with w's sign (pair sums ≤ 2·128·127
    // fit i16: activations come from the Q8 quantizers, which never produce −128).
    let p16 = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// Writes tile accumulators to `res[c][r]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn store<const R: usize, const C: usize>(
    acc4: &[__m128; TILE],
    acc1: &[f32; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    for c in 0..C {
        if R == 1 {
            res[c][0] = acc1[c];
        } else {
            _mm_storeu_ps(res[c].as_mut_ptr(), acc4[c]);
        }
    }
}

/// Q4_0 · Q8_0 tile body. Per block: `acc = fma(Σ (q−8)·a, d_w·d_a, acc)`, as in the generic dot.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let mlo = _mm_set1_epi8(0x0F);
    let m8 = _mm256_set1_epi8(8);
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); TILE];
        let mut wa = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            // Byte i holds value i (low nibble) and value i + 16 (high nibble).
            let q = _mm_loadu_si128(wp[r].add(b * Q4_0_BYTES + Q4_0_QS).cast());
            let lo = _mm_and_si128(q, mlo);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mlo);
            wv[r] = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), m8);
            wa[r] = _mm256_sign_epi8(wv[r], wv[r]);
        }
        let dw = f16x4(wp, b * Q4_0_BYTES);
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = dot_i8(wv[r], wa[r], av);
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

/// Q8_0 · Q8_0 tile body. Per block: `acc = fma(Σ q_w·q_a, d_w·d_a, acc)`, as in the generic dot.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_body<const R: usize, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE],
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    let mut acc4 = [_mm_setzero_ps(); TILE];
    let mut acc1 = [0f32; TILE];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); TILE];
        let mut wa = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            wv[r] = _mm256_loadu_si256(wp[r].add(b * Q8_0_BYTES + Q8_0_QS).cast());
            wa[r] = _mm256_sign_epi8(wv[r], wv[r]);
        }
        let dw = f16x4(wp, b * Q8_0_BYTES);
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let av = _mm256_loadu_si256(y.add(2).cast());
            let da = f16_at(y);
            let mut p = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                p[r] = dot_i8(wv[r], wa[r], av);
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

/// Q4_K · Q8_K tile body; the formula of [`super::tiles::q4_k_q8_k_exact`].
#[target_feature(enable = "avx2,fma,f16c")]
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
        if C == 1 {
            prefetch_rows::<R>(wp, b * Q4_K_BYTES + PREFETCH_AHEAD, Q4_K_BYTES);
        }
        let mut sc = [[0i16; 8]; TILE];
        let mut mins = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            let packed = std::slice::from_raw_parts(wp[r].add(b * Q4_K_BYTES + Q4_K_SCALES), 12);
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
                let q = _mm256_loadu_si256(wp[r].add(b * Q4_K_BYTES + Q4_K_QS + 32 * k).cast());
                lo[r] = _mm256_and_si256(q, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                sc_lo[r] = _mm256_set1_epi16(sc[r][2 * k]);
                sc_hi[r] = _mm256_set1_epi16(sc[r][2 * k + 1]);
            }
            for c in 0..C {
                let y = ap[c].add(b * Q8_K_BYTES + Q8_K_QS + 64 * k);
                let a_lo = _mm256_loadu_si256(y.cast());
                let a_hi = _mm256_loadu_si256(y.add(32).cast());
                for r in 0..R {
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], a_lo), sc_lo[r]);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], a_hi), sc_hi[r]);
                    isum[c][r] = _mm256_add_epi32(isum[c][r], _mm256_add_epi32(p_lo, p_hi));
                }
            }
        }
        for c in 0..C {
            let y = ap[c].add(b * Q8_K_BYTES);
            let bsums = _mm256_loadu_si256(y.add(Q8_K_BSUMS).cast());
            let yd = read_f32(std::slice::from_raw_parts(y, 4), 0);
            let mut msum = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                msum[r] = _mm256_madd_epi16(bsums, mins[r]);
            }
            if R == 1 {
                let x = wp[0].add(b * Q4_K_BYTES);
                acc1[c] += (f16_at(x) * yd) * hsum1(isum[c][0]) as f32;
                acc1[c] -= (f16_at(x.add(2)) * yd) * hsum1(msum[0]) as f32;
            } else {
                let yd = _mm_set1_ps(yd);
                let is = _mm_cvtepi32_ps(hsum4(&isum[c]));
                let ms = _mm_cvtepi32_ps(hsum4(&msum));
                let d = _mm_mul_ps(f16x4(wp, b * Q4_K_BYTES), yd);
                let dmin = _mm_mul_ps(f16x4(wp, b * Q4_K_BYTES + Q4_K_DMIN), yd);
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(d, is));
                acc4[c] = _mm_sub_ps(acc4[c], _mm_mul_ps(dmin, ms));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Q6_K · Q8_K tile body; the formula of [`super::tiles::q6_k_q8_k_exact`].
#[target_feature(enable = "avx2,fma,f16c")]
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
        if C == 1 {
            prefetch_rows::<R>(wp, b * Q6_K_BYTES + PREFETCH_AHEAD, Q6_K_BYTES);
        }
        let mut sc16 = [_mm256_setzero_si256(); TILE];
        for r in 0..R {
            sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                wp[r].add(b * Q6_K_BYTES + Q6_K_SCALES).cast(),
            ));
        }
        let mut isum = [[_mm256_setzero_si256(); TILE]; TILE];
        for h in 0..2 {
            let mut q = [[_mm256_setzero_si256(); 4]; TILE];
            for r in 0..R {
                let x = wp[r].add(b * Q6_K_BYTES);
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
                    let y = ap[c].add(b * Q8_K_BYTES + Q8_K_QS + 128 * h + 32 * quarter);
                    let av = _mm256_loadu_si256(y.cast());
                    for r in 0..R {
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[r][quarter], av), scv[r]);
                        isum[c][r] = _mm256_add_epi32(isum[c][r], p);
                    }
                }
            }
        }
        for c in 0..C {
            let y = ap[c].add(b * Q8_K_BYTES);
            let bsums = _mm256_loadu_si256(y.add(Q8_K_BSUMS).cast());
            let yd = read_f32(std::slice::from_raw_parts(y, 4), 0);
            // The −32 offset of the levels: Σ_j sc_j·(Σ_i q_i a_i − 32·bsum_j).
            let mut tot = [_mm256_setzero_si256(); TILE];
            for r in 0..R {
                let ms = _mm256_madd_epi16(bsums, sc16[r]);
                tot[r] = _mm256_sub_epi32(isum[c][r], _mm256_slli_epi32::<5>(ms));
            }
            if R == 1 {
                acc1[c] += (f16_at(wp[0].add(b * Q6_K_BYTES + Q6_K_D)) * yd) * hsum1(tot[0]) as f32;
            } else {
                let d = _mm_mul_ps(f16x4(wp, b * Q6_K_BYTES + Q6_K_D), _mm_set1_ps(yd));
                acc4[c] = _mm_add_ps(acc4[c], _mm_mul_ps(d, _mm_cvtepi32_ps(hsum4(&tot))));
            }
        }
    }
    store::<R, C>(&acc4, &acc1, res);
}

/// Sum of the eight f32 lanes of four accumulators, in a fixed order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum_ps(acc: &[__m256; 4]) -> f32 {
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Float dot body: `load(i)` gives 8 weights at element i as f32; 32 values per step into
/// four FMA accumulators, then 8 per step, then the scalar tail with `scalar`.
macro_rules! float_dot {
    ($name:ident, $body:ident, $width:expr, |$p:ident| $load:expr, |$b:ident| $scalar:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $body(n: usize, w: *const u8, x: *const f32) -> f32 {
            // Written as a macro, not a closure, so the loads inline with the target features.
            macro_rules! load {
                ($q:expr) => {{
                    let $p: *const u8 = $q;
                    $load
                }};
            }
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (u, a) in acc.iter_mut().enumerate() {
                    let j = i + 8 * u;
                    *a = _mm256_fmadd_ps(load!(w.add($width * j)), _mm256_loadu_ps(x.add(j)), *a);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] =
                    _mm256_fmadd_ps(load!(w.add($width * i)), _mm256_loadu_ps(x.add(i)), acc[0]);
                i += 8;
            }
            let mut s = hsum_ps(&acc);
            let w_tail = std::slice::from_raw_parts(w.add($width * i), $width * (n - i));
            for (k, $b) in w_tail.chunks_exact($width).enumerate() {
                s += $scalar * *x.add(i + k);
            }
            s
        }

        pub(super) fn $name(n: usize, w: &[u8], x: &[f32]) -> f32 {
            let n = n.min(w.len() / $width).min(x.len());
            // SAFETY: `detect` verified AVX2/FMA/F16C before this table could be obtained, and
            // `n` was clamped so that `w` holds n weights and `x` n activations.
            unsafe { $body(n, w.as_ptr(), x.as_ptr()) }
        }
    };
}

float_dot!(
    f32_f32_dot,
    f32_body,
    4,
    |p| _mm256_loadu_ps(p.cast()),
    |b| read_f32(b, 0)
);
float_dot!(
    f16_f32_dot,
    f16_body,
    2,
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    |b| read_f16(b, 0)
);
float_dot!(
    bf16_f32_dot,
    bf16_body,
    2,
    |p| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast())
    ))),
    |b| read_bf16(b, 0)
);

fn row_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: AVX2/FMA/F16C were detected before this table could be obtained; both slices
    // hold at least `n` f32 (4 bytes each).
    unsafe { f32_body(n, b.as_ptr().cast(), a.as_ptr()) }
}

fn row_dots_f16(q: &[f32], k: &[f16], stride: usize, out: &mut [f32]) {
    super::rows::dots_by_rows(row_dot_f16, q, k, stride, out)
}

fn row_dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: as above; `f16` is a 2-byte little-endian half, so `b` is 2n readable bytes.
    unsafe { f16_body(n, b.as_ptr().cast(), a.as_ptr()) }
}

/// `out[i] += w·load(v, i)` over 8 lanes at a time, scalar tail.
macro_rules! axpy {
    ($name:ident, $body:ident, $t:ty, |$p:ident| $load:expr, |$s:ident| $scalar:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $body(n: usize, w: f32, v: *const $t, out: *mut f32) {
            let wv = _mm256_set1_ps(w);
            let mut i = 0;
            while i + 8 <= n {
                let $p = v.add(i);
                let o = _mm256_fmadd_ps(wv, $load, _mm256_loadu_ps(out.add(i)));
                _mm256_storeu_ps(out.add(i), o);
                i += 8;
            }
            while i < n {
                let $s = *v.add(i);
                *out.add(i) += w * $scalar;
                i += 1;
            }
        }

        fn $name(w: f32, v: &[$t], out: &mut [f32]) {
            let n = v.len().min(out.len());
            // SAFETY: AVX2/FMA/F16C were detected before this table could be obtained; both
            // slices hold at least `n` elements.
            unsafe { $body(n, w, v.as_ptr(), out.as_mut_ptr()) }
        }
    };
}

axpy!(
    row_axpy_f32,
    axpy_f32_body,
    f32,
    |p| _mm256_loadu_ps(p),
    |s| s
);
axpy!(
    row_axpy_f16,
    axpy_f16_body,
    f16,
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    |s| s.to_f32()
);

/// [`Gemm`] rows `M` at a time: 16 columns per step in two 8-lane accumulators per row (each
/// lane one output's fma chain over `d`), then 8, then the scalar tail with `mul_add` (the same
/// fused operation). `a`, `b`, `c` point at the block's first row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_rows<const M: usize>(g: &Gemm<'_>, a: *const f32, c: *mut f32) {
    let (n, k, b) = (g.n, g.k, g.b.as_ptr());
    let mut j = 0;
    while j + 16 <= n {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        for d in 0..k {
            let bp = b.add(d * g.ldb + j);
            let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
            for i in 0..M {
                let av = _mm256_set1_ps(*a.add(i * g.lda + d));
                acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
            }
        }
        for i in 0..M {
            _mm256_storeu_ps(c.add(i * g.ldc + j), acc[i][0]);
            _mm256_storeu_ps(c.add(i * g.ldc + j + 8), acc[i][1]);
        }
        j += 16;
    }
    while j + 8 <= n {
        let mut acc = [_mm256_setzero_ps(); M];
        for d in 0..k {
            let b0 = _mm256_loadu_ps(b.add(d * g.ldb + j));
            for i in 0..M {
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(*a.add(i * g.lda + d)), b0, acc[i]);
            }
        }
        for i in 0..M {
            _mm256_storeu_ps(c.add(i * g.ldc + j), acc[i]);
        }
        j += 8;
    }
    for j in j..n {
        for i in 0..M {
            let mut s = 0f32;
            for d in 0..k {
                s = (*a.add(i * g.lda + d)).mul_add(*b.add(d * g.ldb + j), s);
            }
            *c.add(i * g.ldc + j) = s;
        }
    }
}

fn row_gemm_f32(g: &Gemm<'_>, c: &mut [f32]) {
    super::rows::run_gemm(
        g,
        c,
        [
            gemm_rows::<1>,
            gemm_rows::<2>,
            gemm_rows::<3>,
            gemm_rows::<4>,
        ],
    );
}

/// `wsum_f16` over `n_rows` rows: 32 output lanes at a time held in four accumulators across
/// all rows, then 8, then the scalar tail with `axpy_f16`'s separate multiply and add; each
/// element sees the same operations in the same order as `n_rows` calls of `axpy_f16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn wsum_f16_body(
    n_rows: usize,
    w: *const f32,
    v: *const f16,
    stride: usize,
    out: &mut [f32],
) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let mut i = 0;
    while i + 32 <= n {
        let mut acc: [__m256; 4] = std::array::from_fn(|u| _mm256_loadu_ps(o.add(i + 8 * u)));
        for p in 0..n_rows {
            let wv = _mm256_set1_ps(*w.add(p));
            let row = v.add(p * stride + i);
            for u in 0..4 {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * u).cast()));
                acc[u] = _mm256_fmadd_ps(wv, x, acc[u]);
            }
        }
        for u in 0..4 {
            _mm256_storeu_ps(o.add(i + 8 * u), acc[u]);
        }
        i += 32;
    }
    while i + 8 <= n {
        let mut acc = _mm256_loadu_ps(o.add(i));
        for p in 0..n_rows {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(v.add(p * stride + i).cast()));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(*w.add(p)), x, acc);
        }
        _mm256_storeu_ps(o.add(i), acc);
        i += 8;
    }
    for j in i..n {
        for p in 0..n_rows {
            *o.add(j) += *w.add(p) * (*v.add(p * stride + j)).to_f32();
        }
    }
}

fn row_wsum_f16(w: &[f32], v: &[f16], stride: usize, out: &mut [f32]) {
    let n_rows = w.len();
    if n_rows == 0 {
        return;
    }
    assert!(
        (n_rows - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(out.len()))
            .is_some_and(|end| end <= v.len()),
        "wsum rows do not fit"
    );
    // SAFETY: AVX2/FMA/F16C were detected before this table could be obtained; the assert
    // above keeps every row p < n_rows (out.len() halves at p·stride) inside `v`.
    unsafe { wsum_f16_body(n_rows, w.as_ptr(), v.as_ptr(), stride, out) }
}
