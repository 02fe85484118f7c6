//! NEON + int8 matrix multiply (`smmla`, FEAT_I8MM: Cortex-A710/X2 and later, Neoverse V1/N2,
//! Apple A15/M2 and later) tiles for Q4_0·Q8_0 and Q8_0·Q8_0, and for the K-quants Q4_K·Q8_K
//! and Q6_K·Q8_K in [`kquants`] (up to 16 weight rows per tile; they compute the exact-integer
//! formula of the x86 K-quant kernels, and this table's single K-quant dots are 1×1 tiles of
//! them); everything else, the other single dots included, is the [`super::neon_dotprod`]
//! table.
//!
//! `smmla vd.4s, vn.16b, vm.16b` treats `vn` and `vm` as 2×8 matrices of i8 (row 0 = bytes
//! 0..8, row 1 = bytes 8..16) and adds `vn · vmᵀ` (a 2×2 i32 matrix, row major) to `vd`. So one
//! instruction gives the 8-value partial dots of 2 weight rows × 2 activation rows: the 16-byte
//! halves of two rows' blocks are interleaved 8 bytes at a time (`zip1`/`zip2` on 64-bit lanes)
//! and four `smmla` cover a 32-value block. A block's four lanes are then exact i32 sums
//! `[w0·a0, w0·a1, w1·a0, w1·a1]`, scaled in f32 with the single dot's formula, lane for lane
//! (separate vector multiplies and adds, which round exactly like the scalar ones), so each
//! output is bitwise the variant's own dot whatever the tile shape ([`super::QuantTile`]).
//! Odd tile sides are padded with a duplicate of the last row, whose outputs are dropped.
//!
//! At load, Q4_0 and Q8_0 matrices are repacked into 16-row records whose row pairs already
//! hold the `smmla` operands' interleaving ([`pack_q4_0`], [`pack_q8_0`]; the same bytes as
//! the file's blocks, reordered), so a packed tile streams one sequential run per 16 rows and
//! needs no `zip`s; its numbers are the plain tile's, bitwise. Q4_K and Q6_K are repacked
//! likewise, one record per super-block ([`kquants`]).
//!
//! `vmmlaq_s32` is a nightly-only intrinsic on Rust 1.95, so `smmla` is inline assembly inside
//! `#[target_feature(enable = "i8mm")]` functions. The table is handed out only by
//! [`detected`], after checking that the CPU has both i8mm and dotprod: executing `smmla` or
//! `sdot` elsewhere is an illegal instruction.

// Tile bodies index fixed-size arrays of row pairs by pair number up to the const-generic
// tile shape; index loops say that more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::neon::{load_s8, q4_0_levels};
use super::neon_dotprod::{self, has_dotprod};
use super::{Kernels, Packing, TILE, TILE_ROWS};
use crate::quant::blocks::{Q4_0_BYTES, Q4_0_QS, Q8_0_BYTES, Q8_0_QS};
use crate::quant::{read_f16, GgmlType};

mod kquants;

static NEON_I8MM: Kernels = Kernels {
    name: "neon-i8mm",
    // Q4_0/Q8_0 keep the dot-product dots. The K-quants follow the exact-integer twins
    // (`tiles::q*_k_q8_k_exact`); their single dots are 1×1 tiles so that every tile equals
    // its dot bitwise.
    weights: neon_dotprod::NEON_DOTPROD_TABLE
        .weights
        .quant(
            GgmlType::Q4_0,
            neon_dotprod::vec_dot_q4_0_q8_0,
            q4_0_q8_0_tile,
        )
        .quant(
            GgmlType::Q8_0,
            neon_dotprod::vec_dot_q8_0_q8_0,
            q8_0_q8_0_tile,
        )
        .quant_wide(
            GgmlType::Q4_K,
            kquants::q4_k_q8_k_dot,
            kquants::q4_k_q8_k_tile,
        )
        .quant_wide(
            GgmlType::Q6_K,
            kquants::q6_k_q8_k_dot,
            kquants::q6_k_q8_k_tile,
        ),
    packings: &[
        Packing {
            typ: GgmlType::Q4_0,
            record_bytes: Q4_0_RECORD,
            pack: pack_q4_0,
            tile: q4_0_packed_tile,
            tile16: None,
        },
        Packing {
            typ: GgmlType::Q8_0,
            record_bytes: Q8_0_RECORD,
            pack: pack_q8_0,
            tile: q8_0_packed_tile,
            tile16: None,
        },
        Packing {
            typ: GgmlType::Q4_K,
            record_bytes: kquants::Q4_K_RECORD,
            pack: kquants::pack_q4_k,
            tile: kquants::q4_k_packed_tile,
            tile16: None,
        },
        Packing {
            typ: GgmlType::Q6_K,
            record_bytes: kquants::Q6_K_RECORD,
            pack: kquants::pack_q6_k,
            tile: kquants::q6_k_packed_tile,
            tile16: None,
        },
    ],
    ..neon_dotprod::NEON_DOTPROD_TABLE
};

