//! A fast, deterministic f32 `exp` and the elementwise ops built on it: SiLU, QuickGELU and
//! softmax over a slice, in place.
//!
//! One algorithm, written twice: [`exp_f32`] (the scalar twin) and SIMD versions that apply the
//! same IEEE operations lane by lane (same constants, same fused multiply-adds, same
//! round-to-nearest-even), so every variant returns bitwise the same numbers as the scalar
//! twin. Slice lengths that are not a multiple of the vector width finish through the twin.
//!
//! The algorithm (≤ 1 ulp against f64 `exp` wherever the result is a normal float, see the
//! tests):
//! 1. clamp `x` to `[X_MIN, 89]` (NaN passes through), `X_MIN = −87.33654` being the least
//!    input whose exp is a normal float; above 89 the result overflows to +∞ anyway, and the
//!    clamp keeps `n` below in a range the scaling handles;
//! 2. `n = round_ties_even(x·log2 e)`, `r = x − n·ln2_hi − n·ln2_lo` (two fmas; `|r| ≤ ln2/2`);
//! 3. `p = 1 + r·(1 + r·(c2 + r·(c3 + … r·c6)))`, a degree-6 minimax polynomial in Horner form
//!    (relative error ≈ 2e-8 with its coefficients rounded to f32);
//! 4. `p·2ⁿ` as `(p·2^⌊n/2⌋)·2^(n−⌊n/2⌋)`: both factors are normal floats built from exponent
//!    bits for every `n ∈ [−126, 128]`, the first product is exact, so the only rounding is the
//!    last multiply, and results right at overflow round once, correctly;
//! 5. inputs below `X_MIN` (−∞ included) give exactly 0: exp flushes what would be subnormal
//!    (< 1.2e-38) to zero. This is deliberate: x86 cores take a microcode assist costing ~100+
//!    cycles for every multiply whose result is subnormal or underflows, and masked attention
//!    scores (−∞) and QuickGELU's large inputs hit that all the time — computing them at
//!    `X_MIN` and masking the lane to zero avoids it. No caller can tell: softmax weights and
//!    activations below 1.2e-38 are zero for every purpose.
//!
//! Softmax sums its exponentials in [`SOFTMAX_LANES`] partial sums (element `i` into sum
//! `i % 16`, the last `len % 16` elements added after) reduced by one fixed tree, so its result
//! depends only on the row, never on the variant or the thread count.
//!
//! Each [`super::Kernels`] table carries one [`ExpOps`] (its `exp`), chosen with the table once
//! per model: the x86 AVX2 tables carry the AVX2+FMA version, the AVX-512 ones the AVX-512F
//! version, the aarch64 ones the NEON version (`neon_rows.rs`), `generic` the scalar twin
//! ([`SCALAR`]). The SIMD functions are `#[target_feature]` functions reachable only through
//! tables handed out after run-time detection.

/// One implementation of the exp-based elementwise ops. Each function works in place on a
/// slice of any length.
pub struct ExpOps {
    /// SiLU: `x[i] = x[i] / (1 + exp(−x[i]))`
    pub silu: fn(&mut [f32]),
    /// QuickGELU: `x[i] = x[i] / (1 + exp(−1.702·x[i]))`
    pub quick_gelu: fn(&mut [f32]),
    /// Softmax over the whole slice: `exp(x[i] − max)`, summed in the fixed order described in
    /// the module docs, then each element multiplied by `1/sum`. `-inf` entries give 0; a row
    /// of only `-inf` gives NaNs (no panic).
    pub softmax: fn(&mut [f32]),
}

/// The scalar twin: the reference every SIMD variant equals bitwise (the `generic` table's).
pub const SCALAR: ExpOps = ExpOps {
    silu: scalar_silu,
    quick_gelu: scalar_quick_gelu,
    softmax: scalar_softmax,
};

#[cfg(all(test, target_arch = "x86_64"))]
use x86::simd_exps;
#[cfg(target_arch = "x86_64")]
pub(super) use x86::{AVX2, AVX512};

