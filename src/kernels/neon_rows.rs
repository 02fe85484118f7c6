//! Baseline ARMv8.0 NEON row primitives ([`RowOps`]) and exp ops ([`ExpOps`]), in every
//! aarch64 table (`neon`, and inherited by `neon-dotprod` and `neon-i8mm`).
//!
//! Each one keeps the contract of its scalar twin ([`rows::SCALAR`], [`exp::SCALAR`]):
//! - **bitwise equal to the twin**: `dot_f32` (the twin's eight accumulators are two 4-lane
//!   registers, multiplied and added separately, reduced by the same tree), `axpy_f32`,
//!   `axpy_f16` and `wsum_f16` (separate multiply and add, like the twin's `o += w·v`; the
//!   x86 ones fuse and are only close), `gemm_f32` (one fused chain per output over `d`, lanes
//!   over the columns; `vfmaq_f32` is fused like `f32::mul_add`), the two activation
//!   quantizers (the reference's bytes), and `exp`/`silu`/`quick_gelu`/`softmax` (the same
//!   IEEE operations lane by lane, x86's `maxps`/`minps` semantics written as compare and
//!   select, softmax's 16 partial sums in four registers);
//! - **not bitwise**: `dot_f16`, because the twin is one sequential chain, which no vector
//!   code can follow. It runs 16 fused chains (four registers) and sums them by halving, the
//!   arithmetic of the AVX-512 `dot_f16`; the tests bound it by `1e-6·Σ|a·b|`. `dots_f16` is
//!   `dot_f16` row by row, so bitwise equal to it.
//!
//! f16 → f32 uses `fcvtl`/`fcvtl2` (baseline ARMv8.0) through `asm!`: the intrinsic
//! (`vcvt_f32_f16`) takes `float16x4_t`, which needs the unstable `f16` type on Rust 1.95.
//! It is exact for every f16 (subnormals included) and gives what `half::f16::to_f32` gives.
//!
//! NEON is baseline on aarch64, so these need no detection; the `unsafe fn` bodies only read
//! and write through pointers their safe wrappers have bounds-checked.

// Register arrays are indexed by row/lane up to small const bounds; index loops say that more
// plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use super::exp::{self, ExpOps, SOFTMAX_LANES};
use super::rows::{self, Gemm, RowOps};
use crate::quant::blocks::{Q8_0_BYTES, Q8_K_BSUMS, Q8_K_BYTES};

/// The NEON row primitives.
pub(crate) const ROWS: RowOps = RowOps {
    dot_f32,
    dot_f16,
    dots_f16,
    axpy_f32,
    axpy_f16,
    wsum_f16,
    gemm_f32,
    quantize_q8_0,
    quantize_q8_k,
};

/// The NEON exp ops.
pub(crate) const EXP: ExpOps = ExpOps {
    silu: silu_slice,
    quick_gelu: quick_gelu_slice,
    softmax,
};

// ---- f16 loads ----

/// Eight f16 at `p` as two f32 vectors (values 0..4, 4..8).
#[inline(always)]
unsafe fn load_f16x8(p: *const f16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p.cast());
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: register operands only; fcvtl/fcvtl2 are baseline ARMv8.0 instructions.
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack),
    );
    (lo, hi)
}

/// Four f16 at `p` as one f32 vector.
#[inline(always)]
unsafe fn load_f16x4(p: *const f16) -> float32x4_t {
    let h = vld1_u16(p.cast());
    let v: float32x4_t;
    // SAFETY: register operands only; fcvtl is a baseline ARMv8.0 instruction.
    asm!(
        "fcvtl {v:v}.4s, {h:v}.4h",
        h = in(vreg) h,
        v = out(vreg) v,
        options(pure, nomem, nostack),
    );
    v
}

// ---- dots ----

/// `dot_f32` over `n` values: the twin's accumulator `l` is lane `l % 4` of register `l / 4`;
/// each gets `acc += a·b` (separate multiply and add), then the twin's tree
/// `((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7))` and its scalar tail.
unsafe fn dot_f32_body(n: usize, a: *const f32, b: *const f32) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let chunks = n / 8;
    for c in 0..chunks {
        for h in 0..2 {
            let j = 8 * c + 4 * h;
            acc[h] = vaddq_f32(acc[h], vmulq_f32(vld1q_f32(a.add(j)), vld1q_f32(b.add(j))));
        }
    }
    // Lanes l + (l + 4), then pairwise: (0+4) + (1+5) and (2+6) + (3+7).
    let v = vaddq_f32(acc[0], acc[1]);
    let p = vpaddq_f32(v, v);
    let mut s = vgetq_lane_f32::<0>(p) + vgetq_lane_f32::<1>(p);
    for i in chunks * 8..n {
        s += *a.add(i) * *b.add(i);
    }
    s
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: both slices hold at least `n` f32.
    unsafe { dot_f32_body(n, a.as_ptr(), b.as_ptr()) }
}

