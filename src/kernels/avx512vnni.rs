//! x86-64 kernels for AVX-512 VNNI (with AVX-512 F/BW/VL): Sapphire Rapids and later, Zen 4 and
//! later. Two tables share them: `avx512vnni` (CPUs that also have AVX-VNNI: its single dots and
//! narrow tiles are the AVX-VNNI ones) and `avx512vnni-evex` (Zen 4, which has AVX-512 VNNI but
//! not the VEX-encoded AVX-VNNI: single dots and narrow tiles are AVX2's). Nothing here uses a
//! VEX-only instruction, so every body runs on both.
//!
//! Q4_0 · Q8_0 and Q8_0 · Q8_0 tiles take **16 weight rows** at a time, one row per f32 lane,
//! so a block is scaled and accumulated for 16 rows by one `vfmadd` and no output ever needs a
//! horizontal reduction of f32 lanes. Per block:
//! 1. the rows' 32 quants are split in halves (values 0..16 and 16..32) and loaded four rows per
//!    register, one row per 128-bit lane, as unsigned bytes (Q4_0 levels 0..15, Q8_0 `w + 128`);
//! 2. the activation halves are broadcast to all four 128-bit lanes and two `vpdpbusd` per
//!    four rows give, per lane, four i32 partial sums; the accumulator starts at `−k·Σa` (k = 8
//!    or 128), which removes the unsigned offset, so the partial sums add up to the exact
//!    integer block sum;
//! 3. two rounds of unpack-and-add reduce the four registers' lanes to one register holding the
//!    16 rows' exact block sums in row order;
//! 4. the rows' f16 scales come in with one gather, and `acc = fma(s, d_w·d_a, acc)`.
//!
//! Step 4 is the 32-block formula of [`super::generic`] evaluated lane by lane, so the results
//! equal the generic dot bitwise, like every other variant's.
//!
//! On Zen 4 (`avx512vnni-evex`), which runs each 512-bit operation as two 256-bit halves, the
//! packed Q4_0, Q4_K and Q6_K weights use another record layout of the same size, one row per
//! i32 lane ([`pack_q4_0_lanes`], [`pack_q4_k_lanes`], [`pack_q6_k_lanes`]): each activation
//! dword is broadcast and every `vpdpbusd` adds four products to each row's own lane, so step 3
//! disappears and Q4_0's offset `−8·Σa` is one 128-bit sum per block, not a 512-bit term per
//! quad. A 7B decode is compute-bound there; per record of one-column (decode) work this took
//! Q4_0 from 59 to 49 instructions (512-bit ones: 46 to 28), Q4_K from 471 to 319 (367 to 233)
//! and Q6_K from 618 to 350 (391 to 204). Same integers, same f32 formula, so the same numbers.
//! Its Q8_0 records have that layout too ([`pack_q8_0_lanes`]), and for many activation rows
//! (prefill, the vision tower) a 16×16 tile turns it around: one *activation row* per lane,
//! each weight dword broadcast from the record ([`q8_0_lanes_tile16`]); the 7B Q8_0 vision
//! tower went from 5.8 to 4.1–4.6 s at one thread on the Zen 4 guest.
//!
//! Single dots and tiles of at most four rows use the AVX-VNNI (or AVX2) code (same numbers).
//! Everything else is the AVX2 table's.
//!
//! Every `unsafe fn` here requires the features in its `target_feature` list; the [`Kernels`]
//! table holding the safe wrappers is only handed out by [`detect`] after run-time detection.

// Tile bodies index fixed-size register arrays by row/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::rows::{Gemm, RowOps};
use super::{avx2, avxvnni, Kernels, Packing, TILE, TILE_ROWS};
use crate::quant::blocks::{
    Q4_0_BYTES, Q4_0_QS, Q4_K_BYTES, Q4_K_DMIN, Q6_K_BYTES, Q6_K_D, Q8_0_BYTES, Q8_0_QS,
    Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::GgmlType;
use half::f16;

/// The AVX-512 VNNI table, if this CPU has AVX-512 F/BW/VL/VNNI and everything AVX-VNNI needs
/// (every CPU with AVX-512 VNNI has VL; the float tiles use its 32 vector registers).
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = avxvnni::detect().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(&AVX512VNNI)
}

/// The AVX-512 VNNI table for CPUs without AVX-VNNI (Zen 4): AVX2, FMA, F16C and AVX-512
/// F/BW/VL/VNNI. Only offered when [`detect`] turns the CPU away, so a CPU with both keeps
/// `avx512vnni` first.
pub(super) fn detect_evex() -> Option<&'static Kernels> {
    let ok = avx2::detect().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(&AVX512VNNI_EVEX)
}

/// [`AVX512VNNI_TABLE`] with AVX2's single dots and narrow tiles in place of AVX-VNNI's (the
/// same numbers); only handed out by [`detect_evex`].
static AVX512VNNI_EVEX: Kernels = Kernels {
    name: "avx512vnni-evex",
    weights: AVX512VNNI_TABLE
        .weights
        .quant_wide(GgmlType::Q4_0, avx2::q4_0_q8_0_dot, q4_0_q8_0_tile_evex)
        .quant_wide(GgmlType::Q8_0, avx2::q8_0_q8_0_dot, q8_0_q8_0_tile_evex),
    packings: &[
        Q4_0_LANES_PACKING,
        Q8_0_LANES_PACKING,
        Q4_K_LANES_PACKING,
        Q6_K_LANES_PACKING,
    ],
    ..AVX512VNNI_TABLE
};

static AVX512VNNI: Kernels = AVX512VNNI_TABLE;

/// [`AVX512VNNI`] as a constant, for the AMX table, which adds 16×16 tiles to its packings.
/// Like the static, only to be handed out after [`detect`] has seen the features.
pub(super) const AVX512VNNI_TABLE: Kernels = Kernels {
    name: "avx512vnni",
    // Every other row is AVX-512's (AVX2's integer kernels, AVX-512 float tiles).
    weights: super::avx512::AVX512_WEIGHTS
        .quant_wide(GgmlType::Q4_0, avxvnni::q4_0_q8_0_dot, q4_0_q8_0_tile)
        .quant_wide(GgmlType::Q8_0, avxvnni::q8_0_q8_0_dot, q8_0_q8_0_tile),
    packings: &[Q4_0_PACKING, Q8_0_PACKING, Q4_K_PACKING, Q6_K_PACKING],
    rows: AVX512_ROWS,
    exp: super::exp::AVX512,
};

/// The load-time repackings of this table (the AMX table adds 16×16 tiles to the first two).
pub(super) const Q4_0_PACKING: Packing = Packing {
    typ: GgmlType::Q4_0,
    record_bytes: Q4_0X16,
    pack: pack_q4_0,
    tile: q4_0_packed_tile,
    tile16: None,
};
pub(super) const Q8_0_PACKING: Packing = Packing {
    typ: GgmlType::Q8_0,
    record_bytes: Q8_0X16,
    pack: pack_q8_0,
    tile: q8_0_packed_tile,
    tile16: None,
};
pub(super) const Q4_K_PACKING: Packing = Packing {
    typ: GgmlType::Q4_K,
    record_bytes: Q4_KX16,
    pack: pack_q4_k,
    tile: q4_k_packed_tile,
    tile16: None,
};
pub(super) const Q6_K_PACKING: Packing = Packing {
    typ: GgmlType::Q6_K,
    record_bytes: Q6_KX16,
    pack: pack_q6_k,
    tile: q6_k_packed_tile,
    tile16: None,
};

/// The Zen 4 (`avx512vnni-evex`) repackings of Q4_0, Q4_K and Q6_K: one row per 32-bit lane
/// (see [`pack_q4_0_lanes`]), so the bodies need no horizontal reduction per block.
pub(super) const Q4_0_LANES_PACKING: Packing = Packing {
    typ: GgmlType::Q4_0,
    record_bytes: Q4_0X16,
    pack: pack_q4_0_lanes,
    tile: q4_0_lanes_tile,
    tile16: None,
};
pub(super) const Q4_K_LANES_PACKING: Packing = Packing {
    typ: GgmlType::Q4_K,
    record_bytes: Q4_KX16,
    pack: pack_q4_k_lanes,
    tile: q4_k_lanes_tile,
    tile16: None,
};
pub(super) const Q6_K_LANES_PACKING: Packing = Packing {
    typ: GgmlType::Q6_K,
    record_bytes: Q6_KX16,
    pack: pack_q6_k_lanes,
    tile: q6_k_lanes_tile,
    tile16: None,
};
/// The Zen 4 repacking of Q8_0: one row per 32-bit lane (see [`pack_q8_0_lanes`]), with a
/// 16×16 tile for many activation rows that puts one activation row per lane instead.
pub(super) const Q8_0_LANES_PACKING: Packing = Packing {
    typ: GgmlType::Q8_0,
    record_bytes: Q8_0X16,
    pack: pack_q8_0_lanes,
    tile: q8_0_lanes_tile,
    tile16: Some(q8_0_lanes_tile16),
};

