//! Scalar reference dot products, one per (weight type, activation type) pair.
//!
//! Every function computes Σᵢ w[i]·a[i] over `n` values (`n` a multiple of the block size),
//! after ggml's `ggml_vec_dot_*`: each block's products are summed exactly in integers, then
//! multiplied by the blocks' scales and accumulated in f32. Where ggml's scalar fallback and its
//! SIMD builds round differently, these follow the SIMD builds (what llama.cpp users run), and
//! every owlet variant computes the same formula bitwise: Q4_0/Q8_0 fuse the block's add
//! (`acc = fma(s, d_w·d_a, acc)`), and the K-quants sum each super-block exactly in one integer
//! and scale it once, where ggml's scalar code keeps eight f32 lane sums per row (see
//! [`vec_dot_q4_k_q8_k`] for why that matters). Float kernels accumulate f32 products in f64,
//! like ggml's scalar `ggml_vec_dot_f32/f16/bf16`.
//!
//! Contract: `w` holds at least the weight blocks of `n` values and `a` the activation blocks
//! (or `n` f32). Extra bytes are ignored; the callers (matmul) guarantee the sizes, which debug
//! builds assert. Too-short inputs never panic in release builds: missing blocks are skipped.

use crate::quant::blocks::{
    Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_QS, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q5_0_BYTES, Q5_0_QS,
    Q5_1_BYTES, Q5_1_QS, Q6_K_D, Q6_K_SCALES, Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_K_BSUMS,
};
use crate::quant::{read_bf16, read_f16, read_f32, unpack_scale_min_k4, GgmlType, QK_K};

/// The (weight block, activation block) pairs of a row of `n` values.
#[inline]
fn block_pairs<'a>(
    n: usize,
    wt: GgmlType,
    w: &'a [u8],
    at: GgmlType,
    a: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let nb = n / wt.block_size();
    debug_assert_eq!(
        n % wt.block_size(),
        0,
        "{wt}: {n} values is not a whole number of blocks"
    );
    debug_assert!(
        w.len() >= nb * wt.type_size(),
        "{wt}: weight row too short for {n} values"
    );
    debug_assert!(
        a.len() >= nb * at.type_size(),
        "{at}: activation row too short for {n} values"
    );
    w.chunks_exact(wt.type_size())
        .zip(a.chunks_exact(at.type_size()))
        .take(nb)
}

/// The signed byte at `b[i]`.
#[inline]
fn i8_at(b: &[u8], i: usize) -> i32 {
    b[i] as i8 as i32
}

/// Q4_0 weights · Q8_0 activations. Per block, in order: the exact integer `s = Σ (q4 − 8)·q8`,
/// then `sumf = fma(s, d_w·d_a, sumf)` (one rounding for the scale product, one for the fused
/// multiply-add). ggml's scalar code rounds `s·d_w·d_a + sumf` three times and its SIMD code
/// fuses the add as here; the difference is f32 rounding. This formula is the contract of the
/// 32-block kernels: every variant computes it exactly, so a row's lanes can be a block
/// ([`super::QuantDot`]) or a weight row (wide SIMD tiles) and give the same bits.
pub fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q4_0, w, GgmlType::Q8_0, a) {
        let (qx, qy) = (&x[Q4_0_QS..Q4_0_BYTES], &y[Q8_0_QS..Q8_0_BYTES]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in qx.iter().enumerate() {
            sumi0 += ((q & 0xF) as i32 - 8) * i8_at(qy, j);
            sumi1 += ((q >> 4) as i32 - 8) * i8_at(qy, j + 16);
        }
        sumf = ((sumi0 + sumi1) as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q4_1 weights · Q8_1 activations. Per block: d_w·d_a·Σ q4·q8 + m_w·s_a, where s_a = d_a·Σ q8
/// carries the weight's min across the block.
pub fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q4_1, w, GgmlType::Q8_1, a) {
        let (qx, qy) = (&x[Q4_1_QS..Q4_1_BYTES], &y[Q8_1_QS..Q8_1_BYTES]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in qx.iter().enumerate() {
            sumi0 += (q & 0xF) as i32 * i8_at(qy, j);
            sumi1 += (q >> 4) as i32 * i8_at(qy, j + 16);
        }
        let sumi = (sumi0 + sumi1) as f32;
        sumf += read_f16(x, 0) * read_f16(y, 0) * sumi + read_f16(x, 2) * read_f16(y, 2);
    }
    sumf
}

/// The 5-bit level (0..32) of value `j` of a Q5_0/Q5_1 block from its `qh` bits and `qs`.
#[inline]
fn q5_level(qh: u32, qs: &[u8], j: usize) -> i32 {
    let nibble = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
    (nibble as i32) | ((((qh >> j) & 1) as i32) << 4)
}

/// Q5_0 weights · Q8_0 activations. Per block: Σ (q5 − 16)·q8 in integers, times d_w·d_a.
pub fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q5_0, w, GgmlType::Q8_0, a) {
        let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
        let (qs, qy) = (&x[Q5_0_QS..Q5_0_BYTES], &y[Q8_0_QS..Q8_0_BYTES]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            sumi0 += (q5_level(qh, qs, j) - 16) * i8_at(qy, j);
            sumi1 += (q5_level(qh, qs, j + 16) - 16) * i8_at(qy, j + 16);
        }
        sumf += (read_f16(x, 0) * read_f16(y, 0)) * (sumi0 + sumi1) as f32;
    }
    sumf
}

