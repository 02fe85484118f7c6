//! Scaled dot-product attention with the softmax in f32.
//!
//! - [`attention`]: the decoder's, over the KV cache, one query row at a time (never an n×n
//!   score matrix beyond one row per head). Dots and `axpy`s over key/value rows go through
//!   the model's row primitives ([`Kernels::rows`]), so a position's result is the same number
//!   whether it was prefilled with others or decoded alone.
//! - [`attention_dense`]: the vision tower's and the abstractor's, all queries at once over
//!   f32 key/value matrices, as two small matrix products per (head, block of queries), so the
//!   1025×1025 scores per head exist only one block of query rows at a time.

use rayon::prelude::*;

use crate::kernels::rows::{Gemm, RowOps};
use crate::kernels::Kernels;

/// Rows of keys or values: `row(i)` is one position's `n_kv_heads × head_dim` vector.
/// Implemented for the f16/f32 KV cache. Every method computes with
/// the row primitives `ops` it is handed (the model's [`Kernels::rows`]).
pub trait KvRows: Sync {
    /// `Σ_d q[d] · K[pos][off + d]`.
    fn dot(&self, ops: &RowOps, pos: usize, off: usize, q: &[f32]) -> f32;
    /// `out[p] = dot(p, off, q)` for every `p < out.len()` (implementations may compute many
    /// rows at once but must give the same bits).
    fn dots(&self, ops: &RowOps, off: usize, q: &[f32], out: &mut [f32]) {
        dots_by_row(self, ops, off, q, out)
    }
    /// `out[d] += w · V[pos][off + d]`.
    fn axpy(&self, ops: &RowOps, pos: usize, off: usize, w: f32, out: &mut [f32]);
    /// `axpy(p, off, w[p], out)` for p = 0, 1, … in order (implementations may keep the sums
    /// in registers but must give the same bits).
    fn axpys(&self, ops: &RowOps, off: usize, w: &[f32], out: &mut [f32]) {
        axpys_by_row(self, ops, off, w, out)
    }
}

/// [`KvRows::dots`] as one [`KvRows::dot`] per row (the default, and implementations' fallback).
pub fn dots_by_row<R: KvRows + ?Sized>(
    rows: &R,
    ops: &RowOps,
    off: usize,
    q: &[f32],
    out: &mut [f32],
) {
    for (p, o) in out.iter_mut().enumerate() {
        *o = rows.dot(ops, p, off, q);
    }
}