/// A 32-value weight block format for the 16-row tiles (activations are always Q8_0).
pub(super) trait Format {
    /// Bytes per weight block (an f16 scale first).
    const WSIZE: usize;
    /// The unsigned offset `k` of the loaded quants (`q_stored = q + k`), as a byte.
    const OFFSET: i8;
    /// Block `b` of four rows, as unsigned bytes: (values 0..16, values 16..32), row `i` in
    /// 128-bit lane `i`.
    unsafe fn halves(p: &[*const u8; 4], b: usize) -> (__m512i, __m512i);
}

/// Q4_0: byte `i` holds value `i` (low nibble) and value `i + 16` (high nibble), levels 0..15
/// standing for −8..7.
pub(super) struct Q40;
/// Q8_0: 32 signed bytes, flipped to `w + 128`.
pub(super) struct Q80;

/// Four 16-byte loads, one per 128-bit lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn load4x16(p: &[*const u8; 4], off: usize) -> __m512i {
    let z = _mm512_castsi128_si512(_mm_loadu_si128(p[0].add(off).cast()));
    let z = _mm512_inserti32x4::<1>(z, _mm_loadu_si128(p[1].add(off).cast()));
    let z = _mm512_inserti32x4::<2>(z, _mm_loadu_si128(p[2].add(off).cast()));
    _mm512_inserti32x4::<3>(z, _mm_loadu_si128(p[3].add(off).cast()))
}

impl Format for Q40 {
    const WSIZE: usize = Q4_0_BYTES;
    const OFFSET: i8 = 8;
    #[inline(always)]
    unsafe fn halves(p: &[*const u8; 4], b: usize) -> (__m512i, __m512i) {
        let z = load4x16(p, b * Q4_0_BYTES + Q4_0_QS);
        let m4 = _mm512_set1_epi8(0x0F);
        (
            _mm512_and_si512(z, m4),
            _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4),
        )
    }
}

impl Format for Q80 {
    const WSIZE: usize = Q8_0_BYTES;
    const OFFSET: i8 = i8::MIN;
    #[inline(always)]
    unsafe fn halves(p: &[*const u8; 4], b: usize) -> (__m512i, __m512i) {
        let flip = _mm512_set1_epi8(i8::MIN);
        (
            _mm512_xor_si512(load4x16(p, b * Q8_0_BYTES + Q8_0_QS), flip),
            _mm512_xor_si512(load4x16(p, b * Q8_0_BYTES + Q8_0_QS + 16), flip),
        )
    }
}

/// Per 128-bit lane, the sums of its four i32 of `p[k]`, as i32 `4·lane + k`: with `p[k]`
/// holding rows `k, 4 + k, 8 + k, 12 + k` in its lanes, the result is in row order.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn reduce16(p: &[__m512i; 4]) -> __m512i {
    // Per lane: [p0₀+p0₂, p1₀+p1₂, p0₁+p0₃, p1₁+p1₃], and the same for p2, p3.
    let x = _mm512_add_epi32(
        _mm512_unpacklo_epi32(p[0], p[1]),
        _mm512_unpackhi_epi32(p[0], p[1]),
    );
    let y = _mm512_add_epi32(
        _mm512_unpacklo_epi32(p[2], p[3]),
        _mm512_unpackhi_epi32(p[2], p[3]),
    );
    // Per lane: [Σp0, Σp1, Σp2, Σp3].
    _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
}

/// How far ahead of the block being multiplied a one-column (decode) tile prefetches each of
/// its 16 rows, in bytes. Decode streams every weight once from DRAM, 16 rows in lock-step;
/// the hardware prefetchers alone left a 7B Q4_0 decode at ~55 % of the read bandwidth, and
/// 320–640 bytes ahead measured ~15–20 % faster (512 chosen; 1–2 KiB gained nothing). Many-
/// column tiles reuse rows from cache and skip it.
const PREFETCH_AHEAD: usize = 512;

/// The 16-row tile body over `nb` blocks: `wp` the 16 weight rows (`idx[r]` = byte offset of
/// row `r` from row 0), `ap` up to [`TILE`] activation rows; `res[c][r]` gets row `r` · column
/// `c`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn body16<F: Format, const C: usize>(
    nb: usize,
    wp: &[*const u8; TILE_ROWS],
    idx: __m512i,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    // Quad k: rows k, 4 + k, 8 + k, 12 + k (see `reduce16`).
    let quads: [[*const u8; 4]; 4] =
        std::array::from_fn(|k| [wp[k], wp[4 + k], wp[8 + k], wp[12 + k]]);
    let k8 = _mm512_set1_epi8(F::OFFSET);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        // Every other block: a cache line holds 3.5 Q4_0 or 1.9 Q8_0 blocks of a row.
        if C == 1 && b % 2 == 0 {
            for r in 0..TILE_ROWS {
                // A hint only: prefetching past the row's end cannot fault.
                _mm_prefetch::<_MM_HINT_T0>(
                    wp[r].wrapping_add(b * F::WSIZE + PREFETCH_AHEAD).cast(),
                );
            }
        }
        let mut lo = [zero; 4];
        let mut hi = [zero; 4];
        for k in 0..4 {
            (lo[k], hi[k]) = F::halves(&quads[k], b);
        }
        // The 16 rows' f16 scales: the low half of the dword at each block's start.
        let g = _mm512_i32gather_epi32::<1>(idx, wp[0].add(b * F::WSIZE).cast());
        let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        accumulate::<C>(&lo, &hi, dw, k8, ap, b, &mut acc);
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

/// One block of 16 rows (unsigned quants `lo`/`hi` in quads as `reduce16` expects, f32 scales
/// `dw` in row order, offset byte `k8`) against block `b` of each activation row: steps 2–4 of
/// the module comment, `acc[c] = fma(s, d_w·d_a, acc[c])`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn accumulate<const C: usize>(
    lo: &[__m512i; 4],
    hi: &[__m512i; 4],
    dw: __m512,
    k8: __m512i,
    ap: &[*const u8; TILE],
    b: usize,
    acc: &mut [__m512; TILE],
) {
    let zero = _mm512_setzero_si512();
    for c in 0..C {
        let y = ap[c].add(b * Q8_0_BYTES);
        let a_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(Q8_0_QS).cast()));
        let a_hi = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(Q8_0_QS + 16).cast()));
        // Each lane's four i32 start at −k·Σa: the offset of the unsigned quants.
        let off = _mm512_sub_epi32(
            zero,
            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, k8, a_lo), k8, a_hi),
        );
        let mut p = [zero; 4];
        for k in 0..4 {
            p[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off, lo[k], a_lo), hi[k], a_hi);
        }
        let s = _mm512_cvtepi32_ps(reduce16(&p));
        let d = _mm512_mul_ps(dw, _mm512_set1_ps(avx2::f16_at(y)));
        acc[c] = _mm512_fmadd_ps(s, d, acc[c]);
    }
}

/// Bytes of one packed Q4_0 record: 16 rows' block `b` (see [`pack_q4_0`]).
pub(super) const Q4_0X16: usize = 32 + 4 * 64;

/// Packs 16 Q4_0 rows of `n` values for [`q4_0_packed_tile`]: per block, one 288-byte record
/// of the 16 f16 scales in row order, then the four quads' quants (quad k = rows k, 4 + k,
/// 8 + k, 12 + k, 16 bytes each, as the registers of `body16` hold them). The tile then reads
/// one sequential stream, a record per block, with plain vector loads: no gather, no inserts.
pub(super) fn pack_q4_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 32;
    if rows.len() != TILE_ROWS || out.len() != nb * Q4_0X16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q4_0X16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let block = &row[b * Q4_0_BYTES..(b + 1) * Q4_0_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&block[..Q4_0_QS]);
            let (k, lane) = (r % 4, r / 4);
            let at = 32 + 64 * k + 16 * lane;
            rec[at..at + 16].copy_from_slice(&block[Q4_0_QS..]);
        }
    }
}

