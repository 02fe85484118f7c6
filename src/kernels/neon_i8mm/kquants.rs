//! `smmla` tiles for the K-quants: Q4_K and Q6_K weights · Q8_K activations, plain
//! ([`super::super::QuantTile`]) and over 16-row records repacked at load ([`super::Packing`]).
//!
//! They compute the exact-integer formula of [`crate::kernels::tiles::q4_k_q8_k_exact`] and
//! [`crate::kernels::tiles::q6_k_q8_k_exact`] (as the x86 K-quant kernels do), bitwise, for
//! every output whatever the tile shape:
//! - per super-block, weight row pair `(r0, r1)` and activation row pair `(c0, c1)`, each
//!   sub-block's sums `[r0·c0, r0·c1, r1·c0, r1·c1]` come from `smmla` (four per 32-value
//!   Q4_K sub-block, two per 16-value Q6_K one, from a zeroed accumulator) and are multiplied
//!   lane by lane by the rows' sub-block scales `[sc(r0), sc(r0), sc(r1), sc(r1)]` into the
//!   super-block's i32 total `isum` (exact: |isum| < 2³¹);
//! - the min/offset term `msum = Σ_j m_j·bsum_j` comes from `smmla` too: the weight side (the
//!   Q4_K mins, the Q6_K scales) is one operand per eight sub-blocks, and the activations'
//!   stored 16-value sums (i16, summed in pairs for Q4_K's 32-value sub-blocks) are split into
//!   seven-bit pieces `bsum = h·2¹⁴ + m·2⁷ + l` (`l`, `m` in 0..128, `h` the signed rest) that
//!   fit `smmla`'s i8 operands, recombined as `((Σh·2⁷) + Σm)·2⁷ + Σl`. This holds for any
//!   stored bsum, as the twins do (they use the stored sums, not the quants);
//! - then one f32 step per super-block, lane by lane with separate multiplies and adds in the
//!   twin's order: Q4_K `acc += (d·d_a)·isum; acc −= (dmin·d_a)·msum`, Q6_K
//!   `acc += (d·d_a)·(isum − 32·msum)` with the unsigned levels 0..63 (as the twin).
//!
//! Records (both the load-time packing and the plain tile, which packs each super-block of its
//! rows into a stack buffer first, so the two share every instruction after that): per
//! super-block, eight row-pair records ([`Q4_K_PAIR`], [`Q6_K_PAIR`] bytes: the rows' bytes
//! reordered, plus 16 (Q4_K) or 4 (Q6_K) bytes of duplicated f16 scales) whose quant bytes are
//! the two rows' bytes interleaved eight at a time, so a 16-byte load is an `smmla` operand
//! after at most a nibble mask or shift (Q4_K) or the 6-bit assembly (Q6_K, ten instructions
//! per four operands).
//!
//! Activations: `smmla` needs the two activation rows of a pair interleaved eight bytes at a
//! time too. The tiles do that per call, per super-block, into a stack buffer ([`Acts`]: 32
//! operands, the bsum pieces and the scales, 0.6 KiB per pair) that the group's eight weight
//! row pairs then read; it costs about 5 % of a 16-row group's work. Laying the activations out
//! once per product instead would need an activation-layout hook in `ops::matmul` (as the AMX
//! 16×16 tiles have), which did not seem worth a change to the `Packing` type.

use std::arch::aarch64::*;

use super::super::neon::load_s8;
use super::super::{TILE, TILE_ROWS};
use super::{interleave, smmla};
use crate::quant::blocks::{Q4_K_BYTES, Q6_K_BYTES, Q6_K_D, Q6_K_SCALES, Q8_K_BSUMS, Q8_K_BYTES};
use crate::quant::{read_f32, unpack_scale_min_k4};

/// Values per super-block.
const QK_K: usize = 256;
/// Bytes per Q8_K activation block: f32 d, 256 i8 quants, 16 i16 sums of 16 quants.
const ASIZE: usize = Q8_K_BYTES;
/// Row pairs per 16-row group.
const PAIRS: usize = TILE_ROWS / 2;

/// Bytes of one Q4_K row-pair record (see [`pack_q4_k_pair`]).
pub(super) const Q4_K_PAIR: usize = 16 + 16 + 16 + 256;
/// Bytes of one Q6_K row-pair record (see [`pack_q6_k_pair`]).
pub(super) const Q6_K_PAIR: usize = 8 + 32 + 256 + 128;
/// Bytes of one packed Q4_K record: 16 rows' super-block `b`, eight pair records.
pub(super) const Q4_K_RECORD: usize = PAIRS * Q4_K_PAIR;
/// Bytes of one packed Q6_K record: 16 rows' super-block `b`, eight pair records.
pub(super) const Q6_K_RECORD: usize = PAIRS * Q6_K_PAIR;

