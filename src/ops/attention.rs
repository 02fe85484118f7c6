//! Scaled dot-product attention, one query row at a time (never an n×n score matrix beyond
//! one row per head), softmax in f32. Dots and `axpy`s over key/value rows go through the
//! process's row primitives ([`crate::kernels::rows::row_ops`]: AVX2/F16C where available).

use rayon::prelude::*;

use crate::kernels::rows::row_ops;

/// Rows of keys or values: `row(i)` is one position's `n_kv_heads × head_dim` vector.
/// Implemented for plain f32 matrices and for the f16/f32 KV cache.
pub trait KvRows: Sync {
    /// `Σ_d q[d] · K[pos][off + d]`.
    fn dot(&self, pos: usize, off: usize, q: &[f32]) -> f32;
    /// `out[d] += w · V[pos][off + d]`.
    fn axpy(&self, pos: usize, off: usize, w: f32, out: &mut [f32]);
}

/// A row-major f32 matrix of `width`-wide rows.
pub struct F32Rows<'a> {
    pub data: &'a [f32],
    pub width: usize,
}

impl KvRows for F32Rows<'_> {
    fn dot(&self, pos: usize, off: usize, q: &[f32]) -> f32 {
        let s = pos * self.width + off;
        (row_ops().dot_f32)(q, &self.data[s..s + q.len()])
    }
    fn axpy(&self, pos: usize, off: usize, w: f32, out: &mut [f32]) {
        let s = pos * self.width + off;
        (row_ops().axpy_f32)(w, &self.data[s..s + out.len()], out)
    }
}

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Keys visible to every query: `0..n_keys` (non-causal), or for causal attention query `i`
    /// sees `0..=first_pos + i`.
    pub n_keys: usize,
    pub causal: bool,
    /// Absolute position of query row 0 (causal only).
    pub first_pos: usize,
    pub scale: f32,
}

/// `out[i, h] = softmax_s(q[i,h] · K[s,h] · scale) V[s,h]` for every query row `i` and head `h`.
/// `q` and `out` are `n_q × (n_head·head_dim)`; grouped-query heads share K/V head `h / group`.
pub fn attention(q: &[f32], k: &dyn KvRows, v: &dyn KvRows, s: AttnShape, out: &mut [f32]) {
    let width = s.n_head * s.head_dim;
    let group = s.n_head / s.n_head_kv;
    // One score buffer per rayon work split (not per row), grown to the longest row it sees.
    let rows = out
        .par_chunks_mut(width)
        .zip(q.par_chunks(width))
        .enumerate();
    rows.for_each_init(Vec::new, |buf: &mut Vec<f32>, (i, (o, qi))| {
        let n_keys = if s.causal {
            s.first_pos + i + 1
        } else {
            s.n_keys
        };
        if buf.len() < n_keys {
            buf.resize(n_keys, 0.0);
        }
        let scores = &mut buf[..n_keys];
        for h in 0..s.n_head {
            let qh = &qi[h * s.head_dim..(h + 1) * s.head_dim];
            let koff = (h / group) * s.head_dim;
            for (p, sc) in scores.iter_mut().enumerate() {
                *sc = k.dot(p, koff, qh) * s.scale;
            }
            super::softmax(scores);
            let oh = &mut o[h * s.head_dim..(h + 1) * s.head_dim];
            oh.fill(0.0);
            for (p, &w) in scores.iter().enumerate() {
                v.axpy(p, koff, w, oh);
            }
        }
    });
}