/// How far ahead a one-column tile over packed records prefetches, in bytes, into L2 (`T1`):
/// on this project's x86 dev machine the hardware prefetchers alone left a 7B Q4_0 decode at
/// 2.5 tokens/s; 1 KiB ahead into L1 gave 3.2, 2–3 KiB ahead into L2 3.4 (4 KiB into L1: 2.7).
const PACKED_PREFETCH_AHEAD: usize = 2048;

/// Bytes of one packed Q8_0 record: 16 rows' block `b` (see [`pack_q8_0`]).
pub(super) const Q8_0X16: usize = 32 + 8 * 64;

/// Packs 16 Q8_0 rows like [`pack_q4_0`]: per block, the 16 f16 scales in row order, then
/// the quads' values 0..16 and then their values 16..32, each flipped to `w + 128` (the
/// unsigned form the tile multiplies).
pub(super) fn pack_q8_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 32;
    if rows.len() != TILE_ROWS || out.len() != nb * Q8_0X16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q8_0X16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let block = &row[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&block[..Q8_0_QS]);
            let (k, lane) = (r % 4, r / 4);
            for half in 0..2 {
                let at = 32 + 256 * half + 64 * k + 16 * lane;
                let src = &block[Q8_0_QS + 16 * half..Q8_0_QS + 16 + 16 * half];
                for (o, &q) in rec[at..at + 16].iter_mut().zip(src) {
                    *o = q ^ 0x80;
                }
            }
        }
    }
}

/// A packed record format: its size, offset byte and how a block's quads come out of it.
pub(super) trait Packed {
    const RECORD: usize;
    const OFFSET: i8;
    unsafe fn quads(rec: *const u8) -> ([__m512i; 4], [__m512i; 4]);
}

impl Packed for Q40 {
    const RECORD: usize = Q4_0X16;
    const OFFSET: i8 = <Q40 as Format>::OFFSET;
    #[inline(always)]
    unsafe fn quads(rec: *const u8) -> ([__m512i; 4], [__m512i; 4]) {
        let m4 = _mm512_set1_epi8(0x0F);
        let z: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_loadu_si512(rec.add(32 + 64 * k).cast()));
        (
            z.map(|z| _mm512_and_si512(z, m4)),
            z.map(|z| _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4)),
        )
    }
}

impl Packed for Q80 {
    const RECORD: usize = Q8_0X16;
    const OFFSET: i8 = <Q80 as Format>::OFFSET;
    #[inline(always)]
    unsafe fn quads(rec: *const u8) -> ([__m512i; 4], [__m512i; 4]) {
        (
            std::array::from_fn(|k| _mm512_loadu_si512(rec.add(32 + 64 * k).cast())),
            std::array::from_fn(|k| _mm512_loadu_si512(rec.add(288 + 64 * k).cast())),
        )
    }
}

/// The body over packed records ([`pack_q4_0`], [`pack_q8_0`]): 16 rows, `C` columns.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn packed_body<P: Packed, const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let k8 = _mm512_set1_epi8(P::OFFSET);
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * P::RECORD);
        if C == 1 {
            // One stream; a hint only, prefetching past the end cannot fault.
            let mut l = 0;
            while l < P::RECORD {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let (lo, hi) = P::quads(rec);
        accumulate::<C>(&lo, &hi, dw, k8, ap, b, &mut acc);
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

fn q4_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        packed_body::<Q40, 1>,
        packed_body::<Q40, 2>,
        packed_body::<Q40, 3>,
        packed_body::<Q40, 4>,
    ];
    run_packed(n, group, a, out, (32, Q4_0X16, Q8_0_BYTES), bodies)
}

fn q8_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        packed_body::<Q80, 1>,
        packed_body::<Q80, 2>,
        packed_body::<Q80, 3>,
        packed_body::<Q80, 4>,
    ];
    run_packed(n, group, a, out, (32, Q8_0X16, Q8_0_BYTES), bodies)
}

fn q4_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q4_k_packed_body::<1>,
        q4_k_packed_body::<2>,
        q4_k_packed_body::<3>,
        q4_k_packed_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q4_KX16, Q8_K_BYTES), bodies)
}

fn q6_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q6_k_packed_body::<1>,
        q6_k_packed_body::<2>,
        q6_k_packed_body::<3>,
        q6_k_packed_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q6_KX16, Q8_K_BYTES), bodies)
}

/// A monomorphized body over packed records: `(nb, group, activation rows, res[c][r])`.
type PackedBody = unsafe fn(usize, *const u8, &[*const u8; TILE], &mut [[f32; TILE_ROWS]; TILE]);

/// 16 packed rows (`group`: the packer's output for `n` values) × up to [`TILE`] activation
/// rows: `out[r·a.len() + c]`, bitwise what the plain tile gives for the same rows unpacked.
/// `(values, record, act)`: values per block, bytes per record, bytes per activation block;
/// `bodies[c − 1]` takes `c` columns. A group or activation row too short for `n` yields
/// nothing.
fn run_packed(
    n: usize,
    group: &[u8],
    a: &[&[u8]],
    out: &mut [f32],
    (values, record, act): (usize, usize, usize),
    bodies: [PackedBody; TILE],
) {
    let na = a.len().min(TILE);
    let nb = n / values;
    if na == 0 || group.len() < nb * record || a[..na].iter().any(|r| r.len() < nb * act) {
        return;
    }
    let mut ap = [a[0].as_ptr(); TILE];
    for (p, row) in ap.iter_mut().zip(&a[..na]) {
        *p = row.as_ptr();
    }
    let mut res = [[0f32; TILE_ROWS]; TILE];
    // SAFETY: AVX-512 F/BW/VNNI, AVX2, FMA and F16C were detected before this table
    // could be obtained; `group` holds the nb records and every activation row the nb blocks
    // the bodies read.
    unsafe { bodies[na - 1](nb, group.as_ptr(), &ap, &mut res) };
    scatter(&res, TILE_ROWS, na, out);
}

/// `out[r·na + c] = res[c][r]` for the first `nw` rows and `na` columns (what fits `out`).
fn scatter(res: &[[f32; TILE_ROWS]; TILE], nw: usize, na: usize, out: &mut [f32]) {
    for r in 0..nw {
        for c in 0..na {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = res[c][r];
            }
        }
    }
}

/// Bytes of one packed Q4_K record: 16 rows' super-block `b` (see [`pack_q4_k`]).
pub(super) const Q4_KX16: usize = 64 + 256 + 2048;

/// Packs 16 Q4_K rows of `n` values for [`q4_k_packed_tile`]: per super-block, one record of
/// the 16 `d` and the 16 `dmin` (f16, row order), the eight sub-blocks' six-bit scales and
/// mins unpacked to bytes (16 rows each), then per 64-value chunk the quants' bytes 0..16 and
/// 16..32 in quads (low nibbles: the chunk's first sub-block, high: its second).
pub(super) fn pack_q4_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if rows.len() != TILE_ROWS || out.len() != nb * Q4_KX16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q4_KX16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q4_K_BYTES..(b + 1) * Q4_K_BYTES];
            q4_k_head(r, x, rec);
            let (k, lane) = (r % 4, r / 4);
            for c in 0..4 {
                for h in 0..2 {
                    let at = 320 + 512 * c + 256 * h + 64 * k + 16 * lane;
                    let src = 16 + 32 * c + 16 * h;
                    rec[at..at + 16].copy_from_slice(&x[src..src + 16]);
                }
            }
        }
    }
}

/// Row `r`'s part of a packed Q4_K record's 320-byte head (both Q4_K packings): its `d` and
/// `dmin` (f16) at `2r` and `32 + 2r`, its eight six-bit scales and mins unpacked to bytes at
/// `64 + 16j + r` and `192 + 16j + r`. `x` is the row's super-block.
fn q4_k_head(r: usize, x: &[u8], rec: &mut [u8]) {
    rec[2 * r..2 * r + 2].copy_from_slice(&x[..Q4_K_DMIN]);
    rec[32 + 2 * r..34 + 2 * r].copy_from_slice(&x[Q4_K_DMIN..Q4_K_DMIN + 2]);
    for j in 0..8 {
        let (sc, m) = crate::quant::unpack_scale_min_k4(j, &x[4..16]);
        rec[64 + 16 * j + r] = sc;
        rec[192 + 16 * j + r] = m;
    }
}