/// `dot_f16` over `n` values: 16 fused chains over the full 16-value chunks (lane `l` of
/// register `u` is chain `4u + l`), summed by halving (`l + l+8`, `+4`, `+2`, `+1`), then the
/// tail multiplied and added separately. Not the twin's single chain: see the module docs.
unsafe fn dot_f16_body(n: usize, a: *const f32, b: *const f16) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let chunks = n / 16;
    for c in 0..chunks {
        let j = 16 * c;
        let (b0, b1) = load_f16x8(b.add(j));
        let (b2, b3) = load_f16x8(b.add(j + 8));
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(a.add(j)), b0);
        acc[1] = vfmaq_f32(acc[1], vld1q_f32(a.add(j + 4)), b1);
        acc[2] = vfmaq_f32(acc[2], vld1q_f32(a.add(j + 8)), b2);
        acc[3] = vfmaq_f32(acc[3], vld1q_f32(a.add(j + 12)), b3);
    }
    // Halving: lanes 0..8 += 8..16 (registers 0,1 += 2,3), then 0..4 += 4..8, then 0,1 += 2,3,
    // then 0 += 1.
    let h8 = [vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3])];
    let h4 = vaddq_f32(h8[0], h8[1]);
    let h2 = vadd_f32(vget_low_f32(h4), vget_high_f32(h4));
    let mut s = vget_lane_f32::<0>(h2) + vget_lane_f32::<1>(h2);
    for i in chunks * 16..n {
        s += *a.add(i) * (*b.add(i)).to_f32();
    }
    s
}

fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: `a` holds at least `n` f32 and `b` at least `n` halves.
    unsafe { dot_f16_body(n, a.as_ptr(), b.as_ptr()) }
}

fn dots_f16(q: &[f32], k: &[f16], stride: usize, out: &mut [f32]) {
    rows::dots_by_rows(dot_f16, q, k, stride, out)
}

// ---- axpy and weighted sums ----

/// `out[i] += w·v[i]` over `n` values, 16 at a time, then 4, then the scalar tail: a separate
/// multiply and add everywhere, like the twin.
unsafe fn axpy_f32_body(n: usize, w: f32, v: *const f32, out: *mut f32) {
    let wv = vdupq_n_f32(w);
    let mut i = 0;
    while i + 16 <= n {
        for u in 0..4 {
            let o = out.add(i + 4 * u);
            vst1q_f32(
                o,
                vaddq_f32(vld1q_f32(o), vmulq_f32(wv, vld1q_f32(v.add(i + 4 * u)))),
            );
        }
        i += 16;
    }
    while i + 4 <= n {
        let o = out.add(i);
        vst1q_f32(
            o,
            vaddq_f32(vld1q_f32(o), vmulq_f32(wv, vld1q_f32(v.add(i)))),
        );
        i += 4;
    }
    for j in i..n {
        *out.add(j) += w * *v.add(j);
    }
}

fn axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
    let n = v.len().min(out.len());
    // SAFETY: both slices hold at least `n` f32.
    unsafe { axpy_f32_body(n, w, v.as_ptr(), out.as_mut_ptr()) }
}

fn axpy_f16(w: f32, v: &[f16], out: &mut [f32]) {
    let n = v.len().min(out.len());
    // SAFETY: `v` holds at least `n` halves (one row at offset 0) and `out` `n` f32.
    unsafe { wsum_f16_body(&[w], v.as_ptr(), 0, &mut out[..n]) }
}

/// `out[i] += Σ_p w[p]·v[p·stride + i]` for `p` in order, each term a separate multiply and
/// add (what `axpy_f16` does once per row): 16 outputs at a time kept in four registers across
/// all rows, then 4, then the scalar tail.
unsafe fn wsum_f16_body(w: &[f32], v: *const f16, stride: usize, out: &mut [f32]) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let mut i = 0;
    while i + 16 <= n {
        let mut acc: [float32x4_t; 4] = std::array::from_fn(|u| vld1q_f32(o.add(i + 4 * u)));
        for (p, &wp) in w.iter().enumerate() {
            let wv = vdupq_n_f32(wp);
            let row = v.add(p * stride + i);
            let (x0, x1) = load_f16x8(row);
            let (x2, x3) = load_f16x8(row.add(8));
            for (u, x) in [x0, x1, x2, x3].into_iter().enumerate() {
                acc[u] = vaddq_f32(acc[u], vmulq_f32(wv, x));
            }
        }
        for u in 0..4 {
            vst1q_f32(o.add(i + 4 * u), acc[u]);
        }
        i += 16;
    }
    while i + 4 <= n {
        let mut acc = vld1q_f32(o.add(i));
        for (p, &wp) in w.iter().enumerate() {
            let x = load_f16x4(v.add(p * stride + i));
            acc = vaddq_f32(acc, vmulq_f32(vdupq_n_f32(wp), x));
        }
        vst1q_f32(o.add(i), acc);
        i += 4;
    }
    for j in i..n {
        for (p, &wp) in w.iter().enumerate() {
            *o.add(j) += wp * (*v.add(p * stride + j)).to_f32();
        }
    }
}