/// Two activation rows' super-block as `smmla` operands (see the module docs).
struct Acts {
    /// Operand `o`: values `8o..8o + 8` of row `c0`, then of row `c1`.
    ops: [int8x16_t; 32],
    /// The bsum pieces `[h, m, l]`, each as operands over sub-blocks 0..8 and 8..16 (rows `c0`
    /// then `c1`, eight sums each; Q4_K uses only the first: its eight 32-value sums).
    sums: [[int8x16_t; 2]; 3],
    /// `[d(c0), d(c1), d(c0), d(c1)]`, the lanes of the `smmla` results.
    d: float32x4_t,
}

/// The seven-bit pieces `[h, m, l]` of eight i32 sums (`v = h·2¹⁴ + m·2⁷ + l`, `m`, `l` in
/// 0..128, `h` in −4..4 for |v| ≤ 2¹⁶), as i8.
#[inline]
fn pieces32(lo: int32x4_t, hi: int32x4_t) -> [int8x8_t; 3] {
    // SAFETY: register-only NEON operations (baseline on aarch64).
    unsafe {
        let m7 = vdupq_n_s32(127);
        let narrow =
            |a: int32x4_t, b: int32x4_t| vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b)));
        [
            narrow(vshrq_n_s32::<14>(lo), vshrq_n_s32::<14>(hi)),
            narrow(
                vandq_s32(vshrq_n_s32::<7>(lo), m7),
                vandq_s32(vshrq_n_s32::<7>(hi), m7),
            ),
            narrow(vandq_s32(lo, m7), vandq_s32(hi, m7)),
        ]
    }
}

/// The seven-bit pieces `[h, m, l]` of eight i16 sums (`h` in −2..2), as i8.
#[inline]
fn pieces16(v: int16x8_t) -> [int8x8_t; 3] {
    // SAFETY: register-only NEON operations (baseline on aarch64).
    unsafe {
        let m7 = vdupq_n_s16(127);
        [
            vmovn_s16(vshrq_n_s16::<14>(v)),
            vmovn_s16(vandq_s16(vshrq_n_s16::<7>(v), m7)),
            vmovn_s16(vandq_s16(v, m7)),
        ]
    }
}

/// Eight stored i16 sums of block `y` from sum `g0` on.
#[inline]
fn bsums(y: &[u8], g0: usize) -> int16x8_t {
    // SAFETY: register reinterpretation only.
    unsafe { vreinterpretq_s16_s8(load_s8(y, Q8_K_BSUMS + 2 * g0)) }
}

/// Pairs two rows' i8 pieces into operands (`c0`'s eight, then `c1`'s).
#[inline]
fn pair_pieces(p0: [int8x8_t; 3], p1: [int8x8_t; 3]) -> [int8x16_t; 3] {
    // SAFETY: register-only NEON operations (baseline on aarch64).
    unsafe { std::array::from_fn(|i| vcombine_s8(p0[i], p1[i])) }
}

impl Acts {
    /// The operands of activation blocks `y0`, `y1` (rows `c0`, `c1`, [`ASIZE`] bytes each)
    /// for weight type `F`.
    #[inline]
    fn new<F: KQuant>(y0: &[u8], y1: &[u8]) -> Acts {
        let mut ops = [zero8(); 32];
        for i in 0..16 {
            let [a, b] = interleave(load_s8(y0, 4 + 16 * i), load_s8(y1, 4 + 16 * i));
            ops[2 * i] = a;
            ops[2 * i + 1] = b;
        }
        let (d0, d1) = (read_f32(y0, 0), read_f32(y1, 0));
        // SAFETY: 4 readable f32.
        let d = unsafe { vld1q_f32([d0, d1, d0, d1].as_ptr()) };
        Acts {
            ops,
            sums: F::sums(y0, y1),
            d,
        }
    }
}

/// A zero i8 vector.
#[inline]
fn zero8() -> int8x16_t {
    // SAFETY: register-only NEON operation.
    unsafe { vdupq_n_s8(0) }
}

/// The i32 lanes `[s(r0), s(r0), s(r1), s(r1)]` for sub-blocks `4i..4i + 4` (i = 0, 1) of a
/// pair's eight scales per row (`s`: row 0's eight, then row 1's, as i8).
#[inline]
fn lane_scales(s: int8x16_t) -> [int32x4_t; 8] {
    // SAFETY: register-only NEON operations (baseline on aarch64).
    unsafe {
        let (a, b) = (vmovl_s8(vget_low_s8(s)), vmovl_high_s8(s));
        // [r0 j, r1 j] for j = 0..4, then 4..8.
        let z = [vzip1q_s16(a, b), vzip2q_s16(a, b)];
        let mut out = [vdupq_n_s32(0); 8];
        for (h, z) in z.into_iter().enumerate() {
            // [r0 j, r0 j, r1 j, r1 j] for j = 4h, 4h + 1, then 4h + 2, 4h + 3.
            let t = [vzip1q_s16(z, z), vzip2q_s16(z, z)];
            for (i, t) in t.into_iter().enumerate() {
                out[4 * h + 2 * i] = vmovl_s16(vget_low_s16(t));
                out[4 * h + 2 * i + 1] = vmovl_high_s16(t);
            }
        }
        out
    }
}