/// [`KvRows::axpys`] as one [`KvRows::axpy`] per row (the default, and implementations'
/// fallback).
pub fn axpys_by_row<R: KvRows + ?Sized>(
    rows: &R,
    ops: &RowOps,
    off: usize,
    w: &[f32],
    out: &mut [f32],
) {
    for (p, &wp) in w.iter().enumerate() {
        rows.axpy(ops, p, off, wp, out);
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

impl AttnShape {
    /// Non-causal attention of `n_head` query heads over `n_keys` keys in `n_head_kv` K/V
    /// heads, scaled by `1/√head_dim` (set `causal` and `first_pos` for the decoder's).
    pub fn new(n_head: usize, n_head_kv: usize, head_dim: usize, n_keys: usize) -> AttnShape {
        AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            n_keys,
            causal: false,
            first_pos: 0,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }
}

/// `out[i, h] = softmax_s(q[i,h] · K[s,h] · scale) V[s,h]` for every query row `i` and head `h`.
/// `q` and `out` are `n_q × (n_head·head_dim)`; grouped-query heads share K/V head `h / group`.
/// Computed with the kernels `kn` (row primitives and softmax).
pub fn attention(
    kn: &Kernels,
    q: &[f32],
    k: &dyn KvRows,
    v: &dyn KvRows,
    s: AttnShape,
    out: &mut [f32],
) {
    let width = s.n_head * s.head_dim;
    let group = s.n_head / s.n_head_kv;
    // Blocks of query rows, heads outermost inside a block: one head's keys and values (a
    // strided slice of every cached row) stay in cache while the block's queries use them.
    // Each (row, head) output is computed exactly as alone, so blocking changes no bits.
    let blocks = out
        .par_chunks_mut(width * CACHED_QUERY_BLOCK)
        .zip(q.par_chunks(width * CACHED_QUERY_BLOCK))
        .enumerate();
    blocks.for_each_init(Vec::new, |buf: &mut Vec<f32>, (b, (ob, qb))| {
        for h in 0..s.n_head {
            let koff = (h / group) * s.head_dim;
            for (r, (o, qi)) in ob.chunks_mut(width).zip(qb.chunks(width)).enumerate() {
                let i = b * CACHED_QUERY_BLOCK + r;
                let n_keys = if s.causal {
                    s.first_pos + i + 1
                } else {
                    s.n_keys
                };
                if buf.len() < n_keys {
                    buf.resize(n_keys, 0.0);
                }
                let scores = &mut buf[..n_keys];
                let qh = &qi[h * s.head_dim..(h + 1) * s.head_dim];
                k.dots(&kn.rows, koff, qh, scores);
                for sc in scores.iter_mut() {
                    *sc *= s.scale;
                }
                super::softmax(kn, scores);
                let oh = &mut o[h * s.head_dim..(h + 1) * s.head_dim];
                oh.fill(0.0);
                v.axpys(&kn.rows, koff, scores, oh);
            }
        }
    });
}

/// Query rows per [`attention`] task.
const CACHED_QUERY_BLOCK: usize = 16;

/// The most query rows per [`attention_dense`] task: the block's scores (`rows × n_keys` f32)
/// stay in L2 while they are turned into outputs. Blocks are evened out (1025 queries give
/// 26 blocks of at most 40, not 32 blocks of 32 and one of a single row, which would stream a
/// whole head's keys and values for one query).
const QUERY_BLOCK: usize = 40;

/// Non-causal attention of every row of `q` over f32 keys `k` and values `v` (all row-major,
/// `n × (n_head·head_dim)`-shaped, keys/values `s.n_keys` rows of `n_head_kv·head_dim`):
/// `out[i, h] = softmax_s(q[i,h]·K[s,h]·scale) V[s,h]`.
///
/// Per (head, block of up to [`QUERY_BLOCK`] queries): the head's keys are transposed once
/// (`head_dim × n_keys`) and its values gathered into one contiguous `n_keys × head_dim` run
/// (value rows are a power-of-two stride apart, which aliases in L1), the scores are one
/// [`Gemm`] (queries × transposed keys), each row is scaled and soft-maxed, and the outputs
/// /// are a second [`Gemm`] (scores × the head's value columns), all with the kernels `kn`. Each
/// output is a fixed chain of fused multiply-adds, so the result does not depend on the thread
/// count.
pub fn attention_dense(
    kn: &Kernels,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    out: &mut [f32],
) {
    let n_q = q.len() / (s.n_head * s.head_dim).max(1);
    if n_q == 0 || s.head_dim == 0 || s.n_keys == 0 {
        out.fill(0.0);
        return;
    }
    DENSE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => dense_with(kn, q, k, v, s, out, &mut bufs),
        Err(_) => dense_with(kn, q, k, v, s, out, &mut Default::default()),
    })
}

thread_local! {
    /// [`attention_dense`]'s buffers (transposed keys, gathered values, head-major results),
    /// kept between calls: a vision layer's are ~13 MB, and fresh ones cost a page fault on
    /// every first touch. Every element a call reads it has written first.
    static DENSE_SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = Default::default();
}

