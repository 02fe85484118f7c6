//! NEON + dot-product (`sdot`, ARMv8.2 DotProd: Cortex-A55/A75/A76 and later, Raspberry Pi 5,
//! most phones since 2018) kernels: Q4_0·Q8_0 and Q8_0·Q8_0 single dots, and packed tiles for
//! Q4_0, Q8_0, Q4_K and Q6_K over weights repacked at load ([`Packing`]); the other kernels,
//! the plain (unpacked) tiles included, are the baseline [`super::neon`] ones.
//!
//! The packed tiles hold 16 weight rows in the lanes of four i32x4 registers: the by-element
//! `sdot vd.4s, vn.16b, vm.4b[i]` multiplies four rows' four bytes (interleaved by the packer)
//! by one broadcast group of four activation values, so a block's sums come out in row order
//! with no horizontal reductions, and decode streams one sequential run of records per 16 rows.
//!
//! `vdotq_s32` / `vdotq_laneq_s32` are nightly-only intrinsics on Rust 1.95, so `sdot` is
//! written as inline assembly (with `.arch_extension dotprod`). Block sums are exact integers
//! and the float steps are the scalar formulas, so results are bit-identical to the twins:
//! the generic kernels for Q4_0/Q8_0, [`super::tiles::q4_k_q8_k_exact`] /
//! [`super::tiles::q6_k_q8_k_exact`] for the K-quants.
//!
//! The table is handed out only by [`detected`], after checking that the CPU has the
//! extension: executing `sdot` elsewhere is an illegal instruction.

// Tile bodies index fixed-size register arrays by quad/column up to the const-generic tile
// shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::neon::{self, f16_at, f16x4, f32_at, ld, load_s8, n_blocks, q4_0_levels};
use super::{Kernels, Packing, TILE, TILE_ROWS};
use crate::quant::blocks::{
    Q4_0_BYTES, Q4_0_QS, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K_BYTES, Q6_K_D,
    Q6_K_SCALES, Q8_0_BYTES, Q8_0_QS, Q8_K_BSUMS, Q8_K_BYTES,
};
use crate::quant::{read_f16, unpack_scale_min_k4, GgmlType};

static NEON_DOTPROD: Kernels = NEON_DOTPROD_TABLE;

/// The dot-product table as a constant, for tables that replace only some of its entries
/// (they must be handed out only where [`has_dotprod`] holds, too).
pub(crate) const NEON_DOTPROD_TABLE: Kernels = Kernels {
    name: "neon-dotprod",
    // The tiles stay NEON's: replace only the dots of Q4_0 and Q8_0.
    weights: neon::NEON_TABLE
        .weights
        .quant(GgmlType::Q4_0, vec_dot_q4_0_q8_0, neon::q4_0_q8_0_tile)
        .quant(GgmlType::Q8_0, vec_dot_q8_0_q8_0, neon::q8_0_q8_0_tile),
    packings: PACKINGS,
    ..neon::NEON_TABLE
};

/// Whether this CPU has the dot-product extension: run-time detection (Linux/Android HWCAP,
/// Apple sysctl), except on Apple's mobile targets, where the compile-time feature decides.
pub fn has_dotprod() -> bool {
    #[cfg(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    ))]
    {
        cfg!(target_feature = "dotprod")
    }
    #[cfg(not(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    )))]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
}

/// The dot-product table, if this CPU can run it.
pub fn detected() -> Option<&'static Kernels> {
    has_dotprod().then_some(&NEON_DOTPROD)
}