/// Four f16 at `b[off..off + 8]` as f32 (exact; `fcvtl`, baseline on aarch64).
#[inline]
fn f16x4(b: &[u8], off: usize) -> float32x4_t {
    let s = &b[off..off + 8];
    // SAFETY: `s` holds 8 readable bytes (vld1 has no alignment requirement for u8); the
    // conversion is a baseline instruction on registers.
    unsafe {
        let h = vld1_u8(s.as_ptr());
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

/// `msum` lanes from weight operands `w` (over sub-blocks 0..8, 8..16) and the activations'
/// bsum pieces: `((Σh·2⁷) + Σm)·2⁷ + Σl`, with `N` operands per piece.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn piece_sums<const N: usize>(w: &[int8x16_t; 2], sums: &[[int8x16_t; 2]; 3]) -> int32x4_t {
    // SAFETY: the caller guarantees i8mm; the rest is baseline NEON on registers.
    unsafe {
        let mut t = vdupq_n_s32(0);
        for (i, piece) in sums.iter().enumerate() {
            if i > 0 {
                t = vshlq_n_s32::<7>(t);
            }
            for k in 0..N {
                t = smmla(t, w[k], piece[k]);
            }
        }
        t
    }
}

/// A K-quant weight type the tiles handle.
trait KQuant {
    /// Bytes per super-block as stored.
    const WSIZE: usize;
    /// Bytes per row-pair record.
    const PAIR: usize;
    /// Two rows' super-blocks (`WSIZE` bytes each) as one pair record (`PAIR` bytes).
    fn pack_pair(x0: &[u8], x1: &[u8], out: &mut [u8]);
    /// The bsum pieces of two activation blocks (see [`Acts::sums`]).
    fn sums(y0: &[u8], y1: &[u8]) -> [[int8x16_t; 2]; 3];
    /// One pair record × `AP` activation pairs: adds the super-block's f32 terms to `acc[q]`.
    ///
    /// # Safety
    /// The CPU must support the int8 matrix-multiply extension.
    unsafe fn pair<const AP: usize>(rec: &[u8], acts: &[Acts; AP], acc: &mut [float32x4_t; 2]);
}

/// Q4_K weights.
struct Q4K;

/// Packs two rows' Q4_K super-blocks `x0`, `x1` (144 bytes each) into a pair record:
/// `[0..16)` f16 `d0 d0 d1 d1 dmin0 dmin0 dmin1 dmin1` (the lanes of the `smmla` results),
/// `[16..32)` the eight six-bit scales of row 0 then of row 1 (bytes), `[32..48)` the mins
/// likewise, `[48..304)` per 64-value chunk `c` and 8-byte piece `k`, 16 bytes: row 0's quant
/// bytes `32c + 8k..32c + 8k + 8`, then row 1's. Their low nibbles are sub-block `2c`'s
/// operand `k`, the high nibbles sub-block `2c + 1`'s.
fn pack_q4_k_pair(x0: &[u8], x1: &[u8], out: &mut [u8]) {
    for (r, x) in [x0, x1].into_iter().enumerate() {
        for i in 0..2 {
            // d, then dmin.
            out[8 * i + 4 * r..8 * i + 4 * r + 2].copy_from_slice(&x[2 * i..2 * i + 2]);
            out[8 * i + 4 * r + 2..8 * i + 4 * r + 4].copy_from_slice(&x[2 * i..2 * i + 2]);
        }
        for j in 0..8 {
            let (sc, m) = unpack_scale_min_k4(j, &x[4..16]);
            out[16 + 8 * r + j] = sc;
            out[32 + 8 * r + j] = m;
        }
        for c in 0..4 {
            for k in 0..4 {
                let at = 48 + 64 * c + 16 * k + 8 * r;
                out[at..at + 8].copy_from_slice(&x[16 + 32 * c + 8 * k..24 + 32 * c + 8 * k]);
            }
        }
    }
}

impl KQuant for Q4K {
    const WSIZE: usize = Q4_K_BYTES;
    const PAIR: usize = Q4_K_PAIR;

    fn pack_pair(x0: &[u8], x1: &[u8], out: &mut [u8]) {
        pack_q4_k_pair(x0, x1, out)
    }

    /// The 32-value sums `bsum_2j + bsum_2j+1` (|·| ≤ 2¹⁶ for any stored bytes) in pieces.
    #[inline]
    fn sums(y0: &[u8], y1: &[u8]) -> [[int8x16_t; 2]; 3] {
        // SAFETY: register-only NEON operations (baseline on aarch64).
        let p = |y: &[u8]| unsafe { pieces32(vpaddlq_s16(bsums(y, 0)), vpaddlq_s16(bsums(y, 8))) };
        pair_pieces(p(y0), p(y1)).map(|v| [v, zero8()])
    }

    #[inline]
    #[target_feature(enable = "i8mm")]
    unsafe fn pair<const AP: usize>(rec: &[u8], acts: &[Acts; AP], acc: &mut [float32x4_t; 2]) {
        // SAFETY (whole body): the caller guarantees i8mm; everything else is baseline NEON on
        // registers; the record is read through bounds-checked slices.
        unsafe {
            let (dw, mw) = (f16x4(rec, 0), f16x4(rec, 8));
            let sc = lane_scales(load_s8(rec, 16));
            let mins = [load_s8(rec, 32), zero8()];
            let m4 = vdupq_n_u8(0x0F);
            let mut isum = [vdupq_n_s32(0); 2];
            for c in 0..4 {
                let z: [uint8x16_t; 4] = std::array::from_fn(|k| {
                    vreinterpretq_u8_s8(load_s8(rec, 48 + 64 * c + 16 * k))
                });
                for h in 0..2 {
                    let j = 2 * c + h;
                    let w = z.map(|z| {
                        vreinterpretq_s8_u8(if h == 0 {
                            vandq_u8(z, m4)
                        } else {
                            vshrq_n_u8::<4>(z)
                        })
                    });
                    for q in 0..AP {
                        let mut s = vdupq_n_s32(0);
                        for k in 0..4 {
                            s = smmla(s, w[k], acts[q].ops[4 * j + k]);
                        }
                        isum[q] = vmlaq_s32(isum[q], s, sc[j]);
                    }
                }
            }
            for q in 0..AP {
                let msum = piece_sums::<1>(&mins, &acts[q].sums);
                // The twin's order: acc += (d·d_a)·isum; acc −= (dmin·d_a)·msum.
                let t = vmulq_f32(vmulq_f32(dw, acts[q].d), vcvtq_f32_s32(isum[q]));
                acc[q] = vaddq_f32(acc[q], t);
                let t = vmulq_f32(vmulq_f32(mw, acts[q].d), vcvtq_f32_s32(msum));
                acc[q] = vsubq_f32(acc[q], t);
            }
        }
    }
}

/// Q6_K weights.
struct Q6K;

/// Packs two rows' Q6_K super-blocks `x0`, `x1` (210 bytes each) into a pair record:
/// `[0..8)` f16 `d0 d0 d1 d1`, `[8..24)` the scales of sub-blocks 0..8 of row 0 then row 1,
/// `[24..40)` those of sub-blocks 8..16, `[40..296)` per half `h`, low-bit array `p` (the
/// file's `ql[64h + 32p..]`) and 8-byte piece `k`, 16 bytes: row 0's bytes, then row 1's;
/// `[296..424)` per half `h` and piece `k` the high-bit bytes `qh[32h + 8k..]` likewise.
fn pack_q6_k_pair(x0: &[u8], x1: &[u8], out: &mut [u8]) {
    for (r, x) in [x0, x1].into_iter().enumerate() {
        out[4 * r..4 * r + 2].copy_from_slice(&x[Q6_K_D..Q6_K_BYTES]);
        out[4 * r + 2..4 * r + 4].copy_from_slice(&x[Q6_K_D..Q6_K_BYTES]);
        for i in 0..2 {
            let at = 8 + 16 * i + 8 * r;
            out[at..at + 8].copy_from_slice(&x[Q6_K_SCALES + 8 * i..Q6_K_SCALES + 8 + 8 * i]);
        }
        for h in 0..2 {
            for k in 0..4 {
                for p in 0..2 {
                    let at = 40 + 128 * h + 64 * p + 16 * k + 8 * r;
                    let src = 64 * h + 32 * p + 8 * k;
                    out[at..at + 8].copy_from_slice(&x[src..src + 8]);
                }
                let at = 296 + 64 * h + 16 * k + 8 * r;
                let src = 128 + 32 * h + 8 * k;
                out[at..at + 8].copy_from_slice(&x[src..src + 8]);
            }
        }
    }
}

impl KQuant for Q6K {
    const WSIZE: usize = Q6_K_BYTES;
    const PAIR: usize = Q6_K_PAIR;

    fn pack_pair(x0: &[u8], x1: &[u8], out: &mut [u8]) {
        pack_q6_k_pair(x0, x1, out)
    }

    /// The sixteen stored 16-value sums in pieces.
    #[inline]
    fn sums(y0: &[u8], y1: &[u8]) -> [[int8x16_t; 2]; 3] {
        let lo = pair_pieces(pieces16(bsums(y0, 0)), pieces16(bsums(y1, 0)));
        let hi = pair_pieces(pieces16(bsums(y0, 8)), pieces16(bsums(y1, 8)));
        std::array::from_fn(|i| [lo[i], hi[i]])
    }

    #[inline]
    #[target_feature(enable = "i8mm")]
    unsafe fn pair<const AP: usize>(rec: &[u8], acts: &[Acts; AP], acc: &mut [float32x4_t; 2]) {
        // SAFETY (whole body): as for Q4K::pair.
        unsafe {
            let dw = f16x4(rec, 0);
            let s = [load_s8(rec, 8), load_s8(rec, 24)];
            let (m4, m30) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
            let mut isum = [vdupq_n_s32(0); 2];
            for h in 0..2 {
                // Sub-block 8h + 2·quarter + half has scales sc[2·quarter + half].
                let sc = lane_scales(s[h]);
                for half in 0..2 {
                    let mut sub = [[vdupq_n_s32(0); 2]; 4];
                    for k in 2 * half..2 * half + 2 {
                        let ld = |at: usize| vreinterpretq_u8_s8(load_s8(rec, at));
                        let a = ld(40 + 128 * h + 16 * k);
                        let b = ld(40 + 128 * h + 64 + 16 * k);
                        let hb = ld(296 + 64 * h + 16 * k);
                        // Levels 0..63 of quarters 0..3 (values 128h + 32·quarter + 8k..):
                        // low nibbles of a, of b, high nibbles of a, of b, with bit pairs
                        // 0, 1, 2, 3 of hb on top.
                        let w = [
                            vbslq_u8(m30, vshlq_n_u8::<4>(hb), vandq_u8(a, m4)),
                            vbslq_u8(m30, vshlq_n_u8::<2>(hb), vandq_u8(b, m4)),
                            vbslq_u8(m30, hb, vshrq_n_u8::<4>(a)),
                            vsriq_n_u8::<4>(vshrq_n_u8::<2>(hb), b),
                        ]
                        .map(|v| vreinterpretq_s8_u8(v));
                        for quarter in 0..4 {
                            for q in 0..AP {
                                let o = 16 * h + 4 * quarter + k;
                                sub[quarter][q] =
                                    smmla(sub[quarter][q], w[quarter], acts[q].ops[o]);
                            }
                        }
                    }
                    for quarter in 0..4 {
                        for q in 0..AP {
                            isum[q] = vmlaq_s32(isum[q], sub[quarter][q], sc[2 * quarter + half]);
                        }
                    }
                }
            }
            for q in 0..AP {
                let msum = piece_sums::<2>(&s, &acts[q].sums);
                // The twin's order: acc += (d·d_a)·(isum − 32·msum).
                let net = vsubq_s32(isum[q], vshlq_n_s32::<5>(msum));
                let t = vmulq_f32(vmulq_f32(dw, acts[q].d), vcvtq_f32_s32(net));
                acc[q] = vaddq_f32(acc[q], t);
            }
        }
    }
}

/// Where a body finds its weight rows: packed records, or plain rows that it packs one
/// super-block at a time into a stack buffer.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Packed(&'a [u8]),
    Plain(&'a [&'a [u8]; TILE_ROWS]),
}