/// Inputs below this give 0: the least f32 whose exp (≈ 2^-126·(1 + 5e-6)) is a normal float,
/// just above ln 2^-126 = −87.336544750…
pub(super) const X_MIN: f32 = -87.336_54;
/// Inputs above this give +∞ (everything above ≈ 88.7228 overflows).
pub(super) const X_MAX: f32 = 89.0;
/// log2(e) rounded to f32.
pub(super) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 rounded to f32 (0x3f317218) ...
pub(super) const LN2_HI: f32 = std::f32::consts::LN_2;
/// ... and the f32 nearest to the rest, ln 2 − LN2_HI (0xb102e308).
pub(super) const LN2_LO: f32 = -1.904_654_2e-9;
/// Minimax coefficients of `r²`..`r⁶` for `exp(r)` on `[−ln2/2, ln2/2]` (the constant and
/// linear ones are exactly 1), fitted for relative error and rounded to f32.
pub(super) const C2: f32 = 0.499_999_94;
pub(super) const C3: f32 = 0.166_664_29;
pub(super) const C4: f32 = 0.041_668_016;
pub(super) const C5: f32 = 0.008_374_388;
pub(super) const C6: f32 = 0.001_384_338_2;
/// QuickGELU's sigmoid slope.
pub(super) const QUICK_GELU_ALPHA: f32 = 1.702;
/// Softmax partial sums: element `i` of the row's first `len − len % 16` goes into sum `i % 16`.
pub const SOFTMAX_LANES: usize = 16;

/// `exp(x)` in f32: the scalar twin of the SIMD kernels (see the module docs for the steps).
/// `exp(x < −87.33654) = 0` (no subnormals, `exp(−∞)` included), `exp(+∞) = +∞`, `exp(NaN)` is
/// NaN.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    // Written as x86's `maxps(lo, x)` / `minps(hi, x)`: a NaN `x` passes through both.
    let xc = if X_MIN > x { X_MIN } else { x };
    let xc = if X_MAX < xc { X_MAX } else { xc };
    let y = exp_clamped(xc);
    // The lanes' "not less than" mask: a NaN keeps its NaN.
    if x < X_MIN {
        0.0
    } else {
        y
    }
}

/// Steps 2–4 of the algorithm for `x ∈ [X_MIN, X_MAX]` or NaN.
#[inline]
fn exp_clamped(x: f32) -> f32 {
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = C6;
    p = p.mul_add(r, C5);
    p = p.mul_add(r, C4);
    p = p.mul_add(r, C3);
    p = p.mul_add(r, C2);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n ∈ [−126, 128] (or NaN, where `as` gives 0 and p is NaN anyway).
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    p * pow2(n1) * pow2(n2)
}

/// `2^k` for `k ∈ [−126, 127]`, from the exponent bits.
#[inline]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `x / (1 + exp(−x))`.
#[inline]
pub(super) fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// `x / (1 + exp(−1.702·x))`.
#[inline]
pub(super) fn quick_gelu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-QUICK_GELU_ALPHA * x))
}