/// The Q4_K body over packed records: 16 rows, `C` Q8_K activation columns. Per super-block and
/// row lane, the exact formula of [`super::tiles::q4_k_q8_k_exact`]: `isum = Σ_j sc_j·s_j` and
/// `msum = Σ_j m_j·(bsum_2j + bsum_2j+1)` in i32, then `acc += (d·d_a)·isum` and
/// `acc −= (dmin·d_a)·msum` with separate roundings, as the scalar code.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn q4_k_packed_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let m4 = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q4_KX16);
        if C == 1 {
            let mut l = 0;
            while l < Q4_KX16 {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(32).cast()));
        let mut isum = [zero; TILE];
        let mut msum = [zero; TILE];
        for c in 0..4 {
            let z0: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_loadu_si512(rec.add(320 + 512 * c + 64 * k).cast()));
            let z1: [__m512i; 4] = std::array::from_fn(|k| {
                _mm512_loadu_si512(rec.add(320 + 512 * c + 256 + 64 * k).cast())
            });
            for h in 0..2 {
                let j = 2 * c + h;
                let nib = |z: __m512i| {
                    if h == 0 {
                        _mm512_and_si512(z, m4)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4)
                    }
                };
                let (lo, hi) = (z0.map(nib), z1.map(nib));
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(64 + 16 * j).cast()));
                let mn = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(192 + 16 * j).cast()));
                for col in 0..C {
                    let y = ap[col].add(b * Q8_K_BYTES);
                    let a_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(4 + 32 * j).cast()));
                    let a_hi = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(20 + 32 * j).cast()));
                    let mut p = [zero; 4];
                    for k in 0..4 {
                        p[k] = _mm512_dpbusd_epi32(
                            _mm512_dpbusd_epi32(zero, lo[k], a_lo),
                            hi[k],
                            a_hi,
                        );
                    }
                    isum[col] = _mm512_add_epi32(isum[col], _mm512_mullo_epi32(reduce16(&p), sc));
                    let bs = |g: usize| {
                        std::ptr::read_unaligned(y.add(Q8_K_BSUMS + 2 * g).cast::<i16>())
                    };
                    let sj = bs(2 * j) as i32 + bs(2 * j + 1) as i32;
                    msum[col] =
                        _mm512_add_epi32(msum[col], _mm512_mullo_epi32(mn, _mm512_set1_epi32(sj)));
                }
            }
        }
        for col in 0..C {
            let yd = _mm512_set1_ps(std::ptr::read_unaligned(
                ap[col].add(b * Q8_K_BYTES).cast::<f32>(),
            ));
            let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(isum[col]));
            acc[col] = _mm512_add_ps(acc[col], t);
            let t = _mm512_mul_ps(_mm512_mul_ps(dmin, yd), _mm512_cvtepi32_ps(msum[col]));
            acc[col] = _mm512_sub_ps(acc[col], t);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

/// Packs 16 Q4_0 rows of `n` values for [`q4_0_lanes_tile`], one row per 32-bit lane: per
/// block, one 288-byte record (the size of [`pack_q4_0`]'s) of the 16 f16 scales in row order,
/// then four 64-byte vectors, vector `t` holding in dword `r` row `r`'s quant bytes
/// `4t..4t + 4` (low nibbles: values `4t..4t + 4`, high nibbles: values `16 + 4t..`).
pub(super) fn pack_q4_0_lanes(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack_lanes(n, rows, out, (Q4_0_BYTES, Q4_0X16), 0);
}

/// The one-row-per-lane packing of a 32-value block type with an f16 scale first (Q4_0,
/// Q8_0): per block, one `record`-byte record of the 16 rows' scales in row order, then the
/// quant bytes in 64-byte vectors, vector `t` holding in dword `r` row `r`'s quant bytes
/// `4t..4t + 4`, each xored with `flip`. `(block, record)`: bytes per block and per record.
/// Anything but 16 rows and `n / 32` records leaves `out` untouched.
fn pack_lanes(n: usize, rows: &[&[u8]], out: &mut [u8], (block, record): (usize, usize), flip: u8) {
    let nb = n / 32;
    if rows.len() != TILE_ROWS || out.len() != nb * record {
        return;
    }
    // Q4_0 and Q8_0 share the scale's place: two bytes, then the quants.
    const _: () = assert!(Q4_0_QS == Q8_0_QS);
    let qs = Q8_0_QS;
    for (b, rec) in out.chunks_exact_mut(record).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * block..(b + 1) * block];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[..qs]);
            for t in 0..(block - qs) / 4 {
                let at = 32 + 64 * t + 4 * r;
                for (o, &q) in rec[at..at + 4]
                    .iter_mut()
                    .zip(&x[qs + 4 * t..qs + 4 + 4 * t])
                {
                    *o = q ^ flip;
                }
            }
        }
    }
}

/// How far ahead [`q4_0_lanes_body`] prefetches for one column, in bytes, into L1 (`T0`). On the
/// Zen 4 guest (7B Q4_0 decode, t=1, loaded machine, interleaved runs) 1 KiB into L1 gave
/// 5.0–5.4 tokens/s against 3.5–3.6 for [`PACKED_PREFETCH_AHEAD`] into L2 and 4.8 for 4 KiB
/// into L2; the Q4_K body, whose records are 2368 bytes, lost a third with 1 KiB into L1 and
/// keeps the shared setting.
const Q4_0_LANES_AHEAD: usize = 1024;

/// The activation dword at `p`, in every lane (an embedded broadcast of `vpdpbusd`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn bcast32(p: *const u8) -> __m512i {
    _mm512_set1_epi32(std::ptr::read_unaligned(p.cast::<i32>()))
}

/// The body over [`pack_q4_0_lanes`] records: 16 rows (one per i32 lane), `C` Q8_0 columns.
/// Per block and column, each lane's exact block sum `Σ (q − 8)·a` comes from eight `vpdpbusd`
/// with broadcast activation dwords: the low nibbles as they are, the high nibbles masked in
/// place (`16·q`, so that chain's sum is divided by 16 exactly), the bias `−8·Σa` computed once
/// in 128 bits and broadcast. Then `acc = fma(s, d_w·d_a, acc)`, the generic formula, so the
/// results equal [`packed_body`]'s (and the generic dot's) bitwise.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0_lanes_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let m4 = _mm512_set1_epi8(0x0F);
    let mhi = _mm512_set1_epi8(0xF0u8 as i8);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q4_0X16);
        if C == 1 {
            // One stream; a hint only, prefetching past the end cannot fault.
            let mut l = 0;
            while l < Q4_0X16 {
                _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add(Q4_0_LANES_AHEAD + l).cast());
                l += 64;
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let z: [__m512i; 4] =
            std::array::from_fn(|t| _mm512_loadu_si512(rec.add(32 + 64 * t).cast()));
        let lo = z.map(|z| _mm512_and_si512(z, m4));
        let hi = z.map(|z| _mm512_and_si512(z, mhi));
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let mut u = neg_offset(y, 8);
            let mut v = zero;
            for t in 0..4 {
                u = _mm512_dpbusd_epi32(u, lo[t], bcast32(y.add(Q8_0_QS + 4 * t)));
                v = _mm512_dpbusd_epi32(v, hi[t], bcast32(y.add(Q8_0_QS + 16 + 4 * t)));
            }
            // v = 16·Σ q_hi·a exactly, so the shift divides exactly.
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(u, _mm512_srai_epi32::<4>(v)));
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(avx2::f16_at(y)));
            acc[c] = _mm512_fmadd_ps(s, d, acc[c]);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

fn q4_0_lanes_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q4_0_lanes_body::<1>,
        q4_0_lanes_body::<2>,
        q4_0_lanes_body::<3>,
        q4_0_lanes_body::<4>,
    ];
    run_packed(n, group, a, out, (32, Q4_0X16, Q8_0_BYTES), bodies)
}

/// Packs 16 Q8_0 rows of `n` values for [`q8_0_lanes_tile`] and [`q8_0_lanes_tile16`], one row
/// per 32-bit lane: per block, one 544-byte record (the size of [`pack_q8_0`]'s) of the 16 f16
/// scales in row order, then eight 64-byte vectors, vector `t` holding in dword `r` row `r`'s
/// quants `4t..4t + 4`, each flipped to `w + 128` (the unsigned operand of `vpdpbusd`).
pub(super) fn pack_q8_0_lanes(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack_lanes(n, rows, out, (Q8_0_BYTES, Q8_0X16), 0x80);
}