/// `nb` super-blocks of `pairs` weight-row pairs (plain rows are packed into `buf`, at least
/// `pairs` records long) × `AP` activation pairs (rows `2q`, `2q + 1`
/// of `a`): `acc[p][q]` gets the f32 sums `[w_2p·a_2q, w_2p·a_2q+1, w_2p+1·a_2q,
/// w_2p+1·a_2q+1]`.
///
/// # Safety
/// The CPU must support the int8 matrix-multiply extension.
#[target_feature(enable = "i8mm")]
unsafe fn body<F: KQuant, const AP: usize>(
    nb: usize,
    pairs: usize,
    w: Weights<'_>,
    a: &[&[u8]; TILE],
    buf: &mut [u8],
    acc: &mut [[float32x4_t; 2]; PAIRS],
) {
    for b in 0..nb {
        let rec: &[u8] = match w {
            Weights::Packed(g) => &g[b * PAIRS * F::PAIR..(b + 1) * PAIRS * F::PAIR],
            Weights::Plain(rows) => {
                let block = |r: usize| &rows[r][b * F::WSIZE..(b + 1) * F::WSIZE];
                for p in 0..pairs {
                    F::pack_pair(block(2 * p), block(2 * p + 1), &mut buf[p * F::PAIR..]);
                }
                &buf[..pairs * F::PAIR]
            }
        };
        let ablock = |c: usize| &a[c][b * ASIZE..(b + 1) * ASIZE];
        let acts: [Acts; AP] =
            std::array::from_fn(|q| Acts::new::<F>(ablock(2 * q), ablock(2 * q + 1)));
        for p in 0..pairs {
            // SAFETY: the caller guarantees i8mm.
            unsafe { F::pair::<AP>(&rec[p * F::PAIR..(p + 1) * F::PAIR], &acts, &mut acc[p]) };
        }
    }
}