/// # Panics
/// If a row `p < w.len()` does not fit `v` (a caller bug), like the twin.
fn wsum_f16(w: &[f32], v: &[f16], stride: usize, out: &mut [f32]) {
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
    // SAFETY: the assert keeps every row p < n_rows (out.len() halves at p·stride) inside `v`.
    unsafe { wsum_f16_body(w, v.as_ptr(), stride, out) }
}

// ---- matrix product ----

/// [`Gemm`] rows `M` at a time: 16 columns per step in four registers per row (each lane one
/// output's fused chain over `d`, `vfmaq_f32(acc, a, b) = fma(a, b, acc)`), then 4, then the
/// scalar tail with `mul_add` (the same fused operation). `a` and `c` point at the block's
/// first row.
unsafe fn gemm_rows<const M: usize>(g: &Gemm<'_>, a: *const f32, c: *mut f32) {
    let (n, k, b) = (g.n, g.k, g.b.as_ptr());
    let mut j = 0;
    while j + 16 <= n {
        let mut acc = [[vdupq_n_f32(0.0); 4]; M];
        for d in 0..k {
            let bp = b.add(d * g.ldb + j);
            let bv: [float32x4_t; 4] = std::array::from_fn(|u| vld1q_f32(bp.add(4 * u)));
            for i in 0..M {
                let av = vdupq_n_f32(*a.add(i * g.lda + d));
                for u in 0..4 {
                    acc[i][u] = vfmaq_f32(acc[i][u], av, bv[u]);
                }
            }
        }
        for i in 0..M {
            for u in 0..4 {
                vst1q_f32(c.add(i * g.ldc + j + 4 * u), acc[i][u]);
            }
        }
        j += 16;
    }
    while j + 4 <= n {
        let mut acc = [vdupq_n_f32(0.0); M];
        for d in 0..k {
            let b0 = vld1q_f32(b.add(d * g.ldb + j));
            for i in 0..M {
                acc[i] = vfmaq_f32(acc[i], vdupq_n_f32(*a.add(i * g.lda + d)), b0);
            }
        }
        for i in 0..M {
            vst1q_f32(c.add(i * g.ldc + j), acc[i]);
        }
        j += 4;
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

fn gemm_f32(g: &Gemm<'_>, c: &mut [f32]) {
    rows::run_gemm(
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

// ---- activation quantizers ----

/// Q8_0 quantization of one 32-value block, the reference's arithmetic lane by lane:
/// `d = amax/127`, `id = 1/d` (0 for an all-zero block), `q = round(x·id)` with ties away from
/// zero (`frinta`, what `f32::round` is), converted with saturation like `as i8` (`fcvtzs`,
/// then two saturating narrows; NaN gives 0 in both, so an infinity, which makes `id` 0 and
/// `∞·0` NaN, needs no special case). Returns `None` for a block holding a NaN (the
/// reference's `amax` then depends on where it sits): the caller quantizes it in scalar.
unsafe fn q8_0_block(x: *const f32, y: *mut u8) -> Option<()> {
    let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(x.add(4 * i)));
    let mut m = vabsq_f32(v[0]);
    for &vi in &v[1..] {
        m = vmaxq_f32(m, vabsq_f32(vi));
    }
    // fmax/fmaxv return NaN where any input is NaN.
    let amax = vmaxvq_f32(m);
    if amax.is_nan() {
        return None;
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = vdupq_n_f32(id);
    for h in 0..2 {
        let q: [int16x4_t; 4] = std::array::from_fn(|u| {
            let r = vrndaq_f32(vmulq_f32(v[4 * h + u], idv));
            vqmovn_s32(vcvtq_s32_f32(r))
        });
        let q16 = [vcombine_s16(q[0], q[1]), vcombine_s16(q[2], q[3])];
        let q8 = vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1]));
        vst1q_s8(y.add(2 + 16 * h).cast(), q8);
    }
    let dh = f16::from_f32(d).to_bits().to_le_bytes();
    std::ptr::copy_nonoverlapping(dh.as_ptr(), y, 2);
    Some(())
}

fn quantize_q8_0(x: &[f32], y: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    rows::quantize_blocks(
        x,
        y,
        (32, Q8_0_BYTES),
        q8_0_block,
        crate::quant::quantize_row_q8_0,
    )
}

/// Q8_K quantization of one 256-value super-block, the reference's arithmetic lane by lane:
/// `max` = the first value of largest magnitude, `iscale = −127/max`,
/// `q = min(round_half_even(iscale·x), 127)` (`fcvtns`; the reference's `nearest_int` is
/// exact for these magnitudes), `d = 1/iscale`, and the 16-value quant sums. Returns `None`
/// for a block with a NaN or an infinity or a scale that overflows (the caller quantizes those
/// in scalar); an all-zero block is all zeros.
unsafe fn q8_k_block(x: *const f32, y: *mut u8) -> Option<()> {
    let mut m = vdupq_n_f32(0.0);
    for i in 0..64 {
        m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x.add(4 * i))));
    }
    // NaN propagates through fmax/fmaxv; an infinity shows as a non-finite amax.
    let amax = vmaxvq_f32(m);
    if !amax.is_finite() {
        return None;
    }
    if amax == 0.0 {
        std::ptr::write_bytes(y, 0, Q8_K_BYTES);
        return Some(());
    }
    // The first value whose magnitude is amax, with its sign.
    let target = vdupq_n_f32(amax);
    let mut max = amax;
    for i in 0..64 {
        let hit = vceqq_f32(vabsq_f32(vld1q_f32(x.add(4 * i))), target);
        if vmaxvq_u32(hit) != 0 {
            let first = (0..4).find(|&l| (*x.add(4 * i + l)).abs() == amax);
            max = *x.add(4 * i + first.unwrap_or(0));
            break;
        }
    }
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        // A max below ~4e-37: the reference's products overflow; leave it to the reference.
        return None;
    }
    let sv = vdupq_n_f32(iscale);
    let top = vdupq_n_s32(127);
    let mut sums = [0i16; 16];
    for g in 0..16 {
        let q: [int32x4_t; 4] = std::array::from_fn(|u| {
            let p = vmulq_f32(sv, vld1q_f32(x.add(16 * g + 4 * u)));
            vminq_s32(vcvtnq_s32_f32(p), top)
        });
        // |q| <= 127: the narrows are exact.
        let q16 = [
            vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1])),
            vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3])),
        ];
        vst1q_s8(
            y.add(4 + 16 * g).cast(),
            vcombine_s8(vmovn_s16(q16[0]), vmovn_s16(q16[1])),
        );
        sums[g] = vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3]))) as i16;
    }
    std::ptr::copy_nonoverlapping((1.0 / iscale).to_le_bytes().as_ptr(), y, 4);
    for (g, s) in sums.iter().enumerate() {
        std::ptr::copy_nonoverlapping(s.to_le_bytes().as_ptr(), y.add(Q8_K_BSUMS + 2 * g), 2);
    }
    Some(())
}