/// `acc + sdot(a, b)`: each i32 lane gains the sum of four adjacent i8 products.
///
/// # Safety
/// The CPU must support the dot-product extension.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the extension; register operands only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// # Safety
/// The CPU must support the dot-product extension.
#[target_feature(enable = "dotprod")]
unsafe fn q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q4_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w
        .chunks_exact(Q4_0_BYTES)
        .zip(a.chunks_exact(Q8_0_BYTES))
        .take(nb)
    {
        let (lo, hi) = q4_0_levels(&x[Q4_0_QS..Q4_0_BYTES]);
        // SAFETY: the caller guarantees dotprod; the rest is baseline NEON on registers.
        let sumi = unsafe {
            let acc = sdot(
                sdot(vdupq_n_s32(0), lo, load_s8(y, Q8_0_QS)),
                hi,
                load_s8(y, Q8_0_QS + 16),
            );
            vaddvq_s32(acc)
        };
        sumf = (sumi as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// # Safety
/// The CPU must support the dot-product extension.
#[target_feature(enable = "dotprod")]
unsafe fn q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q8_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w
        .chunks_exact(Q8_0_BYTES)
        .zip(a.chunks_exact(Q8_0_BYTES))
        .take(nb)
    {
        // SAFETY: the caller guarantees dotprod; the rest is baseline NEON on registers.
        let sumi = unsafe {
            let acc = sdot(vdupq_n_s32(0), load_s8(x, Q8_0_QS), load_s8(y, Q8_0_QS));
            vaddvq_s32(sdot(
                acc,
                load_s8(x, Q8_0_QS + 16),
                load_s8(y, Q8_0_QS + 16),
            ))
        };
        sumf = (sumi as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q4_0 weights · Q8_0 activations with `sdot`.
pub(crate) fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: this function is reachable only through NEON_DOTPROD, which `detected` hands
    // out only when the CPU has the extension.
    unsafe { q4_0_q8_0(n, w, a) }
}

/// Q8_0 weights · Q8_0 activations with `sdot`.
pub(crate) fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: as for vec_dot_q4_0_q8_0.
    unsafe { q8_0_q8_0(n, w, a) }
}

// ---------------------------------------------------------------------------------------------
// Packed tiles: 16 weight rows in the lanes of four i32x4 accumulators.
//
// The by-element form `sdot vd.4s, vn.16b, vm.4b[i]` adds to lane `r` of `vd` the dot product
// of bytes `4r..4r + 4` of `vn` with bytes `4i..4i + 4` of `vm`. With four weight rows (a
// "quad") interleaved four bytes at a time in `vn` and 16 activation values in `vm`, one
// instruction gives 4 rows × 4 values and the four lanes are the four rows' partial sums. So
// a quad's block sums come out in one register in row order, with no horizontal reductions,
// and decode (one activation row) reads each weight byte once, from one sequential run.
//
// Every block sum is an exact i32 and the f32 steps are the scalar formulas lane by lane
// (separate vector multiplies and adds where the scalar code has them, `fmla` where it fuses),
// so each output is bitwise the single dot's: Q4_0/Q8_0 the generic 32-block formula, Q4_K and
// Q6_K the exact-per-super-block formula of [`super::tiles::q4_k_q8_k_exact`] /
// [`super::tiles::q6_k_q8_k_exact`].
// ---------------------------------------------------------------------------------------------

/// The load-time repackings of the dot-product table.
const PACKINGS: &[Packing] = &[Q4_0_PACKING, Q8_0_PACKING, Q4_K_PACKING, Q6_K_PACKING];

/// Q4_0 rows repacked for [`q4_0_packed_tile`].
pub(crate) const Q4_0_PACKING: Packing = Packing {
    typ: GgmlType::Q4_0,
    record_bytes: Q4_0_RECORD,
    pack: pack_q4_0,
    tile: q4_0_packed_tile,
    tile16: None,
};

/// Q8_0 rows repacked for [`q8_0_packed_tile`].
pub(crate) const Q8_0_PACKING: Packing = Packing {
    typ: GgmlType::Q8_0,
    record_bytes: Q8_0_RECORD,
    pack: pack_q8_0,
    tile: q8_0_packed_tile,
    tile16: None,
};

/// Q4_K rows repacked for [`q4_k_packed_tile`] (tables built on this one may reuse it).
pub(crate) const Q4_K_PACKING: Packing = Packing {
    typ: GgmlType::Q4_K,
    record_bytes: Q4_K_RECORD,
    pack: pack_q4_k,
    tile: q4_k_packed_tile,
    tile16: None,
};

/// Q6_K rows repacked for [`q6_k_packed_tile`] (tables built on this one may reuse it).
pub(crate) const Q6_K_PACKING: Packing = Packing {
    typ: GgmlType::Q6_K,
    record_bytes: Q6_K_RECORD,
    pack: pack_q6_k,
    tile: q6_k_packed_tile,
    tile16: None,
};

/// `acc + Σ_g sdot(w[g], a.4b[g])`: 16 activation values `a` against a quad's four 16-byte
/// groups `w` (group `g`: rows 0..4 × values 4g..4g + 4); lane `r` gains row `r`'s sum.
///
/// # Safety
/// The CPU must support the dot-product extension.
#[inline(always)]
unsafe fn sdot4(mut acc: int32x4_t, w: &[int8x16_t], a: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the extension; register operands only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w0:v}.16b, {a:v}.4b[0]",
            "sdot {acc:v}.4s, {w1:v}.16b, {a:v}.4b[1]",
            "sdot {acc:v}.4s, {w2:v}.16b, {a:v}.4b[2]",
            "sdot {acc:v}.4s, {w3:v}.16b, {a:v}.4b[3]",
            acc = inout(vreg) acc,
            w0 = in(vreg) w[0],
            w1 = in(vreg) w[1],
            w2 = in(vreg) w[2],
            w3 = in(vreg) w[3],
            a = in(vreg) a,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// Bytes of one packed Q4_0 record (16 rows × one block; see [`pack_q4_0`]).
const Q4_0_RECORD: usize = 32 + 16 * 16;
/// Bytes of one packed Q8_0 record (see [`pack_q8_0`]).
const Q8_0_RECORD: usize = 32 + 16 * 32;
/// Bytes of one packed Q4_K record (16 rows × one super-block; see [`pack_q4_k`]).
const Q4_K_RECORD: usize = 64 + 128 + 128 + 16 * 128;
/// Bytes of one packed Q6_K record (see [`pack_q6_k`]).
const Q6_K_RECORD: usize = 32 + 256 + 16 * 256;

/// Whether `pack` may fill `out` from `rows`: 16 rows of at least `nb` blocks of `block`
/// bytes, and `out` exactly `nb` records.
fn pack_ok(rows: &[&[u8]], out: &[u8], nb: usize, block: usize, record: usize) -> bool {
    rows.len() == TILE_ROWS
        && out.len() == nb * record
        && rows.iter().all(|r| r.len() >= nb * block)
}

/// Packs 16 Q4_0 rows of `n` values: per block one record of the 16 `d` (f16, row order), then
/// per quad `k` (rows 4k..4k + 4) four 16-byte groups: group `g` holds, for each of the quad's
/// rows `i`, its quant bytes 4g..4g + 4 (low nibbles: values 4g.., high: 16 + 4g..) at
/// `4i..4i + 4`, each byte XOR 0x88, so that a nibble read as a signed 4-bit number is the
/// level minus 8 (see [`q4_0_packed_tile`]). Anything but 16 rows and `n / 32` records is left.
fn pack_q4_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 32;
    if !pack_ok(rows, out, nb, Q4_0_BYTES, Q4_0_RECORD) {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q4_0_RECORD).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q4_0_BYTES..(b + 1) * Q4_0_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
            let (k, i) = (r / 4, r % 4);
            for g in 0..4 {
                let at = 32 + 64 * k + 16 * g + 4 * i;
                for e in 0..4 {
                    rec[at + e] = x[2 + 4 * g + e] ^ 0x88;
                }
            }
        }
    }
}

