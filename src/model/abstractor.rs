//! The visual abstractor: learned queries cross-attend (6 layers for the 7B) to the ViT
//! features and are projected into the LLM's embedding space, followed by a learned
//! end-of-image row. Upstream quirks, each implemented where marked:
//! - keys/values are the concatenation of the normalised queries AND the normalised image
//!   features (queries attend to themselves too);
//! - sin-cos positions are added to the Q and K inputs only, never to V; the CLS row's key
//!   position is zero;
//! - the attention residual is taken from the LayerNorm-ed queries, not the layer input;
//! - `ln_q`/`ln_kv`/`ln2` use ε = 1e-5 (PyTorch's default), the FFN's inner LN the config ε.
//!
//! The activations live in an [`AbstractorScratch`].

use crate::error::{bail_kind, Result};
use crate::model::config::{AbstractorConfig, TextConfig, VisionConfig};
use crate::model::names::{self, ablk, ablk_prefix};
use crate::model::{sized, Linear, Loader, Mat, Model, Norm};
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

/// Reusable activation buffers of [`Model::abstract_image_with`] (kept by a session): the
/// queries' `n_query × d` activations, the keys'/values' `(n_query + n_v) × d` ones and the
/// FFN's `n_query × n_ff` hidden.
#[derive(Default, Debug)]
pub struct AbstractorScratch {
    x: Vec<f32>,
    s: Vec<f32>,
    q_in: Vec<f32>,
    k_in: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    a: Vec<f32>,
    o: Vec<f32>,
    z: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

impl Model {
    /// Turns ViT features (`[n_v, d]`, what [`Model::encode_image`] returns) into the image's
    /// LLM rows: `[n_query + 1, d_llm]` (projected queries, then the end-of-image embedding).
    /// Errors on a text-only model and on features of another shape.
    /// [`Model::abstract_image_with`] with buffers made for this call.
    pub fn abstract_image(&self, feats: &[f32]) -> Result<Vec<f32>> {
        self.abstract_image_with(feats, &mut AbstractorScratch::default())
    }

    /// [`Model::abstract_image`] with its activations in `scratch`, which grows on first use
    /// and is then reused (a session keeps one).
    pub fn abstract_image_with(
        &self,
        feats: &[f32],
        scratch: &mut AbstractorScratch,
    ) -> Result<Vec<f32>> {
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
        let AbstractorScratch {
            x,
            s,
            q_in,
            k_in,
            q,
            k,
            v,
            a,
            o,
            z,
            g,
            u,
        } = scratch;
        let (x, q_in, q, a, o, z) = (
            sized(x, nq * d),
            sized(q_in, nq * d),
            sized(q, nq * d),
            sized(a, nq * d),
            sized(o, nq * d),
            sized(z, nq * d),
        );
        let (s, k_in) = (sized(s, (nq + nv) * d), sized(k_in, (nq + nv) * d));
        let (k, v) = (sized(k, (nq + nv) * d), sized(v, (nq + nv) * d));
        let (g, u) = (sized(g, nq * c.n_ff), sized(u, nq * c.n_ff));
        x.copy_from_slice(&w.query_embd);
        for l in &w.layers {
            // Xn = LN(X), Fn = LN(F)  (ε 1e-5); X holds Xn from here on
            l.ln_q.apply(x, c.ln_eps);
            // S = [Xn; Fn], positions [P_q; P_k] on the Q and K inputs only
            let (s_q, s_f) = s.split_at_mut(nq * d);
            s_q.copy_from_slice(x);
            s_f.copy_from_slice(feats);
            l.ln_kv.apply(s_f, c.ln_eps);
            q_in.copy_from_slice(x);
            ops::add_in_place(q_in, &w.pos_q);
            k_in.copy_from_slice(s);
            ops::add_in_place(&mut k_in[..nq * d], &w.pos_q);
            ops::add_in_place(&mut k_in[nq * d..], &w.pos_k);
            self.affine_into(&l.q, q_in, q);
            self.affine_into(&l.k, k_in, k);
            self.affine_into(&l.v, s, v);
            let shape = AttnShape::new(c.n_head, c.n_head, hd, nq + nv);
            ops::attention_dense(self.kernels(), q, k, v, shape, a);
            // Y = Xn + A Wo + bo   (residual from the normalised queries); X holds Y
            self.affine_into(&l.out, a, o);
            ops::add_in_place(x, o);
            // X = Y + LN(SiLU(Z W1) ⊙ Z W3) W2,  Z = LN(Y)
            z.copy_from_slice(x);
            l.ln2.apply(z, c.ln_eps);
            self.affine_into(&l.gate, z, g);
            ops::silu(self.kernels(), g);
            self.affine_into(&l.up, z, u);
            ops::mul_in_place(g, u);
            l.ffn_norm.apply(g, c.ffn_ln_eps);
            self.affine_into(&l.down, g, o);
            ops::add_in_place(x, o);
        }
        // I = [X Wfc + b; e_eoi]
        let mut out = self.affine(&w.proj, x);
        out.extend_from_slice(&w.eoi);
        Ok(out)
    }
}
