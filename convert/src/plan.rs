//! What goes into the GGUF: for every output tensor, its name, GGUF shape, type, and where its
//! values come from (a checkpoint tensor with a reordering, or a computed table).
//!
//! Reorderings, each as upstream/llama.cpp need it:
//! - Q and K rows of the LLM (`attn_q`, `attn_k`, `attn_k_vis`) are permuted per head exactly as
//!   llama.cpp's LLaMA converter does, so RoPE rotates adjacent pairs in every file owlet reads;
//! - the ViT's fused QKV (rows interleaved per head as `[head][q|k|v][head_dim]`) is split into
//!   three matrices;
//! - stored abstractor sin-cos tables are kept as stored (upstream uses the dtype-rounded
//!   values); they are computed only when the checkpoint lacks them; `rotary_emb.inv_freq` is
//!   dropped (RoPE frequencies are computed exactly from `rope.freq_base`).

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use owlet::model::names::{self, ablk, blk, role, vblk};
use owlet::model::Modality;
use owlet::quant::GgmlType;

use crate::hfconfig::HfConfig;

/// The LLM weight presets of `--type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4KM,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Preset::F32,
            "f16" => Preset::F16,
            "q8_0" => Preset::Q8_0,
            "q4_0" => Preset::Q4_0,
            "q4_k_m" | "q4_k" => Preset::Q4KM,
            _ => {
                return Err(format!(
                    "unknown --type {s:?} (f32, f16, q8_0, q4_0, q4_k_m)"
                ))
            }
        })
    }
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::F32 => "f32",
            Preset::F16 => "f16",
            Preset::Q8_0 => "q8_0",
            Preset::Q4_0 => "q4_0",
            Preset::Q4KM => "q4_k_m",
        }
    }
    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*).
    pub fn file_type(self) -> u32 {
        match self {
            Preset::F32 => 0,
            Preset::F16 => 1,
            Preset::Q4_0 => 2,
            Preset::Q8_0 => 7,
            Preset::Q4KM => 15,
        }
    }
}

/// Conversion options.
#[derive(Clone, Debug)]
pub struct Options {
    pub preset: Preset,
    /// Type of the vision tower's and abstractor's matrices (f32, f16 or q8_0).
    pub vision_type: GgmlType,
    /// Write a plain `llama` file (text weights only).
    pub text_only: bool,
    pub name: Option<String>,
}

/// How a checkpoint tensor becomes an output tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Values unchanged (shape may drop leading 1s).
    Copy,
    /// llama.cpp's Q/K row permutation for `n_head` heads.
    PermuteQK { n_head: usize },
    /// Part `part` (0 q, 1 k, 2 v) of a per-head interleaved fused QKV with `n_head` heads.
    QkvPart { part: usize, n_head: usize },
}

/// Where an output tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum From {
    Tensor {
        name: String,
        transform: Transform,
    },
    /// Identical copies stored once per layer (the abstractor's sin-cos tables): the first is
    /// written, all are checked equal.
    SameInEvery {
        names: Vec<String>,
    },
    Computed(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    /// GGUF dims, innermost first.
    pub ne: Vec<u64>,
    pub typ: GgmlType,
    pub from: From,
}

impl Planned {
    pub fn n_elements(&self) -> usize {
        self.ne.iter().product::<u64>() as usize
    }
}

/// What the plan needs to know about the source.
pub trait Shapes {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    fn all_names(&self) -> Vec<String>;
}

/// llama.cpp's choice for a K-quant when a row does not divide into 256-blocks.
fn row_fallback(t: GgmlType, cols: usize) -> GgmlType {
    let t = if !cols.is_multiple_of(256) {
        match t {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        }
    } else {
        t
    };
    if !cols.is_multiple_of(t.block_size()) {
        GgmlType::F16
    } else {
        t
    }
}

/// llama.cpp's Q4_K_M rule for the layers that get 6 bits in `attn_v` and `ffn_down`.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize) % 3 == 2
}