/// Whether this CPU has the int8 matrix-multiply extension: run-time detection (Linux/Android
/// HWCAP2, Apple sysctl), except on Apple's mobile targets, where the compile-time feature
/// decides.
pub fn has_i8mm() -> bool {
    #[cfg(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    ))]
    {
        cfg!(target_feature = "i8mm")
    }
    #[cfg(not(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    )))]
    {
        std::arch::is_aarch64_feature_detected!("i8mm")
    }
}

/// The i8mm table, if this CPU can run it (it needs dotprod too, for the single dots).
pub fn detected() -> Option<&'static Kernels> {
    (has_i8mm() && has_dotprod()).then_some(&NEON_I8MM)
}

/// `acc + smmla(a, b)`: with `a`, `b` as 2×8 i8 matrices, `acc[2i + j] += Σ_k a[i][k]·b[j][k]`.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the extension; register operands only.
    unsafe {
        std::arch::asm!(
            ".arch_extension i8mm",
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// Two rows' 16-value halves `x`, `y` as two `smmla` operands: (values 0..8 of `x` then of
/// `y`, values 8..16 of `x` then of `y`).
#[inline]
fn interleave(x: int8x16_t, y: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: register-only NEON operations (baseline on aarch64).
    unsafe {
        let (x, y) = (vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y));
        [
            vreinterpretq_s8_s64(vzip1q_s64(x, y)),
            vreinterpretq_s8_s64(vzip2q_s64(x, y)),
        ]
    }
}

/// A block of two rows as four `smmla` operands, from each row's (values 0..16, 16..32).
#[inline]
fn pair_operands(
    (a0, b0): (int8x16_t, int8x16_t),
    (a1, b1): (int8x16_t, int8x16_t),
) -> [int8x16_t; 4] {
    let [p0, p1] = interleave(a0, a1);
    let [p2, p3] = interleave(b0, b1);
    [p0, p1, p2, p3]
}

/// The 32 signed quants of a Q8_0 block (weights or activations).
#[inline]
fn q8_0_halves(x: &[u8]) -> (int8x16_t, int8x16_t) {
    (load_s8(x, Q8_0_QS), load_s8(x, Q8_0_QS + 16))
}

/// The exact block sums `[w0·a0, w0·a1, w1·a0, w1·a1]` of a weight pair and an activation pair
/// (each as its four [`pair_operands`]). |sum| ≤ 32·128·128 fits i32.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn block_sums(w: &[int8x16_t; 4], a: &[int8x16_t; 4]) -> int32x4_t {
    // SAFETY: the caller guarantees i8mm; the rest is baseline NEON on registers.
    unsafe {
        let mut acc = vdupq_n_s32(0);
        for k in 0..4 {
            acc = smmla(acc, w[k], a[k]);
        }
        acc
    }
}

/// Values per block of both weight types and of the Q8_0 activations.
const QK: usize = 32;
/// Bytes per Q8_0 activation block.
const ASIZE: usize = Q8_0_BYTES;

/// A 32-value weight block format the tiles handle (activations are always Q8_0).
trait WeightFormat {
    /// Bytes per weight block.
    const WSIZE: usize;
    /// A block's values 0..16 and 16..32 as signed bytes.
    fn halves(x: &[u8]) -> (int8x16_t, int8x16_t);
}

/// Q4_0 weights: levels minus 8.
struct Q4_0;