/// Q5_1 weights · Q8_1 activations. Per block: d_w·d_a·Σ q5·q8 + m_w·s_a.
pub fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q5_1, w, GgmlType::Q8_1, a) {
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let (qs, qy) = (&x[Q5_1_QS..Q5_1_BYTES], &y[Q8_1_QS..Q8_1_BYTES]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            sumi0 += q5_level(qh, qs, j) * i8_at(qy, j);
            sumi1 += q5_level(qh, qs, j + 16) * i8_at(qy, j + 16);
        }
        let sumi = (sumi0 + sumi1) as f32;
        sumf += read_f16(x, 0) * read_f16(y, 0) * sumi + read_f16(x, 2) * read_f16(y, 2);
    }
    sumf
}

/// Q8_0 weights · Q8_0 activations. Per block: the exact `s = Σ q8_w·q8_a`, then
/// `sumf = fma(s, d_w·d_a, sumf)` (the Q4_0 contract above).
pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q8_0, w, GgmlType::Q8_0, a) {
        let sumi: i32 = (0..32).map(|j| i8_at(x, 2 + j) * i8_at(y, 2 + j)).sum();
        sumf = (sumi as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q8_K activation block fields: `d` (f32), quant `i`, and the sum of quants 16g..16g+16.
struct Q8K<'a>(&'a [u8]);

impl Q8K<'_> {
    #[inline]
    fn d(&self) -> f32 {
        read_f32(self.0, 0)
    }
    #[inline]
    fn q(&self, i: usize) -> i32 {
        i8_at(self.0, 4 + i)
    }
    #[inline]
    fn bsum(&self, g: usize) -> i32 {
        i16::from_le_bytes([self.0[Q8_K_BSUMS + 2 * g], self.0[Q8_K_BSUMS + 1 + 2 * g]]) as i32
    }
}

/// `Σ_j scale(j) · Σ_{i in sub-block j} level(i) · q8_i` over a super-block's sub-blocks of
/// `sub` values: the exact integer sum of a K-quant super-block (|sum| < 2^31 for every block:
/// at most 256 · 63 · 31 · 128 for Q4_K/Q5_K, 256 · 128 · 32 · 128 for Q6_K).
#[inline]
fn scaled_sum(
    sub: usize,
    scale: impl Fn(usize) -> i32,
    level: impl Fn(usize) -> i32,
    y: &Q8K,
) -> i32 {
    (0..QK_K / sub)
        .map(|j| {
            scale(j)
                * (sub * j..sub * (j + 1))
                    .map(|i| level(i) * y.q(i))
                    .sum::<i32>()
        })
        .sum()
}