/// Packs 16 Q8_0 rows of `n` values: per block the 16 `d` (f16, row order), then per quad `k`
/// eight 16-byte groups: group `g` holds each quad row's quants 4g..4g + 4 (row `i` at
/// `4i..4i + 4`). Anything but 16 rows and `n / 32` records is left.
fn pack_q8_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 32;
    if !pack_ok(rows, out, nb, Q8_0_BYTES, Q8_0_RECORD) {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q8_0_RECORD).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
            let (k, i) = (r / 4, r % 4);
            for g in 0..8 {
                let at = 32 + 128 * k + 16 * g + 4 * i;
                rec[at..at + 4].copy_from_slice(&x[2 + 4 * g..6 + 4 * g]);
            }
        }
    }
}

/// Packs 16 Q4_K rows of `n` values: per super-block one record of
/// - the 16 `d`, then the 16 `dmin` (f16, row order);
/// - per quad `k`, 32 bytes of six-bit scales unpacked to bytes, sub-block `j` of row `i` at
///   `4j + i` (so widening a quad's bytes gives one i32x4 of row scales per sub-block);
/// - per quad, 32 bytes of mins, row `i`'s mins of sub-blocks `4t..4t + 4` at `16t + 4i`
///   (the layout of an `sdot` weight operand);
/// - per quad, per 64-value chunk `c`, eight 16-byte groups: group `g` holds each quad row's
///   quant bytes 4g..4g + 4 of the chunk (low nibbles: sub-block 2c, high: 2c + 1).
///
/// Anything but 16 rows and `n / 256` records is left.
fn pack_q4_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if !pack_ok(rows, out, nb, Q4_K_BYTES, Q4_K_RECORD) {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q4_K_RECORD).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q4_K_BYTES..(b + 1) * Q4_K_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
            rec[32 + 2 * r..34 + 2 * r].copy_from_slice(&x[Q4_K_DMIN..Q4_K_SCALES]);
            let (k, i) = (r / 4, r % 4);
            for j in 0..8 {
                let (sc, m) = unpack_scale_min_k4(j, &x[Q4_K_SCALES..Q4_K_QS]);
                rec[64 + 32 * k + 4 * j + i] = sc;
                rec[192 + 32 * k + 16 * (j / 4) + 4 * i + j % 4] = m;
            }
            for c in 0..4 {
                for g in 0..8 {
                    let at = 320 + 512 * k + 128 * c + 16 * g + 4 * i;
                    let src = 16 + 32 * c + 4 * g;
                    rec[at..at + 4].copy_from_slice(&x[src..src + 4]);
                }
            }
        }
    }
}