/// Runs the body for `pairs` weight pairs and `na` activation rows (`a` padded to [`TILE`]) and
/// writes `out[r·na + c]` for the first `nw` rows (what fits `out`).
fn run<F: KQuant>(
    nb: usize,
    (nw, pairs): (usize, usize),
    w: Weights<'_>,
    buf: &mut [u8],
    a: &[&[u8]],
    out: &mut [f32],
) {
    let na = a.len().min(TILE);
    // Columns past the tile's edge repeat its last row (their outputs are never written).
    let ar: [&[u8]; TILE] = std::array::from_fn(|c| a[c.min(na - 1)]);
    // SAFETY: `vdupq_n_f32` is a register operation.
    let mut acc = [[unsafe { vdupq_n_f32(0.0) }; 2]; PAIRS];
    // SAFETY: the bodies need i8mm, which `detected` verified before this table could be
    // obtained; they index their slices with bounds checks.
    unsafe {
        if na <= 2 {
            body::<F, 1>(nb, pairs, w, &ar, buf, &mut acc);
        } else {
            body::<F, 2>(nb, pairs, w, &ar, buf, &mut acc);
        }
    }
    let mut sums = [[[0f32; 4]; 2]; PAIRS];
    for (s, v) in sums.iter_mut().zip(&acc) {
        for q in 0..2 {
            // SAFETY: `s[q]` holds 4 writable f32.
            unsafe { vst1q_f32(s[q].as_mut_ptr(), v[q]) };
        }
    }
    for r in 0..nw {
        for c in 0..na {
            // Lane order of the sums: [w0·a0, w0·a1, w1·a0, w1·a1].
            if let Some(o) = out.get_mut(r * na + c) {
                *o = sums[r / 2][c / 2][2 * (r % 2) + c % 2];
            }
        }
    }
}