/// The type of an LLM matrix under a preset. `role` is the llama.cpp base name, always one of
/// the constants of [`names::role`] and [`blk`]: the rules below match on those constants, so
/// a misspelt role does not compile (a literal would silently take the default type).
pub fn llm_type(preset: Preset, role: &str, layer: usize, n_layer: usize, cols: usize) -> GgmlType {
    let t = match preset {
        Preset::F32 => GgmlType::F32,
        Preset::F16 => GgmlType::F16,
        Preset::Q8_0 => GgmlType::Q8_0,
        Preset::Q4_0 => match role {
            role::OUTPUT => GgmlType::Q6_K,
            _ => GgmlType::Q4_0,
        },
        Preset::Q4KM => match role {
            role::OUTPUT => GgmlType::Q6_K,
            blk::ATTN_V | blk::FFN_DOWN if use_more_bits(layer, n_layer) => GgmlType::Q6_K,
            _ => GgmlType::Q4_K,
        },
    };
    row_fallback(t, cols)
}

fn vision_matrix_type(t: GgmlType, cols: usize) -> GgmlType {
    row_fallback(t, cols)
}

struct Builder<'a> {
    src: &'a dyn Shapes,
    out: Vec<Planned>,
    used: BTreeSet<String>,
}

impl Builder<'_> {
    /// Checks a source tensor's shape, ignoring leading 1s (`[1, 1, d]` equals `[d]`).
    fn expect(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let Some(got) = self.src.shape_of(name) else {
            bail!("required tensor {name} is missing from the checkpoint");
        };
        let strip = |s: &[usize]| -> Vec<usize> {
            let first = s.iter().position(|&d| d != 1).unwrap_or(s.len());
            s[first..].to_vec()
        };
        if strip(&got) != strip(shape) {
            bail!(
                "tensor {name} has shape {got:?} but config.json implies {shape:?}; the checkpoint and its config.json disagree"
            );
        }
        self.used.insert(name.to_string());
        Ok(())
    }

    fn push(&mut self, name: String, shape: &[usize], typ: GgmlType, from: From) {
        let ne = shape.iter().rev().map(|&d| d as u64).collect();
        self.out.push(Planned {
            name,
            ne,
            typ,
            from,
        });
    }

    /// A tensor copied (maybe reordered) from `src` with PyTorch shape `shape`.
    fn tensor(
        &mut self,
        out: String,
        src: &str,
        shape: &[usize],
        typ: GgmlType,
        t: Transform,
    ) -> Result<()> {
        self.expect(src, shape)?;
        self.push(
            out,
            shape,
            typ,
            From::Tensor {
                name: src.to_string(),
                transform: t,
            },
        );
        Ok(())
    }
}