impl WeightFormat for Q4_0 {
    const WSIZE: usize = Q4_0_BYTES;
    #[inline]
    fn halves(x: &[u8]) -> (int8x16_t, int8x16_t) {
        q4_0_levels(&x[Q4_0_QS..Q4_0_BYTES])
    }
}

/// Q8_0 weights.
struct Q8_0;

impl WeightFormat for Q8_0 {
    const WSIZE: usize = Q8_0_BYTES;
    #[inline]
    fn halves(x: &[u8]) -> (int8x16_t, int8x16_t) {
        q8_0_halves(x)
    }
}

/// Four f32 lanes from an array.
#[inline]
fn f32x4(v: [f32; 4]) -> float32x4_t {
    // SAFETY: `v` holds 4 readable f32; vld1q has no alignment requirement beyond f32's.
    unsafe { vld1q_f32(v.as_ptr()) }
}

/// A tile body over `nb` blocks: `WP` weight-row pairs × `AP` activation-row pairs (rows
/// `2p`, `2p + 1` of `w` and `a`, each holding at least `nb` blocks). `sums[p][q]` gets the
/// f32 sums `[w_2p·a_2q, w_2p·a_2q+1, w_2p+1·a_2q, w_2p+1·a_2q+1]`.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[target_feature(enable = "i8mm")]
unsafe fn tile_body<F: WeightFormat, const WP: usize, const AP: usize>(
    nb: usize,
    w: &[&[u8]; TILE],
    a: &[&[u8]; TILE],
    sums: &mut [[[f32; 4]; 2]; 2],
) {
    // SAFETY (whole body): the caller guarantees i8mm; everything else is baseline NEON on
    // registers or on `sums`' own 4-float arrays; row slices are indexed with bounds checks.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
        for b in 0..nb {
            let wblock = |r: usize| &w[r][b * F::WSIZE..(b + 1) * F::WSIZE];
            let ablock = |c: usize| &a[c][b * ASIZE..(b + 1) * ASIZE];
            let mut aops = [[vdupq_n_s8(0); 4]; 2];
            let mut ad = [vdupq_n_f32(0.0); 2];
            for q in 0..AP {
                let (y0, y1) = (ablock(2 * q), ablock(2 * q + 1));
                aops[q] = pair_operands(q8_0_halves(y0), q8_0_halves(y1));
                let (d0, d1) = (read_f16(y0, 0), read_f16(y1, 0));
                ad[q] = f32x4([d0, d1, d0, d1]);
            }
            for p in 0..WP {
                let (x0, x1) = (wblock(2 * p), wblock(2 * p + 1));
                let wops = pair_operands(F::halves(x0), F::halves(x1));
                let (d0, d1) = (read_f16(x0, 0), read_f16(x1, 0));
                let wd = f32x4([d0, d0, d1, d1]);
                for q in 0..AP {
                    let s = vcvtq_f32_s32(block_sums(&wops, &aops[q]));
                    // The 32-block contract: `acc = fma(s, d_w·d_a, acc)` per block.
                    acc[p][q] = vfmaq_f32(acc[p][q], s, vmulq_f32(wd, ad[q]));
                }
            }
        }
        for p in 0..WP {
            for q in 0..AP {
                vst1q_f32(sums[p][q].as_mut_ptr(), acc[p][q]);
            }
        }
    }
}

/// Checks a tile call's slices, pads odd sides with a duplicate row and runs the body for its
/// shape. Blocks missing from a too-short slice are skipped for the whole tile (like the
/// generic kernels skip them for a row pair), rows beyond [`TILE`] are ignored and outputs that
/// do not fit `out` are dropped: nothing panics and nothing is read out of bounds.
fn run_tile<F: WeightFormat>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    let (nw, na) = (w.len().min(TILE), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut nb = n / QK;
    for row in &w[..nw] {
        nb = nb.min(row.len() / F::WSIZE);
    }
    for row in &a[..na] {
        nb = nb.min(row.len() / ASIZE);
    }
    // Rows past the tile's edge repeat its last row (their outputs are never written).
    let wr: [&[u8]; TILE] = std::array::from_fn(|r| w[r.min(nw - 1)]);
    let ar: [&[u8]; TILE] = std::array::from_fn(|c| a[c.min(na - 1)]);
    let mut sums = [[[0f32; 4]; 2]; 2];
    // SAFETY: the bodies need i8mm, which `detected` verified before this table could be
    // obtained; they index the row slices with bounds checks.
    unsafe {
        match (nw.div_ceil(2), na.div_ceil(2)) {
            (1, 1) => tile_body::<F, 1, 1>(nb, &wr, &ar, &mut sums),
            (1, _) => tile_body::<F, 1, 2>(nb, &wr, &ar, &mut sums),
            (_, 1) => tile_body::<F, 2, 1>(nb, &wr, &ar, &mut sums),
            _ => tile_body::<F, 2, 2>(nb, &wr, &ar, &mut sums),
        }
    }
    for r in 0..nw {
        for c in 0..na {
            // Lane order of the block sums: [w0·a0, w0·a1, w1·a0, w1·a1].
            let lane = 2 * (r % 2) + c % 2;
            if let Some(o) = out.get_mut(r * na + c) {
                *o = sums[r / 2][c / 2][lane];
            }
        }
    }
}