/// A plain tile: up to [`TILE_ROWS`] weight rows × up to [`TILE`] activation rows. Odd tile
/// sides are padded with a duplicate of the last row; blocks missing from a too-short slice
/// are skipped for the whole tile, rows beyond the limits ignored and outputs that do not fit
/// `out` dropped: nothing panics and nothing is read out of bounds.
fn plain_tile<F: KQuant>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    let (nw, na) = (w.len().min(TILE_ROWS), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut nb = n / QK_K;
    for row in &w[..nw] {
        nb = nb.min(row.len() / F::WSIZE);
    }
    for row in &a[..na] {
        nb = nb.min(row.len() / ASIZE);
    }
    let wr: [&[u8]; TILE_ROWS] = std::array::from_fn(|r| w[r.min(nw - 1)]);
    let mut buf = [0u8; PAIRS * Q6_K_PAIR];
    run::<F>(
        nb,
        (nw, nw.div_ceil(2)),
        Weights::Plain(&wr),
        &mut buf,
        &a[..na],
        out,
    );
}

/// One packed group (16 rows) × up to [`TILE`] activation rows into `out[r·a.len() + c]`;
/// short slices yield what they hold, like [`plain_tile`].
fn packed_tile<F: KQuant>(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    let na = a.len().min(TILE);
    if na == 0 {
        return;
    }
    let mut nb = (n / QK_K).min(group.len() / (PAIRS * F::PAIR));
    for row in &a[..na] {
        nb = nb.min(row.len() / ASIZE);
    }
    run::<F>(
        nb,
        (TILE_ROWS, PAIRS),
        Weights::Packed(group),
        &mut [],
        &a[..na],
        out,
    );
}

/// Packs 16 rows of `n` values: per super-block, the eight row pairs' records. Anything but 16
/// rows holding `n / 256` super-blocks and an `out` of `n / 256` records is left untouched.
fn pack<F: KQuant>(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let nb = n / QK_K;
    let record = PAIRS * F::PAIR;
    if rows.len() != TILE_ROWS
        || out.len() != nb * record
        || rows.iter().any(|r| r.len() < nb * F::WSIZE)
    {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(record).enumerate() {
        let block = |r: usize| &rows[r][b * F::WSIZE..(b + 1) * F::WSIZE];
        for (p, pr) in rec.chunks_exact_mut(F::PAIR).enumerate() {
            F::pack_pair(block(2 * p), block(2 * p + 1), pr);
        }
    }
}

/// Q4_K weights · Q8_K activations, a tile of up to 16 weight rows with `smmla`.
pub(super) fn q4_k_q8_k_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    plain_tile::<Q4K>(n, w, a, out)
}

/// Q6_K weights · Q8_K activations, a tile of up to 16 weight rows with `smmla`.
pub(super) fn q6_k_q8_k_tile(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    plain_tile::<Q6K>(n, w, a, out)
}

/// The single Q4_K dot of this table: a 1×1 tile, so that tiles equal it bitwise.
pub(super) fn q4_k_q8_k_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    plain_tile::<Q4K>(n, &[w], &[a], &mut out);
    out[0]
}

