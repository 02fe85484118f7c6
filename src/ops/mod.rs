//! The operations the graphs are made of: matmul over any weight type, norms, activations,
//! RoPE and attention. This is the only module that spawns parallel work (through rayon, inside
//! the pool the caller installed); kernels below it are single-threaded and allocation-free.
//!
//! Every op is deterministic for any thread count: work is split by output element, and every
//! output element is reduced by one thread in a fixed order.

pub mod attention;
pub mod matmul;
pub mod norm;

pub use attention::{attention, attention_dense, KvRows};
pub use matmul::{matmul, MatRef};
pub use norm::{layer_norm, rms_norm};

use rayon::prelude::*;

use crate::kernels::Kernels;

/// Elements from which the elementwise and per-row ops below split their work over the
/// pool's threads (a ViT activation is 1025×4096; a decoded token's 4096 stay on one thread).
/// Each element or row is computed exactly as on one thread, so the split changes no bits.
const PAR_MIN: usize = 1 << 16;

/// Runs `f` over `x` in pieces of whole `unit`s (a row, or a SIMD-friendly run of elements):
/// on the calling thread for small `x`, else in parallel.
fn for_pieces(x: &mut [f32], unit: usize, f: impl Fn(&mut [f32]) + Sync) {
    let unit = unit.max(1);
    if x.len() < PAR_MIN {
        f(x);
    } else {
        let piece = (PAR_MIN / 4).div_ceil(unit) * unit;
        x.par_chunks_mut(piece).for_each(&f);
    }
}

/// [`for_pieces`] over `a` with the matching pieces of `b` (same length).
fn for_piece_pairs(a: &mut [f32], b: &[f32], unit: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    let unit = unit.max(1);
    if a.len() < PAR_MIN {
        f(a, b);
    } else {
        let piece = (PAR_MIN / 4).div_ceil(unit) * unit;
        a.par_chunks_mut(piece)
            .zip(b.par_chunks(piece))
            .for_each(|(x, y)| f(x, y));
    }
}

/// SiLU in place: `z·σ(z)`, computed as `z / (1 + exp(−z))` by the kernels' `exp.silu`
/// (SIMD, bitwise equal to its scalar twin, so any split gives the same bits).
pub fn silu(k: &Kernels, x: &mut [f32]) {
    for_pieces(x, 64, k.exp.silu)
}

/// QuickGELU in place: `z·σ(1.702·z)` (the CLIP/ViT activation, not erf-GELU), computed as
/// `z / (1 + exp(−1.702·z))` by the kernels' `exp.quick_gelu`.
pub fn quick_gelu(k: &Kernels, x: &mut [f32]) {
    for_pieces(x, 64, k.exp.quick_gelu)
}

/// `a ⊙= b` elementwise.
pub fn mul_in_place(a: &mut [f32], b: &[f32]) {
    for_piece_pairs(a, b, 64, |a, b| {
        for (x, y) in a.iter_mut().zip(b) {
            *x *= *y;
        }
    })
}

/// `a += b` elementwise.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for_piece_pairs(a, b, 64, |a, b| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += *y;
        }
    })
}

/// Adds `bias` (length `n`) to every row of `x` (`rows × n`).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for_pieces(x, bias.len(), |rows| {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += *b;
            }
        }
    })
}

/// Softmax in place over the whole slice, in f32 with the max subtracted, by the kernels'
/// `exp.softmax`: the exponentials are summed in a fixed order that depends only on the slice length,
/// so the result is the same for every SIMD variant and thread count. `-inf` entries give 0.
pub fn softmax(k: &Kernels, x: &mut [f32]) {
    (k.exp.softmax)(x)
}

/// RoPE tables for adjacent-pair rotation: `cos`/`sin` of `pos·θ_i`, `θ_i = base^(−2i/dim)`,
/// i = 0..dim/2, computed in f64 and rounded once (upstream builds them in f32; the f64
/// reference the fixtures use is within 1e-7 of either).
pub fn rope_cos_sin(pos: usize, dim: usize, base: f32, cos: &mut [f32], sin: &mut [f32]) {
    let half = dim / 2;
    for i in 0..half {
        // Upstream: inv_freq = 1 / base^(arange(0, dim, 2) / dim), computed in float32.
        let inv_freq = 1.0f64 / (base as f64).powf((2 * i) as f64 / dim as f64);
        let angle = pos as f64 * inv_freq;
        cos[i] = angle.cos() as f32;
        sin[i] = angle.sin() as f32;
    }
}

/// Rotates one head vector in place. With `adjacent` (llama.cpp's permuted Q/K rows) the pairs
/// are `(2i, 2i+1)`; otherwise HF's rotate-half pairs `(i, i + dim/2)`.
pub fn rope_apply(x: &mut [f32], cos: &[f32], sin: &[f32], adjacent: bool) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = if adjacent {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos[i] - x1 * sin[i];
        x[b] = x1 * cos[i] + x0 * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        for k in crate::kernels::available() {
            let mut x = vec![1000.0, 1001.0, 999.0, -1e30];
            softmax(k, &mut x);
            assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{}", k.name);
            assert!(x[1] > x[0] && x[0] > x[2] && x[3] == 0.0, "{}", k.name);
        }
    }

    #[test]
    fn rope_pairings_agree_after_permutation() {
        // Rotate-half on HF rows equals adjacent-pair rope on llama.cpp-permuted rows.
        let dim = 8;
        let hf: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
        // llama.cpp permutation of one head: new[2i] = old[i], new[2i+1] = old[i + dim/2].
        let mut perm = vec![0f32; dim];
        for i in 0..dim / 2 {
            perm[2 * i] = hf[i];
            perm[2 * i + 1] = hf[i + dim / 2];
        }
        let (mut c, mut s) = (vec![0f32; dim / 2], vec![0f32; dim / 2]);
        rope_cos_sin(7, dim, 10000.0, &mut c, &mut s);
        let mut a = hf.clone();
        rope_apply(&mut a, &c, &s, false);
        rope_apply(&mut perm, &c, &s, true);
        for i in 0..dim / 2 {
            assert_eq!(a[i], perm[2 * i]);
            assert_eq!(a[i + dim / 2], perm[2 * i + 1]);
        }
    }
}