/// Packs 16 Q6_K rows of `n` values: per super-block one record of the 16 `d` (f16, row
/// order), per quad `k` 64 bytes of the sixteen 16-value sub-blocks' signed scales (sub-block
/// `j` of row `i` at `4j + i`), then per quad and sub-block four 16-byte groups of the levels
/// minus 32 as signed bytes (group `g`: each quad row's values 4g..4g + 4 of the sub-block).
/// The six-bit levels are unpacked here once, so the tile needs no bit shuffling (the record
/// is 30 % larger than the 16 rows it holds: 4384 bytes against 3360). Anything but 16 rows and
/// `n / 256` records is left.
fn pack_q6_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / 256;
    if !pack_ok(rows, out, nb, Q6_K_BYTES, Q6_K_RECORD) {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(Q6_K_RECORD).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * Q6_K_BYTES..(b + 1) * Q6_K_BYTES];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[Q6_K_D..Q6_K_BYTES]);
            let (k, i) = (r / 4, r % 4);
            for j in 0..16 {
                rec[32 + 64 * k + 4 * j + i] = x[Q6_K_SCALES + j];
            }
            for v in 0..256 {
                let (h, quarter, l) = (v / 128, (v % 128) / 32, v % 32);
                let ql = &x[64 * h..64 * h + 64];
                let qh = &x[128 + 32 * h..128 + 32 * h + 32];
                let q = crate::quant::q6_k_quant(ql, qh, quarter, l);
                let (j, g, e) = (v / 16, (v % 16) / 4, v % 4);
                rec[288 + 1024 * k + 64 * j + 16 * g + 4 * i + e] = q as u8;
            }
        }
    }
}