/// Q4_0 weights · Q8_0 activations, a tile with `smmla` (see [`super::QuantTile`]).
fn q4_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile::<Q4_0>(n, w, a, out)
}

/// Q8_0 weights · Q8_0 activations, a tile with `smmla` (see [`super::QuantTile`]).
fn q8_0_q8_0_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    run_tile::<Q8_0>(n, w, a, out)
}

/// Bytes of one packed Q4_0 record: 16 rows' block `b` (see [`pack_q4_0`]).
const Q4_0_RECORD: usize = 32 + 8 * 32;
/// Bytes of one packed Q8_0 record: 16 rows' block `b` (see [`pack_q8_0`]).
const Q8_0_RECORD: usize = 32 + 8 * 64;

/// Packs 16 Q4_0 rows of `n` values: per block one record of the 16 `d` (f16, row order),
/// then per row pair `p` 32 bytes: rows `2p`, `2p + 1` quant bytes 0..8, then both rows' bytes
/// 8..16. The low nibbles of the first 16 bytes are the pair's values 0..8 (`smmla` operand 0),
/// their high nibbles values 16..24 (operand 2); the second 16 bytes give values 8..16 and
/// 24..32 (operands 1 and 3). Anything but 16 rows and an `out` of `n / 32` records is left.
fn pack_q4_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack_pairs(n, rows, out, Q4_0_BYTES, Q4_0_RECORD)
}

/// Packs 16 Q8_0 rows of `n` values: per block one record of the 16 `d` (f16, row order),
/// then per row pair `p` its four `smmla` operands (16 bytes each: row `2p` values 8k..8k+8,
/// then row `2p + 1`'s). Anything but 16 rows and an `out` of `n / 32` records is left.
fn pack_q8_0(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack_pairs(n, rows, out, Q8_0_BYTES, Q8_0_RECORD)
}

/// The records of [`pack_q4_0`] and [`pack_q8_0`], for blocks of `block` bytes (an f16 `d`,
/// then the quant bytes): the 16 `d`, then per row pair the two rows' quant bytes interleaved
/// eight at a time (piece `i` of row `r` at `32 + pair·(r / 2) + 16·i + 8·(r % 2)`, `pair`
/// being both rows' quant bytes).
fn pack_pairs(n: usize, rows: &[&[u8]], out: &mut [u8], block: usize, record: usize) {
    let (nb, qbytes) = (n / QK, block - 2);
    if rows.len() != TILE_ROWS
        || out.len() != nb * record
        || rows.iter().any(|r| r.len() < nb * block)
    {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(record).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b * block..(b + 1) * block];
            rec[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
            for (i, piece) in x[2..].chunks_exact(8).enumerate() {
                let at = 32 + 2 * qbytes * (r / 2) + 16 * i + 8 * (r % 2);
                rec[at..at + 8].copy_from_slice(piece);
            }
        }
    }
}

/// A packed record format: its size and row pair `p`'s four `smmla` operands.
trait PackedFormat {
    const RECORD: usize;
    fn operands(rec: &[u8], p: usize) -> [int8x16_t; 4];
}

struct PackedQ4_0;

