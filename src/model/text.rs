//! The LLaMA decoder with mPLUG-Owl2's Modality-Adaptive Module (MAM).
//!
//! Every position carries a [`Modality`]. The MAM keeps two copies of four things per layer —
//! the pre-attention RMSNorm, K and V projections, and the pre-FFN RMSNorm — and routes each
//! position through the copy of its modality; Q, O, the FFN and the final norm are shared. For
//! a plain `llama` file both "copies" are the text weights. The activations live in a
//! [`TextScratch`].

use crate::error::Result;
use crate::kv_cache::{KvCache, StoreRows};
use crate::model::config::{Arch, Config, TextConfig};
use crate::model::names::{self, blk};
use crate::model::{sized, Loader, Mat, Modality, Model, PerModality};
use crate::ops::{self, attention::AttnShape};

pub(crate) struct TextLayer {
    /// The MAM tensors, one copy per modality.
    attn_norm: PerModality<Vec<f32>>,
    ffn_norm: PerModality<Vec<f32>>,
    wk: PerModality<Mat>,
    wv: PerModality<Mat>,
    wq: Mat,
    wo: Mat,
    gate: Mat,
    up: Mat,
    down: Mat,
}

pub(crate) struct TextWeights {
    pub token_embd: Mat,
    layers: Vec<TextLayer>,
    output_norm: Vec<f32>,
    output: Mat,
}

impl TextWeights {
    /// Every matrix multiplied by activations (not the embedding table, which is gathered).
    pub fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Mat> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk.text,
                    &mut l.wk.visual,
                    &mut l.wv.text,
                    &mut l.wv.visual,
                    &mut l.wo,
                    &mut l.gate,
                    &mut l.up,
                    &mut l.down,
                ]
            })
            .chain(std::iter::once(&mut self.output))
    }

    pub fn load(ld: &Loader<'_>, cfg: &Config) -> Result<TextWeights> {
        let c = &cfg.text;
        let (d, kv, ff) = (c.n_embd, c.kv_dim(), c.n_ff);
        let mam = cfg.arch == Arch::MplugOwl2;
        // Not `with_capacity(n_layer)`: the count comes from the file (up to 2^32-1), and the
        // loop stops at the first missing layer anyway.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            // The visual copy of a MAM tensor (the text one again in a plain llama file).
            fn both<T: Clone>(
                mam: bool,
                load: impl Fn(Modality) -> Result<T>,
            ) -> Result<PerModality<T>> {
                let text = load(Modality::Text)?;
                let visual = if mam {
                    load(Modality::Visual)?
                } else {
                    text.clone()
                };
                Ok(PerModality { text, visual })
            }
            let both_vec = |name: &str| both(mam, |m| ld.vec(&names::blk(i, name, m), d));
            let both_mat = |name: &str| both(mam, |m| ld.mat(&names::blk(i, name, m), kv, d));
            let shared = |name: &str, rows: usize, cols: usize| {
                ld.mat(&names::blk(i, name, Modality::Text), rows, cols)
            };
            layers.push(TextLayer {
                attn_norm: both_vec(blk::ATTN_NORM)?,
                ffn_norm: both_vec(blk::FFN_NORM)?,
                wk: both_mat(blk::ATTN_K)?,
                wv: both_mat(blk::ATTN_V)?,
                wq: shared(blk::ATTN_Q, d, d)?,
                wo: shared(blk::ATTN_OUTPUT, d, d)?,
                gate: shared(blk::FFN_GATE, ff, d)?,
                up: shared(blk::FFN_UP, ff, d)?,
                down: shared(blk::FFN_DOWN, d, ff)?,
            });
        }
        // Some llama.cpp files tie the output to the embedding and omit output.weight; an
        // mplug-owl2 file always has its own (the LM head is untied).
        let output_name = if mam || ld.has(names::OUTPUT) {
            names::OUTPUT
        } else {
            names::TOKEN_EMBD
        };
        Ok(TextWeights {
            token_embd: ld.mat(names::TOKEN_EMBD, c.n_vocab, d)?,
            layers,
            output_norm: ld.vec(names::OUTPUT_NORM, d)?,
            output: ld.mat(output_name, c.n_vocab, d)?,
        })
    }
}

/// Optional capture of intermediate activations (for golden tests and debugging).
#[derive(Default, Debug)]
pub struct TextTrace {
    /// The decoder's input: token embeddings with image rows spliced in, `[T × d]`.
    pub inputs_embeds: Vec<f32>,
    /// Residual stream after each decoder layer, `[T × d]` each.
    pub layer_outputs: Vec<Vec<f32>>,
    /// After the final RMSNorm, `[T × d]`.
    pub final_norm: Vec<f32>,
}

/// Reusable activation buffers of [`Model::forward_text`] (kept by a session).
#[derive(Default, Debug)]
pub struct TextScratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Maximal runs of equal modality: `(start, end, modality)`.
fn modality_runs(modality: &[Modality]) -> Vec<(usize, usize, Modality)> {
    let mut runs = Vec::new();
    let mut start = 0;
    for t in 1..=modality.len() {
        if t == modality.len() || modality[t] != modality[start] {
            runs.push((start, t, modality[start]));
            start = t;
        }
    }
    runs
}

impl Model {
    fn text_cfg(&self) -> &TextConfig {
        &self.config.text
    }