/// A monomorphized packed body: `(nb, group, activation rows, res[c][r])`.
type PackedBody = unsafe fn(usize, *const u8, &[*const u8; TILE], &mut [[f32; TILE_ROWS]; TILE]);

/// 16 packed rows (`group`: the packer's output for `n` values) × up to [`TILE`] activation
/// rows into `out[r·a.len() + c]` (what fits `out`). `(values, record, act)`: values per block,
/// bytes per record and per activation block; `bodies[c − 1]` takes `c` columns. A group or
/// activation row too short for `n` yields nothing.
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
    // SAFETY: this tile is reachable only through the dot-product table (or the i8mm table
    // built on it), handed out only where the CPU has the extension; `group` holds the `nb`
    // records and every activation row the `nb` blocks the bodies read.
    unsafe { bodies[na - 1](nb, group.as_ptr(), &ap, &mut res) };
    for r in 0..TILE_ROWS {
        for c in 0..na {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = res[c][r];
            }
        }
    }
}

/// Q4_0 over packed records, `C` Q8_0 columns. A record's byte holds two levels as signed
/// nibbles (see [`pack_q4_0`]); `byte << 4` and `byte & 0xF0` read as i8 are 16 × (level − 8),
/// so the `sdot` sums are 16 × the block sum, exact, and `>> 4` recovers it exactly. Then
/// `acc = fma(s, d_w·d_a, acc)` per lane.
///
/// # Safety
/// Dot-product extension; `g` holds `nb` records, each `ap[c]` (c < C) `nb` Q8_0 blocks.
unsafe fn q4_0_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    // SAFETY (whole body): reads stay inside the records and blocks the caller guarantees;
    // `sdot4` needs the extension, which the caller guarantees; the rest is baseline NEON.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; C];
        let zero = vdupq_n_s32(0);
        let mhi = vdupq_n_u8(0xF0);
        for b in 0..nb {
            let rec = g.add(b * Q4_0_RECORD);
            let mut ah = [[vdupq_n_s8(0); 2]; C];
            let mut ad = [0f32; C];
            for c in 0..C {
                let y = ap[c].add(b * Q8_0_BYTES);
                ad[c] = f16_at(y);
                ah[c] = [ld(y.add(Q8_0_QS)), ld(y.add(Q8_0_QS + 16))];
            }
            for k in 0..4 {
                let q = rec.add(32 + 64 * k);
                let v: [uint8x16_t; 4] = std::array::from_fn(|i| vld1q_u8(q.add(16 * i)));
                let lo = v.map(|x| vreinterpretq_s8_u8(vshlq_n_u8::<4>(x)));
                let hi = v.map(|x| vreinterpretq_s8_u8(vandq_u8(x, mhi)));
                let dw = f16x4(rec.add(8 * k));
                for c in 0..C {
                    let s16 = sdot4(sdot4(zero, &lo, ah[c][0]), &hi, ah[c][1]);
                    let s = vcvtq_f32_s32(vshrq_n_s32::<4>(s16));
                    acc[c][k] = vfmaq_f32(acc[c][k], s, vmulq_n_f32(dw, ad[c]));
                }
            }
        }
        for c in 0..C {
            for k in 0..4 {
                vst1q_f32(res[c][4 * k..].as_mut_ptr(), acc[c][k]);
            }
        }
    }
}

