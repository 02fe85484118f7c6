//! The visual abstractor: learned queries cross-attend (6 layers for the 7B) to the ViT
//! features and are projected into the LLM's embedding space, followed by a learned
//! end-of-image row. Upstream quirks, each implemented where marked:
//! - keys/values are the concatenation of the normalised queries AND the normalised image
//!   features (queries attend to themselves too);
//! - sin-cos positions are added to the Q and K inputs only, never to V; the CLS row's key
//!   position is zero;
//! - the attention residual is taken from the LayerNorm-ed queries, not the layer input;
//! - `ln_q`/`ln_kv`/`ln2` use ε = 1e-5 (PyTorch's default), the FFN's inner LN the config ε.

use crate::error::{bail_kind, Result};
use crate::model::config::{AbstractorConfig, TextConfig, VisionConfig};
use crate::model::names::{self, ablk, ablk_prefix};
use crate::model::{Linear, Loader, Mat, Model, Norm};
use crate::ops::{self, attention::AttnShape};

struct AbstractorLayer {
    ln_q: Norm,
    ln_kv: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: Norm,
    gate: Linear,
    up: Linear,
    ffn_norm: Norm,
    down: Linear,
}

pub(crate) struct AbstractorWeights {
    query_embd: Vec<f32>,
    /// `[n_query, d]` 1-D sin-cos of the query index.
    pos_q: Vec<f32>,
    /// `[grid²+1, d]` 2-D sin-cos of the patch (column first), zero row for CLS.
    pos_k: Vec<f32>,
    layers: Vec<AbstractorLayer>,
    proj: Linear,
    eoi: Vec<f32>,
}

impl AbstractorWeights {
    /// The block and projection matrices (for load-time repacking).
    pub fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Mat> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.q.w,
                    &mut l.k.w,
                    &mut l.v.w,
                    &mut l.out.w,
                    &mut l.gate.w,
                    &mut l.up.w,
                    &mut l.down.w,
                ]
            })
            .chain(std::iter::once(&mut self.proj.w))
    }

    pub fn load(
        ld: &Loader<'_>,
        c: &AbstractorConfig,
        v: &VisionConfig,
        t: &TextConfig,
    ) -> Result<AbstractorWeights> {
        let (d, ff) = (c.n_embd, c.n_ff);
        let prefix = |i: usize, name: &str| ablk_prefix(i, name);
        let lin = |i: usize, name: &str, rows: usize, cols: usize| {
            ld.linear(&prefix(i, name), rows, cols)
        };
        let ln = |i: usize, name: &str, n: usize| ld.norm(&prefix(i, name), n);
        // Not `with_capacity(n_layer)`: the count comes from the file (up to 2^32-1), and the
        // loop stops at the first missing layer anyway.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            layers.push(AbstractorLayer {
                ln_q: ln(i, ablk::LN_Q, d)?,
                ln_kv: ln(i, ablk::LN_KV, d)?,
                q: lin(i, ablk::ATTN_Q, d, d)?,
                k: lin(i, ablk::ATTN_K, d, d)?,
                v: lin(i, ablk::ATTN_V, d, d)?,
                out: lin(i, ablk::ATTN_OUT, d, d)?,
                ln2: ln(i, ablk::LN2, d)?,
                gate: lin(i, ablk::FFN_GATE, ff, d)?,
                up: lin(i, ablk::FFN_UP, ff, d)?,
                ffn_norm: ln(i, ablk::FFN_NORM, ff)?,
                down: lin(i, ablk::FFN_DOWN, d, ff)?,
            });
        }
        Ok(AbstractorWeights {
            query_embd: ld.vec(names::A_QUERY_EMBD, c.n_query * d)?,
            pos_q: ld.vec(names::A_POS_EMBD_Q, c.n_query * d)?,
            pos_k: ld.vec(names::A_POS_EMBD_K, v.n_tokens() * d)?,
            layers,
            proj: ld.linear(names::A_PROJ, t.n_embd, d)?,
            eoi: ld.vec(names::A_EOI_EMBD, t.n_embd)?,
        })
    }
}

impl Model {
    /// Turns ViT features (`[n_v, d]`, what [`Model::encode_image`] returns) into the image's
    /// LLM rows: `[n_query + 1, d_llm]` (projected queries, then the end-of-image embedding).
    /// Errors on a text-only model and on features of another shape.
    pub fn abstract_image(&self, feats: &[f32]) -> Result<Vec<f32>> {
        let (c, w, v) = match (
            &self.config.abstractor,
            &self.abstractor,
            &self.config.vision,
        ) {
            (Some(c), Some(w), Some(v)) => (c, w, v),
            _ => bail_kind!(
                BadPrompt,
                "this model is text-only: it has no visual abstractor to embed images"
            ),
        };
        let d = c.n_embd;
        let nq = c.n_query;
        // The config ties the abstractor's width and grid to the vision tower's.
        let nv = v.n_tokens();
        if feats.len() != nv * d {
            bail_kind!(
                BadImage,
                "image features hold {} values, but this model's abstractor takes [{nv}, {d}] = {}",
                feats.len(),
                nv * d
            );
        }
        let hd = d / c.n_head;
        let mut x = w.query_embd.clone();
        for l in &w.layers {
            // Xn = LN(X), Fn = LN(F)  (ε 1e-5)
            let mut xn = x.clone();
            l.ln_q.apply(&mut xn, c.ln_eps);
            let mut fn_ = feats.to_vec();
            l.ln_kv.apply(&mut fn_, c.ln_eps);
            // S = [Xn; Fn], positions [P_q; P_k] on the Q and K inputs only
            let mut s = xn.clone();
            s.extend_from_slice(&fn_);
            let mut q_in = xn.clone();
            ops::add_in_place(&mut q_in, &w.pos_q);
            let mut k_in = s.clone();
            ops::add_in_place(&mut k_in[..nq * d], &w.pos_q);
            ops::add_in_place(&mut k_in[nq * d..], &w.pos_k);
            let q = self.affine(&l.q, &q_in);
            let k = self.affine(&l.k, &k_in);
            let v = self.affine(&l.v, &s);
            let mut a = vec![0f32; nq * d];
            let shape = AttnShape::new(c.n_head, c.n_head, hd, nq + nv);
            ops::attention_dense(self.kernels(), &q, &k, &v, shape, &mut a);
            // Y = Xn + A Wo + bo   (residual from the normalised queries)
            let mut y = xn;
            ops::add_in_place(&mut y, &self.affine(&l.out, &a));
            // X = Y + LN(SiLU(Z W1) ⊙ Z W3) W2,  Z = LN(Y)
            let mut z = y.clone();
            l.ln2.apply(&mut z, c.ln_eps);
            let mut g = self.affine(&l.gate, &z);
            ops::silu(self.kernels(), &mut g);
            ops::mul_in_place(&mut g, &self.affine(&l.up, &z));
            l.ffn_norm.apply(&mut g, c.ffn_ln_eps);
            ops::add_in_place(&mut y, &self.affine(&l.down, &g));
            x = y;
        }
        // I = [X Wfc + b; e_eoi]
        let mut out = self.affine(&w.proj, &x);
        out.extend_from_slice(&w.eoi);
        Ok(out)
    }
}
