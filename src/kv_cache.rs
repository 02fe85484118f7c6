//! The per-session key/value cache: post-RoPE keys and values of every past position, per
//! layer, in f16 (default) or f32. Once written an entry is modality-agnostic: image rows keep
//! the keys/values made with the visual MAM weights.

use half::f16;

use crate::kernels::rows::RowOps;
use crate::ops::attention::KvRows;

/// Storage type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(format!("unknown KV cache type {s:?} (expected f16 or f32)")),
        }
    }
}

/// Where one layer's cache puts position `pos`, column `col` (`col < n_heads·head_dim`):
/// head-major, `[kv head][pos][head_dim]`, so that one head's keys (or values) over all
/// positions are one contiguous run. Attention scans exactly that run for each query; in a
/// position-major cache the run's rows would sit a whole row (a power of two bytes) apart,
/// which maps them onto a few cache sets and evicts them between the queries of a prefill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub n_ctx: usize,
    pub head_dim: usize,
    /// `n_heads · head_dim`: one position's width.
    pub width: usize,
}

impl KvLayout {
    /// Element index of (`pos`, `col`).
    #[inline]
    pub fn at(&self, pos: usize, col: usize) -> usize {
        let (h, d) = (col / self.head_dim, col % self.head_dim);
        (h * self.n_ctx + pos) * self.head_dim + d
    }
}

/// One layer's keys or values: `n_ctx × width` values in [`KvLayout`] order.
#[derive(Clone, Debug)]
pub enum KvStore {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// A [`KvStore`] seen as rows of positions. Row offsets (`off`) are whole heads and row
/// slices at most one head wide, as attention uses them.
pub struct StoreRows<'a> {
    pub store: &'a KvStore,
    pub layout: KvLayout,
}

impl KvStore {
    fn new(t: KvType, n: usize) -> Self {
        match t {
            KvType::F16 => KvStore::F16(vec![f16::ZERO; n]),
            KvType::F32 => KvStore::F32(vec![0.0; n]),
        }
    }
    /// Writes `rows` (`n × layout.width`, position-major) at position `start`.
    pub fn write(&mut self, start: usize, layout: KvLayout, rows: &[f32]) {
        let hd = layout.head_dim;
        for (t, row) in rows.chunks_exact(layout.width).enumerate() {
            for (h, head) in row.chunks_exact(hd).enumerate() {
                let at = layout.at(start + t, h * hd);
                match self {
                    KvStore::F16(d) => {
                        for (o, v) in d[at..at + hd].iter_mut().zip(head) {
                            *o = f16::from_f32(*v);
                        }
                    }
                    KvStore::F32(d) => d[at..at + hd].copy_from_slice(head),
                }
            }
        }
    }
}

impl KvRows for StoreRows<'_> {
    fn dot(&self, ops: &RowOps, pos: usize, off: usize, q: &[f32]) -> f32 {
        let s = self.layout.at(pos, off);
        match self.store {
            KvStore::F32(d) => (ops.dot_f32)(q, &d[s..s + q.len()]),
            KvStore::F16(d) => (ops.dot_f16)(q, &d[s..s + q.len()]),
        }
    }
    fn dots(&self, ops: &RowOps, off: usize, q: &[f32], out: &mut [f32]) {
        match self.store {
            KvStore::F16(d) if !out.is_empty() => {
                let (s, stride) = (self.layout.at(0, off), self.layout.head_dim);
                let end = s + (out.len() - 1) * stride + q.len();
                (ops.dots_f16)(q, &d[s..end], stride, out)
            }
            _ => crate::ops::attention::dots_by_row(self, ops, off, q, out),
        }
    }
    fn axpy(&self, ops: &RowOps, pos: usize, off: usize, w: f32, out: &mut [f32]) {
        let s = self.layout.at(pos, off);
        match self.store {
            KvStore::F32(d) => {
                let n = out.len();
                for (o, v) in out.iter_mut().zip(&d[s..s + n]) {
                    *o += w * *v;
                }
            }
            KvStore::F16(d) => (ops.axpy_f16)(w, &d[s..s + out.len()], out),
        }
    }
    fn axpys(&self, ops: &RowOps, off: usize, w: &[f32], out: &mut [f32]) {
        match self.store {
            KvStore::F16(d) if !w.is_empty() => {
                let (s, stride) = (self.layout.at(0, off), self.layout.head_dim);
                let end = s + (w.len() - 1) * stride + out.len();
                (ops.wsum_f16)(w, &d[s..end], stride, out)
            }
            _ => crate::ops::attention::axpys_by_row(self, ops, off, w, out),
        }
    }
}

/// Keys and values for every layer, `n_ctx` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub kv_type: KvType,
    pub n_ctx: usize,
    pub width: usize,
    pub head_dim: usize,
    pub k: Vec<KvStore>,
    pub v: Vec<KvStore>,
}

impl KvCache {
    pub fn new(
        kv_type: KvType,
        n_layer: usize,
        n_ctx: usize,
        width: usize,
        head_dim: usize,
    ) -> Self {
        KvCache {
            kv_type,
            n_ctx,
            width,
            head_dim,
            k: (0..n_layer)
                .map(|_| KvStore::new(kv_type, n_ctx * width))
                .collect(),
            v: (0..n_layer)
                .map(|_| KvStore::new(kv_type, n_ctx * width))
                .collect(),
        }
    }
    /// The layout of every layer's store.
    pub fn layout(&self) -> KvLayout {
        KvLayout {
            n_ctx: self.n_ctx,
            head_dim: self.head_dim,
            width: self.width,
        }
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let per = match self.kv_type {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        2 * self.k.len() * self.n_ctx * self.width * per
    }
}