/// Builds the list of output tensors, checking every source shape against the config.
/// Returns the plan and warnings about source tensors nothing uses.
pub fn build(
    cfg: &HfConfig,
    src: &dyn Shapes,
    opts: &Options,
) -> Result<(Vec<Planned>, Vec<String>)> {
    let mut b = Builder {
        src,
        out: Vec::new(),
        used: BTreeSet::new(),
    };
    let (d, ff, nl, nh) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
    );
    let (kv, nkv, vocab) = (cfg.kv_dim(), cfg.num_key_value_heads, cfg.vocab_size);
    let f32t = GgmlType::F32;
    let p = opts.preset;

    // ---- LLM ----
    b.tensor(
        names::TOKEN_EMBD.into(),
        "model.embed_tokens.weight",
        &[vocab, d],
        llm_type(p, role::TOKEN_EMBD, 0, nl, d),
        Transform::Copy,
    )?;
    for i in 0..nl {
        let pre = format!("model.layers.{i}");
        let mam = |what: &str, m: Modality| {
            format!("{pre}.{what}.multiway.{}.weight", m.multiway_index())
        };
        let modalities: &[Modality] = if opts.text_only {
            &[Modality::Text]
        } else {
            &Modality::ALL
        };
        for &m in modalities {
            b.tensor(
                names::blk(i, blk::ATTN_NORM, m),
                &mam("input_layernorm", m),
                &[d],
                f32t,
                Transform::Copy,
            )?;
            b.tensor(
                names::blk(i, blk::ATTN_K, m),
                &mam("self_attn.k_proj", m),
                &[kv, d],
                llm_type(p, blk::ATTN_K, i, nl, d),
                Transform::PermuteQK { n_head: nkv },
            )?;
            b.tensor(
                names::blk(i, blk::ATTN_V, m),
                &mam("self_attn.v_proj", m),
                &[kv, d],
                llm_type(p, blk::ATTN_V, i, nl, d),
                Transform::Copy,
            )?;
            b.tensor(
                names::blk(i, blk::FFN_NORM, m),
                &mam("post_attention_layernorm", m),
                &[d],
                f32t,
                Transform::Copy,
            )?;
        }
        // Shared by both modalities: (GGUF name = llama.cpp role, HF module, [rows, cols], order).
        for (role, module, rows, cols, t) in [
            (
                blk::ATTN_Q,
                "self_attn.q_proj",
                d,
                d,
                Transform::PermuteQK { n_head: nh },
            ),
            (blk::ATTN_OUTPUT, "self_attn.o_proj", d, d, Transform::Copy),
            (blk::FFN_GATE, "mlp.gate_proj", ff, d, Transform::Copy),
            (blk::FFN_UP, "mlp.up_proj", ff, d, Transform::Copy),
            (blk::FFN_DOWN, "mlp.down_proj", d, ff, Transform::Copy),
        ] {
            b.tensor(
                names::blk(i, role, Modality::Text),
                &format!("{pre}.{module}.weight"),
                &[rows, cols],
                llm_type(p, role, i, nl, cols),
                t,
            )?;
        }
        // Upstream ignores the stored inv_freq (RoPE tables are computed at construction).
        b.used
            .insert(format!("{pre}.self_attn.rotary_emb.inv_freq"));
    }
    b.tensor(
        names::OUTPUT_NORM.into(),
        "model.norm.weight",
        &[d],
        f32t,
        Transform::Copy,
    )?;
    b.tensor(
        names::OUTPUT.into(),
        "lm_head.weight",
        &[vocab, d],
        llm_type(p, role::OUTPUT, 0, nl, d),
        Transform::Copy,
    )?;

    if !opts.text_only {
        plan_vision(&mut b, cfg, opts)?;
        plan_abstractor(&mut b, cfg, opts)?;
    }

    let mut warnings = Vec::new();
    for n in src.all_names() {
        if !b.used.contains(&n) {
            let skipped_vision = opts.text_only
                && (n.starts_with("model.vision_model.")
                    || n.starts_with("model.visual_abstractor.")
                    || n.contains(&format!(".multiway.{}.", Modality::Visual.multiway_index())));
            if !skipped_vision {
                warnings.push(format!(
                    "unexpected tensor {n} in the checkpoint is not used"
                ));
            }
        }
    }
    Ok((b.out, warnings))
}