    /// Looks up token embeddings: `[ids.len() × d]`.
    pub fn embed_tokens(&self, ids: &[u32]) -> Vec<f32> {
        let d = self.config.text.n_embd;
        let m = self.mat(&self.text.token_embd);
        let mut out = vec![0f32; ids.len() * d];
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            m.dequantize_row(id as usize, row);
        }
        out
    }

    /// Runs the decoder over `x` (`T × d`, positions `pos0..pos0+T` with the given modalities),
    /// appending keys/values to `kv`; returns the final-normed hidden states (`T × d`).
    /// Intermediate activations live in `scratch`, which grows to the largest `T` seen and is
    /// then reused, so decoding a token allocates no per-layer buffers.
    pub fn forward_text(
        &self,
        mut x: Vec<f32>,
        modality: &[Modality],
        pos0: usize,
        kv: &mut KvCache,
        scratch: &mut TextScratch,
        mut trace: Option<&mut TextTrace>,
    ) -> Vec<f32> {
        let c = self.text_cfg();
        let (d, hd, kvd, ff) = (c.n_embd, c.head_dim(), c.kv_dim(), c.n_ff);
        let t_len = modality.len();
        let runs = modality_runs(modality);
        if let Some(tr) = trace.as_deref_mut() {
            tr.inputs_embeds = x.clone();
        }
        let TextScratch {
            h,
            q,
            k,
            v,
            attn,
            o,
            g,
            up,
            cos,
            sin,
        } = scratch;
        // RoPE tables for the new positions.
        let half = hd / 2;
        let (cos, sin) = (sized(cos, t_len * half), sized(sin, t_len * half));
        for t in 0..t_len {
            ops::rope_cos_sin(
                pos0 + t,
                hd,
                c.rope_base,
                &mut cos[t * half..(t + 1) * half],
                &mut sin[t * half..(t + 1) * half],
            );
        }
        for (li, l) in self.text.layers.iter().enumerate() {
            // h = RMS(x; g_attn[m]) per position
            let h = sized(h, t_len * d);
            h.copy_from_slice(&x);
            for &(s, e, m) in &runs {
                ops::rms_norm(&mut h[s * d..e * d], l.attn_norm.get(m), c.rms_eps);
            }
            // q shared; k, v through the copy of each run's modality
            let q = sized(q, t_len * d);
            self.linear_into(&l.wq, h, q);
            let (k, v) = (sized(k, t_len * kvd), sized(v, t_len * kvd));
            for &(s, e, m) in &runs {
                let rows = &h[s * d..e * d];
                self.linear_into(l.wk.get(m), rows, &mut k[s * kvd..e * kvd]);
                self.linear_into(l.wv.get(m), rows, &mut v[s * kvd..e * kvd]);
            }
            for t in 0..t_len {
                let (cs, sn) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                for hq in q[t * d..(t + 1) * d].chunks_exact_mut(hd) {
                    ops::rope_apply(hq, cs, sn, c.qk_permuted);
                }
                for hk in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                    ops::rope_apply(hk, cs, sn, c.qk_permuted);
                }
            }
            let layout = kv.layout();
            kv.k[li].write(pos0, layout, k);
            kv.v[li].write(pos0, layout, v);
            let attn = sized(attn, t_len * d);
            let shape = AttnShape {
                causal: true,
                first_pos: pos0,
                ..AttnShape::new(c.n_head, c.n_head_kv, hd, pos0 + t_len)
            };
            ops::attention(
                self.kernels(),
                q,
                &StoreRows {
                    store: &kv.k[li],
                    layout,
                },
                &StoreRows {
                    store: &kv.v[li],
                    layout,
                },
                shape,
                attn,
            );
            // x = x + o Wo
            let o = sized(o, t_len * d);
            self.linear_into(&l.wo, attn, o);
            ops::add_in_place(&mut x, o);
            // h = RMS(x; g_ffn[m]); x = x + down(SiLU(h Wgate) ⊙ h Wup)
            h.copy_from_slice(&x);
            for &(s, e, m) in &runs {
                ops::rms_norm(&mut h[s * d..e * d], l.ffn_norm.get(m), c.rms_eps);
            }
            let (g, up) = (sized(g, t_len * ff), sized(up, t_len * ff));
            self.linear_into(&l.gate, h, g);
            self.linear_into(&l.up, h, up);
            ops::silu(self.kernels(), g);
            ops::mul_in_place(g, up);
            self.linear_into(&l.down, g, o);
            ops::add_in_place(&mut x, o);
            if let Some(tr) = trace.as_deref_mut() {
                tr.layer_outputs.push(x.clone());
            }
        }
        ops::rms_norm(&mut x, &self.text.output_norm, c.rms_eps);
        if let Some(tr) = trace {
            tr.final_norm = x.clone();
        }
        x
    }

    /// Logits (`rows × n_vocab`) from final-normed hidden states (`rows × d`).
    pub fn lm_head(&self, normed: &[f32]) -> Vec<f32> {
        self.linear(&self.text.output, None, normed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_modality_changes() {
        use Modality::{Text as T, Visual as V};
        assert_eq!(
            modality_runs(&[T, T, V, V, V, T]),
            vec![(0, 2, T), (2, 5, V), (5, 6, T)]
        );
        assert_eq!(modality_runs(&[V]), vec![(0, 1, V)]);
        assert!(modality_runs(&[]).is_empty());
    }
}