/// Q8_0 over packed records, `C` Q8_0 columns: exact block sums, `acc = fma(s, d_w·d_a, acc)`.
///
/// # Safety
/// As for [`q4_0_body`].
unsafe fn q8_0_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    // SAFETY (whole body): as in `q4_0_body`.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; C];
        let zero = vdupq_n_s32(0);
        for b in 0..nb {
            let rec = g.add(b * Q8_0_RECORD);
            let mut ah = [[vdupq_n_s8(0); 2]; C];
            let mut ad = [0f32; C];
            for c in 0..C {
                let y = ap[c].add(b * Q8_0_BYTES);
                ad[c] = f16_at(y);
                ah[c] = [ld(y.add(Q8_0_QS)), ld(y.add(Q8_0_QS + 16))];
            }
            for k in 0..4 {
                let q = rec.add(32 + 128 * k);
                let v: [int8x16_t; 8] = std::array::from_fn(|i| ld(q.add(16 * i)));
                let dw = f16x4(rec.add(8 * k));
                for c in 0..C {
                    let s = sdot4(sdot4(zero, &v[..4], ah[c][0]), &v[4..], ah[c][1]);
                    acc[c][k] = vfmaq_f32(acc[c][k], vcvtq_f32_s32(s), vmulq_n_f32(dw, ad[c]));
                }
            }
        }
        for c in 0..C {
            for k in 0..4 {
                vst1q_f32(res[c][4 * k..].as_mut_ptr(), acc[c][k]);
            }
        }
    }
}

/// Lane `r` = `Σ_e m[r][e]·x_e` over eight mins per row and eight i16 values `x` in
/// [−4096, 4096]: `x = 128·h + l` with `h = x >> 7` and `l = x & 127` both fitting i8, so four
/// `sdot` (mins `mv[t]`: rows × values 4t..4t + 4, `hl` = the eight `h` then the eight `l`)
/// give `Σ m·h` and `Σ m·l`, combined exactly in i32.
///
/// # Safety
/// The CPU must support the dot-product extension.
#[inline(always)]
unsafe fn mins_dot(mv: [int8x16_t; 2], hl: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the extension; register operands only.
    unsafe {
        let mut h = vdupq_n_s32(0);
        let mut l = vdupq_n_s32(0);
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {h:v}.4s, {m0:v}.16b, {x:v}.4b[0]",
            "sdot {h:v}.4s, {m1:v}.16b, {x:v}.4b[1]",
            "sdot {l:v}.4s, {m0:v}.16b, {x:v}.4b[2]",
            "sdot {l:v}.4s, {m1:v}.16b, {x:v}.4b[3]",
            h = inout(vreg) h,
            l = inout(vreg) l,
            m0 = in(vreg) mv[0],
            m1 = in(vreg) mv[1],
            x = in(vreg) hl,
            options(pure, nomem, nostack),
        );
        vaddq_s32(vshlq_n_s32::<7>(h), l)
    }
}

/// A Q8_K block's pair sums `bsum_2j + bsum_2j+1` (j = 0..8) split for [`mins_dot`].
///
/// # Safety
/// `y` must point to a whole Q8_K block (292 bytes).
#[inline(always)]
unsafe fn q8_k_pair_sums(y: *const u8) -> int8x16_t {
    // SAFETY: bytes 260..292 of the block; register operations after.
    unsafe {
        let s0 = vreinterpretq_s16_u8(vld1q_u8(y.add(Q8_K_BSUMS)));
        let s1 = vreinterpretq_s16_u8(vld1q_u8(y.add(276)));
        let pairs = vpaddq_s16(s0, s1);
        let h = vmovn_s16(vshrq_n_s16::<7>(pairs));
        let l = vmovn_s16(vandq_s16(pairs, vdupq_n_s16(127)));
        vcombine_s8(h, l)
    }
}