impl PackedFormat for PackedQ4_0 {
    const RECORD: usize = Q4_0_RECORD;
    #[inline]
    fn operands(rec: &[u8], p: usize) -> [int8x16_t; 4] {
        let (z0, z1) = (
            q4_0_levels(&rec[32 + 32 * p..48 + 32 * p]),
            q4_0_levels(&rec[48 + 32 * p..64 + 32 * p]),
        );
        [z0.0, z1.0, z0.1, z1.1]
    }
}

struct PackedQ8_0;

impl PackedFormat for PackedQ8_0 {
    const RECORD: usize = Q8_0_RECORD;
    #[inline]
    fn operands(rec: &[u8], p: usize) -> [int8x16_t; 4] {
        std::array::from_fn(|k| load_s8(rec, 32 + 64 * p + 16 * k))
    }
}

/// The body over `nb` packed records of one 16-row group × `AP` activation-row pairs:
/// `sums[p][q]` as in [`tile_body`], for the eight row pairs, with the same arithmetic.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[target_feature(enable = "i8mm")]
unsafe fn packed_body<F: PackedFormat, const AP: usize>(
    nb: usize,
    g: &[u8],
    a: &[&[u8]; TILE],
    sums: &mut [[[f32; 4]; 2]; TILE_ROWS / 2],
) {
    // SAFETY (whole body): the caller guarantees i8mm; everything else is baseline NEON on
    // registers or on `sums`' own 4-float arrays; slices are indexed with bounds checks.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 2]; TILE_ROWS / 2];
        for b in 0..nb {
            let rec = &g[b * F::RECORD..(b + 1) * F::RECORD];
            let ablock = |c: usize| &a[c][b * ASIZE..(b + 1) * ASIZE];
            let mut aops = [[vdupq_n_s8(0); 4]; 2];
            let mut ad = [vdupq_n_f32(0.0); 2];
            for q in 0..AP {
                let (y0, y1) = (ablock(2 * q), ablock(2 * q + 1));
                aops[q] = pair_operands(q8_0_halves(y0), q8_0_halves(y1));
                let (d0, d1) = (read_f16(y0, 0), read_f16(y1, 0));
                ad[q] = f32x4([d0, d1, d0, d1]);
            }
            for p in 0..TILE_ROWS / 2 {
                let wops = F::operands(rec, p);
                let (d0, d1) = (read_f16(rec, 4 * p), read_f16(rec, 4 * p + 2));
                let wd = f32x4([d0, d0, d1, d1]);
                for q in 0..AP {
                    let s = vcvtq_f32_s32(block_sums(&wops, &aops[q]));
                    acc[p][q] = vfmaq_f32(acc[p][q], s, vmulq_f32(wd, ad[q]));
                }
            }
        }
        for p in 0..TILE_ROWS / 2 {
            for q in 0..AP {
                vst1q_f32(sums[p][q].as_mut_ptr(), acc[p][q]);
            }
        }
    }
}

/// One packed group × up to [`TILE`] activation rows into `out[r·a.len() + c]` (see
/// [`Packing::tile`]); short slices yield what they hold, like [`run_tile`].
fn run_packed<F: PackedFormat>(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let na = a.len().min(TILE);
    if na == 0 {
        return;
    }
    let mut nb = (n / QK).min(group.len() / F::RECORD);
    for row in &a[..na] {
        nb = nb.min(row.len() / ASIZE);
    }
    let ar: [&[u8]; TILE] = std::array::from_fn(|c| a[c.min(na - 1)]);
    let mut sums = [[[0f32; 4]; 2]; TILE_ROWS / 2];
    // SAFETY: the body needs i8mm, which `detected` verified before this table could be
    // obtained; it indexes its slices with bounds checks.
    unsafe {
        if na <= 2 {
            packed_body::<F, 1>(nb, group, &ar, &mut sums);
        } else {
            packed_body::<F, 2>(nb, group, &ar, &mut sums);
        }
    }
    for r in 0..TILE_ROWS {
        for c in 0..na {
            let lane = 2 * (r % 2) + c % 2;
            if let Some(o) = out.get_mut(r * na + c) {
                *o = sums[r / 2][c / 2][lane];
            }
        }
    }
}

fn q4_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    run_packed::<PackedQ4_0>(n, group, a, out)
}

fn q8_0_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    run_packed::<PackedQ8_0>(n, group, a, out)
}