fn quantize_q8_k(x: &[f32], y: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    rows::quantize_blocks(
        x,
        y,
        (256, Q8_K_BYTES),
        q8_k_block,
        crate::quant::quantize_row_q8_k,
    )
}

// ---- exp, SiLU, QuickGELU, softmax ----

/// x86's `maxps(a, b)`: `a` where `a > b`, else `b` (a NaN `b` wins, a NaN `a` loses), which
/// NEON's `fmax` (NaN wins either way) is not.
#[inline(always)]
unsafe fn max_ps(a: float32x4_t, b: float32x4_t) -> float32x4_t {
    vbslq_f32(vcgtq_f32(a, b), a, b)
}

/// x86's `minps(a, b)`: `a` where `a < b`, else `b`.
#[inline(always)]
unsafe fn min_ps(a: float32x4_t, b: float32x4_t) -> float32x4_t {
    vbslq_f32(vcltq_f32(a, b), a, b)
}

/// [`exp::exp_f32`] on 4 lanes, operation for operation.
#[inline(always)]
unsafe fn exp4(x_in: float32x4_t) -> float32x4_t {
    let x = max_ps(vdupq_n_f32(exp::X_MIN), x_in);
    let x = min_ps(vdupq_n_f32(exp::X_MAX), x);
    // frintn: round to nearest, ties to even, as `round_ties_even`.
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(exp::LOG2E)));
    let r = vfmaq_f32(x, n, vdupq_n_f32(-exp::LN2_HI));
    let r = vfmaq_f32(r, n, vdupq_n_f32(-exp::LN2_LO));
    let mut p = vdupq_n_f32(exp::C6);
    p = vfmaq_f32(vdupq_n_f32(exp::C5), p, r);
    p = vfmaq_f32(vdupq_n_f32(exp::C4), p, r);
    p = vfmaq_f32(vdupq_n_f32(exp::C3), p, r);
    p = vfmaq_f32(vdupq_n_f32(exp::C2), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    // n is integral in [−126, 128] (NaN converts to 0, as `as i32` does).
    let ni = vcvtq_s32_f32(n);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let bias = vdupq_n_s32(127);
    let s1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
    let s2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
    let y = vmulq_f32(vmulq_f32(p, s1), s2);
    // Zero where x < X_MIN; NaN lanes compare false and keep their NaN.
    let below = vcltq_f32(x_in, vdupq_n_f32(exp::X_MIN));
    vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), below))
}