/// The single Q6_K dot of this table: a 1×1 tile, so that tiles equal it bitwise.
pub(super) fn q6_k_q8_k_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    plain_tile::<Q6K>(n, &[w], &[a], &mut out);
    out[0]
}

pub(super) fn q4_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    packed_tile::<Q4K>(n, group, a, out)
}

pub(super) fn q6_k_packed_tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
    packed_tile::<Q6K>(n, group, a, out)
}

pub(super) fn pack_q4_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack::<Q4K>(n, rows, out)
}

pub(super) fn pack_q6_k(n: usize, rows: &[&[u8]], out: &mut [u8]) {
    pack::<Q6K>(n, rows, out)
}

#[cfg(test)]
mod tests {
    //! The `smmla` K-quant tiles against the exact-integer twins, bitwise: plain tiles of every
    //! shape (1..=16 rows × 1..=4 activation rows), packed groups with 1..=4 activation rows,
    //! over random and extreme blocks, unaligned weight bytes and 1..5 super-blocks. Skipped
    //! (with a note) where the CPU lacks i8mm; the aarch64 CI runs them under `qemu -cpu max`.

    use super::*;
    use crate::kernels::tiles::{q4_k_q8_k_exact, q6_k_q8_k_exact};
    use crate::quant::blocks::Q8_K_QS;
    use crate::quant::write_f16;

    use crate::kernels::test_rng::Rng;

    /// Weight-row kinds: random bytes (every level, scale and min, negative Q6_K scales), all
    /// levels at their top with the largest scales and mins, all levels 0 with the largest
    /// scales (Q6_K: −128).
    #[derive(Clone, Copy, Debug)]
    enum WKind {
        Random,
        Top,
        Bottom,
    }

    /// `nb` Q4_K (`q6 = false`) or Q6_K super-blocks of `kind` with finite scales.
    fn weights(q6: bool, nb: usize, kind: WKind, rng: &mut Rng) -> Vec<u8> {
        let size = if q6 { Q6_K_BYTES } else { Q4_K_BYTES };
        let mut w: Vec<u8> = (0..nb * size).map(|_| rng.next() as u8).collect();
        for x in w.chunks_exact_mut(size) {
            match (q6, kind) {
                (_, WKind::Random) => {}
                (false, WKind::Top) => x[4..].fill(0xFF),
                (false, WKind::Bottom) => {
                    x[4..16].fill(0xFF);
                    x[16..].fill(0);
                }
                (true, WKind::Top) => {
                    x[..Q6_K_SCALES].fill(0xFF);
                    x[Q6_K_SCALES..Q6_K_D].fill(0x7F);
                }
                (true, WKind::Bottom) => {
                    x[..Q6_K_SCALES].fill(0);
                    x[Q6_K_SCALES..Q6_K_D].fill(0x80);
                }
            }
            if q6 {
                write_f16(x, Q6_K_D, rng.f() * 0.01);
            } else {
                write_f16(x, 0, rng.f() * 0.01);
                write_f16(x, 2, rng.f() * 0.01);
            }
        }
        w
    }

    /// Activation kinds: random quants (−128 included) with their sums, all +127, all −128,
    /// and random quants with arbitrary stored sums (the twins use the stored ones).
    #[derive(Clone, Copy, Debug)]
    enum AKind {
        Random,
        Plus,
        Minus,
        ArbitrarySums,
    }

