//! Scalar reference dot products, one per (weight type, activation type) pair.
//!
//! Every function computes Σᵢ w[i]·a[i] over `n` values (`n` a multiple of the block size),
//! reproducing ggml's scalar `ggml_vec_dot_*_generic`: each block's products are summed exactly
//! in integers, then multiplied by the blocks' scales and accumulated in f32 in ggml's order
//! (the K-quants keep eight f32 partial sums, one per lane of eight, added at the end). Float
//! kernels accumulate f32 products in f64, like ggml's scalar `ggml_vec_dot_f32/f16/bf16`.
//!
//! Contract: `w` holds at least the weight blocks of `n` values and `a` the activation blocks
//! (or `n` f32). Extra bytes are ignored; the callers (matmul) guarantee the sizes, which debug
//! builds assert. Too-short inputs never panic in release builds: missing blocks are skipped.

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
        let (qx, qy) = (&x[2..18], &y[2..34]);
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
        let (qx, qy) = (&x[4..20], &y[4..36]);
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
        let (qs, qy) = (&x[6..22], &y[2..34]);
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
        let (qs, qy) = (&x[8..24], &y[4..36]);
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
        i16::from_le_bytes([self.0[260 + 2 * g], self.0[261 + 2 * g]]) as i32
    }
}

/// ggml's per-super-block integer accumulation for K-quants: for each sub-block of
/// `sub` values with integer scale `scales[j]`, adds scale·level·q8 into eight lanes (value i
/// goes to lane i % 8). `levels` are the 256 weight levels, `y` the Q8_K block.
#[inline]
fn lane_sums(levels: &[i32; QK_K], sub: usize, scale: impl Fn(usize) -> i32, y: &Q8K) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for j in 0..QK_K / sub {
        let sc = scale(j);
        for i in sub * j..sub * (j + 1) {
            aux32[i % 8] += sc * (y.q(i) * levels[i]);
        }
    }
    aux32
}

/// The shared Q4_K/Q5_K dot product; `level(x, i)` extracts weight level i (0..32) of block x.
fn vec_dot_k_asym(
    n: usize,
    wt: GgmlType,
    w: &[u8],
    a: &[u8],
    level: impl Fn(&[u8], usize) -> i32,
) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in block_pairs(n, wt, w, GgmlType::Q8_K, a) {
        let y = Q8K(y);
        let packed = &x[4..16];
        let mut levels = [0i32; QK_K];
        for (i, l) in levels.iter_mut().enumerate() {
            *l = level(x, i);
        }
        // The mins' contribution: Σ_j m_j · Σ q8 over sub-block j, from the 16-value bsums.
        let sumi: i32 = (0..QK_K / 16)
            .map(|g| y.bsum(g) * unpack_scale_min_k4(g / 2, packed).1 as i32)
            .sum();
        let aux32 = lane_sums(&levels, 32, |j| unpack_scale_min_k4(j, packed).0 as i32, &y);
        let d = read_f16(x, 0) * y.d();
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
        let dmin = read_f16(x, 2) * y.d();
        sumf -= dmin * sumi as f32;
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
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

/// Q6_K weights · Q8_K activations. Per super-block: eight lanes of Σ scale_j·(q6 − 32)·q8,
/// scaled by d_w·d_a into eight f32 partial sums.
pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (x, y) in block_pairs(n, GgmlType::Q6_K, w, GgmlType::Q8_K, a) {
        let y = Q8K(y);
        let mut levels = [0i32; QK_K];
        for (i, l) in levels.iter_mut().enumerate() {
            let (h, quarter, j) = (i / 128, (i % 128) / 32, i % 32);
            let ql = &x[64 * h..64 * h + 64];
            let qh = &x[128 + 32 * h..128 + 32 * h + 32];
            *l = crate::quant::q6_k_quant(ql, qh, quarter, j) as i32;
        }
        let aux32 = lane_sums(&levels, 16, |j| x[192 + j] as i8 as i32, &y);
        let d = read_f16(x, 208) * y.d();
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
    }
    sums.iter().fold(0.0f32, |acc, &s| acc + s)
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
                let blocks = qw.chunks_exact(wt.type_size()).zip(qa.chunks_exact(36));
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