/// Which elementwise op a `map4` kernel applies (a const parameter, so each is compiled
/// without a branch).
const OP_EXP: u8 = 0;
const OP_SILU: u8 = 1;
const OP_QUICK_GELU: u8 = 2;

/// Op `OP` on 4 lanes: `exp`, `x / (1 + exp(−x))`, or `x / (1 + exp(−1.702·x))`.
#[inline(always)]
unsafe fn op4<const OP: u8>(x: float32x4_t) -> float32x4_t {
    let arg = match OP {
        OP_EXP => return exp4(x),
        OP_SILU => vnegq_f32(x),
        _ => vmulq_f32(vdupq_n_f32(-exp::QUICK_GELU_ALPHA), x),
    };
    vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp4(arg)))
}

/// The scalar twin of op `OP`, for tails.
fn scalar_op<const OP: u8>(x: f32) -> f32 {
    match OP {
        OP_EXP => exp::exp_f32(x),
        OP_SILU => exp::silu_f32(x),
        _ => exp::quick_gelu_f32(x),
    }
}

fn map4<const OP: u8>(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 4 f32; vld1q/vst1q need no alignment.
        unsafe { vst1q_f32(c.as_mut_ptr(), op4::<OP>(vld1q_f32(c.as_ptr()))) };
    }
    for v in chunks.into_remainder() {
        *v = scalar_op::<OP>(*v);
    }
}

/// The bare exp on 4 lanes (for the tests: no table carries it; silu, QuickGELU and softmax
/// apply `exp4` inside).
#[cfg(test)]
fn exp_slice(x: &mut [f32]) {
    map4::<OP_EXP>(x)
}

fn silu_slice(x: &mut [f32]) {
    map4::<OP_SILU>(x)
}

fn quick_gelu_slice(x: &mut [f32]) {
    map4::<OP_QUICK_GELU>(x)
}

/// Four registers as the 16 softmax partials (register `u` holds lanes `4u..4u + 4`).
fn spill(v: [float32x4_t; 4]) -> [f32; SOFTMAX_LANES] {
    let mut out = [0f32; SOFTMAX_LANES];
    for (u, &r) in v.iter().enumerate() {
        // SAFETY: `out` holds 16 f32, so lanes 4u..4u+4 are in bounds.
        unsafe { vst1q_f32(out.as_mut_ptr().add(4 * u), r) };
    }
    out
}

