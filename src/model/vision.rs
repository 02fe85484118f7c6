//! The ViT-L/14 image encoder ("MplugOwlVisionModel"): patch embedding, CLS + learned
//! positions, pre-LayerNorm, pre-norm transformer blocks with QuickGELU, post-LayerNorm on all
//! rows (CLS included). No attention mask. The activations live in a [`VisionScratch`].

use crate::error::{bail_kind, Result};
use crate::model::config::VisionConfig;
use crate::model::names::{self, vblk, vblk_prefix};
use crate::model::{sized, Linear, Loader, Mat, Model, Norm};
use crate::ops::{self, attention::AttnShape};

struct VisionLayer {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: Norm,
    ffn_up: Linear,
    ffn_down: Linear,
}

pub(crate) struct VisionWeights {
    patch_embd: Mat,
    class_embd: Vec<f32>,
    position_embd: Vec<f32>,
    pre_ln: Norm,
    layers: Vec<VisionLayer>,
    post_ln: Norm,
}

impl VisionWeights {
    /// The block matrices (for load-time repacking).
    pub fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Mat> {
        self.layers.iter_mut().flat_map(|l| {
            [
                &mut l.q.w,
                &mut l.k.w,
                &mut l.v.w,
                &mut l.out.w,
                &mut l.ffn_up.w,
                &mut l.ffn_down.w,
            ]
        })
    }

    pub fn load(ld: &Loader<'_>, c: &VisionConfig) -> Result<VisionWeights> {
        let (d, ff, p) = (c.n_embd, c.n_ff, c.patch_size);
        let lin = |i: usize, name: &str, rows: usize, cols: usize| {
            ld.linear(&vblk_prefix(i, name), rows, cols)
        };
        // Not `with_capacity(n_layer)`: the count comes from the file (up to 2^32-1), and the
        // loop stops at the first missing layer anyway.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            layers.push(VisionLayer {
                ln1: ld.norm(&vblk_prefix(i, vblk::LN1), d)?,
                q: lin(i, vblk::ATTN_Q, d, d)?,
                k: lin(i, vblk::ATTN_K, d, d)?,
                v: lin(i, vblk::ATTN_V, d, d)?,
                out: lin(i, vblk::ATTN_OUT, d, d)?,
                ln2: ld.norm(&vblk_prefix(i, vblk::LN2), d)?,
                ffn_up: lin(i, vblk::FFN_UP, ff, d)?,
                ffn_down: lin(i, vblk::FFN_DOWN, d, ff)?,
            });
        }
        Ok(VisionWeights {
            // Conv2d(3 → d, kernel p, stride p, no bias) as a [d, 3·p·p] matrix.
            patch_embd: ld.mat(names::V_PATCH_EMBD, d, 3 * p * p)?,
            class_embd: ld.vec(names::V_CLASS_EMBD, d)?,
            position_embd: ld.vec(names::V_POSITION_EMBD, c.n_tokens() * d)?,
            pre_ln: ld.norm(names::V_PRE_LN, d)?,
            layers,
            post_ln: ld.norm(names::V_POST_LN, d)?,
        })
    }
}

/// Reusable activation buffers of [`Model::encode_image_with`] (kept by a session): the
/// patches (`grid² × 3p²`), the block's `n × d` activations and its `n × n_ff` FFN hidden.
#[derive(Default, Debug)]
pub struct VisionScratch {
    patches: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    a: Vec<f32>,
    o: Vec<f32>,
    f: Vec<f32>,
}

impl Model {
    /// The vision tower, or an error for a text-only model.
    fn vision_parts(&self) -> Result<(&VisionConfig, &VisionWeights)> {
        match (&self.config.vision, &self.vision) {
            (Some(c), Some(w)) => Ok((c, w)),
            _ => bail_kind!(
                BadPrompt,
                "this model is text-only: it has no vision tower to encode images"
            ),
        }
    }

    /// Encodes one preprocessed image (`[3, S, S]` CHW floats) into `[grid²+1, d_v]` features
    /// (CLS first), after the post-LayerNorm. Errors on a text-only model and on pixels of
    /// another size. [`Model::encode_image_with`] with buffers made for this call.
    pub fn encode_image(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        self.encode_image_with(pixels, &mut VisionScratch::default())
    }

    /// [`Model::encode_image`] with its activations in `scratch`, which grows on first use
    /// and is then reused (a session keeps one).
    pub fn encode_image_with(
        &self,
        pixels: &[f32],
        scratch: &mut VisionScratch,
    ) -> Result<Vec<f32>> {
        let (c, w) = self.vision_parts()?;
        let (s, p, g, d) = (c.image_size, c.patch_size, c.grid(), c.n_embd);
        if pixels.len() != 3 * s * s {
            bail_kind!(
                BadImage,
                "preprocessed pixels hold {} values, but this model takes [3, {s}, {s}] = {}",
                pixels.len(),
                3 * s * s
            );
        }
        let n = g * g + 1;
        let VisionScratch {
            patches,
            h,
            q,
            k,
            v,
            a,
            o,
            f,
        } = scratch;
        // 1. Patches flattened in (channel, row, col) order, patch index = row·grid + col.
        let pp = 3 * p * p;
        let patches = sized(patches, g * g * pp);
        for (idx, patch) in patches.chunks_exact_mut(pp).enumerate() {
            let (gr, gc) = (idx / g, idx % g);
            for ch in 0..3 {
                for r in 0..p {
                    let src = ch * s * s + (gr * p + r) * s + gc * p;
                    patch[ch * p * p + r * p..ch * p * p + (r + 1) * p]
                        .copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        // 2. X = [CLS; patches Wᵀ] + positions
        let mut x = vec![0f32; n * d];
        x[..d].copy_from_slice(&w.class_embd);
        self.linear_into(&w.patch_embd, patches, &mut x[d..]);
        ops::add_in_place(&mut x, &w.position_embd);
        // 3. pre-LayerNorm
        w.pre_ln.apply(&mut x, c.ln_eps);
        // 4. blocks
        let hd = d / c.n_head;
        let (h, q, k, v) = (
            sized(h, n * d),
            sized(q, n * d),
            sized(k, n * d),
            sized(v, n * d),
        );
        let (a, o, f) = (sized(a, n * d), sized(o, n * d), sized(f, n * c.n_ff));
        for l in &w.layers {
            // x = x + Attn(LN1(x))
            h.copy_from_slice(&x);
            l.ln1.apply(h, c.ln_eps);
            self.affine_into(&l.q, h, q);
            self.affine_into(&l.k, h, k);
            self.affine_into(&l.v, h, v);
            let shape = AttnShape::new(c.n_head, c.n_head, hd, n);
            ops::attention_dense(self.kernels(), q, k, v, shape, a);
            self.affine_into(&l.out, a, o);
            ops::add_in_place(&mut x, o);
            // x = x + FFN(LN2(x)), FFN = down(QuickGELU(up(·)))
            h.copy_from_slice(&x);
            l.ln2.apply(h, c.ln_eps);
            self.affine_into(&l.ffn_up, h, f);
            ops::quick_gelu(self.kernels(), f);
            self.affine_into(&l.ffn_down, f, o);
            ops::add_in_place(&mut x, o);
        }
        // 5. post-LayerNorm over all rows
        w.post_ln.apply(&mut x, c.ln_eps);
        Ok(x)
    }
}