/// The shared Q4_K/Q5_K dot product; `level(x, i)` extracts weight level i (0..32) of block x.
/// Per super-block, with `isum = Σ_j sc_j Σ_i q_i·a_i` and `msum = Σ_g m_{g/2}·bsum_g` (the
/// mins through the activation's 16-value sums) exact integers:
/// `acc += (d_w·d_a)·isum;  acc −= (dmin_w·d_a)·msum` (separate multiplies and adds).
///
/// This is the formula of ggml's SIMD builds (x86 AVX2, ARM NEON: one integer per super-block,
/// scaled once) and of every owlet SIMD variant ([`super::tiles::q4_k_q8_k_exact`] is the same
/// formula; the two are pinned bitwise). ggml's scalar fallback instead keeps eight f32 lane
/// sums for the whole row and subtracts the mins at the end; that is as accurate but rounds
/// differently, and rounding differences are not harmless here: the next layer re-quantizes
/// these outputs to 8 bits, so a result one ulp from a rounding tie flips a quant. On
/// `tests/data/llamacpp-tiny` that moved the Q4_K_M logits by 7.5e-2 (6 % of llama.cpp's own
/// quantization error) away from llama.cpp's; a one-ulp nudge of every Q4_K dot in the
/// per-super-block formula moves them exactly as far. One formula everywhere keeps every
/// variant on the numbers llama.cpp's SIMD builds give.
fn vec_dot_k_asym(
    n: usize,
    wt: GgmlType,
    w: &[u8],
    a: &[u8],
    level: impl Fn(&[u8], usize) -> i32,
) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in block_pairs(n, wt, w, GgmlType::Q8_K, a) {
        let y = Q8K(y);
        let packed = &x[Q4_K_SCALES..Q4_K_QS];
        let isum = scaled_sum(
            32,
            |j| unpack_scale_min_k4(j, packed).0 as i32,
            |i| level(x, i),
            &y,
        );
        let msum: i32 = (0..QK_K / 16)
            .map(|g| y.bsum(g) * unpack_scale_min_k4(g / 2, packed).1 as i32)
            .sum();
        acc += (read_f16(x, 0) * y.d()) * isum as f32;
        acc -= (read_f16(x, Q4_K_DMIN) * y.d()) * msum as f32;
    }
    acc
}

/// Q4_K weights · Q8_K activations.
pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot_k_asym(n, GgmlType::Q4_K, w, a, |x, i| {
        let (c, l) = (i / 64, i % 64);
        let byte = x[16 + 32 * c + l % 32];
        (if l < 32 { byte & 0xF } else { byte >> 4 }) as i32
    })
}

/// Q5_K weights · Q8_K activations.
pub fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot_k_asym(n, GgmlType::Q5_K, w, a, |x, i| {
        let (c, l) = (i / 64, i % 64);
        let byte = x[48 + 32 * c + l % 32];
        let low = if l < 32 { byte & 0xF } else { byte >> 4 };
        // Value 64c + l has its fifth bit at bit 2c (first 32) or 2c + 1 (second 32) of qh[l % 32].
        let high = (x[16 + l % 32] >> (i / 32)) & 1;
        (low | (high << 4)) as i32
    })
}

/// Q6_K weights · Q8_K activations. Per super-block: the exact `Σ_j sc_j Σ_i (q6_i − 32)·a_i`
/// over sixteen 16-value sub-blocks, then `acc += (d_w·d_a)·Σ` (the formula of
/// [`super::tiles::q6_k_q8_k_exact`] and of the SIMD variants; see [`vec_dot_k_asym`] for why
/// not ggml's scalar eight lanes).
pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in block_pairs(n, GgmlType::Q6_K, w, GgmlType::Q8_K, a) {
        let y = Q8K(y);
        let level = |i: usize| {
            let (h, quarter, j) = (i / 128, (i % 128) / 32, i % 32);
            let ql = &x[64 * h..64 * h + 64];
            let qh = &x[128 + 32 * h..128 + 32 * h + 32];
            crate::quant::q6_k_quant(ql, qh, quarter, j) as i32
        };
        let isum = scaled_sum(16, |j| x[Q6_K_SCALES + j] as i8 as i32, level, &y);
        acc += (read_f16(x, Q6_K_D) * y.d()) * isum as f32;
    }
    acc
}

/// F16 weights (little-endian halves) · f32 activations, products in f32 summed in f64.
pub fn vec_dot_f16_f32(n: usize, w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= 2 * n && x.len() >= n);
    let sum: f64 = w
        .chunks_exact(2)
        .zip(x)
        .take(n)
        .map(|(b, &v)| (read_f16(b, 0) * v) as f64)
        .sum();
    sum as f32
}

/// BF16 weights (little-endian) · f32 activations, products in f32 summed in f64.
pub fn vec_dot_bf16_f32(n: usize, w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= 2 * n && x.len() >= n);
    let sum: f64 = w
        .chunks_exact(2)
        .zip(x)
        .take(n)
        .map(|(b, &v)| (read_bf16(b, 0) * v) as f64)
        .sum();
    sum as f32
}

