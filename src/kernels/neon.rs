//! Baseline ARMv8.0 NEON kernels (every aarch64 CPU: Raspberry Pi 3/4 Cortex-A53/A72 and up).
//!
//! The integer sums are computed with widening multiplies (`smull`/`smlal` → i16 while the
//! products fit, then `saddlp`/`smlal` into i32), exactly; the float steps are a scalar formula
//! evaluated operation for operation, so results are bitwise those of a scalar twin:
//! - Q4_0/Q8_0 and Q8_0/Q8_0: one exact integer sum per block, then the generic kernels' float
//!   expression: **bit-identical** to [`super::generic`].
//! - Q4_K/Q6_K: one exact integer sum per super-block, scaled once, as the x86 SIMD kernels:
//!   bit-identical to [`super::tiles::q4_k_q8_k_exact`] /
//!   [`super::tiles::q6_k_q8_k_exact`], which differ from the generic eight-lane sums only by
//!   f32 rounding.
//!
//! Besides the single dots, the table has plain tiles ([`super::QuantTile`]) for these four
//! types: up to 4 weight rows × 4 activation rows per call, each weight block unpacked once
//! for all the columns and each activation block loaded once per row; the 32-block tiles reduce
//! four sums at once into one vector and scale them lane by lane. No repacking: without `sdot`
//! the rows-in-lanes layout of [`super::neon_dotprod`] has no instruction that uses it (a
//! broadcast activation times eight rows' bytes overflows i16 after two products), so the
//! records would only reorder memory.
//!
//! The float kernels (f16/f32 weights) sum f32 products in f64 like the generic ones but in a
//! different order (two f64 lanes), so they agree to f64 rounding, not bit for bit. BF16 and
//! the Q4_1/Q5_x kernels use the generic code.
//!
//! Every kernel checks its slice lengths once (blocks beyond the shorter input are skipped, as
//! in the generic kernels) and then reads with unaligned NEON loads inside those bounds.