/// Softmax with the 16 partial maxima and sums in four registers, through the shared skeleton
/// ([`exp::softmax_with`]), so the reduction is the twin's.
fn softmax(x: &mut [f32]) {
    exp::softmax_with(
        x,
        |body| {
            // SAFETY (all three closures): every chunk holds 16 f32, so lanes 4u..4u+4 are in
            // bounds for u < 4; the rest are register operations.
            unsafe {
                let mut m = [vdupq_n_f32(f32::NEG_INFINITY); 4];
                for c in body.chunks_exact(SOFTMAX_LANES) {
                    for u in 0..4 {
                        m[u] = max_ps(m[u], vld1q_f32(c.as_ptr().add(4 * u)));
                    }
                }
                spill(m)
            }
        },
        |body, max| {
            // SAFETY: see above.
            unsafe {
                let mx = vdupq_n_f32(max);
                let mut s = [vdupq_n_f32(0.0); 4];
                for c in body.chunks_exact_mut(SOFTMAX_LANES) {
                    for u in 0..4 {
                        let p = c.as_mut_ptr().add(4 * u);
                        let e = exp4(vsubq_f32(vld1q_f32(p), mx));
                        vst1q_f32(p, e);
                        s[u] = vaddq_f32(s[u], e);
                    }
                }
                spill(s)
            }
        },
        |body, inv| {
            // SAFETY: see above.
            unsafe {
                let iv = vdupq_n_f32(inv);
                for c in body.chunks_exact_mut(4) {
                    vst1q_f32(c.as_mut_ptr(), vmulq_f32(vld1q_f32(c.as_ptr()), iv));
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    //! Every NEON primitive against its scalar twin on random and edge inputs. These run in the
    //! rlib's unit tests, which the aarch64 CI step runs under qemu for cortex-a72, cortex-a76
    //! and max.

    use super::*;

    use crate::kernels::test_rng::Rng;

    const LENS: [usize; 12] = [0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 100, 4096 + 3];

    /// Edge values for f32 operands: zeros of both signs, infinities, NaN, subnormals, huge and
    /// tiny normals.
    const EDGES: [f32; 12] = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-45,
        -3e-39,
        f32::MIN_POSITIVE,
        1e30,
        -1e30,
        1.0,
        -1.0,
    ];

    /// `n` values uniform in `[-r, r)`, with one in `edge_every` (if nonzero) an edge value.
    fn vals(rng: &mut Rng, n: usize, r: f32, edge_every: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                if edge_every != 0 && rng.next().is_multiple_of(edge_every) {
                    EDGES[i % EDGES.len()]
                } else {
                    rng.uniform(-r, r)
                }
            })
            .collect()
    }

    /// f16 values of `x`, plus f16 edges: NaN, ±∞, ±0, subnormal halves, the largest half.
    fn halves(rng: &mut Rng, x: &[f32], edge_every: u64) -> Vec<f16> {
        let edges = [
            f16::NAN,
            f16::INFINITY,
            f16::NEG_INFINITY,
            f16::ZERO,
            f16::NEG_ZERO,
            f16::from_bits(1),
            f16::from_bits(0x83ff),
            f16::MAX,
            f16::MIN,
        ];
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                if edge_every != 0 && rng.next().is_multiple_of(edge_every) {
                    edges[i % edges.len()]
                } else {
                    f16::from_f32(v)
                }
            })
            .collect()
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    fn assert_same(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                same(*g, *w),
                "{what}: len {} [{i}]: {g:e} vs twin {w:e}",
                got.len()
            );
        }
    }

    #[test]
    fn f16_conversion_equals_half_for_every_half() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for c in all.chunks_exact(8) {
            let mut got = [0f32; 12];
            // SAFETY: `c` holds 8 halves; `got` holds 12 f32, three 4-lane stores.
            unsafe {
                let (lo, hi) = load_f16x8(c.as_ptr());
                vst1q_f32(got.as_mut_ptr(), lo);
                vst1q_f32(got.as_mut_ptr().add(4), hi);
                vst1q_f32(got.as_mut_ptr().add(8), load_f16x4(c.as_ptr()));
            }
            for i in 0..8 {
                let want = c[i].to_f32();
                // Bitwise, NaNs included (both quiet the NaN and keep its payload).
                assert_eq!(got[i].to_bits(), want.to_bits(), "{:#06x}", c[i].to_bits());
            }
            for i in 0..4 {
                assert_eq!(got[8 + i].to_bits(), got[i].to_bits());
            }
        }
    }

    #[test]
    fn dot_f32_equals_twin_bitwise() {
        let mut rng = Rng::new(1);
        for n in LENS {
            for edge_every in [0, 5] {
                let a = vals(&mut rng, n, 3.0, edge_every);
                let b = vals(&mut rng, n + 2, 1000.0, edge_every);
                let (g, w) = ((ROWS.dot_f32)(&a, &b), (rows::SCALAR.dot_f32)(&a, &b));
                assert!(same(g, w), "dot_f32 n={n}: {g:e} vs {w:e}");
            }
        }
    }

    #[test]
    fn dot_f16_is_close_to_twin_and_dots_equal_dot_bitwise() {
        let mut rng = Rng::new(2);
        for n in LENS {
            for edge_every in [0, 6] {
                let a = vals(&mut rng, n, 3.0, edge_every);
                let bf = vals(&mut rng, n, 60.0, 0);
                let b = halves(&mut rng, &bf, edge_every);
                let (g, w) = ((ROWS.dot_f16)(&a, &b), (rows::SCALAR.dot_f16)(&a, &b));
                let mag: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, y)| (x as f64 * y.to_f64()).abs())
                    .sum();
                if mag.is_finite() {
                    assert!(
                        (g as f64 - w as f64).abs() <= 1e-6 * mag + 1e-37,
                        "dot_f16 n={n}: {g:e} vs twin {w:e} (Σ|ab| {mag:e})"
                    );
                } else {
                    // An infinite or NaN product: both are the same non-finite class.
                    assert!(same(g, w), "dot_f16 n={n}: {g:e} vs twin {w:e}");
                }
            }
        }
        // dots_f16 is dot_f16 per row, bitwise, with a stride wider than the row.
        for (dim, n_rows, stride) in [(128, 40, 136), (7, 3, 9), (16, 1, 16), (33, 5, 40)] {
            let kf = vals(&mut rng, (n_rows - 1) * stride + dim, 50.0, 0);
            let k = halves(&mut rng, &kf, 0);
            let q = vals(&mut rng, dim, 2.0, 0);
            let mut got = vec![0f32; n_rows];
            (ROWS.dots_f16)(&q, &k, stride, &mut got);
            for (p, g) in got.iter().enumerate() {
                let want = (ROWS.dot_f16)(&q, &k[p * stride..p * stride + dim]);
                assert_eq!(g.to_bits(), want.to_bits(), "dots_f16 dim {dim} row {p}");
            }
        }
    }

    #[test]
    fn axpy_and_wsum_equal_twin_bitwise() {
        let mut rng = Rng::new(3);
        for n in LENS {
            for edge_every in [0, 5] {
                let v = vals(&mut rng, n, 100.0, edge_every);
                let start = vals(&mut rng, n, 10.0, edge_every);
                for w in [0.37f32, -1.5, 0.0, f32::INFINITY, 1e-40] {
                    let (mut g, mut t) = (start.clone(), start.clone());
                    (ROWS.axpy_f32)(w, &v, &mut g);
                    (rows::SCALAR.axpy_f32)(w, &v, &mut t);
                    assert_same(&format!("axpy_f32 w={w}"), &g, &t);
                    let vh = halves(&mut rng, &v, edge_every);
                    let (mut g, mut t) = (start.clone(), start.clone());
                    (ROWS.axpy_f16)(w, &vh, &mut g);
                    (rows::SCALAR.axpy_f16)(w, &vh, &mut t);
                    assert_same(&format!("axpy_f16 w={w}"), &g, &t);
                }
            }
        }
        for (dim, n_rows, stride) in [
            (64, 37, 96),
            (100, 5, 100),
            (7, 3, 9),
            (17, 1, 17),
            (128, 9, 160),
            (33, 0, 40),
        ] {
            let vf = vals(&mut rng, n_rows.max(1) * stride + dim, 100.0, 0);
            let v = halves(&mut rng, &vf, 11);
            let w = vals(&mut rng, n_rows, 1.0, 7);
            let start = vals(&mut rng, dim, 10.0, 0);
            let (mut g, mut t) = (start.clone(), start.clone());
            (ROWS.wsum_f16)(&w, &v, stride, &mut g);
            (rows::SCALAR.wsum_f16)(&w, &v, stride, &mut t);
            assert_same(&format!("wsum_f16 {dim}x{n_rows}"), &g, &t);
        }
    }

    #[test]
    fn gemm_equals_twin_bitwise() {
        let mut rng = Rng::new(4);
        for (m, n, k) in [
            (1, 1, 1),
            (3, 7, 5),
            (4, 16, 64),
            (5, 33, 17),
            (9, 131, 8),
            (2, 0, 3),
            (0, 5, 5),
            (3, 9, 0),
            (6, 20, 33),
        ] {
            for edge_every in [0, 9] {
                let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
                let a = vals(&mut rng, m.max(1) * lda, 2.0, edge_every);
                let b = vals(&mut rng, k.max(1) * ldb, 2.0, edge_every);
                let g = Gemm {
                    m,
                    n,
                    k,
                    a: &a,
                    lda,
                    b: &b,
                    ldb,
                    ldc,
                };
                let mut got = vec![f32::NAN; m.max(1) * ldc];
                let mut want = got.clone();
                (ROWS.gemm_f32)(&g, &mut got);
                (rows::SCALAR.gemm_f32)(&g, &mut want);
                assert_same(&format!("gemm {m}x{n}x{k}"), &got, &want);
            }
        }
    }

    /// Rows for the quantizers: random, edge-laden, ties, sign of the first largest magnitude,
    /// zero and subnormal blocks, NaN and infinities.
    fn quant_rows(rng: &mut Rng, block: usize) -> Vec<Vec<f32>> {
        let mut rows = vec![
            vals(rng, block * 5, 3.0, 0),
            vals(rng, block * 3, 1e4, 17),
            vec![0.0; block * 2],
            vec![-0.0; block],
            (0..block).map(|i| (i as f32 - 100.0) * 1e-39).collect(),
            (0..block).map(|i| (i as f32 - 7.0) * 1e-30).collect(),
            // The largest magnitude at both signs, in both orders.
            (0..block).map(|i| [1.0, 3.0, -3.0, 2.0][i % 4]).collect(),
            (0..block).map(|i| [1.0, -3.0, 3.0, 2.0][i % 4]).collect(),
            // Q8_0 ties: amax 127 gives d = 1, so k + 0.5 lands on a half step.
            (0..block)
                .map(|i| {
                    if i == 0 {
                        127.0
                    } else {
                        (i % 120) as f32 - 60.5
                    }
                })
                .collect(),
            // Q8_K ties: max −127 gives iscale 1.
            (0..block)
                .map(|i| {
                    if i == 5 {
                        -127.0
                    } else {
                        (i % 120) as f32 - 60.5
                    }
                })
                .collect(),
            vec![1e38; block],
        ];
        for (pos, val) in [
            (3, f32::NAN),
            (block - 1, f32::NAN),
            (7, f32::INFINITY),
            (block / 2, f32::NEG_INFINITY),
        ] {
            let mut r = vals(rng, block, 5.0, 0);
            r[pos] = val;
            rows.push(r);
        }
        rows
    }

    #[test]
    fn quantizers_equal_reference_bytes() {
        let mut rng = Rng::new(5);
        for x in quant_rows(&mut rng, 32) {
            let mut got = vec![0u8; x.len() / 32 * Q8_0_BYTES];
            let mut want = got.clone();
            (ROWS.quantize_q8_0)(&x, &mut got).unwrap();
            crate::quant::quantize_row_q8_0(&x, &mut want).unwrap();
            assert_eq!(got, want, "q8_0 row of {}: {:?}", x.len(), &x[..4]);
        }
        for x in quant_rows(&mut rng, 256) {
            let mut got = vec![0u8; x.len() / 256 * Q8_K_BYTES];
            let mut want = got.clone();
            (ROWS.quantize_q8_k)(&x, &mut got).unwrap();
            crate::quant::quantize_row_q8_k(&x, &mut want).unwrap();
            assert_eq!(got, want, "q8_k row of {}: {:?}", x.len(), &x[..4]);
        }
        // Lengths the reference rejects are rejected.
        assert!((ROWS.quantize_q8_0)(&[0.0; 32], &mut [0u8; 33]).is_err());
        assert!((ROWS.quantize_q8_0)(&[0.0; 31], &mut [0u8; Q8_0_BYTES]).is_err());
        assert!((ROWS.quantize_q8_k)(&[0.0; 256], &mut [0u8; 291]).is_err());
        assert!((ROWS.quantize_q8_k)(&[0.0; 255], &mut [0u8; Q8_K_BYTES]).is_err());
        (ROWS.quantize_q8_0)(&[], &mut []).unwrap();
    }

    /// Edge inputs for the exp family: zeros, infinities, NaN, the clamp and overflow
    /// boundaries, subnormals, and the rounding ties of `x·log2 e`.
    fn exp_edges() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            1e-45,
            -1e-45,
            f32::MIN_POSITIVE,
            88.72283,
            88.72284,
            89.0,
            89.5,
            exp::X_MIN,
            -87.336_55,
            -103.97,
            -150.0,
        ];
        for k in -150..=128 {
            v.push(k as f32 * std::f32::consts::LN_2);
            v.push((k as f32 + 0.5) * std::f32::consts::LN_2);
        }
        v
    }

    #[test]
    fn exp_ops_equal_twin_bitwise() {
        let mut rng = Rng::new(6);
        let edges = exp_edges();
        let lens = LENS.iter().copied().chain([edges.len()]);
        for n in lens {
            let x: Vec<f32> = if n == edges.len() {
                edges.clone()
            } else {
                (0..n)
                    .map(|i| {
                        if rng.next().is_multiple_of(7) {
                            edges[i % edges.len()]
                        } else {
                            rng.uniform(-120.0, 100.0)
                        }
                    })
                    .collect()
            };
            type Op = fn(&mut [f32]);
            let twin_exp: Op = |x| x.iter_mut().for_each(|v| *v = exp::exp_f32(*v));
            let ops: [(&str, Op, Op); 4] = [
                ("exp", exp_slice, twin_exp),
                ("silu", EXP.silu, exp::SCALAR.silu),
                ("quick_gelu", EXP.quick_gelu, exp::SCALAR.quick_gelu),
                ("softmax", EXP.softmax, exp::SCALAR.softmax),
            ];
            for (what, simd, twin) in ops {
                let (mut g, mut w) = (x.clone(), x.clone());
                simd(&mut g);
                twin(&mut w);
                // Exactly the twin's bits, NaN payloads included, except softmax rows holding
                // a NaN (all NaN, whichever NaN the max met first).
                for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                    let ok = a.to_bits() == b.to_bits()
                        || (what == "softmax" && a.is_nan() && b.is_nan());
                    assert!(ok, "{what} len {n} [{i}] x={:e}: {a:e} vs twin {b:e}", x[i]);
                }
            }
            // Softmax rows as attention makes them: finite scores, some masked to −∞.
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.next().is_multiple_of(9) {
                        f32::NEG_INFINITY
                    } else {
                        rng.uniform(-30.0, 30.0)
                    }
                })
                .collect();
            let (mut g, mut w) = (row.clone(), row.clone());
            (EXP.softmax)(&mut g);
            (exp::SCALAR.softmax)(&mut w);
            for (a, b) in g.iter().zip(&w) {
                assert_eq!(a.to_bits(), b.to_bits(), "softmax len {n}");
            }
        }
    }
}
