//! Row primitives for attention: dot products and `axpy` between f32 query/output rows and
//! f32 or f16 key/value rows, and a small f32 matrix product for attention over whole
//! matrices (the vision tower and the abstractor), and the activation quantizers. Each
//! [`super::Kernels`] table carries one [`RowOps`] (its `rows`), chosen with the table once per
//! model; [`SCALAR`] is the scalar twin every SIMD variant is tested against.

use half::f16;

/// One implementation of the attention row primitives.
pub struct RowOps {
    /// `Σ a[i]·b[i]`
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// `Σ a[i]·b[i]` with f16 `b`
    pub dot_f16: fn(&[f32], &[f16]) -> f32,
    /// `out[p] = dot_f16(q, k[p·stride..p·stride + q.len()])` for every `p < out.len()`, bitwise
    /// what [`RowOps::dot_f16`] gives row by row (one query against many cached keys).
    pub dots_f16: fn(&[f32], &[f16], usize, &mut [f32]),
    /// `out[i] += w·v[i]`
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    /// `out[i] += w·v[i]` with f16 `v`
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
    /// `out[i] += Σ_p w[p]·v[p·stride + i]`, bitwise what [`RowOps::axpy_f16`] gives when
    /// called for p = 0, 1, … in order (the sums stay in registers between rows).
    pub wsum_f16: fn(&[f32], &[f16], usize, &mut [f32]),
    /// `c = a·b` for the f32 matrices of a [`Gemm`]: see there.
    pub gemm_f32: fn(&Gemm<'_>, &mut [f32]),
    /// Quantizes activations to Q8_0 blocks, bytes identical to
    /// [`crate::quant::quantize_row_q8_0`] (ggml's reference); `Err` on lengths it rejects.
    pub quantize_q8_0: fn(&[f32], &mut [u8]) -> Result<(), crate::quant::QuantError>,
    /// Quantizes activations to Q8_K blocks, bytes identical to
    /// [`crate::quant::quantize_row_q8_k`] (ggml's reference); `Err` on lengths it rejects.
    pub quantize_q8_k: fn(&[f32], &mut [u8]) -> Result<(), crate::quant::QuantError>,
}

/// An f32 product `c[i·ldc + j] = Σ_d a[i·lda + d] · b[d·ldb + j]` for `i < m`, `j < n`,
/// `d < k` (row-major operands with leading dimensions). Every output is one fused
/// multiply-add chain over `d = 0, 1, …, k−1` starting from 0, in every variant (SIMD lanes run
/// over `j`), so a value does not depend on `m`, `n` or how the work is split.
pub struct Gemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub ldb: usize,
    pub ldc: usize,
}

impl Gemm<'_> {
    /// Whether `a`, `b` and a `c` of `c_len` floats hold every element the product touches
    /// (and rows do not overlap within an operand).
    pub fn fits(&self, c_len: usize) -> bool {
        fn span(rows: usize, ld: usize, cols: usize) -> Option<usize> {
            if rows == 0 || cols == 0 {
                return Some(0);
            }
            if rows > 1 && ld < cols {
                return None;
            }
            (rows - 1).checked_mul(ld)?.checked_add(cols)
        }
        matches!(
            (span(self.m, self.lda, self.k), span(self.k, self.ldb, self.n), span(self.m, self.ldc, self.n)),
            (Some(a), Some(b), Some(c)) if a <= self.a.len() && b <= self.b.len() && c <= c_len
        )
    }
}

/// The portable scalar row primitives (the `generic` table's).
pub const SCALAR: RowOps = RowOps {
    dot_f32: scalar_dot_f32,
    dot_f16: scalar_dot_f16,
    dots_f16: scalar_dots_f16,
    axpy_f32: scalar_axpy_f32,
    axpy_f16: scalar_axpy_f16,
    gemm_f32: scalar_gemm_f32,
    quantize_q8_0: crate::quant::quantize_row_q8_0,
    quantize_q8_k: crate::quant::quantize_row_q8_k,
    wsum_f16: scalar_wsum_f16,
};

/// f32 dot product with eight independent accumulators (fixed order: deterministic).
pub fn scalar_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