// Tile bodies index fixed-size register arrays by row/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::{generic, Kernels, TILE};
use crate::quant::blocks::{
    Q4_0_BYTES, Q4_0_QS, Q4_K_BYTES, Q4_K_DMIN, Q6_K_BYTES, Q6_K_D, Q6_K_SCALES, Q8_0_BYTES,
    Q8_0_QS, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{read_f16, read_f32, unpack_scale_min_k4, GgmlType, QK_K};

/// The baseline NEON table.
pub static NEON: Kernels = NEON_TABLE;

/// [`NEON`] as a constant, for tables that replace only some of its entries.
pub(crate) const NEON_TABLE: Kernels = Kernels {
    name: "neon",
    // Float tiles: 8-lane FMA register tiles (the x86 tiles' formula). Quantized: NEON for the
    // four types of the shipped files (tiles equal to the dots bitwise); Q4_1, Q5_0, Q5_1 and
    // Q5_K keep the generic rows (one generic dot per tile output).
    weights: super::GENERIC_WEIGHTS
        .float(GgmlType::F32, vec_dot_f32, super::float_neon::f32_neon)
        .float(GgmlType::F16, vec_dot_f16_f32, super::float_neon::f16_neon)
        .float(
            GgmlType::BF16,
            generic::vec_dot_bf16_f32,
            super::float_neon::bf16_neon,
        )
        .quant(GgmlType::Q4_0, vec_dot_q4_0_q8_0, q4_0_q8_0_tile)
        .quant(GgmlType::Q8_0, vec_dot_q8_0_q8_0, q8_0_q8_0_tile)
        .quant(GgmlType::Q4_K, vec_dot_q4_k_q8_k, q4_k_q8_k_tile)
        .quant(GgmlType::Q6_K, vec_dot_q6_k_q8_k, q6_k_q8_k_tile),
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
    // Short rows are not an error here: like the x86 wrappers, the blocks missing from either
    // row are skipped, never read (tests/kernels.rs `short_rows_are_skipped_not_read`).
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
    for (x, y) in w
        .chunks_exact(Q4_0_BYTES)
        .zip(a.chunks_exact(Q8_0_BYTES))
        .take(nb)
    {
        let (lo, hi) = q4_0_levels(&x[Q4_0_QS..Q4_0_BYTES]);
        // SAFETY: register-only NEON operation.
        let acc = dot16(
            dot16(unsafe { vdupq_n_s32(0) }, lo, load_s8(y, Q8_0_QS)),
            hi,
            load_s8(y, Q8_0_QS + 16),
        );
        sumf = (hsum(acc) as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q8_0 weights · Q8_0 activations (bit-identical to the generic kernel).
pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q8_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w
        .chunks_exact(Q8_0_BYTES)
        .zip(a.chunks_exact(Q8_0_BYTES))
        .take(nb)
    {
        // SAFETY: register-only NEON operation.
        let zero = unsafe { vdupq_n_s32(0) };
        let acc = dot16(
            dot16(zero, load_s8(x, Q8_0_QS), load_s8(y, Q8_0_QS)),
            load_s8(x, Q8_0_QS + 16),
            load_s8(y, Q8_0_QS + 16),
        );
        sumf = (hsum(acc) as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Plain (unpacked) tiles over row slices as stored, with widening multiplies: `smull`/`smlal`
// into i16 lanes while the products fit, then into i32 (`saddlp`, `smlal` by a scale). Every
// block (Q4_0, Q8_0) or super-block (Q4_K, Q6_K) sum is an exact integer whatever the lanes,
// and the f32 steps are the scalar formulas, so a tile output equals the table's single dot
// bitwise whatever the tile shape. Weight unpacking is shared by a tile's columns.
// ---------------------------------------------------------------------------------------------

/// 16 bytes at `p` as signed bytes.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline(always)]
pub(crate) unsafe fn ld(p: *const u8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes; no alignment requirement.
    unsafe { vld1q_s8(p.cast()) }
}

/// Four f16 at `p` (unaligned) as f32 (`fcvtl`, base AdvSIMD; exact).
///
/// # Safety
/// `p` must point to 8 readable bytes.
#[inline(always)]
pub(crate) unsafe fn f16x4(p: *const u8) -> float32x4_t {
    // SAFETY: the caller guarantees 8 readable bytes (u8 loads have no alignment requirement);
    // `fcvtl` exists on every aarch64 CPU and touches only registers.
    unsafe {
        let h = vreinterpret_u16_u8(vld1_u8(p));
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

/// An f16 bit pattern as f32 (`fcvt`, base ARMv8; exact, like [`read_f16`]).
#[inline(always)]
pub(crate) fn f16_bits(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: `fmov`/`fcvt` between registers exist on every aarch64 CPU.
    unsafe {
        std::arch::asm!(
            "fmov {o:s}, {b:w}",
            "fcvt {o:s}, {o:h}",
            b = in(reg) bits as u32,
            o = out(vreg) out,
            options(pure, nomem, nostack),
        );
    }
    out
}

/// The f16 at `p` (unaligned) as f32.
///
/// # Safety
/// `p` must point to 2 readable bytes.
#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes.
    f16_bits(unsafe { std::ptr::read_unaligned(p.cast::<u16>()) })
}

/// The f32 at `p` (unaligned).
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 4 readable bytes.
    unsafe { std::ptr::read_unaligned(p.cast::<f32>()) }
}

/// Lane `i` = the sum of the four lanes of `v[i]`.
#[inline(always)]
fn reduce4(v: [int32x4_t; 4]) -> int32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe { vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3])) }
}

/// A 32-value weight block format of the plain tiles (activations Q8_0).
trait Block32 {
    /// Bytes per weight block (an f16 scale first).
    const WSIZE: usize;
    /// The block at `p` as signed levels: (values 0..16, values 16..32).
    ///
    /// # Safety
    /// `p` must point to a whole block.
    unsafe fn halves(p: *const u8) -> [int8x16_t; 2];
    /// The exact block sum `Σ w·a` of weight and activation halves, in four i32 lanes.
    fn sum(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t;
}

/// Q4_0: levels − 8 (−8..7).
struct PlainQ4_0;

impl Block32 for PlainQ4_0 {
    const WSIZE: usize = Q4_0_BYTES;
    #[inline(always)]
    unsafe fn halves(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller guarantees the block's 18 bytes.
        let (lo, hi) = q4_0_levels(unsafe { std::slice::from_raw_parts(p.add(2), 16) });
        [lo, hi]
    }
    #[inline(always)]
    fn sum(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t {
        // SAFETY: register-only NEON operations. Four products per i16 lane, each at most
        // 8·127 in magnitude (Q8_0 activations are in −127..127): at most 4064.
        unsafe {
            let p = vmull_s8(vget_low_s8(w[0]), vget_low_s8(a[0]));
            let p = vmlal_high_s8(p, w[0], a[0]);
            let p = vmlal_s8(p, vget_low_s8(w[1]), vget_low_s8(a[1]));
            vpaddlq_s16(vmlal_high_s8(p, w[1], a[1]))
        }
    }
}

/// Q8_0 weights (−128..127).
struct PlainQ8_0;

impl Block32 for PlainQ8_0 {
    const WSIZE: usize = Q8_0_BYTES;
    #[inline(always)]
    unsafe fn halves(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller guarantees the block's 34 bytes.
        unsafe { [ld(p.add(Q8_0_QS)), ld(p.add(Q8_0_QS + 16))] }
    }
    #[inline(always)]
    fn sum(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t {
        // SAFETY: register-only NEON operations. Two products per i16 lane, each at most
        // 128·127: at most 32512.
        unsafe {
            let p = vmlal_high_s8(vmull_s8(vget_low_s8(w[0]), vget_low_s8(a[0])), w[0], a[0]);
            let q = vmlal_high_s8(vmull_s8(vget_low_s8(w[1]), vget_low_s8(a[1])), w[1], a[1]);
            vpadalq_s16(vpaddlq_s16(p), q)
        }
    }
}

/// The plain 32-block tile body: `R` weight rows × `C` activation rows (pointers to the rows'
/// first blocks) over `nb` blocks, `res[r][c]`. Per block the `R·C` exact sums are reduced four
/// at a time into one vector (lanes = rows when `C = 1`, else columns), and each lane takes
/// `acc = fma(s, d_w·d_a, acc)`, the scalar formula.
///
/// # Safety
/// Each of the first `R` weight and `C` activation pointers must hold `nb` blocks.
#[inline(always)]
unsafe fn tile32_body<F: Block32, const R: usize, const C: usize>(
    nb: usize,
    w: &[*const u8; TILE],
    a: &[*const u8; TILE],
    res: &mut [[f32; TILE]; TILE],
) {
    // SAFETY (whole body): reads stay inside the blocks the caller guarantees; the rest is
    // baseline NEON on registers and local arrays.
    unsafe {
        let z = vdupq_n_s32(0);
        let mut acc = [vdupq_n_f32(0.0); TILE];
        for b in 0..nb {
            let mut ah = [[vdupq_n_s8(0); 2]; C];
            let mut ad = [0f32; TILE];
            for c in 0..C {
                let y = a[c].add(b * Q8_0_BYTES);
                ad[c] = f16_at(y);
                ah[c] = [ld(y.add(Q8_0_QS)), ld(y.add(Q8_0_QS + 16))];
            }
            let mut wd = [0f32; TILE];
            let mut s = [[z; TILE]; TILE];
            for r in 0..R {
                let x = w[r].add(b * F::WSIZE);
                wd[r] = f16_at(x);
                let wh = F::halves(x);
                for c in 0..C {
                    s[r][c] = F::sum(&wh, &ah[c]);
                }
            }
            if C == 1 {
                let v = vcvtq_f32_s32(reduce4([s[0][0], s[1][0], s[2][0], s[3][0]]));
                let d = vmulq_n_f32(vld1q_f32(wd.as_ptr()), ad[0]);
                acc[0] = vfmaq_f32(acc[0], v, d);
            } else {
                let da = vld1q_f32(ad.as_ptr());
                for r in 0..R {
                    let v = vcvtq_f32_s32(reduce4(s[r]));
                    acc[r] = vfmaq_f32(acc[r], v, vmulq_n_f32(da, wd[r]));
                }
            }
        }
        let mut lanes = [[0f32; TILE]; TILE];
        for (l, v) in lanes.iter_mut().zip(acc) {
            vst1q_f32(l.as_mut_ptr(), v);
        }
        for r in 0..R {
            for c in 0..C {
                res[r][c] = if C == 1 { lanes[0][r] } else { lanes[r][c] };
            }
        }
    }
}

/// Checks a plain tile call's slices and runs the body for its shape (sides of 3 run as 4,
/// the extra row or column a duplicate whose outputs are dropped). Blocks missing from a
/// too-short slice are skipped for the whole tile, rows or columns beyond [`TILE`] ignored
/// and outputs that do not fit `out` dropped: nothing panics, nothing is read out of bounds.
fn run_tile32<F: Block32>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    let (nw, na) = (w.len().min(TILE), a.len().min(TILE));
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
    let wp: [*const u8; TILE] = std::array::from_fn(|r| w[r.min(nw - 1)].as_ptr());
    let ap: [*const u8; TILE] = std::array::from_fn(|c| a[c.min(na - 1)].as_ptr());
    let mut res = [[0f32; TILE]; TILE];
    // SAFETY: every row pointer (duplicates included) holds the `nb` blocks the body reads.
    unsafe {
        match (nw, na) {
            (1, 1) => tile32_body::<F, 1, 1>(nb, &wp, &ap, &mut res),
            (1, 2) => tile32_body::<F, 1, 2>(nb, &wp, &ap, &mut res),
            (1, _) => tile32_body::<F, 1, 4>(nb, &wp, &ap, &mut res),
            (2, 1) => tile32_body::<F, 2, 1>(nb, &wp, &ap, &mut res),
            (2, 2) => tile32_body::<F, 2, 2>(nb, &wp, &ap, &mut res),
            (2, _) => tile32_body::<F, 2, 4>(nb, &wp, &ap, &mut res),
            (_, 1) => tile32_body::<F, 4, 1>(nb, &wp, &ap, &mut res),
            (_, 2) => tile32_body::<F, 4, 2>(nb, &wp, &ap, &mut res),
            _ => tile32_body::<F, 4, 4>(nb, &wp, &ap, &mut res),
        }
    }
    for r in 0..nw {
        for c in 0..na {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = res[r][c];
            }
        }
    }
}

/// Q4_0 weights · Q8_0 activations, a plain NEON tile (see [`super::QuantTile`]).
pub fn q4_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile32::<PlainQ4_0>(n, w, a, out)
}

/// Q8_0 weights · Q8_0 activations, a plain NEON tile (see [`super::QuantTile`]).
pub fn q8_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile32::<PlainQ8_0>(n, w, a, out)
}

/// A K-quant super-block format of the plain tiles (activations Q8_K).
trait SuperBlock {
    /// Bytes per super-block.
    const WSIZE: usize;
    /// One weight super-block unpacked for [`SuperBlock::add`].
    type Unpacked;
    /// # Safety
    /// `x` must point to a whole super-block.
    unsafe fn unpack(x: *const u8) -> Self::Unpacked;
    /// The super-block's contribution to `acc` against the Q8_K block at `y`: the exact
    /// formula of [`super::tiles::q4_k_q8_k_exact`] / [`super::tiles::q6_k_q8_k_exact`].
    ///
    /// # Safety
    /// `y` must point to a whole Q8_K block.
    unsafe fn add(acc: f32, x: &Self::Unpacked, y: *const u8) -> f32;
}

/// Q4_K unpacked: the 256 levels (0..15) in 16-value vectors (`lv[2j]`, `lv[2j + 1]`:
/// sub-block `j`), the eight six-bit scales and the eight mins as i16, `d` and `dmin`.
struct Q4KBlock {
    lv: [int8x16_t; 16],
    sc: [i16; 8],
    mins: int16x8_t,
    d: f32,
    dmin: f32,
}

struct PlainQ4K;

impl SuperBlock for PlainQ4K {
    const WSIZE: usize = Q4_K_BYTES;
    type Unpacked = Q4KBlock;
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> Q4KBlock {
        // SAFETY (whole function): reads inside the caller's 144 bytes; NEON on registers.
        unsafe {
            let packed = std::slice::from_raw_parts(x.add(4), 12);
            let mut sc = [0i16; 8];
            let mut mins = [0i16; 8];
            for j in 0..8 {
                let (s, m) = unpack_scale_min_k4(j, packed);
                (sc[j], mins[j]) = (s as i16, m as i16);
            }
            let m4 = vdupq_n_u8(0x0F);
            let mut lv = [vdupq_n_s8(0); 16];
            for c in 0..4 {
                for h in 0..2 {
                    // Chunk c's bytes 16h..16h + 16: values 64c + 16h.. (low nibbles,
                    // sub-block 2c) and 64c + 32 + 16h.. (high nibbles, sub-block 2c + 1).
                    let q = vld1q_u8(x.add(16 + 32 * c + 16 * h));
                    lv[4 * c + h] = vreinterpretq_s8_u8(vandq_u8(q, m4));
                    lv[4 * c + 2 + h] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
                }
            }
            Q4KBlock {
                lv,
                sc,
                mins: vld1q_s16(mins.as_ptr()),
                d: f16_at(x),
                dmin: f16_at(x.add(Q4_K_DMIN)),
            }
        }
    }
    #[inline(always)]
    unsafe fn add(acc: f32, x: &Q4KBlock, y: *const u8) -> f32 {
        // SAFETY (whole function): reads inside the caller's 292-byte Q8_K block; NEON on
        // registers. Four products per i16 lane, each at most 15·128: at most 7680; the
        // scaled sums are formed in i32 by `smlal`.
        unsafe {
            let mut isum = vdupq_n_s32(0);
            for j in 0..8 {
                let (a0, a1) = (
                    ld(y.add(Q8_K_QS + 32 * j)),
                    ld(y.add(Q8_K_QS + 16 + 32 * j)),
                );
                let (l0, l1) = (x.lv[2 * j], x.lv[2 * j + 1]);
                let p = vmull_s8(vget_low_s8(l0), vget_low_s8(a0));
                let p = vmlal_high_s8(p, l0, a0);
                let p = vmlal_s8(p, vget_low_s8(l1), vget_low_s8(a1));
                let p = vmlal_high_s8(p, l1, a1);
                isum = vmlal_n_s16(isum, vget_low_s16(p), x.sc[j]);
                isum = vmlal_high_n_s16(isum, p, x.sc[j]);
            }
            // Σ_j m_j·(bsum_2j + bsum_2j+1), |pair| <= 4096.
            let pairs = vpaddq_s16(
                vreinterpretq_s16_u8(vld1q_u8(y.add(Q8_K_BSUMS))),
                vreinterpretq_s16_u8(vld1q_u8(y.add(276))),
            );
            let m = vmull_s16(vget_low_s16(x.mins), vget_low_s16(pairs));
            let msum = vaddvq_s32(vmlal_high_s16(m, x.mins, pairs));
            let yd = f32_at(y);
            let acc = acc + (x.d * yd) * vaddvq_s32(isum) as f32;
            acc - (x.dmin * yd) * msum as f32
        }
    }
}

/// Q6_K unpacked: the 256 levels − 32 (−32..31) in 16-value vectors (`lv[j]`: sub-block `j`),
/// the sixteen signed scales and `d`.
struct Q6KBlock {
    lv: [int8x16_t; 16],
    sc: [i16; 16],
    d: f32,
}

struct PlainQ6K;

impl SuperBlock for PlainQ6K {
    const WSIZE: usize = Q6_K_BYTES;
    type Unpacked = Q6KBlock;
    /// Half `h` (128 values) uses ql[64h..64h + 64] and qh[32h..32h + 32]; value
    /// 128h + 32·quarter + l has low nibble `ql[l + 32·(quarter & 1)] >> (4·(quarter >> 1))`
    /// and high bits `qh[l] >> 2·quarter`.
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> Q6KBlock {
        // SAFETY (whole function): reads inside the caller's 210 bytes; NEON on registers.
        unsafe {
            let mut sc = [0i16; 16];
            for (j, s) in sc.iter_mut().enumerate() {
                *s = *x.add(Q6_K_SCALES + j) as i8 as i16;
            }
            let m4 = vdupq_n_u8(0x0F);
            let m2 = vdupq_n_u8(0x03);
            let level = |low: uint8x16_t, high: uint8x16_t| {
                let v = vorrq_u8(low, vshlq_n_u8::<4>(vandq_u8(high, m2)));
                vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32))
            };
            let mut lv = [vdupq_n_s8(0); 16];
            for h in 0..2 {
                for part in 0..2 {
                    // Values l = 16·part .. 16·part + 16 of each quarter.
                    let l0 = 16 * part;
                    let a0 = vld1q_u8(x.add(64 * h + l0));
                    let a1 = vld1q_u8(x.add(64 * h + 32 + l0));
                    let b = vld1q_u8(x.add(128 + 32 * h + l0));
                    let quarters = [
                        level(vandq_u8(a0, m4), b),
                        level(vandq_u8(a1, m4), vshrq_n_u8::<2>(b)),
                        level(vshrq_n_u8::<4>(a0), vshrq_n_u8::<4>(b)),
                        level(vshrq_n_u8::<4>(a1), vshrq_n_u8::<6>(b)),
                    ];
                    for (quarter, v) in quarters.into_iter().enumerate() {
                        lv[8 * h + 2 * quarter + part] = v;
                    }
                }
            }
            Q6KBlock {
                lv,
                sc,
                d: f16_at(x.add(Q6_K_D)),
            }
        }
    }
    #[inline(always)]
    unsafe fn add(acc: f32, x: &Q6KBlock, y: *const u8) -> f32 {
        // SAFETY (whole function): reads inside the caller's Q8_K block; NEON on registers.
        // Two products per i16 lane, each at most 32·128: at most 8192. With the signed
        // levels, `net = Σ_j sc_j·Σ (q − 32)·a` is exactly `isum − 32·msum`.
        unsafe {
            let mut net = vdupq_n_s32(0);
            for j in 0..16 {
                let a = ld(y.add(4 + 16 * j));
                let l = x.lv[j];
                let p = vmlal_high_s8(vmull_s8(vget_low_s8(l), vget_low_s8(a)), l, a);
                net = vmlal_n_s16(net, vget_low_s16(p), x.sc[j]);
                net = vmlal_high_n_s16(net, p, x.sc[j]);
            }
            acc + (x.d * f32_at(y)) * vaddvq_s32(net) as f32
        }
    }
}