fn plan_vision(b: &mut Builder<'_>, cfg: &HfConfig, opts: &Options) -> Result<()> {
    let v = &cfg.vision;
    let (d, ff, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let n_tok = (v.image_size / p).pow(2) + 1;
    let vt = |cols: usize| vision_matrix_type(opts.vision_type, cols);
    let f32t = GgmlType::F32;
    let pre = "model.vision_model";
    b.tensor(
        names::V_PATCH_EMBD.into(),
        &format!("{pre}.embeddings.patch_embed.weight"),
        &[d, 3, p, p],
        vt(3 * p * p),
        Transform::Copy,
    )?;
    b.tensor(
        names::V_CLASS_EMBD.into(),
        &format!("{pre}.embeddings.cls_token"),
        &[d],
        f32t,
        Transform::Copy,
    )?;
    b.tensor(
        names::V_POSITION_EMBD.into(),
        &format!("{pre}.embeddings.position_embedding"),
        &[n_tok, d],
        f32t,
        Transform::Copy,
    )?;
    for part in ["weight", "bias"] {
        b.tensor(
            format!("{}.{part}", names::V_PRE_LN),
            &format!("{pre}.embeddings.pre_layernorm.{part}"),
            &[d],
            f32t,
            Transform::Copy,
        )?;
        b.tensor(
            format!("{}.{part}", names::V_POST_LN),
            &format!("{pre}.post_layernorm.{part}"),
            &[d],
            f32t,
            Transform::Copy,
        )?;
    }
    for i in 0..v.num_hidden_layers {
        let l = format!("{pre}.encoder.layers.{i}");
        for part in ["weight", "bias"] {
            b.tensor(
                vblk(i, vblk::LN1, part),
                &format!("{l}.input_layernorm.{part}"),
                &[d],
                f32t,
                Transform::Copy,
            )?;
            b.tensor(
                vblk(i, vblk::LN2, part),
                &format!("{l}.post_attention_layernorm.{part}"),
                &[d],
                f32t,
                Transform::Copy,
            )?;
        }
        let qkv_w = format!("{l}.self_attn.query_key_value.weight");
        let qkv_b = format!("{l}.self_attn.query_key_value.bias");
        b.expect(&qkv_w, &[3 * d, d])?;
        b.expect(&qkv_b, &[3 * d])?;
        for (part, name) in [vblk::ATTN_Q, vblk::ATTN_K, vblk::ATTN_V]
            .into_iter()
            .enumerate()
        {
            let t = Transform::QkvPart {
                part,
                n_head: v.num_attention_heads,
            };
            b.push(
                vblk(i, name, "weight"),
                &[d, d],
                vt(d),
                From::Tensor {
                    name: qkv_w.clone(),
                    transform: t.clone(),
                },
            );
            b.push(
                vblk(i, name, "bias"),
                &[d],
                f32t,
                From::Tensor {
                    name: qkv_b.clone(),
                    transform: t,
                },
            );
        }
        for (out, src, rows, cols) in [
            (vblk::ATTN_OUT, "self_attn.dense", d, d),
            (vblk::FFN_UP, "mlp.fc1", ff, d),
            (vblk::FFN_DOWN, "mlp.fc2", d, ff),
        ] {
            b.tensor(
                vblk(i, out, "weight"),
                &format!("{l}.{src}.weight"),
                &[rows, cols],
                vt(cols),
                Transform::Copy,
            )?;
            b.tensor(
                vblk(i, out, "bias"),
                &format!("{l}.{src}.bias"),
                &[rows],
                f32t,
                Transform::Copy,
            )?;
        }
    }
    Ok(())
}

fn plan_abstractor(b: &mut Builder<'_>, cfg: &HfConfig, opts: &Options) -> Result<()> {
    let a = &cfg.abstractor;
    let (d, ff, nq) = (a.hidden_size, a.intermediate_size, a.num_learnable_queries);
    let n_tok = a.grid_size * a.grid_size + 1;
    let vt = |cols: usize| vision_matrix_type(opts.vision_type, cols);
    let f32t = GgmlType::F32;
    let pre = "model.visual_abstractor";
    b.tensor(
        names::A_QUERY_EMBD.into(),
        &format!("{pre}.query_embeds"),
        &[nq, d],
        f32t,
        Transform::Copy,
    )?;
    // Sin-cos tables: stored per layer by save_pretrained (dtype-rounded, and upstream uses
    // those values), absent from the 7B release (computed then, as upstream does at load).
    let layer_names = |what: &str| -> Vec<String> {
        (0..a.num_hidden_layers)
            .map(|i| format!("{pre}.encoder.layers.{i}.crossattention.attention.{what}"))
            .collect()
    };
    for (out, what, rows, table) in [
        (names::A_POS_EMBD_Q, "q_pos_embed", nq, sincos_1d(d, nq)),
        (
            names::A_POS_EMBD_K,
            "k_pos_embed",
            n_tok,
            sincos_2d_with_cls(d, a.grid_size),
        ),
    ] {
        let stored = layer_names(what);
        let present = stored
            .iter()
            .filter(|n| b.src.shape_of(n).is_some())
            .count();
        if present == stored.len() {
            for n in &stored {
                b.expect(n, &[rows, d])?;
            }
            b.push(
                out.into(),
                &[rows, d],
                f32t,
                From::SameInEvery { names: stored },
            );
        } else if present == 0 {
            b.push(out.into(), &[rows, d], f32t, From::Computed(table));
        } else {
            bail!("only {present} of {} abstractor layers store {what}; the checkpoint is inconsistent", stored.len());
        }
    }
    for i in 0..a.num_hidden_layers {
        let l = format!("{pre}.encoder.layers.{i}.crossattention");
        for (out, src, n) in [
            (ablk::LN_Q, "norm1", d),
            (ablk::LN_KV, "normk", d),
            (ablk::LN2, "output.norm2", d),
            (ablk::FFN_NORM, "output.mlp.ffn_ln", ff),
        ] {
            for part in ["weight", "bias"] {
                b.tensor(
                    ablk(i, out, part),
                    &format!("{l}.{src}.{part}"),
                    &[n],
                    f32t,
                    Transform::Copy,
                )?;
            }
        }
        for (out, src, rows, cols) in [
            (ablk::ATTN_Q, "attention.query", d, d),
            (ablk::ATTN_K, "attention.key", d, d),
            (ablk::ATTN_V, "attention.value", d, d),
            (ablk::ATTN_OUT, "output.out_proj", d, d),
            (ablk::FFN_GATE, "output.mlp.w1", ff, d),
            (ablk::FFN_UP, "output.mlp.w3", ff, d),
            (ablk::FFN_DOWN, "output.mlp.w2", d, ff),
        ] {
            b.tensor(
                ablk(i, out, "weight"),
                &format!("{l}.{src}.weight"),
                &[rows, cols],
                vt(cols),
                Transform::Copy,
            )?;
            b.tensor(
                ablk(i, out, "bias"),
                &format!("{l}.{src}.bias"),
                &[rows],
                f32t,
                Transform::Copy,
            )?;
        }
    }
    let llm_d = cfg.hidden_size;
    for part in ["weight", "bias"] {
        let shape: &[usize] = if part == "weight" {
            &[llm_d, d]
        } else {
            &[llm_d]
        };
        let typ = if part == "weight" { vt(d) } else { f32t };
        b.tensor(
            format!("{}.{part}", names::A_PROJ),
            &format!("{pre}.visual_fc.{part}"),
            shape,
            typ,
            Transform::Copy,
        )?;
    }
    b.tensor(
        names::A_EOI_EMBD.into(),
        &format!("{pre}.vit_eos"),
        &[llm_d],
        f32t,
        Transform::Copy,
    )?;
    Ok(())
}

/// 1-D sin-cos table `[n, d]`: row m = `[sin(m·ω), cos(m·ω)]`, `ω_k = 10000^(−k/(d/2))`.
pub fn sincos_1d(d: usize, n: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; n * d];
    for m in 0..n {
        for k in 0..half {
            let omega = 1.0 / 10000f64.powf(k as f64 / half as f64);
            let a = m as f64 * omega;
            out[m * d + k] = a.sin() as f32;
            out[m * d + half + k] = a.cos() as f32;
        }
    }
    out
}