/// `−k·Σa` over the 32 quants of the Q8_0 activation block at `y`, in every lane: the offset
/// that turns `Σ (w + k)·a` (unsigned stored quants, `k` = 8 for Q4_0, 128 for Q8_0) into the
/// block sum `Σ w·a`. Four 128-bit partial sums, added across, negated.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn neg_offset(y: *const u8, k: u8) -> __m512i {
    let kv = _mm_set1_epi8(k as i8);
    let s = _mm_dpbusd_epi32(
        _mm_dpbusd_epi32(
            _mm_setzero_si128(),
            kv,
            _mm_loadu_si128(y.add(Q8_0_QS).cast()),
        ),
        kv,
        _mm_loadu_si128(y.add(Q8_0_QS + 16).cast()),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4E>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xB1>(s));
    _mm512_broadcastd_epi32(_mm_sub_epi32(_mm_setzero_si128(), s))
}

/// The body over [`pack_q8_0_lanes`] records: 16 rows (one per i32 lane), `C` Q8_0 columns.
/// Per block and column, each lane's exact block sum `Σ w·a` is `−128·Σa` plus eight
/// `vpdpbusd` of the row's flipped quants with broadcast activation dwords; then
/// `acc = fma(s, d_w·d_a, acc)`, the generic formula, so the results equal [`packed_body`]'s
/// (and the generic dot's) bitwise.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_lanes_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q8_0X16);
        if C == 1 {
            // One stream; a hint only, prefetching past the end cannot fault.
            let mut l = 0;
            while l < Q8_0X16 {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let w: [__m512i; 8] =
            std::array::from_fn(|t| _mm512_loadu_si512(rec.add(32 + 64 * t).cast()));
        for c in 0..C {
            let y = ap[c].add(b * Q8_0_BYTES);
            let mut u = neg_offset(y, 0x80);
            for t in 0..8 {
                u = _mm512_dpbusd_epi32(u, w[t], bcast32(y.add(Q8_0_QS + 4 * t)));
            }
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(avx2::f16_at(y)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u), d, acc[c]);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

fn q8_0_lanes_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q8_0_lanes_body::<1>,
        q8_0_lanes_body::<2>,
        q8_0_lanes_body::<3>,
        q8_0_lanes_body::<4>,
    ];
    run_packed(n, group, a, out, (32, Q8_0X16, Q8_0_BYTES), bodies)
}

/// 16 packed rows ([`pack_q8_0_lanes`]) × 16 activation columns laid out by
/// [`super::tile16::layout_q8_0`] (per block, vector `t` holds column `c`'s quants `4t..4t + 4`
/// in dword `c`, then the 16 column scales as f32): here the lanes are the *columns*. Each
/// row's flipped quant dword is broadcast (a load, no vector operation) against the eight
/// activation vectors, which stay in registers for all 16 rows, so a block costs 128
/// `vpdpbusd` and, per row, one start from the columns' offsets `−128·Σa` and the scaling
/// `acc = fma(s, d_w·d_a, acc)`, the generic formula again: `out[r·16 + c]` equals the
/// generic dot bitwise. Zen 4 has no matrix unit; per block the one-row-per-lane body spends
/// about 17 vector operations of overhead per 8 `vpdpbusd` on each column, this one about 4
/// per row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_lanes_tile16_body(nb: usize, g: *const u8, acts: *const u8, out: *mut f32) {
    use super::tile16::ACT_RECORD;
    const R: usize = 4;
    let k80 = _mm512_set1_epi8(0x80u8 as i8);
    let mut acc = [_mm512_setzero_ps(); TILE_ROWS];
    let mut dws = [0f32; TILE_ROWS];
    for b in 0..nb {
        let rec = g.add(b * Q8_0X16);
        let act = acts.add(b * ACT_RECORD);
        let a: [__m512i; 8] = std::array::from_fn(|t| _mm512_loadu_si512(act.add(64 * t).cast()));
        // 128·Σa per column, negated: the offset of the flipped weights.
        let mut o = _mm512_setzero_si512();
        for t in 0..8 {
            o = _mm512_dpbusd_epi32(o, k80, a[t]);
        }
        let off = _mm512_sub_epi32(_mm512_setzero_si512(), o);
        let da = _mm512_loadu_ps(act.add(512).cast());
        _mm512_storeu_ps(
            dws.as_mut_ptr(),
            _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast())),
        );
        // Four rows at a time: four independent `vpdpbusd` chains hide its latency.
        for r0 in (0..TILE_ROWS).step_by(R) {
            let mut u = [off; R];
            for t in 0..8 {
                for j in 0..R {
                    let w = bcast32(rec.add(32 + 64 * t + 4 * (r0 + j)));
                    u[j] = _mm512_dpbusd_epi32(u[j], w, a[t]);
                }
            }
            for j in 0..R {
                // d_w·d_a: the product commutes, so this is the generic dot's scale.
                let d = _mm512_mul_ps(_mm512_set1_ps(dws[r0 + j]), da);
                acc[r0 + j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u[j]), d, acc[r0 + j]);
            }
        }
    }
    for r in 0..TILE_ROWS {
        _mm512_storeu_ps(out.add(16 * r), acc[r]);
    }
}

fn q8_0_lanes_tile16(n: usize, group: &[u8], acts: &[u8], out: &mut [f32]) {
    use super::tile16::{ACT_RECORD, COLS};
    let nb = n / 32;
    if group.len() < nb * Q8_0X16 || acts.len() < nb * ACT_RECORD || out.len() < TILE_ROWS * COLS {
        return;
    }
    // SAFETY: AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C were detected before this table could
    // be obtained; `group` holds the nb records, `acts` the nb laid-out blocks and `out` the
    // 16×16 results the body reads and writes.
    unsafe { q8_0_lanes_tile16_body(nb, group.as_ptr(), acts.as_ptr(), out.as_mut_ptr()) }
}

/// Packs 16 Q4_K rows of `n` values for [`q4_k_lanes_tile`]: [`pack_q4_k`]'s record (same size,
/// same 320-byte head of `d`, `dmin`, scales and mins) with the quants one row per 32-bit lane:
/// per 64-value chunk `c`, eight 64-byte vectors, vector `t` holding in dword `r` row `r`'s
/// chunk bytes `4t..4t + 4` (low nibbles: sub-block `2c`, high: `2c + 1`).
pub(super) fn pack_q4_k_lanes(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if rows.len() != TILE_ROWS || out.len() != nb * Q4_KX16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q4_KX16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q4_K_BYTES..(b + 1) * Q4_K_BYTES];
            q4_k_head(r, x, rec);
            for c in 0..4 {
                for t in 0..8 {
                    let at = 320 + 512 * c + 64 * t + 4 * r;
                    let src = 16 + 32 * c + 4 * t;
                    rec[at..at + 4].copy_from_slice(&x[src..src + 4]);
                }
            }
        }
    }
}

/// The Q4_K body over [`pack_q4_k_lanes`] records: 16 rows (one per i32 lane), `C` Q8_K
/// columns. The exact integers of [`q4_k_packed_body`] without its reductions: each
/// sub-block sum `s_j` from eight `vpdpbusd` with broadcast activation dwords (high nibbles
/// masked in place and the sum divided by 16 exactly), `isum = Σ_j sc_j·s_j`,
/// `msum = Σ_j m_j·(bsum_2j + bsum_2j+1)`, then the same f32 steps, so the results are the same
/// bitwise.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_lanes_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let m4 = _mm512_set1_epi8(0x0F);
    let mhi = _mm512_set1_epi8(0xF0u8 as i8);
    let ones = _mm256_set1_epi16(1);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q4_KX16);
        if C == 1 {
            let mut l = 0;
            while l < Q4_KX16 {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(32).cast()));
        // Per column, the eight pair sums bsum_2j + bsum_2j+1 (exact in i32).
        let mut pairs = [[0i32; 8]; TILE];
        for col in 0..C {
            let bs = _mm256_loadu_si256(ap[col].add(b * Q8_K_BYTES + Q8_K_BSUMS).cast());
            _mm256_storeu_si256(pairs[col].as_mut_ptr().cast(), _mm256_madd_epi16(bs, ones));
        }
        let mut isum = [zero; TILE];
        let mut msum = [zero; TILE];
        for c in 0..4 {
            let z: [__m512i; 8] =
                std::array::from_fn(|t| _mm512_loadu_si512(rec.add(320 + 512 * c + 64 * t).cast()));
            for h in 0..2 {
                let j = 2 * c + h;
                let w = if h == 0 {
                    z.map(|z| _mm512_and_si512(z, m4))
                } else {
                    z.map(|z| _mm512_and_si512(z, mhi))
                };
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(64 + 16 * j).cast()));
                let mn = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(192 + 16 * j).cast()));
                for col in 0..C {
                    let y = ap[col].add(b * Q8_K_BYTES + Q8_K_QS + 32 * j);
                    let (mut u, mut v) = (zero, zero);
                    for t in 0..4 {
                        u = _mm512_dpbusd_epi32(u, w[t], bcast32(y.add(4 * t)));
                        v = _mm512_dpbusd_epi32(v, w[4 + t], bcast32(y.add(16 + 4 * t)));
                    }
                    let mut s = _mm512_add_epi32(u, v);
                    if h == 1 {
                        // 16·s_j exactly: the shift divides exactly.
                        s = _mm512_srai_epi32::<4>(s);
                    }
                    isum[col] = _mm512_add_epi32(isum[col], _mm512_mullo_epi32(s, sc));
                    let pj = _mm512_set1_epi32(pairs[col][j]);
                    msum[col] = _mm512_add_epi32(msum[col], _mm512_mullo_epi32(mn, pj));
                }
            }
        }
        for col in 0..C {
            let yd = _mm512_set1_ps(std::ptr::read_unaligned(
                ap[col].add(b * Q8_K_BYTES).cast::<f32>(),
            ));
            let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(isum[col]));
            acc[col] = _mm512_add_ps(acc[col], t);
            let t = _mm512_mul_ps(_mm512_mul_ps(dmin, yd), _mm512_cvtepi32_ps(msum[col]));
            acc[col] = _mm512_sub_ps(acc[col], t);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

