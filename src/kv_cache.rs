//! The per-session key/value cache: post-RoPE keys and values of every past position, per
//! layer, in f16 (default) or f32. Once written an entry is modality-agnostic: image rows keep
//! the keys/values made with the visual MAM weights.

use half::f16;

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

/// One layer's keys or values: `n_ctx × width`.
#[derive(Clone, Debug)]
pub enum KvStore {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// A [`KvStore`] seen as rows of `width`.
pub struct StoreRows<'a> {
    pub store: &'a KvStore,
    pub width: usize,
}

impl KvStore {
    fn new(t: KvType, n: usize) -> Self {
        match t {
            KvType::F16 => KvStore::F16(vec![f16::ZERO; n]),
            KvType::F32 => KvStore::F32(vec![0.0; n]),
        }
    }
    /// Writes `rows` (`n × width`) at row `start`.
    pub fn write(&mut self, start: usize, width: usize, rows: &[f32]) {
        let at = start * width;
        match self {
            KvStore::F16(d) => {
                for (o, v) in d[at..at + rows.len()].iter_mut().zip(rows) {
                    *o = f16::from_f32(*v);
                }
            }
            KvStore::F32(d) => d[at..at + rows.len()].copy_from_slice(rows),
        }
    }
}

impl KvRows for StoreRows<'_> {
    fn dot(&self, pos: usize, off: usize, q: &[f32]) -> f32 {
        let s = pos * self.width + off;
        match self.store {
            KvStore::F32(d) => crate::ops::matmul::dot_f32(q, &d[s..s + q.len()]),
            KvStore::F16(d) => (crate::kernels::rows::row_ops().dot_f16)(q, &d[s..s + q.len()]),
        }
    }
    fn dots(&self, off: usize, q: &[f32], out: &mut [f32]) {
        match self.store {
            KvStore::F16(d) if !out.is_empty() => {
                let end = (out.len() - 1) * self.width + off + q.len();
                (crate::kernels::rows::row_ops().dots_f16)(q, &d[off..end], self.width, out)
            }
            _ => {
                for (p, o) in out.iter_mut().enumerate() {
                    *o = self.dot(p, off, q);
                }
            }
        }
    }
    fn axpy(&self, pos: usize, off: usize, w: f32, out: &mut [f32]) {
        let s = pos * self.width + off;
        match self.store {
            KvStore::F32(d) => {
                let n = out.len();
                for (o, v) in out.iter_mut().zip(&d[s..s + n]) {
                    *o += w * *v;
                }
            }
            KvStore::F16(d) => {
                (crate::kernels::rows::row_ops().axpy_f16)(w, &d[s..s + out.len()], out)
            }
        }
    }
    fn axpys(&self, off: usize, w: &[f32], out: &mut [f32]) {
        match self.store {
            KvStore::F16(d) if !w.is_empty() => {
                let end = (w.len() - 1) * self.width + off + out.len();
                (crate::kernels::rows::row_ops().wsum_f16)(w, &d[off..end], self.width, out)
            }
            _ => {
                for (p, &wp) in w.iter().enumerate() {
                    self.axpy(p, off, wp, out);
                }
            }
        }
    }
}

/// Keys and values for every layer, `n_ctx` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub kv_type: KvType,
    pub n_ctx: usize,
    pub width: usize,
    pub k: Vec<KvStore>,
    pub v: Vec<KvStore>,
}

impl KvCache {
    pub fn new(kv_type: KvType, n_layer: usize, n_ctx: usize, width: usize) -> Self {
        KvCache {
            kv_type,
            n_ctx,
            width,
            k: (0..n_layer)
                .map(|_| KvStore::new(kv_type, n_ctx * width))
                .collect(),
            v: (0..n_layer)
                .map(|_| KvStore::new(kv_type, n_ctx * width))
                .collect(),
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