/// 2-D sin-cos table `[grid²+1, d]` with a zero CLS row first; patch (row i, col j) gets
/// `[1-D(j) over d/2, 1-D(i) over d/2]` — the first half encodes the column (MAE convention).
pub fn sincos_2d_with_cls(d: usize, grid: usize) -> Vec<f32> {
    let half = d / 2;
    let col = sincos_1d(half, grid);
    let mut out = vec![0f32; (grid * grid + 1) * d];
    for i in 0..grid {
        for j in 0..grid {
            let r = 1 + i * grid + j;
            out[r * d..r * d + half].copy_from_slice(&col[j * half..(j + 1) * half]);
            out[r * d + half..(r + 1) * d].copy_from_slice(&col[i * half..(i + 1) * half]);
        }
    }
    out
}

/// Applies a transform to a source tensor of `rows` rows (its first PyTorch dim) of `cols`
/// values each.
pub fn apply(t: &Transform, src: &[f32], rows: usize) -> Vec<f32> {
    let cols = src.len() / rows.max(1);
    match *t {
        Transform::Copy => src.to_vec(),
        Transform::PermuteQK { n_head } => permute_qk(src, n_head, rows, cols),
        Transform::QkvPart { part, n_head } => qkv_part(src, part, n_head, rows, cols),
    }
}