fn q4_k_lanes_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q4_k_lanes_body::<1>,
        q4_k_lanes_body::<2>,
        q4_k_lanes_body::<3>,
        q4_k_lanes_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q4_KX16, Q8_K_BYTES), bodies)
}

/// Bytes of one packed Q6_K record: 16 rows' super-block `b` (see [`pack_q6_k`]).
pub(super) const Q6_KX16: usize = 32 + 256 + 4096;

/// Packs 16 Q6_K rows of `n` values for [`q6_k_packed_tile`]: per super-block, one record of
/// the 16 `d` (f16, row order), the sixteen 16-value sub-blocks' signed scales (16 rows each),
/// then each sub-block's levels as unsigned bytes `q + 32` (0..63) in quads. The six-bit
/// levels are unpacked here once, so the tile needs no bit shuffling (the record is 30 % larger
/// than the 16 rows it holds: 4384 bytes against 3360).
pub(super) fn pack_q6_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if rows.len() != TILE_ROWS || out.len() != nb * Q6_KX16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q6_KX16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q6_K_BYTES..(b + 1) * Q6_K_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[Q6_K_D..Q6_K_BYTES]);
            for j in 0..16 {
                rec[32 + 16 * j + r] = x[192 + j];
            }
            let (k, lane) = (r % 4, r / 4);
            for i in 0..256 {
                let (h, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
                let ql = &x[64 * h..64 * h + 64];
                let qh = &x[128 + 32 * h..128 + 32 * h + 32];
                let q = (crate::quant::q6_k_quant(ql, qh, quarter, l) as i32 + 32) as u8;
                let (j, e) = (i / 16, i % 16);
                rec[288 + 256 * j + 64 * k + 16 * lane + e] = q;
            }
        }
    }
}

/// The Q6_K body over packed records: 16 rows, `C` Q8_K activation columns. Per super-block and
/// row lane, the exact formula of [`super::tiles::q6_k_q8_k_exact`]: `isum = Σ_j sc_j·s_j` and
/// `msum = Σ_j sc_j·bsum_j` in i32, then `acc += (d·d_a)·(isum − 32·msum)` with separate
/// roundings, as the scalar code.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn q6_k_packed_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q6_KX16);
        if C == 1 {
            let mut l = 0;
            while l < Q6_KX16 {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let mut isum = [zero; TILE];
        let mut msum = [zero; TILE];
        for j in 0..16 {
            let q: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_loadu_si512(rec.add(288 + 256 * j + 64 * k).cast()));
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(32 + 16 * j).cast()));
            for col in 0..C {
                let y = ap[col].add(b * Q8_K_BYTES);
                let a = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(4 + 16 * j).cast()));
                let p: [__m512i; 4] = std::array::from_fn(|k| _mm512_dpbusd_epi32(zero, q[k], a));
                isum[col] = _mm512_add_epi32(isum[col], _mm512_mullo_epi32(reduce16(&p), sc));
                let bsum = std::ptr::read_unaligned(y.add(Q8_K_BSUMS + 2 * j).cast::<i16>()) as i32;
                msum[col] =
                    _mm512_add_epi32(msum[col], _mm512_mullo_epi32(sc, _mm512_set1_epi32(bsum)));
            }
        }
        for col in 0..C {
            let yd = _mm512_set1_ps(std::ptr::read_unaligned(
                ap[col].add(b * Q8_K_BYTES).cast::<f32>(),
            ));
            let net = _mm512_sub_epi32(isum[col], _mm512_slli_epi32::<5>(msum[col]));
            let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(net));
            acc[col] = _mm512_add_ps(acc[col], t);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

/// Packs 16 Q6_K rows of `n` values for [`q6_k_lanes_tile`]: [`pack_q6_k`]'s record (same
/// size, same head of `d` and scales, the levels as unsigned bytes `q + 32`) with the levels one
/// row per 32-bit lane: per 16-value sub-block `j`, four 64-byte vectors, vector `t` holding in
/// dword `r` row `r`'s levels `4t..4t + 4`.
pub(super) fn pack_q6_k_lanes(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if rows.len() != TILE_ROWS || out.len() != nb * Q6_KX16 {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q6_KX16).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q6_K_BYTES..(b + 1) * Q6_K_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[Q6_K_D..Q6_K_BYTES]);
            for j in 0..16 {
                rec[32 + 16 * j + r] = x[192 + j];
            }
            for i in 0..256 {
                let (h, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
                let ql = &x[64 * h..64 * h + 64];
                let qh = &x[128 + 32 * h..128 + 32 * h + 32];
                let q = (crate::quant::q6_k_quant(ql, qh, quarter, l) as i32 + 32) as u8;
                let (j, e) = (i / 16, i % 16);
                rec[288 + 256 * j + 64 * (e / 4) + 4 * r + e % 4] = q;
            }
        }
    }
}

/// The Q6_K body over [`pack_q6_k_lanes`] records: 16 rows (one per i32 lane), `C` Q8_K
/// columns. The integer `isum − 32·msum` of [`q6_k_packed_body`] as `Σ_j sc_j·(s_j − 32·bsum_j)`
/// (each sub-block's chain of four `vpdpbusd` with broadcast activation dwords starts at
/// `−32·bsum_j`), then the same f32 steps, so the results are the same bitwise.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k_lanes_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        let rec = g.add(b * Q6_KX16);
        if C == 1 {
            let mut l = 0;
            while l < Q6_KX16 {
                _mm_prefetch::<_MM_HINT_T1>(rec.wrapping_add(PACKED_PREFETCH_AHEAD + l).cast());
                l += 64;
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        // Per column, −32·bsum_j for the sixteen sub-blocks.
        let mut bias = [[0i32; 16]; TILE];
        for col in 0..C {
            let bs = _mm256_loadu_si256(ap[col].add(b * Q8_K_BYTES + Q8_K_BSUMS).cast());
            let v = _mm512_slli_epi32::<5>(_mm512_cvtepi16_epi32(bs));
            _mm512_storeu_si512(bias[col].as_mut_ptr().cast(), _mm512_sub_epi32(zero, v));
        }
        let mut isum = [zero; TILE];
        for j in 0..16 {
            let q: [__m512i; 4] =
                std::array::from_fn(|t| _mm512_loadu_si512(rec.add(288 + 256 * j + 64 * t).cast()));
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(32 + 16 * j).cast()));
            for col in 0..C {
                let y = ap[col].add(b * Q8_K_BYTES + Q8_K_QS + 16 * j);
                let mut u = _mm512_set1_epi32(bias[col][j]);
                for t in 0..4 {
                    u = _mm512_dpbusd_epi32(u, q[t], bcast32(y.add(4 * t)));
                }
                isum[col] = _mm512_add_epi32(isum[col], _mm512_mullo_epi32(u, sc));
            }
        }
        for col in 0..C {
            let yd = _mm512_set1_ps(std::ptr::read_unaligned(
                ap[col].add(b * Q8_K_BYTES).cast::<f32>(),
            ));
            let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(isum[col]));
            acc[col] = _mm512_add_ps(acc[col], t);
        }
    }
    for c in 0..C {
        _mm512_storeu_ps(res[c].as_mut_ptr(), acc[c]);
    }
}