/// The scalar [`Gemm`]: loops ordered `i, d, j` so each output's chain runs over `d` in order
/// while the inner loop over `j` stays contiguous (and vectorizes where `mul_add` is an
/// instruction).
///
/// # Panics
/// If the operands are shorter than the shape says ([`Gemm::fits`]): a caller bug.
pub fn scalar_gemm_f32(g: &Gemm<'_>, c: &mut [f32]) {
    assert!(g.fits(c.len()), "gemm operands do not fit the shape");
    for i in 0..g.m {
        let crow = &mut c[i * g.ldc..i * g.ldc + g.n];
        crow.fill(0.0);
        for d in 0..g.k {
            let av = g.a[i * g.lda + d];
            let brow = &g.b[d * g.ldb..d * g.ldb + g.n];
            for (o, &bv) in crow.iter_mut().zip(brow) {
                *o = av.mul_add(bv, *o);
            }
        }
    }
}

/// A [`Gemm`] body for a block of rows: `(g, first row of a, first row of c)`. Unsafe: it reads
/// and writes through the pointers without checks, and may need target features.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(super) type GemmRows = unsafe fn(&Gemm<'_>, *const f32, *mut f32);

/// Runs a [`Gemm`] four rows at a time, `bodies[r − 1]` taking blocks of `r` rows: the driver
/// every SIMD row table shares. The bodies must come from a table that is only handed out
/// where their target features were detected (or are baseline).
///
/// # Panics
/// If the operands are shorter than the shape says ([`Gemm::fits`]): a caller bug.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(super) fn run_gemm(g: &Gemm<'_>, c: &mut [f32], bodies: [GemmRows; 4]) {
    assert!(g.fits(c.len()), "gemm operands do not fit the shape");
    let mut i = 0;
    while i < g.m {
        let rows = (g.m - i).min(4);
        // SAFETY: the bodies' target features were detected before their table could be
        // obtained (or are baseline); `fits` checked that rows i..i+rows of `a` and `c` and all
        // k rows of `b` are in bounds for the n columns (and k elements of `a`) a body touches.
        unsafe {
            bodies[rows - 1](
                g,
                g.a.as_ptr().wrapping_add(i * g.lda),
                c.as_mut_ptr().wrapping_add(i * g.ldc),
            )
        };
        i += rows;
    }
}

/// An activation row quantized block by block with `fast` (`values` f32 in, `bytes` out), the
/// blocks it declines (`None`) and lengths the reference would reject going to `reference`:
/// the driver every SIMD quantizer shares. `fast` must come from a table that is only handed
/// out where its target features were detected (or are baseline), and read `values` f32 and
/// write `bytes` bytes.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(super) fn quantize_blocks(
    x: &[f32],
    y: &mut [u8],
    (values, bytes): (usize, usize),
    fast: unsafe fn(*const f32, *mut u8) -> Option<()>,
    reference: fn(&[f32], &mut [u8]) -> Result<(), crate::quant::QuantError>,
) -> Result<(), crate::quant::QuantError> {
    if !x.len().is_multiple_of(values) || y.len() != x.len() / values * bytes {
        return reference(x, y);
    }
    for (xb, yb) in x.chunks_exact(values).zip(y.chunks_exact_mut(bytes)) {
        // SAFETY: `fast`'s target features are available (see above); `xb` holds one block's
        // `values` f32 and `yb` its `bytes`, exactly what the block function reads and writes.
        let done = unsafe { fast(xb.as_ptr(), yb.as_mut_ptr()) };
        if done.is_none() {
            reference(xb, yb)?;
        }
    }
    Ok(())
}

/// The scalar `wsum_f16`: one `axpy_f16` per row, in order.
///
/// # Panics
/// If a row `p < w.len()` does not fit `v` (a caller bug).
pub fn scalar_wsum_f16(w: &[f32], v: &[f16], stride: usize, out: &mut [f32]) {
    let n = out.len();
    for (p, &wp) in w.iter().enumerate() {
        scalar_axpy_f16(wp, &v[p * stride..p * stride + n], out);
    }
}

/// `dots_f16` for variants without a many-row form: one `dot_f16` call per row.
///
/// # Panics
/// If a row `p < out.len()` does not fit `k` (a caller bug).
pub fn dots_by_rows(
    dot: fn(&[f32], &[f16]) -> f32,
    q: &[f32],
    k: &[f16],
    stride: usize,
    out: &mut [f32],
) {
    let n = q.len();
    for (p, o) in out.iter_mut().enumerate() {
        *o = dot(q, &k[p * stride..p * stride + n]);
    }
}

fn scalar_dots_f16(q: &[f32], k: &[f16], stride: usize, out: &mut [f32]) {
    dots_by_rows(scalar_dot_f16, q, k, stride, out)
}

fn scalar_dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in a.iter().zip(b) {
        acc += x * y.to_f32();
    }
    acc
}

fn scalar_axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * *x;
    }
}

fn scalar_axpy_f16(w: f32, v: &[f16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x.to_f32();
    }
}