/// llama.cpp's Q/K permutation of a `[n_head·hd, cols]` matrix: within each head, output row
/// `2i + j` is input row `j·hd/2 + i` (the rotate-half pairs `(i, i + hd/2)` become adjacent).
pub fn permute_qk(src: &[f32], n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; src.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + 2 * i + j;
                let from = h * hd + j * (hd / 2) + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&src[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Rows of part `part` (0 q, 1 k, 2 v) of the ViT's fused QKV, whose `3·d` rows are laid out
/// per head as `[head][q|k|v][hd]`: `out[h·hd + j] = in[h·3hd + part·hd + j]`.
pub fn qkv_part(src: &[f32], part: usize, n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
    let d = rows / 3;
    let hd = d / n_head;
    let mut out = Vec::with_capacity(d * cols);
    for h in 0..n_head {
        let first = h * 3 * hd + part * hd;
        out.extend_from_slice(&src[first * cols..(first + hd) * cols]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_llama_cpp_reshape_swapaxes() {
        // numpy: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (n_head, hd, cols) = (2, 4, 3);
        let rows = n_head * hd;
        let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let out = permute_qk(&src, n_head, rows, cols);
        let row = |r: usize| out[r * cols] as usize / cols;
        assert_eq!(
            (0..rows).map(row).collect::<Vec<_>>(),
            vec![0, 2, 1, 3, 4, 6, 5, 7]
        );
    }

    #[test]
    fn qkv_split_deinterleaves_heads() {
        let (n_head, hd) = (2, 2);
        let rows = 3 * n_head * hd; // 12 rows of 1
        let src: Vec<f32> = (0..rows).map(|v| v as f32).collect();
        assert_eq!(qkv_part(&src, 0, n_head, rows, 1), vec![0.0, 1.0, 6.0, 7.0]);
        assert_eq!(qkv_part(&src, 1, n_head, rows, 1), vec![2.0, 3.0, 8.0, 9.0]);
        assert_eq!(
            qkv_part(&src, 2, n_head, rows, 1),
            vec![4.0, 5.0, 10.0, 11.0]
        );
    }

    #[test]
    fn sincos_tables_follow_the_spec() {
        let t = sincos_2d_with_cls(8, 2);
        assert!(t[..8].iter().all(|&v| v == 0.0));
        // patch (i=0, j=1) = row 2: first half encodes the column j = 1
        assert!((t[2 * 8] - 1f32.sin()).abs() < 1e-7);
        assert_eq!(t[2 * 8 + 4], 0.0); // sin(0·ω) for the row i = 0
        let q = sincos_1d(4, 3);
        assert!((q[4 * 2 + 2] - 2f32.cos()).abs() < 1e-7);
    }

    #[test]
    fn more_bits_layers_match_llama_cpp_for_two_layers() {
        assert!(!use_more_bits(0, 2));
        assert!(use_more_bits(1, 2));
        assert_eq!(llm_type(Preset::Q4KM, "attn_v", 1, 2, 256), GgmlType::Q6_K);
        assert_eq!(llm_type(Preset::Q4KM, "attn_q", 1, 2, 64), GgmlType::Q5_0);
        assert_eq!(llm_type(Preset::Q4_0, "output", 0, 2, 64), GgmlType::Q8_0);
    }
}