fn q6_k_lanes_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies = [
        q6_k_lanes_body::<1>,
        q6_k_lanes_body::<2>,
        q6_k_lanes_body::<3>,
        q6_k_lanes_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q6_KX16, Q8_K_BYTES), bodies)
}

/// The monomorphized 16-row body for one column count.
type Body16 = unsafe fn(
    usize,
    &[*const u8; TILE_ROWS],
    __m512i,
    &[*const u8; TILE],
    &mut [[f32; TILE_ROWS]; TILE],
);

fn pick16<F: Format>(na: usize) -> Body16 {
    match na {
        1 => body16::<F, 1>,
        2 => body16::<F, 2>,
        3 => body16::<F, 3>,
        _ => body16::<F, 4>,
    }
}

/// A tile of up to [`TILE_ROWS`] weight rows: more than four go through the 16-row body (unused
/// rows alias row 0 and their results are dropped), otherwise the table's `narrow` tile. Slices are
/// checked like [`avx2::run_tile`]: blocks missing from a short slice are skipped, rows or
/// columns beyond the limits ignored, outputs that do not fit `out` dropped.
fn run16<F: Format>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32], narrow: super::QuantTile) {
    let (nw, na) = (w.len().min(TILE_ROWS), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut nb = n / 32;
    for row in &w[..nw] {
        nb = nb.min(row.len() / F::WSIZE);
    }
    for row in &a[..na] {
        nb = nb.min(row.len() / Q8_0_BYTES);
    }
    let mut wp = [w[0].as_ptr(); TILE_ROWS];
    for (p, row) in wp.iter_mut().zip(&w[..nw]) {
        *p = row.as_ptr();
    }
    // The gather takes row offsets as i32: rows of one matrix always qualify; rows scattered
    // further apart (never in a matmul) go through the narrow tile four at a time.
    let mut offsets = [0i32; TILE_ROWS];
    let mut fits = nw > TILE;
    for (o, p) in offsets.iter_mut().zip(&wp) {
        match i32::try_from((*p as isize).wrapping_sub(wp[0] as isize)) {
            Ok(v) => *o = v,
            Err(_) => fits = false,
        }
    }
    if !fits {
        for (i, rows) in w[..nw].chunks(TILE).enumerate() {
            let mut part = [0f32; TILE * TILE];
            narrow(n, rows, &a[..na], &mut part[..rows.len() * na]);
            for (j, v) in part[..rows.len() * na].iter().enumerate() {
                if let Some(o) = out.get_mut(i * TILE * na + j) {
                    *o = *v;
                }
            }
        }
        return;
    };
    let mut ap = [a[0].as_ptr(); TILE];
    for (p, row) in ap.iter_mut().zip(&a[..na]) {
        *p = row.as_ptr();
    }
    let mut res = [[0f32; TILE_ROWS]; TILE];
    let body = pick16::<F>(na);
    // SAFETY: the body needs AVX-512 F/BW/VNNI, AVX2, FMA and F16C, which `detect` (or
    // `detect_evex`) verified before this table could be obtained. Every row pointer starts a slice holding at
    // least `nb` blocks (unused rows alias row 0), and each gathered dword lies inside its
    // row's block `b < nb` (offset `idx[r]` from row 0 is exactly row `r`'s start).
    unsafe {
        let idx = _mm512_loadu_si512(offsets.as_ptr().cast());
        body(nb, &wp, idx, &ap, &mut res);
    }
    scatter(&res, nw, na, out);
}

fn q4_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run16::<Q40>(n, w, a, out, avxvnni::q4_0_q8_0_tile)
}

fn q8_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run16::<Q80>(n, w, a, out, avxvnni::q8_0_q8_0_tile)
}

fn q4_0_q8_0_tile_evex(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run16::<Q40>(n, w, a, out, avx2::q4_0_q8_0_tile)
}

fn q8_0_q8_0_tile_evex(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run16::<Q80>(n, w, a, out, avx2::q8_0_q8_0_tile)
}

/// The AVX-512 row primitives (the AVX2 ones with a 512-bit [`Gemm`], f16 dots and weighted
/// sums and activation quantizers), part of [`AVX512VNNI_TABLE`]: they need AVX-512 F and BW
/// besides what the AVX2 row primitives need, which that table's detection verifies.
const AVX512_ROWS: RowOps = RowOps {
    gemm_f32: row_gemm_f32,
    quantize_q8_0,
    quantize_q8_k,
    dot_f16: row_dot_f16,
    dots_f16: row_dots_f16,
    wsum_f16: row_wsum_f16,
    ..avx2::AVX2_ROWS
};

/// [`Gemm`] rows `M` at a time, lanes over the columns: 64 columns per step in four 16-lane
/// accumulators per row, then 16, then the scalar tail with `mul_add` (the same fused
/// operation), so every output is the scalar twin's fma chain over `d`. `a` and `c` point at the
/// block's first row.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn gemm_rows<const M: usize>(g: &Gemm<'_>, a: *const f32, c: *mut f32) {
    let (n, k, b) = (g.n, g.k, g.b.as_ptr());
    let mut j = 0;
    while j + 64 <= n {
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        for d in 0..k {
            let bp = b.add(d * g.ldb + j);
            let bv: [__m512; 4] = std::array::from_fn(|u| _mm512_loadu_ps(bp.add(16 * u)));
            for i in 0..M {
                let av = _mm512_set1_ps(*a.add(i * g.lda + d));
                for u in 0..4 {
                    acc[i][u] = _mm512_fmadd_ps(av, bv[u], acc[i][u]);
                }
            }
        }
        for i in 0..M {
            for u in 0..4 {
                _mm512_storeu_ps(c.add(i * g.ldc + j + 16 * u), acc[i][u]);
            }
        }
        j += 64;
    }
    while j + 16 <= n {
        let mut acc = [_mm512_setzero_ps(); M];
        for d in 0..k {
            let b0 = _mm512_loadu_ps(b.add(d * g.ldb + j));
            for i in 0..M {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(i * g.lda + d)), b0, acc[i]);
            }
        }
        for i in 0..M {
            _mm512_storeu_ps(c.add(i * g.ldc + j), acc[i]);
        }
        j += 16;
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

/// Q8_0 quantization of one 32-value block, the reference's arithmetic lane by lane:
/// `d = amax/127`, `id = 1/d` (0 for an all-zero block), `q = round(x·id)` with ties away from
/// zero (truncate, then step away from zero where the exact remainder is at least one half),
/// saturated to i8 like Rust's `as i8`. Returns `None` for a block holding a NaN (whose
/// reference result depends on where it sits) or an infinity: the caller quantizes those in
/// scalar.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn q8_0_block(x: *const f32, y: *mut u8) -> Option<()> {
    let v = [_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16))];
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[1]);
    if nan != 0 {
        return None;
    }
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    if !amax.is_finite() {
        // An infinity makes `id` 0 and `∞·0` NaN, which the reference casts to 0.
        return None;
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    let half = _mm512_set1_ps(0.5);
    for (h, &vh) in v.iter().enumerate() {
        let s = _mm512_mul_ps(vh, idv);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
        // s − t is exact (same sign and binade or smaller), so the tie test is exact.
        let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(s, t)), half);
        let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(s, _mm512_set1_ps(-0.0)));
        let r = _mm512_mask_add_ps(t, away, t, one);
        // Integer-valued, so the conversion is exact; vpmovsdb saturates like `as i8`.
        let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r));
        _mm_storeu_si128(y.add(Q8_0_QS + 16 * h).cast(), q);
    }
    let dh = half::f16::from_f32(d).to_bits().to_le_bytes();
    std::ptr::copy_nonoverlapping(dh.as_ptr(), y, 2);
    Some(())
}

fn quantize_q8_0(x: &[f32], y: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    super::rows::quantize_blocks(x, y, (32, 34), q8_0_block, crate::quant::quantize_row_q8_0)
}