/// A plain K-quant tile: each super-block of each weight row is unpacked once and added to
/// that row's outputs for every activation row. Slices are checked like [`run_tile32`].
fn run_tile_k<F: SuperBlock>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    let (nw, na) = (w.len().min(TILE), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut nb = n / QK_K;
    for row in &w[..nw] {
        nb = nb.min(row.len() / F::WSIZE);
    }
    for row in &a[..na] {
        nb = nb.min(row.len() / Q8_K_BYTES);
    }
    let mut acc = [[0f32; TILE]; TILE];
    for b in 0..nb {
        for r in 0..nw {
            // SAFETY: each row holds `nb` super-blocks and each activation row `nb` blocks.
            unsafe {
                let x = F::unpack(w[r].as_ptr().add(b * F::WSIZE));
                for c in 0..na {
                    acc[r][c] = F::add(acc[r][c], &x, a[c].as_ptr().add(b * Q8_K_BYTES));
                }
            }
        }
    }
    for r in 0..nw {
        for c in 0..na {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = acc[r][c];
            }
        }
    }
}

/// Q4_K weights · Q8_K activations, a plain NEON tile computing
/// [`tiles::q4_k_q8_k_exact`] bitwise (see [`super::QuantTile`]).
pub fn q4_k_q8_k_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile_k::<PlainQ4K>(n, w, a, out)
}

/// Q6_K weights · Q8_K activations, a plain NEON tile computing
/// [`tiles::q6_k_q8_k_exact`] bitwise (see [`super::QuantTile`]).
pub fn q6_k_q8_k_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile_k::<PlainQ6K>(n, w, a, out)
}

/// Q4_K weights · Q8_K activations: [`tiles::q4_k_q8_k_exact`] bitwise (the 1×1 tile).
pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    q4_k_q8_k_tile(n, &[w], &[a], &mut out);
    out[0]
}

/// Q6_K weights · Q8_K activations: [`tiles::q6_k_q8_k_exact`] bitwise (the 1×1 tile).
pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    q6_k_q8_k_tile(n, &[w], &[a], &mut out);
    out[0]
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