/// `max` as x86's `maxps(a, b)`: `a` if `a > b`, else `b` (so a NaN `b` wins, a NaN `a` loses).
#[inline]
fn max_ps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The fixed reduction tree of the softmax partials: halves folded onto halves (16 → 8 → 4 →
/// 2 → 1), `f(lane l, lane l + half)`.
fn reduce16(mut v: [f32; SOFTMAX_LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = SOFTMAX_LANES / 2;
    while half > 0 {
        for l in 0..half {
            v[l] = f(v[l], v[l + half]);
        }
        half /= 2;
    }
    v[0]
}

/// Softmax given the partial maxima of the row's 16-lane body (`body_max`): finishes the max
/// over the tail, then exponentiates the tail and adds it after the body's partial sums
/// (`body_sum`, filled by `exp_body`), and scales everything by `1/sum`. The shared skeleton of
/// every variant, so they differ only in how they produce the 16 partials.
pub(super) fn softmax_with(
    x: &mut [f32],
    body_max: impl FnOnce(&[f32]) -> [f32; SOFTMAX_LANES],
    exp_body: impl FnOnce(&mut [f32], f32) -> [f32; SOFTMAX_LANES],
    scale: impl FnOnce(&mut [f32], f32),
) {
    let body_len = x.len() - x.len() % SOFTMAX_LANES;
    let (body, tail) = x.split_at_mut(body_len);
    let mut max = reduce16(body_max(body), max_ps);
    for &v in tail.iter() {
        max = max_ps(max, v);
    }
    let mut sum = reduce16(exp_body(body, max), |a, b| a + b);
    for v in tail.iter_mut() {
        *v = exp_f32(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    scale(body, inv);
    for v in tail.iter_mut() {
        *v *= inv;
    }
}

fn scalar_silu(x: &mut [f32]) {
    for v in x {
        *v = silu_f32(*v);
    }
}

fn scalar_quick_gelu(x: &mut [f32]) {
    for v in x {
        *v = quick_gelu_f32(*v);
    }
}

fn scalar_softmax(x: &mut [f32]) {
    softmax_with(
        x,
        |body| {
            let mut m = [f32::NEG_INFINITY; SOFTMAX_LANES];
            for c in body.chunks_exact(SOFTMAX_LANES) {
                for (m, &v) in m.iter_mut().zip(c) {
                    *m = max_ps(*m, v);
                }
            }
            m
        },
        |body, max| {
            let mut s = [0f32; SOFTMAX_LANES];
            for c in body.chunks_exact_mut(SOFTMAX_LANES) {
                for (s, v) in s.iter_mut().zip(c) {
                    *v = exp_f32(*v - max);
                    *s += *v;
                }
            }
            s
        },
        |body, inv| {
            for v in body {
                *v *= inv;
            }
        },
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2+FMA (8 lanes) and AVX-512F (16 lanes) versions of the scalar twin, operation for
    //! operation. Every `#[target_feature]` function is only called from the safe wrappers in
    //! the tables below, which are only handed out after run-time detection.

    use super::*;
    use std::arch::x86_64::*;

    /// The AVX2+FMA ops: only for [`super::super::Kernels`] tables whose detection saw AVX2
    /// and FMA.
    pub(in crate::kernels) const AVX2: ExpOps = ExpOps {
        silu: avx2_silu,
        quick_gelu: avx2_quick_gelu,
        softmax: avx2_softmax,
    };

    /// The AVX-512F ops: only for [`super::super::Kernels`] tables whose detection saw
    /// AVX-512F.
    pub(in crate::kernels) const AVX512: ExpOps = ExpOps {
        silu: avx512_silu,
        quick_gelu: avx512_quick_gelu,
        softmax: avx512_softmax,
    };

    /// Which elementwise op a `map` kernel applies (a const parameter, so each is compiled
    /// without a branch). `OP_EXP` (the bare exp) only the tests apply, to check the lanes'
    /// exp on its own.
    const OP_EXP: u8 = 0;
    const OP_SILU: u8 = 1;
    const OP_QUICK_GELU: u8 = 2;

    /// The scalar twin of op `OP`, for tails.
    fn scalar_op<const OP: u8>(x: f32) -> f32 {
        match OP {
            OP_EXP => exp_f32(x),
            OP_SILU => silu_f32(x),
            _ => quick_gelu_f32(x),
        }
    }

    // ---- AVX2 + FMA, 8 lanes ----

    /// [`exp_f32`] on 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x_in: __m256) -> __m256 {
        let x = _mm256_max_ps(_mm256_set1_ps(X_MIN), x_in);
        let x = _mm256_min_ps(_mm256_set1_ps(X_MAX), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(C6);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
        // Zero where x < X_MIN; NaN lanes compare "not less" and keep their NaN.
        _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_NLT_UQ>(x_in, _mm256_set1_ps(X_MIN)))
    }

    /// Op `OP` on 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn op8<const OP: u8>(x: __m256) -> __m256 {
        let arg = match OP {
            OP_EXP => return exp8(x),
            OP_SILU => _mm256_xor_ps(_mm256_set1_ps(-0.0), x),
            _ => _mm256_mul_ps(_mm256_set1_ps(-QUICK_GELU_ALPHA), x),
        };
        let den = _mm256_add_ps(_mm256_set1_ps(1.0), exp8(arg));
        _mm256_div_ps(x, den)
    }

    #[target_feature(enable = "avx2,fma")]
    fn map8<const OP: u8>(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 8 f32; loadu/storeu need no alignment.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), op8::<OP>(_mm256_loadu_ps(c.as_ptr()))) };
        }
        for v in chunks.into_remainder() {
            *v = scalar_op::<OP>(*v);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn softmax8(x: &mut [f32]) {
        softmax_with(
            x,
            |body| {
                let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
                for c in body.chunks_exact(SOFTMAX_LANES) {
                    for (h, m) in m.iter_mut().enumerate() {
                        // SAFETY: `c` holds 16 f32, so lanes 8h..8h+8 are in bounds.
                        *m = _mm256_max_ps(*m, unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) });
                    }
                }
                spill8(m)
            },
            |body, max| {
                let mx = _mm256_set1_ps(max);
                let mut s = [_mm256_setzero_ps(); 2];
                for c in body.chunks_exact_mut(SOFTMAX_LANES) {
                    for (h, s) in s.iter_mut().enumerate() {
                        // SAFETY: as above, lanes 8h..8h+8 of a 16-f32 chunk.
                        unsafe {
                            let p = c.as_mut_ptr().add(8 * h);
                            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), mx));
                            _mm256_storeu_ps(p, e);
                            *s = _mm256_add_ps(*s, e);
                        }
                    }
                }
                spill8(s)
            },
            |body, inv| {
                let iv = _mm256_set1_ps(inv);
                for c in body.chunks_exact_mut(8) {
                    // SAFETY: `c` holds exactly 8 f32.
                    unsafe {
                        _mm256_storeu_ps(
                            c.as_mut_ptr(),
                            _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), iv),
                        )
                    };
                }
            },
        );
    }

    /// Two 8-lane registers as the 16 softmax partials (lanes 0..8, then 8..16).
    #[target_feature(enable = "avx2,fma")]
    fn spill8(v: [__m256; 2]) -> [f32; SOFTMAX_LANES] {
        let mut out = [0f32; SOFTMAX_LANES];
        // SAFETY: `out` holds 16 f32: two unaligned 8-lane stores at 0 and 8.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), v[1]);
        }
        out
    }

    fn avx2_silu(x: &mut [f32]) {
        // SAFETY: this function is only reachable through `AVX2`, which only sits in kernel
        // tables handed out after AVX2 and FMA were detected (likewise for the two below).
        unsafe { map8::<OP_SILU>(x) }
    }

    fn avx2_quick_gelu(x: &mut [f32]) {
        // SAFETY: see `avx2_silu`.
        unsafe { map8::<OP_QUICK_GELU>(x) }
    }

    fn avx2_softmax(x: &mut [f32]) {
        // SAFETY: see `avx2_silu`.
        unsafe { softmax8(x) }
    }

    // ---- AVX-512F, 16 lanes ----

    /// [`exp_f32`] on 16 lanes.
    #[target_feature(enable = "avx512f")]
    fn exp16(x_in: __m512) -> __m512 {
        let x = _mm512_max_ps(_mm512_set1_ps(X_MIN), x_in);
        let x = _mm512_min_ps(_mm512_set1_ps(X_MAX), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
        let mut p = _mm512_set1_ps(C6);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C5));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C4));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        let ni = _mm512_cvtps_epi32(n);
        let n1 = _mm512_srai_epi32::<1>(ni);
        let n2 = _mm512_sub_epi32(ni, n1);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        let y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
        // Zero where x < X_MIN; NaN lanes compare "not less" and keep their NaN.
        _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x_in, _mm512_set1_ps(X_MIN)),
            y,
        )
    }

    /// Op `OP` on 16 lanes.
    #[target_feature(enable = "avx512f")]
    fn op16<const OP: u8>(x: __m512) -> __m512 {
        let arg = match OP {
            OP_EXP => return exp16(x),
            OP_SILU => _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(x),
                _mm512_set1_epi32(i32::MIN),
            )),
            _ => _mm512_mul_ps(_mm512_set1_ps(-QUICK_GELU_ALPHA), x),
        };
        let den = _mm512_add_ps(_mm512_set1_ps(1.0), exp16(arg));
        _mm512_div_ps(x, den)
    }

    #[target_feature(enable = "avx512f")]
    fn map16<const OP: u8>(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 f32; loadu/storeu need no alignment.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), op16::<OP>(_mm512_loadu_ps(c.as_ptr()))) };
        }
        for v in chunks.into_remainder() {
            *v = scalar_op::<OP>(*v);
        }
    }

    #[target_feature(enable = "avx512f")]
    fn softmax16(x: &mut [f32]) {
        softmax_with(
            x,
            |body| {
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in body.chunks_exact(SOFTMAX_LANES) {
                    // SAFETY: `c` holds exactly 16 f32.
                    m = _mm512_max_ps(m, unsafe { _mm512_loadu_ps(c.as_ptr()) });
                }
                spill16(m)
            },
            |body, max| {
                let mx = _mm512_set1_ps(max);
                let mut s = _mm512_setzero_ps();
                for c in body.chunks_exact_mut(SOFTMAX_LANES) {
                    // SAFETY: `c` holds exactly 16 f32.
                    unsafe {
                        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), mx));
                        _mm512_storeu_ps(c.as_mut_ptr(), e);
                        s = _mm512_add_ps(s, e);
                    }
                }
                spill16(s)
            },
            |body, inv| {
                let iv = _mm512_set1_ps(inv);
                for c in body.chunks_exact_mut(16) {
                    // SAFETY: `c` holds exactly 16 f32.
                    unsafe {
                        _mm512_storeu_ps(
                            c.as_mut_ptr(),
                            _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), iv),
                        )
                    };
                }
            },
        );
    }

    /// One 16-lane register as the 16 softmax partials.
    #[target_feature(enable = "avx512f")]
    fn spill16(v: __m512) -> [f32; SOFTMAX_LANES] {
        let mut out = [0f32; SOFTMAX_LANES];
        // SAFETY: `out` holds 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    fn avx512_silu(x: &mut [f32]) {
        // SAFETY: this function is only reachable through `AVX512`, which only sits in kernel
        // tables handed out after AVX-512F was detected (likewise for the two below).
        unsafe { map16::<OP_SILU>(x) }
    }

    fn avx512_quick_gelu(x: &mut [f32]) {
        // SAFETY: see `avx512_silu`.
        unsafe { map16::<OP_QUICK_GELU>(x) }
    }

    fn avx512_softmax(x: &mut [f32]) {
        // SAFETY: see `avx512_silu`.
        unsafe { softmax16(x) }
    }

    /// An op in place on a slice.
    #[cfg(test)]
    type SliceOp = fn(&mut [f32]);

    /// The bare exp of each lane width this CPU has (for the tests: no table carries it).
    #[cfg(test)]
    pub(super) fn simd_exps() -> Vec<(&'static str, SliceOp)> {
        fn avx2_exp(x: &mut [f32]) {
            // SAFETY: only handed out by `simd_exps` after AVX2 and FMA were detected.
            unsafe { map8::<OP_EXP>(x) }
        }
        fn avx512_exp(x: &mut [f32]) {
            // SAFETY: only handed out by `simd_exps` after AVX-512F was detected.
            unsafe { map16::<OP_EXP>(x) }
        }
        let mut v: Vec<(&'static str, SliceOp)> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(("avx2", avx2_exp));
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(("avx512f", avx512_exp));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rng::Rng;

    /// Ulps between `got` and the f64 truth, measured in ulps of the truth rounded to f32
    /// (in the subnormal range an ulp is 2^-149).
    fn ulps(got: f32, truth: f64) -> f64 {
        let t32 = truth as f32;
        if t32.is_infinite() {
            return if got == t32 { 0.0 } else { f64::INFINITY };
        }
        let ulp = if t32 == 0.0 || t32.abs() < f32::MIN_POSITIVE {
            2f64.powi(-149)
        } else {
            let e = t32.abs().to_bits() >> 23;
            2f64.powi(e as i32 - 127 - 23)
        };
        (got as f64 - truth).abs() / ulp
    }

    /// Values no dense sweep hits by chance: signed zeros, infinities, NaN, the clamp and
    /// overflow/underflow boundaries, subnormals, ties of `x·log2 e`.
    fn edge_inputs() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            1e-30,
            88.72283,
            88.72284,
            88.7,
            89.0,
            89.5,
            -87.33654,
            -87.336_55,
            -87.34,
            -103.0,
            -103.97,
            -103.98,
            -104.0,
            -104.5,
            -150.0,
            0.5 * std::f32::consts::LN_2,
            -0.5 * std::f32::consts::LN_2,
            1.0,
            -1.0,
        ];
        for k in -150..=128 {
            v.push(k as f32 * std::f32::consts::LN_2);
            v.push((k as f32 + 0.5) * std::f32::consts::LN_2);
        }
        v
    }

    fn same_bits(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits()
    }

    #[test]
    fn exp_is_within_one_ulp_of_f64_over_the_f32_range() {
        let mut worst = (0.0f64, 0.0f32);
        let mut check = |x: f32| {
            let (got, truth) = (exp_f32(x), (x as f64).exp());
            if x < X_MIN {
                // Flushed: exactly zero, and only where the truth is below the normal range.
                assert!(
                    got.to_bits() == 0 && truth < f32::MIN_POSITIVE as f64,
                    "exp({x:e})"
                );
                return;
            }
            let e = ulps(got, truth);
            if e > worst.0 {
                worst = (e, x);
            }
        };
        // Every 2^-12 step of [-105, 90], and every f32 in [-1, 1] with a stride.
        let mut x = -105.0f32;
        while x <= 90.0 {
            check(x);
            x += 1.0 / 4096.0;
        }
        for bits in (0..0x3f80_0000u32).step_by(97) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        for x in edge_inputs() {
            if !x.is_nan() {
                check(x);
            }
        }
        assert!(worst.0 <= 1.0, "{} ulp at x = {:e}", worst.0, worst.1);
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(88.72284), f32::INFINITY);
        assert_eq!(exp_f32(f32::MAX), f32::INFINITY);
        assert!(exp_f32(88.72283).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
        // The flush to zero starts right below the normal range, never above it.
        assert!(exp_f32(X_MIN) >= f32::MIN_POSITIVE);
        assert!(((X_MIN as f64).exp() as f32) >= f32::MIN_POSITIVE);
        let below = f32::from_bits(X_MIN.to_bits() + 1);
        assert!(((below as f64).exp() as f32) < f32::MIN_POSITIVE);
        assert_eq!(exp_f32(below).to_bits(), 0);
        assert_eq!(exp_f32(-100.0).to_bits(), 0);
    }

    /// Random values over `[-120, 100]` (beyond both clamps), then the edge values.
    fn test_inputs(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let edges = edge_inputs();
        (0..len)
            .map(|i| {
                if rng.next().is_multiple_of(7) {
                    edges[i % edges.len()]
                } else {
                    rng.uniform(-120.0, 100.0)
                }
            })
            .collect()
    }

    /// Runs `f` of every variant on `x` and checks the results equal the scalar twin's bitwise;
    /// with `any_nan`, any NaN matches any NaN (a softmax row holding NaNs is all NaN, but which
    /// NaN depends on how the max met them, and no caller relies on NaN payloads).
    fn assert_twins(what: &str, x: &[f32], any_nan: bool, f: impl Fn(&ExpOps) -> fn(&mut [f32])) {
        let mut want = x.to_vec();
        f(&SCALAR)(&mut want);
        for k in crate::kernels::available() {
            let mut got = x.to_vec();
            f(&k.exp)(&mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    same_bits(*g, *w) || (any_nan && g.is_nan() && w.is_nan()),
                    "{what} {}: len {} [{i}] x={:e}: {g:e} vs twin {w:e}",
                    k.name,
                    x.len(),
                    x[i]
                );
            }
        }
    }

    /// The SIMD lanes' bare exp (which silu, QuickGELU and softmax apply inside) equals
    /// [`exp_f32`] bitwise, NaN payloads included.
    fn assert_exp_lanes_equal_twin(x: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        for (name, exp) in simd_exps() {
            let mut got = x.to_vec();
            exp(&mut got);
            for (i, (&g, &v)) in got.iter().zip(x).enumerate() {
                let w = exp_f32(v);
                assert!(
                    same_bits(g, w),
                    "exp {name}: len {} [{i}] x={v:e}: {g:e} vs twin {w:e}",
                    x.len()
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x; // the NEON lanes are checked in neon_rows.rs
    }

    #[test]
    fn simd_variants_equal_the_scalar_twin_bitwise() {
        let edges = edge_inputs();
        for len in (0..=40).chain([edges.len(), 1000, 1025]) {
            let x = if len == edges.len() {
                edges.clone()
            } else {
                test_inputs(len, 0x9e37_79b9 + len as u64)
            };
            assert_exp_lanes_equal_twin(&x);
            assert_twins("silu", &x, false, |o| o.silu);
            assert_twins("quick_gelu", &x, false, |o| o.quick_gelu);
            // Softmax rows as attention produces them: scaled scores, some masked to -inf.
            let mut rng = Rng::new(len as u64 + 1);
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    if rng.next().is_multiple_of(9) {
                        f32::NEG_INFINITY
                    } else {
                        rng.uniform(-30.0, 30.0)
                    }
                })
                .collect();
            assert_twins("softmax", &row, false, |o| o.softmax);
            assert_twins("softmax(wide)", &x, true, |o| o.softmax);
        }
        // Every variant this CPU has is exercised (names, for the record when it fails).
        let names: Vec<&str> = crate::kernels::available().iter().map(|k| k.name).collect();
        assert_eq!(names.last(), Some(&"generic"));
    }

    #[test]
    fn activations_match_f64_formulas() {
        let x = test_inputs(5000, 7);
        for k in crate::kernels::available() {
            let ops = &k.exp;
            let (mut s, mut g) = (x.clone(), x.clone());
            (ops.silu)(&mut s);
            (ops.quick_gelu)(&mut g);
            for i in 0..x.len() {
                let z = x[i] as f64;
                if !z.is_finite() {
                    continue;
                }
                let ws = z / (1.0 + (-z).exp());
                // The f32 product −1.702·x is the kernel's argument (its rounding is part of
                // the f32 formula, amplified by exp for large |x|); the rest is checked in f64.
                let wg = z / (1.0 + ((-QUICK_GELU_ALPHA * x[i]) as f64).exp());
                // Where exp of the negated argument overflows f32 the formula gives x/∞ = −0
                // (as with libm); the true value is then below 1e-36.
                let check = |got: f32, want: f64, arg: f32, what: &str| {
                    if arg >= 88.72284 {
                        assert!(got == 0.0 && want.abs() < 1e-36, "{what}({z}) = {got}");
                    } else {
                        assert!(
                            ulps(got, want) <= 3.0,
                            "{} {what}({z}) = {got} vs {want}",
                            k.name
                        );
                    }
                };
                check(s[i], ws, -x[i], "silu");
                check(g[i], wg, -QUICK_GELU_ALPHA * x[i], "quick_gelu");
            }
        }
    }

    #[test]
    fn softmax_matches_f64_and_handles_masks() {
        let mut rng = Rng::new(42);
        for k in crate::kernels::available() {
            let ops = &k.exp;
            for len in [1usize, 5, 16, 17, 100, 1025] {
                let x: Vec<f32> = (0..len)
                    .map(|i| {
                        if i % 5 == 3 {
                            f32::NEG_INFINITY
                        } else {
                            rng.uniform(-20.0, 20.0)
                        }
                    })
                    .collect();
                let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let mut got = x.clone();
                (ops.softmax)(&mut got);
                for i in 0..len {
                    let want = e[i] / sum;
                    assert!(
                        (got[i] as f64 - want).abs() <= 1e-6 * want + 1e-12,
                        "{} len {len} [{i}]: {} vs {want}",
                        k.name,
                        got[i]
                    );
                    if x[i] == f32::NEG_INFINITY {
                        assert_eq!(got[i], 0.0);
                    }
                }
            }
            // A row of only -inf is never produced by callers; it must not panic.
            let mut all_masked = vec![f32::NEG_INFINITY; 19];
            (ops.softmax)(&mut all_masked);
            let mut empty: Vec<f32> = Vec::new();
            (ops.softmax)(&mut empty);
        }
    }
}
