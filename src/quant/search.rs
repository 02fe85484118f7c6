//! ggml's rounding and scale-search helpers for the K-quants.
//!
//! Bit-exactness with llama.cpp depends on doing the same f32 operations in the same order as
//! ggml's reference C code: sums are accumulated left to right in f32, products are evaluated
//! left to right (`w * x * l` is `(w * x) * l`), and integers are converted to f32 where C
//! would convert them. Do not "simplify" the arithmetic here.

/// Groups whose largest magnitude is below this are treated as all zero (ggml's
/// `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, for |v| < 2^22 (ggml's `nearest_int`).
///
/// ggml adds 1.5 * 2^23 so that the f32 addition itself rounds `v` to an integer (the spacing
/// of f32 in [2^23, 2^24) is exactly 1) and then reads the integer from the mantissa bits. We
/// do the same rather than `round_ties_even` so that out-of-range or NaN inputs give ggml's
/// (meaningless but deterministic) answers instead of different ones; it never panics.
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let biased = v + 12_582_912.0;
    (biased.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Symmetric quantization of `x` to integers in `[-nmax, nmax - 1]` (stored offset by `nmax` in
/// `l`), searching the scale that minimizes the error weighted by `x²`: ggml's
/// `make_qx_quants` with `rmse_type = 1` and no importance weights, as Q6_K uses it.
///
/// Returns the scale: x ≈ scale * (l - nmax). `l.len()` must equal `x.len()`.
pub(crate) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    // Integer level of `v` at inverse scale `iscale`, clamped to the representable range.
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // (Σ w·x·q, Σ w·q²) with w = x², the numerator and denominator of the best scale.
    let sums = |iscale: f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, l: &mut [u8]| {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (level(iscale, v) + nmax) as u8;
        }
    };

    let iscale = -nmaxf / max;
    store(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Parameters of ggml's `make_qkx2_quants` scale/min grid search.
pub(crate) struct Qkx2Search {
    /// Largest level (15 for 4 bits, 31 for 5 bits).
    pub nmax: i32,
    /// First offset added to `nmax` when trying inverse scales.
    pub rmin: f32,
    /// Step between tried offsets.
    pub rdelta: f32,
    /// Number of steps (tries `nstep + 1` inverse scales).
    pub nstep: i32,
}

/// Asymmetric quantization x ≈ scale * l - min with l in `[0, nmax]`, minimizing the
/// `weights`-weighted squared error over a grid of inverse scales: ggml's `make_qkx2_quants`
/// with `use_mad = false`.
///
/// Writes the levels to `l` and returns `(scale, min)` with `min >= 0` (the value subtracted).
/// `x`, `weights` and `l` have the same length, at most 32 (Q4_K/Q5_K sub-blocks have 32).
pub(crate) fn make_qkx2_quants(
    p: &Qkx2Search,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
) -> (f32, f32) {
    debug_assert!(x.len() <= 32 && weights.len() == x.len() && l.len() == x.len());
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    // The min is subtracted, so it is never positive: rows of positive values keep min = 0.
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let level = |iscale: f32, min: f32, v: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);

    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = level(iscale, min, x[i]);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..laux.len() {
            let q = level(iscale, min, x[i]);
            laux[i] = q as u8;
            let q = q as f32;
            let w = weights[i];
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..laux.len() {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..laux.len()].copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}