    fn activations(nb: usize, kind: AKind, rng: &mut Rng) -> Vec<u8> {
        let mut a: Vec<u8> = (0..nb * ASIZE).map(|_| rng.next() as u8).collect();
        for y in a.chunks_exact_mut(ASIZE) {
            y[..4].copy_from_slice(&(rng.f() * 0.01).to_le_bytes());
            match kind {
                AKind::Plus => y[Q8_K_QS..Q8_K_BSUMS].fill(0x7F),
                AKind::Minus => y[Q8_K_QS..Q8_K_BSUMS].fill(0x80),
                _ => {}
            }
            if !matches!(kind, AKind::ArbitrarySums) {
                for g in 0..16 {
                    let s: i16 = y[4 + 16 * g..20 + 16 * g]
                        .iter()
                        .map(|&q| q as i8 as i16)
                        .sum();
                    y[Q8_K_BSUMS + 2 * g..Q8_K_BSUMS + 2 + 2 * g].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
        a
    }

    type Tile = fn(usize, &[&[u8]], &[&[u8]], &mut [f32]);
    type Packed = fn(usize, &[u8], &[&[u8]], &mut [f32]);
    type Pack = fn(usize, &[&[u8]], &mut [u8]);
    type Twin = fn(usize, &[u8], &[u8]) -> f32;

    /// Plain tiles of every shape and packed groups equal the twin for every output.
    fn check(q6: bool, tile: Tile, packed: Packed, pack: Pack, record: usize, twin: Twin) {
        if super::super::detected().is_none() {
            eprintln!("no i8mm + dotprod on this CPU: skipped");
            return;
        }
        let mut rng = Rng::star(if q6 { 0x6666 } else { 0x4444 });
        for nb in [1, 2, 3, 5] {
            let n = nb * QK_K;
            let kinds = [WKind::Random, WKind::Top, WKind::Random, WKind::Bottom];
            let ws: Vec<Vec<u8>> = (0..TILE_ROWS + 3)
                .map(|i| weights(q6, nb, kinds[i % kinds.len()], &mut rng))
                .collect();
            let akinds = [
                AKind::Random,
                AKind::Minus,
                AKind::ArbitrarySums,
                AKind::Plus,
            ];
            let acts: Vec<Vec<u8>> = (0..TILE + 1)
                .map(|i| activations(nb, akinds[i % akinds.len()], &mut rng))
                .collect();
            // Row 1 at an odd address, as in a memory-mapped file.
            let mut shifted = vec![0u8; ws[1].len() + 1];
            shifted[1..].copy_from_slice(&ws[1]);
            let mut wrows: Vec<&[u8]> = ws.iter().map(|v| v.as_slice()).collect();
            wrows[1] = &shifted[1..];
            let arows: Vec<&[u8]> = acts.iter().map(|v| v.as_slice()).collect();
            let want = |r: &[u8], c: &[u8]| twin(n, r, c);
            for start in [0, 3] {
                for nw in 1..=TILE_ROWS {
                    for na in 1..=TILE {
                        let w: Vec<&[u8]> =
                            (0..nw).map(|r| wrows[(start + r) % wrows.len()]).collect();
                        let a: Vec<&[u8]> =
                            (0..na).map(|c| arows[(start + c) % arows.len()]).collect();
                        let mut out = vec![f32::NAN; nw * na];
                        tile(n, &w, &a, &mut out);
                        for r in 0..nw {
                            for c in 0..na {
                                let (got, want) = (out[r * na + c], want(w[r], a[c]));
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "q6={q6} nb={nb} plain {nw}x{na} from {start} at ({r},{c}): \
                                     {got} vs {want}"
                                );
                            }
                        }
                    }
                }
                // A packed group of 16 of the rows.
                let rows: Vec<&[u8]> = (0..TILE_ROWS)
                    .map(|r| wrows[(start + r) % wrows.len()])
                    .collect();
                let mut group = vec![0u8; nb * record];
                pack(n, &rows, &mut group);
                for na in 1..=TILE {
                    let a: Vec<&[u8]> = (0..na).map(|c| arows[(start + c) % arows.len()]).collect();
                    let mut out = vec![f32::NAN; TILE_ROWS * na];
                    packed(n, &group, &a, &mut out);
                    for r in 0..TILE_ROWS {
                        for c in 0..na {
                            let (got, want) = (out[r * na + c], want(rows[r], a[c]));
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "q6={q6} nb={nb} packed 16x{na} from {start} at ({r},{c}): \
                                 {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q4_k_tiles_equal_the_exact_twin() {
        check(
            false,
            q4_k_q8_k_tile,
            q4_k_packed_tile,
            pack_q4_k,
            Q4_K_RECORD,
            q4_k_q8_k_exact,
        );
    }

    #[test]
    fn q6_k_tiles_equal_the_exact_twin() {
        check(
            true,
            q6_k_q8_k_tile,
            q6_k_packed_tile,
            pack_q6_k,
            Q6_K_RECORD,
            q6_k_q8_k_exact,
        );
    }

    /// The packers leave `out` untouched for anything but 16 full rows and the right size, and
    /// short slices make the tiles skip blocks rather than read out of bounds.
    #[test]
    fn bad_shapes_are_left_alone() {
        let mut rng = Rng::star(9);
        let w = weights(false, 2, WKind::Random, &mut rng);
        let rows: Vec<&[u8]> = vec![&w; TILE_ROWS];
        let mut out = vec![7u8; 2 * Q4_K_RECORD];
        pack_q4_k(512, &rows[..15], &mut out);
        pack_q4_k(512, &rows, &mut out[1..]);
        pack_q4_k(768, &rows, &mut vec![7u8; 3 * Q4_K_RECORD]);
        assert!(out.iter().all(|&b| b == 7));
        if super::super::detected().is_none() {
            return;
        }
        let a = activations(2, AKind::Random, &mut rng);
        let mut o = [0f32; 1];
        q4_k_q8_k_tile(512, &[&w[..Q4_K_BYTES]], &[&a], &mut o);
        assert_eq!(o[0].to_bits(), q4_k_q8_k_exact(256, &w, &a).to_bits());
        let mut o16 = [0f32; TILE_ROWS];
        q4_k_packed_tile(512, &out[..Q4_K_RECORD + 5], &[&a], &mut o16);
    }
}