/// [`attention_dense`] with its buffers.
fn dense_with(
    kn: &Kernels,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    out: &mut [f32],
    [kt, vc, by_head]: &mut [Vec<f32>; 3],
) {
    let hd = s.head_dim;
    let width = s.n_head * hd;
    let kv_width = s.n_head_kv * hd;
    let group = (s.n_head / s.n_head_kv.max(1)).max(1);
    let n_q = q.len() / width.max(1);
    let nk = s.n_keys;
    let qb = n_q.div_ceil(n_q.div_ceil(QUERY_BLOCK));
    let blocks = n_q.div_ceil(qb);
    let ops = &kn.rows;
    // Per key/value head g: Kᵀ, kt[(g·hd + d)·nk + p] = K[p, g·hd + d], and V contiguous,
    // vc[(g·nk + p)·hd + d] = V[p, g·hd + d].
    kt.resize(kv_width * nk, 0.0);
    vc.resize(kv_width * nk, 0.0);
    let (kt, vc) = (&mut kt[..kv_width * nk], &mut vc[..kv_width * nk]);
    kt.par_chunks_mut(hd * nk)
        .zip(vc.par_chunks_mut(hd * nk))
        .enumerate()
        .for_each(|(g, (ktg, vcg))| {
            for (p, krow) in k.chunks_exact(kv_width).take(nk).enumerate() {
                for (d, &x) in krow[g * hd..(g + 1) * hd].iter().enumerate() {
                    ktg[d * nk + p] = x;
                }
            }
            for (p, vrow) in v.chunks_exact(kv_width).take(nk).enumerate() {
                vcg[p * hd..(p + 1) * hd].copy_from_slice(&vrow[g * hd..(g + 1) * hd]);
            }
        });
    // Head-major results, each head padded to whole blocks: task (h, b) owns rows
    // b·qb.. of head h, `hd` floats each.
    let padded = blocks * qb;
    by_head.resize(s.n_head * padded * hd, 0.0);
    let by_head = &mut by_head[..s.n_head * padded * hd];
    let (kt, vc): (&[f32], &[f32]) = (kt, vc);
    by_head.par_chunks_mut(qb * hd).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (t, o)| {
            let (h, blk) = (t / blocks, t % blocks);
            let i0 = blk * qb;
            let rows = qb.min(n_q - i0);
            let o = &mut o[..rows * hd];
            let koff = (h / group) * hd;
            scores.resize(rows * nk, 0.0);
            let qk = Gemm {
                m: rows,
                n: nk,
                k: hd,
                a: &q[i0 * width + h * hd..],
                lda: width,
                b: &kt[koff * nk..(koff + hd) * nk],
                ldb: nk,
                ldc: nk,
            };
            (ops.gemm_f32)(&qk, scores);
            for row in scores.chunks_exact_mut(nk) {
                for x in row.iter_mut() {
                    *x *= s.scale;
                }
                super::softmax(kn, row);
            }
            let pv = Gemm {
                m: rows,
                n: hd,
                k: nk,
                a: scores,
                lda: nk,
                b: &vc[koff * nk..(koff + hd) * nk],
                ldb: hd,
                ldc: hd,
            };
            (ops.gemm_f32)(&pv, o);
        },
    );
    // Scatter the heads back into rows.
    out.par_chunks_mut(width).enumerate().for_each(|(i, row)| {
        for (h, oh) in row.chunks_exact_mut(hd).enumerate() {
            let src = (h * padded + i) * hd;
            oh.copy_from_slice(&by_head[src..src + hd]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 1.3)
            .collect()
    }

    /// Dense attention equals an f64 reference within f32 rounding, for a query count that is
    /// not a multiple of the block, grouped heads, and any thread count (bitwise).
    #[test]
    fn dense_attention_matches_f64_reference_and_ignores_threads() {
        let (n_head, n_head_kv, hd, n_q, nk) = (4, 2, 8, 37, 29);
        let (width, kvw) = (n_head * hd, n_head_kv * hd);
        let q = values(n_q * width, 1.0);
        let k = values(nk * kvw, 2.0);
        let v = values(nk * kvw, 3.0);
        let shape = AttnShape {
            n_head,
            n_head_kv,
            head_dim: hd,
            n_keys: nk,
            causal: false,
            first_pos: 0,
            scale: 0.35,
        };
        let mut first: Option<Vec<f32>> = None;
        for (kn, threads) in crate::kernels::available()
            .into_iter()
            .flat_map(|kn| [(kn, 1), (kn, 3)])
        {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0f32; n_q * width];
            pool.install(|| attention_dense(kn, &q, &k, &v, shape, &mut out));
            match &first {
                None => first = Some(out),
                Some(f) => assert!(f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits())),
            }
        }
        let out = first.unwrap();
        for i in 0..n_q {
            for h in 0..n_head {
                let kh = h / (n_head / n_head_kv);
                let s: Vec<f64> = (0..nk)
                    .map(|p| {
                        (0..hd)
                            .map(|d| {
                                q[i * width + h * hd + d] as f64 * k[p * kvw + kh * hd + d] as f64
                            })
                            .sum::<f64>()
                            * 0.35
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = (0..nk)
                        .map(|p| e[p] / z * v[p * kvw + kh * hd + d] as f64)
                        .sum();
                    let got = out[i * width + h * hd + d] as f64;
                    assert!((got - want).abs() < 2e-6, "({i},{h},{d}): {got} vs {want}");
                }
            }
        }
    }
}