/// Q8_K quantization of one 256-value super-block, the reference's arithmetic lane by lane:
/// `max` = the first value of largest magnitude, `iscale = −127/max`,
/// `q = min(round_half_even(iscale·x), 127)` (the reference's `nearest_int`, exact for these
/// magnitudes), `d = 1/iscale`, and the 16-value quant sums. Returns `None` for a block with a
/// NaN or an infinity (the caller quantizes those in scalar); an all-zero block is all zeros.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn q8_k_block(x: *const f32, y: *mut u8) -> Option<()> {
    let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(x.add(16 * i)));
    let mut amax = _mm512_setzero_ps();
    for &vi in &v {
        // max_ps returns its second operand where either is NaN: checked below.
        amax = _mm512_max_ps(_mm512_abs_ps(vi), amax);
    }
    let amax = _mm512_reduce_max_ps(amax);
    if !amax.is_finite()
        || v.iter()
            .any(|&vi| _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(vi, vi) != 0)
    {
        return None;
    }
    if amax == 0.0 {
        std::ptr::write_bytes(y, 0, Q8_K_BYTES);
        return Some(());
    }
    // The first value whose magnitude is amax, with its sign.
    let target = _mm512_set1_ps(amax);
    let mut max = amax;
    for (i, &vi) in v.iter().enumerate() {
        let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(vi), target);
        if hit != 0 {
            max = *x.add(16 * i + hit.trailing_zeros() as usize);
            break;
        }
    }
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        // A max below ~4e-37: the reference's products overflow; leave it to the reference.
        return None;
    }
    let sv = _mm512_set1_ps(iscale);
    let top = _mm512_set1_epi32(127);
    let mut sums = [0i16; 16];
    for (i, &vi) in v.iter().enumerate() {
        // Products lie within ±127.00002, so the conversion (round half to even, the default
        // MXCSR mode) gives what `nearest_int` gives.
        let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(sv, vi)), top);
        _mm_storeu_si128(y.add(4 + 16 * i).cast(), _mm512_cvtsepi32_epi8(q));
        sums[i] = _mm512_reduce_add_epi32(q) as i16;
    }
    std::ptr::copy_nonoverlapping((1.0 / iscale).to_le_bytes().as_ptr(), y, 4);
    std::ptr::copy_nonoverlapping(sums.as_ptr().cast::<u8>(), y.add(Q8_K_BSUMS), 32);
    Some(())
}

fn quantize_q8_k(x: &[f32], y: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    super::rows::quantize_blocks(
        x,
        y,
        (256, Q8_K_BYTES),
        q8_k_block,
        crate::quant::quantize_row_q8_k,
    )
}

/// `dot_f16`: 16 lanes, one fused chain per lane over the full 16-value chunks, the lanes
/// summed by halving (`l + l+8`, then `+4`, `+2`, `+1`), then the tail multiplied and added
/// separately: the per-row arithmetic of [`dots_f16_body`].
fn row_dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let mut lanes = [0f32; 16];
    // SAFETY: AVX-512 F (and AVX2/FMA/F16C) were detected before this table could be obtained;
    // the chain reads the n / 16 full chunks of `a` and `b` (2-byte halves).
    unsafe {
        _mm512_storeu_ps(
            lanes.as_mut_ptr(),
            f16_chain(a.as_ptr(), b.as_ptr(), n / 16),
        )
    };
    let mut h = lanes;
    for width in [8, 4, 2, 1] {
        for l in 0..width {
            h[l] += h[l + width];
        }
    }
    dot_f16_tail(h[0], a, b, n)
}

/// Adds the products of the values past the last full 16-value chunk to `s`.
#[inline]
fn dot_f16_tail(mut s: f32, a: &[f32], b: &[f16], n: usize) -> f32 {
    for i in n / 16 * 16..n {
        s += a[i] * b[i].to_f32();
    }
    s
}

/// `acc = fma(a_c, b_c, acc)` over `chunks` 16-value chunks, from zero.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
unsafe fn f16_chain(a: *const f32, b: *const f16, chunks: usize) -> __m512 {
    let mut acc = _mm512_setzero_ps();
    for c in 0..chunks {
        let x = _mm512_cvtph_ps(_mm256_loadu_si256(b.add(16 * c).cast()));
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(16 * c)), x, acc);
    }
    acc
}

fn row_dots_f16(q: &[f32], k: &[f16], stride: usize, out: &mut [f32]) {
    let (n, rows) = (q.len(), out.len());
    if rows == 0 {
        return;
    }
    assert!(
        (rows - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(n))
            .is_some_and(|end| end <= k.len()),
        "dots rows do not fit"
    );
    for (g, o) in out.chunks_mut(16).enumerate() {
        let p0 = 16 * g;
        let mut sums = [0f32; 16];
        // SAFETY: AVX-512 F (and AVX2/FMA/F16C) were detected before this table could be
        // obtained; the assert keeps every row p < rows (n halves at p·stride) inside `k`, and
        // the body reads rows p0..p0 + o.len() only (missing ones repeat the last).
        unsafe {
            dots_f16_body(
                q.as_ptr(),
                n,
                k.as_ptr().add(p0 * stride),
                stride,
                o.len(),
                &mut sums,
            )
        };
        for (r, v) in o.iter_mut().enumerate() {
            let row = &k[(p0 + r) * stride..(p0 + r) * stride + n];
            *v = dot_f16_tail(sums[r], q, row, n);
        }
    }
}

/// Up to 16 rows' [`f16_chain`]s, reduced together: the 16 accumulators are summed by halving
/// with shuffles across registers (each lane of the result sees exactly the additions of
/// [`row_dot_f16`]'s halving), `sums[r]` for row `r < rows`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn dots_f16_body(
    q: *const f32,
    n: usize,
    k: *const f16,
    stride: usize,
    rows: usize,
    sums: &mut [f32; 16],
) {
    let acc: [__m512; 16] =
        std::array::from_fn(|r| f16_chain(q, k.add(r.min(rows - 1) * stride), n / 16));
    // l + l+8: [x units 0,1 | y units 0,1] + [x units 2,3 | y units 2,3].
    let b: [__m512; 8] = std::array::from_fn(|i| {
        let (x, y) = (acc[2 * i], acc[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(x, y),
            _mm512_shuffle_f32x4::<0xEE>(x, y),
        )
    });
    // l + l+4: unit u of c[j] is row 4j + u.
    let c: [__m512; 4] = std::array::from_fn(|j| {
        let (x, y) = (b[2 * j], b[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        )
    });
    // l + l+2 within units: unit u of d[h] holds rows 8h + u and 8h + 4 + u.
    let d: [__m512; 2] = std::array::from_fn(|h| {
        let (x, y) = (c[2 * h], c[2 * h + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(x, y),
            _mm512_shuffle_ps::<0xEE>(x, y),
        )
    });
    // l + l+1: lane 4u + s is row u + 4s.
    let e = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(d[0], d[1]),
        _mm512_shuffle_ps::<0xDD>(d[0], d[1]),
    );
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_ps(sums.as_mut_ptr(), _mm512_permutexvar_ps(order, e));
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
    // SAFETY: AVX-512 F (and AVX2/FMA/F16C) were detected before this table could be obtained;
    // the assert above keeps every row p < n_rows (out.len() halves at p·stride) inside `v`.
    unsafe { wsum_f16_body(n_rows, w.as_ptr(), v.as_ptr(), stride, out) }
}

/// `wsum_f16` 128 output lanes at a time in eight 16-lane accumulators held across all rows
/// (one pass over the rows for a 128-wide head), then 16, then the AVX2 body for the rest:
/// every element sees the fused multiply-adds (or, in the scalar tail, the separate multiply
/// and add) of `axpy_f16`, row after row.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn wsum_f16_body(
    n_rows: usize,
    w: *const f32,
    v: *const f16,
    stride: usize,
    out: &mut [f32],
) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let mut i = 0;
    while i + 128 <= n {
        let mut acc: [__m512; 8] = std::array::from_fn(|u| _mm512_loadu_ps(o.add(i + 16 * u)));
        for p in 0..n_rows {
            let wv = _mm512_set1_ps(*w.add(p));
            let row = v.add(p * stride + i);
            for u in 0..8 {
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * u).cast()));
                acc[u] = _mm512_fmadd_ps(wv, x, acc[u]);
            }
        }
        for u in 0..8 {
            _mm512_storeu_ps(o.add(i + 16 * u), acc[u]);
        }
        i += 128;
    }
    while i + 16 <= n {
        let mut acc = _mm512_loadu_ps(o.add(i));
        for p in 0..n_rows {
            let x = _mm512_cvtph_ps(_mm256_loadu_si256(v.add(p * stride + i).cast()));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(p)), x, acc);
        }
        _mm512_storeu_ps(o.add(i), acc);
        i += 16;
    }
    if i < n {
        avx2::wsum_f16_body(n_rows, w, v.add(i), stride, &mut out[i..]);
    }
}