/// Q4_K over packed records ([`pack_q4_k`]), `C` Q8_K columns. Per super-block and row lane,
/// the exact formula of [`super::tiles::q4_k_q8_k_exact`]: `isum = Σ_j sc_j·s_j` with the
/// levels (0..15) multiplied as they are, `msum = Σ_j m_j·(bsum_2j + bsum_2j+1)`, both in i32,
/// then `acc += (d·d_a)·isum` and `acc −= (dmin·d_a)·msum` with separate roundings.
///
/// # Safety
/// Dot-product extension; `g` holds `nb` records, each `ap[c]` (c < C) `nb` Q8_K blocks.
unsafe fn q4_k_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    // SAFETY (whole body): as in `q4_0_body`.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; C];
        let zero = vdupq_n_s32(0);
        let m4 = vdupq_n_u8(0x0F);
        for b in 0..nb {
            let rec = g.add(b * Q4_K_RECORD);
            let mut yp = [ap[0]; C];
            let mut yd = [0f32; C];
            let mut hl = [vdupq_n_s8(0); C];
            for c in 0..C {
                yp[c] = ap[c].add(b * Q8_K_BYTES);
                yd[c] = f32_at(yp[c]);
                hl[c] = q8_k_pair_sums(yp[c]);
            }
            for k in 0..4 {
                // Row scales per sub-block as i32x4 (rows 4k..4k + 4).
                let sb = [
                    vld1q_u8(rec.add(64 + 32 * k)),
                    vld1q_u8(rec.add(80 + 32 * k)),
                ];
                let mut sc = [zero; 8];
                for t in 0..2 {
                    let (w0, w1) = (vmovl_u8(vget_low_u8(sb[t])), vmovl_high_u8(sb[t]));
                    sc[4 * t] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w0)));
                    sc[4 * t + 1] = vreinterpretq_s32_u32(vmovl_high_u16(w0));
                    sc[4 * t + 2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w1)));
                    sc[4 * t + 3] = vreinterpretq_s32_u32(vmovl_high_u16(w1));
                }
                let mv = [ld(rec.add(192 + 32 * k)), ld(rec.add(208 + 32 * k))];
                let q = rec.add(320 + 512 * k);
                let mut isum = [zero; C];
                for ch in 0..4 {
                    let v: [uint8x16_t; 8] =
                        std::array::from_fn(|i| vld1q_u8(q.add(128 * ch + 16 * i)));
                    let lo = v.map(|x| vreinterpretq_s8_u8(vandq_u8(x, m4)));
                    let hi = v.map(|x| vreinterpretq_s8_u8(vshrq_n_u8::<4>(x)));
                    for c in 0..C {
                        let y = yp[c].add(4 + 64 * ch);
                        let s_lo = sdot4(sdot4(zero, &lo[..4], ld(y)), &lo[4..], ld(y.add(16)));
                        let s_hi = sdot4(
                            sdot4(zero, &hi[..4], ld(y.add(32))),
                            &hi[4..],
                            ld(y.add(48)),
                        );
                        isum[c] =
                            vmlaq_s32(vmlaq_s32(isum[c], s_lo, sc[2 * ch]), s_hi, sc[2 * ch + 1]);
                    }
                }
                let d = f16x4(rec.add(8 * k));
                let dmin = f16x4(rec.add(32 + 8 * k));
                for c in 0..C {
                    let msum = mins_dot(mv, hl[c]);
                    let t = vmulq_f32(vmulq_n_f32(d, yd[c]), vcvtq_f32_s32(isum[c]));
                    acc[c][k] = vaddq_f32(acc[c][k], t);
                    let t = vmulq_f32(vmulq_n_f32(dmin, yd[c]), vcvtq_f32_s32(msum));
                    acc[c][k] = vsubq_f32(acc[c][k], t);
                }
            }
        }
        for c in 0..C {
            for k in 0..4 {
                vst1q_f32(res[c][4 * k..].as_mut_ptr(), acc[c][k]);
            }
        }
    }
}