/// F32 weights (little-endian bytes, any alignment) · f32 activations, products in f32 summed
/// in f64.
pub fn vec_dot_f32(n: usize, w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= 4 * n && x.len() >= n);
    let sum: f64 = w
        .chunks_exact(4)
        .zip(x)
        .take(n)
        .map(|(b, &v)| (read_f32(b, 0) * v) as f64)
        .sum();
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::{Q4_K_BYTES, Q8_K_BYTES, Q8_K_QS};
    use crate::quant::{dequantize_row, quantize_row, vec_dot_type};

    /// Deterministic values with mixed magnitudes (xorshift; heavy-ish tails via cubing).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                u * u * u * 3.0 + u * 0.5
            })
            .collect()
    }

    fn quantized(typ: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut q = vec![0u8; typ.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_row(typ, x, &mut q).unwrap();
        q
    }

    fn dequantized(typ: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; n];
        dequantize_row(typ, q, &mut y).unwrap();
        y
    }

    type Kernel = fn(usize, &[u8], &[u8]) -> f32;

    const QUANT_KERNELS: [(GgmlType, Kernel); 8] = [
        (GgmlType::Q4_0, vec_dot_q4_0_q8_0),
        (GgmlType::Q4_1, vec_dot_q4_1_q8_1),
        (GgmlType::Q5_0, vec_dot_q5_0_q8_0),
        (GgmlType::Q5_1, vec_dot_q5_1_q8_1),
        (GgmlType::Q8_0, vec_dot_q8_0_q8_0),
        (GgmlType::Q4_K, vec_dot_q4_k_q8_k),
        (GgmlType::Q5_K, vec_dot_q5_k_q8_k),
        (GgmlType::Q6_K, vec_dot_q6_k_q8_k),
    ];

    /// The kernel equals the f64 dot product of the dequantized weights and activations up to
    /// f32 rounding: this pins down block layouts, scales, mins and the bsums shortcut.
    #[test]
    fn quantized_kernels_match_dequantized_dot() {
        let n = 1024;
        for (seed, (wt, kernel)) in QUANT_KERNELS.into_iter().enumerate() {
            let at = vec_dot_type(wt);
            let w = values(n, 10 + seed as u64);
            let a = values(n, 100 + seed as u64);
            let (qw, qa) = (quantized(wt, &w), quantized(at, &a));
            let (dw, da) = (dequantized(wt, &qw, n), dequantized(at, &qa, n));
            let mut want: f64 = dw.iter().zip(&da).map(|(&x, &y)| x as f64 * y as f64).sum();
            if at == GgmlType::Q8_1 {
                // ggml applies the weight's min m through the activation block's stored
                // s = d·Σq (f32 d, rounded to f16), not through the dequantized activations.
                let blocks = qw
                    .chunks_exact(wt.type_size())
                    .zip(qa.chunks_exact(Q8_1_BYTES));
                for ((bw, ba), da) in blocks.zip(da.chunks_exact(32)) {
                    let sum_a: f64 = da.iter().map(|&v| v as f64).sum();
                    want += read_f16(bw, 2) as f64 * (read_f16(ba, 2) as f64 - sum_a);
                }
            }
            let scale: f64 = dw
                .iter()
                .zip(&da)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let got = kernel(n, &qw, &qa) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * scale,
                "{wt}: {got} vs {want} (scale {scale})"
            );
        }
    }

    /// ggml's test-quantize-fns criterion: |vec_dot − exact dot| / n < 0.02 on its synthetic
    /// vectors 0.1 + 2·cos(i) and 0.1 + 2·cos(i + 1).
    #[test]
    fn quantized_kernels_within_ggml_dot_error() {
        let n = 32 * 128;
        let w: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
        let a: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
        let exact: f64 = w.iter().zip(&a).map(|(&x, &y)| (x * y) as f64).sum();
        for (wt, kernel) in QUANT_KERNELS {
            let got = kernel(n, &quantized(wt, &w), &quantized(vec_dot_type(wt), &a)) as f64;
            let err = (got - exact).abs() / n as f64;
            assert!(err < 0.02, "{wt}: dot error {err}");
        }
    }

    // xorshift64 bytes and floats for the block generators below.
    use crate::kernels::test_rng::Rng;

    /// A K-quant weight row of `n` values with arbitrary quant bytes (every nibble, fifth-bit
    /// and 6-bit scale/min pattern, high scale bits included) or, with `fill`, every quant and
    /// scale byte equal to it (0xFF: all scales and mins 63, all levels at their maximum); the
    /// f16 scales are random but finite, at `mag`.
    fn k_weights(wt: GgmlType, n: usize, fill: Option<u8>, mag: f32, rng: &mut Rng) -> Vec<u8> {
        let mut w = vec![0u8; wt.row_bytes(n as u64).unwrap() as usize];
        let halves: &[usize] = if wt == GgmlType::Q6_K {
            &[Q6_K_D]
        } else {
            &[0, Q4_K_DMIN]
        };
        for block in w.chunks_exact_mut(wt.type_size()) {
            for b in block.iter_mut() {
                *b = fill.unwrap_or(rng.next() as u8);
            }
            for &o in halves {
                let v = half::f16::from_f32(rng.f().abs() * mag + mag * 0.01);
                block[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        w
    }

    /// A Q8_K row with arbitrary quants (−128 frequent, or all −128 with `saturated`), bsums
    /// consistent with them, and a random positive or negative scale.
    fn q8_k_row(n: usize, saturated: bool, rng: &mut Rng) -> Vec<u8> {
        let mut a = vec![0u8; GgmlType::Q8_K.row_bytes(n as u64).unwrap() as usize];
        for block in a.chunks_exact_mut(Q8_K_BYTES) {
            block[..4].copy_from_slice(&(rng.f() * 0.05).to_le_bytes());
            for q in &mut block[Q8_K_QS..Q8_K_BSUMS] {
                *q = if saturated || rng.next().is_multiple_of(4) {
                    0x80
                } else {
                    rng.next() as u8
                };
            }
            for g in 0..16 {
                let s: i16 = block[Q8_K_QS + 16 * g..Q8_K_QS + 16 + 16 * g]
                    .iter()
                    .map(|&q| q as i8 as i16)
                    .sum();
                block[Q8_K_BSUMS + 2 * g..Q8_K_BSUMS + 2 + 2 * g].copy_from_slice(&s.to_le_bytes());
            }
        }
        a
    }

    /// Weight/activation row pairs for the K-quant tests: quantized random and heavy-tailed
    /// rows, arbitrary blocks, saturated blocks (every fill) against saturated and arbitrary
    /// activations, for 1, 3 and 16 super-blocks.
    fn k_cases(wt: GgmlType) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
        let mut rng = Rng::new(0x5EED_0000 + wt as u64);
        let mut cases = Vec::new();
        for n in [256, 768, 4096] {
            let seed = n as u64 + wt as u64;
            cases.push((
                n,
                quantized(wt, &values(n, seed)),
                quantized(GgmlType::Q8_K, &values(n, seed + 1)),
            ));
            for mag in [1e-3, 1.0, 60.0] {
                let w = k_weights(wt, n, None, mag, &mut rng);
                cases.push((n, w, q8_k_row(n, false, &mut rng)));
            }
            for fill in [0x00, 0xFF, 0x80, 0x7F, 0x3F, 0xC0] {
                let w = k_weights(wt, n, Some(fill), 1.0, &mut rng);
                cases.push((n, w.clone(), q8_k_row(n, true, &mut rng)));
                cases.push((n, w, q8_k_row(n, false, &mut rng)));
            }
        }
        cases
    }

    const K_KERNELS: [(GgmlType, Kernel); 3] = [
        (GgmlType::Q4_K, vec_dot_q4_k_q8_k),
        (GgmlType::Q5_K, vec_dot_q5_k_q8_k),
        (GgmlType::Q6_K, vec_dot_q6_k_q8_k),
    ];

    /// The K-quant dots against an independent f64 reference (both rows dequantized by the
    /// quant module, products summed in f64) on random, arbitrary and saturated blocks, within
    /// the f32 rounding of the formula: (8 + super-blocks)·2⁻²⁴ · Σ|terms|, where a Q4_K/Q5_K
    /// value's terms are its scaled level and its min, each times the activation (their
    /// difference can be far smaller than either, and both are rounded).
    #[test]
    fn k_quant_dots_match_f64_reference_within_rounding() {
        for (wt, kernel) in K_KERNELS {
            for (n, w, a) in k_cases(wt) {
                let (dw, da) = (dequantized(wt, &w, n), dequantized(GgmlType::Q8_K, &a, n));
                let want: f64 = dw.iter().zip(&da).map(|(&x, &y)| x as f64 * y as f64).sum();
                // The mins' part of each value (zero for Q6_K, which has none).
                let min_of = |i: usize| -> f64 {
                    if wt == GgmlType::Q6_K {
                        return 0.0;
                    }
                    let x = &w[i / QK_K * wt.type_size()..];
                    read_f16(x, Q4_K_DMIN) as f64
                        * unpack_scale_min_k4(i % QK_K / 32, &x[Q4_K_SCALES..Q4_K_QS]).1 as f64
                };
                let terms: f64 = (0..n)
                    .map(|i| (dw[i].abs() as f64 + 2.0 * min_of(i)) * da[i].abs() as f64)
                    .sum();
                let tol = (8 + n / QK_K) as f64 * f64::powi(2.0, -24) * terms;
                let got = kernel(n, &w, &a) as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{wt} n={n}: {got} vs f64 {want} (|Δ| {:e} > {tol:e})",
                    (got - want).abs()
                );
            }
        }
    }

    /// The K-quant dots are the per-super-block formula of the SIMD variants bitwise (one exact
    /// integer per super-block, scaled once), not ggml's scalar eight lane sums: Q4_K and Q6_K
    /// equal [`super::super::tiles`]' `*_exact` twins, and a Q5_K block whose fifth bits are
    /// all clear equals the Q4_K block with the same scales and nibbles.
    #[test]
    fn k_quant_dots_are_the_super_block_formula() {
        use super::super::tiles::{q4_k_q8_k_exact, q6_k_q8_k_exact};
        for (wt, kernel, twin) in [
            (
                GgmlType::Q4_K,
                vec_dot_q4_k_q8_k as Kernel,
                q4_k_q8_k_exact as Kernel,
            ),
            (GgmlType::Q6_K, vec_dot_q6_k_q8_k, q6_k_q8_k_exact),
        ] {
            for (n, w, a) in k_cases(wt) {
                let (got, want) = (kernel(n, &w, &a), twin(n, &w, &a));
                assert_eq!(got.to_bits(), want.to_bits(), "{wt} n={n}: {got} vs {want}");
            }
        }
        for (n, w4, a) in k_cases(GgmlType::Q4_K) {
            let mut w5 = Vec::new();
            for b in w4.chunks_exact(Q4_K_BYTES) {
                w5.extend_from_slice(&b[..16]);
                w5.extend_from_slice(&[0u8; 32]);
                w5.extend_from_slice(&b[16..]);
            }
            let (got, want) = (vec_dot_q5_k_q8_k(n, &w5, &a), q4_k_q8_k_exact(n, &w4, &a));
            assert_eq!(got.to_bits(), want.to_bits(), "Q5_K n={n}: {got} vs {want}");
        }
    }

    #[test]
    fn empty_rows_give_zero() {
        for (wt, kernel) in QUANT_KERNELS {
            assert_eq!(kernel(0, &[], &[]), 0.0, "{wt}");
        }
        assert_eq!(vec_dot_f32(0, &[], &[]), 0.0);
    }

    #[test]
    fn float_kernels_match_f64_dot() {
        let n = 999; // no block structure: any length works
        let w = values(n, 7);
        let x = values(n, 8);
        for (wt, kernel) in [
            (
                GgmlType::F32,
                vec_dot_f32 as fn(usize, &[u8], &[f32]) -> f32,
            ),
            (GgmlType::F16, vec_dot_f16_f32),
            (GgmlType::BF16, vec_dot_bf16_f32),
        ] {
            let qw = quantized(wt, &w);
            let dw = dequantized(wt, &qw, n);
            let want: f64 = dw.iter().zip(&x).map(|(&p, &q)| (p * q) as f64).sum();
            let got = kernel(n, &qw, &x);
            assert_eq!(got, want as f32, "{wt}");
        }
    }

    /// Unaligned weight bytes (as in a memory-mapped file) are fine.
    #[test]
    fn float_kernels_accept_unaligned_bytes() {
        let w = values(64, 3);
        let x = values(64, 4);
        let mut bytes = vec![0u8; 1 + 4 * 64];
        quantize_row(GgmlType::F32, &w, &mut bytes[1..]).unwrap();
        let want: f64 = w.iter().zip(&x).map(|(&p, &q)| (p * q) as f64).sum();
        assert_eq!(vec_dot_f32(64, &bytes[1..], &x), want as f32);
    }
}