/// Q6_K over packed records ([`pack_q6_k`]), `C` Q8_K columns. Per super-block and row lane,
/// the exact formula of [`super::tiles::q6_k_q8_k_exact`]: with the signed levels `q − 32`
/// multiplied directly, `net = Σ_j sc_j·Σ (q − 32)·a` is exactly `isum − 32·msum` in i32, then
/// `acc += (d·d_a)·net`.
///
/// # Safety
/// Dot-product extension; `g` holds `nb` records, each `ap[c]` (c < C) `nb` Q8_K blocks.
unsafe fn q6_k_body<const C: usize>(
    nb: usize,
    g: *const u8,
    ap: &[*const u8; TILE],
    res: &mut [[f32; TILE_ROWS]; TILE],
) {
    // SAFETY (whole body): as in `q4_0_body`.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; C];
        let zero = vdupq_n_s32(0);
        for b in 0..nb {
            let rec = g.add(b * Q6_K_RECORD);
            let mut yp = [ap[0]; C];
            let mut yd = [0f32; C];
            for c in 0..C {
                yp[c] = ap[c].add(b * Q8_K_BYTES);
                yd[c] = f32_at(yp[c]);
            }
            for k in 0..4 {
                let q = rec.add(288 + 1024 * k);
                let mut net = [zero; C];
                for t in 0..4 {
                    // Row scales of sub-blocks 4t..4t + 4 as i32x4.
                    let sb = ld(rec.add(32 + 64 * k + 16 * t));
                    let (w0, w1) = (vmovl_s8(vget_low_s8(sb)), vmovl_high_s8(sb));
                    let sc = [
                        vmovl_s16(vget_low_s16(w0)),
                        vmovl_high_s16(w0),
                        vmovl_s16(vget_low_s16(w1)),
                        vmovl_high_s16(w1),
                    ];
                    for (e, sc) in sc.into_iter().enumerate() {
                        let j = 4 * t + e;
                        let v: [int8x16_t; 4] = std::array::from_fn(|i| ld(q.add(64 * j + 16 * i)));
                        for c in 0..C {
                            let s = sdot4(zero, &v, ld(yp[c].add(4 + 16 * j)));
                            net[c] = vmlaq_s32(net[c], s, sc);
                        }
                    }
                }
                let d = f16x4(rec.add(8 * k));
                for c in 0..C {
                    let t = vmulq_f32(vmulq_n_f32(d, yd[c]), vcvtq_f32_s32(net[c]));
                    acc[c][k] = vaddq_f32(acc[c][k], t);
                }
            }
        }
        for c in 0..C {
            for k in 0..4 {
                vst1q_f32(res[c][4 * k..].as_mut_ptr(), acc[c][k]);
            }
        }
    }
}

/// Q4_0 weights packed by [`pack_q4_0`] · Q8_0 activations (see [`Packing::tile`]).
fn q4_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies: [PackedBody; TILE] = [
        q4_0_body::<1>,
        q4_0_body::<2>,
        q4_0_body::<3>,
        q4_0_body::<4>,
    ];
    run_packed(n, group, a, out, (32, Q4_0_RECORD, Q8_0_BYTES), bodies)
}

/// Q8_0 weights packed by [`pack_q8_0`] · Q8_0 activations (see [`Packing::tile`]).
fn q8_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies: [PackedBody; TILE] = [
        q8_0_body::<1>,
        q8_0_body::<2>,
        q8_0_body::<3>,
        q8_0_body::<4>,
    ];
    run_packed(n, group, a, out, (32, Q8_0_RECORD, Q8_0_BYTES), bodies)
}

/// Q4_K weights packed by [`pack_q4_k`] · Q8_K activations (see [`Packing::tile`]).
fn q4_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies: [PackedBody; TILE] = [
        q4_k_body::<1>,
        q4_k_body::<2>,
        q4_k_body::<3>,
        q4_k_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q4_K_RECORD, Q8_K_BYTES), bodies)
}

/// Q6_K weights packed by [`pack_q6_k`] · Q8_K activations (see [`Packing::tile`]).
fn q6_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let bodies: [PackedBody; TILE] = [
        q6_k_body::<1>,
        q6_k_body::<2>,
        q6_k_body::<3>,
        q6_k_body::<4>,
    ];
    run_packed(n, group, a, out, (256, Q6_K_RECORD, Q8_K_BYTES), bodies)
}
