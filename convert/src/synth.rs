//! Synthetic mPLUG-Owl2 weights with the real shapes, for benchmarks and for measuring the
//! converter at full size: straight to GGUF, or as a release-style Hugging Face checkpoint
//! (16-bit `torch.save` or safetensors shards + index + configs + tokenizer).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use half::f16;
use serde_json::json;

use crate::checkpoint::DType;
use crate::convert::Source;
use crate::hfconfig::{HfAbstractor, HfConfig, HfVision};
use crate::plan::Shapes;
use crate::torch_writer::{self, TorchEntry};

/// The LLaMA-2 SentencePiece vocabulary (MIT, from llama.cpp's test vocabulary).
pub const TOKENIZER_MODEL: &[u8] =
    include_bytes!("../../tests/data/owl2-tiny-a/checkpoint/tokenizer.model");

/// `7b`: the released model's shapes; `tiny`: the test fixture's.
pub fn preset(name: &str) -> Result<HfConfig> {
    let (d, ff, nl, nh, ctx, eps) = match name {
        "7b" => (4096, 11008, 32, 32, 2048, 1e-6),
        "tiny" => (64, 160, 3, 4, 4096, 1e-5),
        _ => bail!("unknown --preset {name:?} (7b or tiny)"),
    };
    let (vd, vff, vl, vh, img) = if name == "7b" {
        (1024, 4096, 24, 16, 448)
    } else {
        (96, 384, 2, 4, 112)
    };
    let (al, aff, nq) = if name == "7b" {
        (6, 2816, 64)
    } else {
        (2, 256, 8)
    };
    Ok(HfConfig {
        vocab_size: 32000,
        hidden_size: d,
        intermediate_size: ff,
        num_hidden_layers: nl,
        num_attention_heads: nh,
        num_key_value_heads: nh,
        max_position_embeddings: ctx,
        rms_norm_eps: eps,
        rope_theta: 10000.0,
        bos_token_id: 1,
        eos_token_id: 2,
        pad_token_id: 0,
        image_aspect_ratio: Some("pad".into()),
        vision: HfVision {
            hidden_size: vd,
            intermediate_size: vff,
            num_hidden_layers: vl,
            num_attention_heads: vh,
            image_size: img,
            patch_size: 14,
            layer_norm_eps: 1e-6,
            hidden_act: "quick_gelu".into(),
        },
        abstractor: HfAbstractor {
            hidden_size: vd,
            encoder_hidden_size: vd,
            num_hidden_layers: al,
            num_attention_heads: vh,
            intermediate_size: aff,
            num_learnable_queries: nq,
            layer_norm_eps: 1e-6,
            grid_size: img / 14,
        },
    })
}

/// A preset with fewer (or more) layers and the same widths: a file with the 7B widths and two
/// decoder layers measures per-token cost like the real model at a fraction of its size
/// (`scripts/arm_cost.sh`). `None` keeps the preset's count.
pub fn with_layers(
    mut c: HfConfig,
    layers: Option<usize>,
    vision_layers: Option<usize>,
) -> Result<HfConfig> {
    for (flag, n) in [("--layers", layers), ("--vision-layers", vision_layers)] {
        if n == Some(0) {
            bail!("{flag} 0: give at least 1 layer (or leave {flag} out for the preset's)");
        }
    }
    if let Some(n) = layers {
        c.num_hidden_layers = n;
    }
    if let Some(n) = vision_layers {
        c.vision.num_hidden_layers = n;
    }
    Ok(c)
}

/// Every checkpoint tensor of a config, with its PyTorch shape, in release order.
pub fn tensor_list(c: &HfConfig) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let (d, ff, kv) = (c.hidden_size, c.intermediate_size, c.kv_dim());
    t.push(("model.embed_tokens.weight".into(), vec![c.vocab_size, d]));
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for m in 0..2 {
            t.push((format!("{p}.input_layernorm.multiway.{m}.weight"), vec![d]));
            t.push((
                format!("{p}.post_attention_layernorm.multiway.{m}.weight"),
                vec![d],
            ));
            t.push((
                format!("{p}.self_attn.k_proj.multiway.{m}.weight"),
                vec![kv, d],
            ));
            t.push((
                format!("{p}.self_attn.v_proj.multiway.{m}.weight"),
                vec![kv, d],
            ));
        }
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![d, d]));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![d, d]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![ff, d]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![ff, d]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![d, ff]));
    }
    t.push(("model.norm.weight".into(), vec![d]));
    t.push(("lm_head.weight".into(), vec![c.vocab_size, d]));
    let v = &c.vision;
    let (vd, vff, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let n_tok = (v.image_size / p).pow(2) + 1;
    let e = "model.vision_model.embeddings";
    t.push((format!("{e}.patch_embed.weight"), vec![vd, 3, p, p]));
    t.push((format!("{e}.cls_token"), vec![1, 1, vd]));
    t.push((format!("{e}.position_embedding"), vec![1, n_tok, vd]));
    t.push((format!("{e}.pre_layernorm.weight"), vec![vd]));
    t.push((format!("{e}.pre_layernorm.bias"), vec![vd]));
    for i in 0..v.num_hidden_layers {
        let l = format!("model.vision_model.encoder.layers.{i}");
        for (n, s) in [
            ("input_layernorm.weight", vec![vd]),
            ("input_layernorm.bias", vec![vd]),
            ("self_attn.query_key_value.weight", vec![3 * vd, vd]),
            ("self_attn.query_key_value.bias", vec![3 * vd]),
            ("self_attn.dense.weight", vec![vd, vd]),
            ("self_attn.dense.bias", vec![vd]),
            ("post_attention_layernorm.weight", vec![vd]),
            ("post_attention_layernorm.bias", vec![vd]),
            ("mlp.fc1.weight", vec![vff, vd]),
            ("mlp.fc1.bias", vec![vff]),
            ("mlp.fc2.weight", vec![vd, vff]),
            ("mlp.fc2.bias", vec![vd]),
        ] {
            t.push((format!("{l}.{n}"), s));
        }
    }
    t.push(("model.vision_model.post_layernorm.weight".into(), vec![vd]));
    t.push(("model.vision_model.post_layernorm.bias".into(), vec![vd]));
    let a = &c.abstractor;
    let aff = a.intermediate_size;
    t.push((
        "model.visual_abstractor.query_embeds".into(),
        vec![1, a.num_learnable_queries, vd],
    ));
    for i in 0..a.num_hidden_layers {
        let l = format!("model.visual_abstractor.encoder.layers.{i}.crossattention");
        for (n, s) in [
            ("norm1.weight", vec![vd]),
            ("norm1.bias", vec![vd]),
            ("normk.weight", vec![vd]),
            ("normk.bias", vec![vd]),
            ("attention.query.weight", vec![vd, vd]),
            ("attention.query.bias", vec![vd]),
            ("attention.key.weight", vec![vd, vd]),
            ("attention.key.bias", vec![vd]),
            ("attention.value.weight", vec![vd, vd]),
            ("attention.value.bias", vec![vd]),
            ("output.out_proj.weight", vec![vd, vd]),
            ("output.out_proj.bias", vec![vd]),
            ("output.norm2.weight", vec![vd]),
            ("output.norm2.bias", vec![vd]),
            ("output.mlp.w1.weight", vec![aff, vd]),
            ("output.mlp.w1.bias", vec![aff]),
            ("output.mlp.w3.weight", vec![aff, vd]),
            ("output.mlp.w3.bias", vec![aff]),
            ("output.mlp.ffn_ln.weight", vec![aff]),
            ("output.mlp.ffn_ln.bias", vec![aff]),
            ("output.mlp.w2.weight", vec![vd, aff]),
            ("output.mlp.w2.bias", vec![vd]),
        ] {
            t.push((format!("{l}.{n}"), s));
        }
    }
    t.push((
        "model.visual_abstractor.visual_fc.weight".into(),
        vec![d, vd],
    ));
    t.push(("model.visual_abstractor.visual_fc.bias".into(), vec![d]));
    t.push(("model.visual_abstractor.vit_eos".into(), vec![1, 1, d]));
    t
}

/// Random weights, reproducible from the tensor name.
pub struct SynthSource {
    tensors: Vec<(String, Vec<usize>)>,
}

impl SynthSource {
    pub fn new(c: &HfConfig) -> Self {
        SynthSource {
            tensors: tensor_list(c),
        }
    }
}

fn seed_of(name: &str) -> u64 {
    // FNV-1a
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Values for one tensor: norm gains near 1, everything else uniform with variance 1/fan_in.
pub fn synth_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in = if shape.len() >= 2 {
        shape[1..].iter().product::<usize>()
    } else {
        1
    };
    let is_gain = name.ends_with("norm.weight")
        || name.contains("layernorm")
        || name.contains("norm1.weight")
        || name.contains("normk.weight")
        || name.contains("norm2.weight")
        || name.contains("ffn_ln.weight");
    let amp = if is_gain {
        0.1
    } else if shape.len() >= 2 {
        (3.0 / fan_in as f32).sqrt()
    } else {
        0.05
    };
    let mut s = seed_of(name);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        out.push(if is_gain { 1.0 + amp * u } else { amp * u });
    }
    out
}

impl Shapes for SynthSource {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }
    fn all_names(&self) -> Vec<String> {
        self.tensors.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Source for SynthSource {
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let shape = self
            .shape_of(name)
            .with_context(|| format!("no synthetic tensor {name}"))?;
        // Stored as f16 in a real release: round so GGUF and HF paths agree exactly.
        Ok(synth_values(name, &shape)
            .into_iter()
            .map(|v| f16::from_f32(v).to_f32())
            .collect())
    }
}

/// The weight file format of [`write_hf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfFormat {
    /// `pytorch_model-0000N-of-0000M.bin` (`torch.save` zips) + `pytorch_model.bin.index.json`,
    /// as the 7B release ships.
    Bin,
    /// `model-0000N-of-0000M.safetensors` + `model.safetensors.index.json`, as derived
    /// checkpoints often do.
    Safetensors,
}

impl std::str::FromStr for HfFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bin" => Ok(HfFormat::Bin),
            "safetensors" => Ok(HfFormat::Safetensors),
            _ => Err(format!("unknown --format {s:?} (bin or safetensors)")),
        }
    }
}

/// Groups tensors (in order) into shards of at most `shard_bytes` of f16 data each (a tensor
/// larger than that gets a shard of its own), as `save_pretrained(max_shard_size=...)` does.
fn shard_groups(
    tensors: Vec<(String, Vec<usize>)>,
    shard_bytes: u64,
) -> Vec<Vec<(String, Vec<usize>)>> {
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut size = 0u64;
    for (n, s) in tensors {
        let b = s.iter().product::<usize>() as u64 * 2;
        if size > 0 && size + b > shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        shards.last_mut().expect("non-empty").push((n, s));
    }
    shards
}

/// One tensor's synthetic values as little-endian f16 bytes.
fn f16_bytes(name: &str, shape: &[usize]) -> Vec<u8> {
    let vals = synth_values(name, shape);
    let mut buf = Vec::with_capacity(vals.len() * 2);
    for v in vals {
        buf.extend_from_slice(&f16::from_f32(v).to_le_bytes());
    }
    buf
}

/// Writes one safetensors shard; returns its data size.
fn write_safetensors_shard(path: &Path, shard: &[(String, Vec<usize>)]) -> Result<u64> {
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    for (n, s) in shard {
        let b = s.iter().product::<usize>() as u64 * 2;
        header.insert(
            n.clone(),
            json!({"dtype": "F16", "shape": s, "data_offsets": [off, off + b]}),
        );
        off += b;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    for (n, s) in shard {
        w.write_all(&f16_bytes(n, s))?;
    }
    w.flush()?;
    Ok(off)
}

/// Writes one `torch.save` shard; returns its data size.
fn write_torch_shard(path: &Path, shard: &[(String, Vec<usize>)]) -> Result<u64> {
    let entries: Vec<TorchEntry> = shard
        .iter()
        .map(|(n, s)| TorchEntry {
            name: n.clone(),
            dtype: DType::F16,
            shape: s.clone(),
        })
        .collect();
    torch_writer::write(path, &entries, |i| Ok(f16_bytes(&shard[i].0, &shard[i].1)))?;
    Ok(entries.iter().map(|e| e.nbytes() as u64).sum())
}

/// Writes a release-style HF checkpoint: f16 weight shards of at most `shard_bytes` in
/// `format` with their index JSON, configs and the tokenizer.
pub fn write_hf(c: &HfConfig, dir: &Path, shard_bytes: u64, format: HfFormat) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shards = shard_groups(tensor_list(c), shard_bytes);
    let count = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = match format {
            HfFormat::Bin => format!("pytorch_model-{:05}-of-{:05}.bin", i + 1, count),
            HfFormat::Safetensors => format!("model-{:05}-of-{:05}.safetensors", i + 1, count),
        };
        let path = dir.join(&file);
        total += match format {
            HfFormat::Bin => write_torch_shard(&path, shard)?,
            HfFormat::Safetensors => write_safetensors_shard(&path, shard)?,
        };
        for (n, _) in shard {
            weight_map.insert(n.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let index_name = match format {
        HfFormat::Bin => "pytorch_model.bin.index.json",
        HfFormat::Safetensors => "model.safetensors.index.json",
    };
    std::fs::write(dir.join(index_name), serde_json::to_vec_pretty(&index)?)?;
    let v = &c.vision;
    let a = &c.abstractor;
    let config = json!({
        "architectures": ["MPLUGOwl2LlamaForCausalLM"],
        "model_type": "mplug_owl2",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "hidden_act": "silu",
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
        "image_aspect_ratio": c.image_aspect_ratio,
        "torch_dtype": "float16",
        "visual_config": {
            "visual_model": {
                "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                "image_size": v.image_size, "patch_size": v.patch_size, "hidden_act": v.hidden_act,
                "layer_norm_eps": v.layer_norm_eps, "use_cls_token": true, "use_post_layernorm": true
            },
            "visual_abstractor": {
                "hidden_size": a.hidden_size, "encoder_hidden_size": a.encoder_hidden_size,
                "num_hidden_layers": a.num_hidden_layers, "num_attention_heads": a.num_attention_heads,
                "intermediate_size": a.intermediate_size, "num_learnable_queries": a.num_learnable_queries,
                "layer_norm_eps": a.layer_norm_eps, "grid_size": a.grid_size,
                "use_cls_token": true, "add_v2t_pos_emb": false
            }
        }
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let pre = json!({
        "crop_size": v.image_size, "size": {"shortest_edge": v.image_size},
        "do_resize": true, "do_center_crop": true, "do_normalize": true, "resample": 3,
        "image_mean": owlet::image::CLIP_MEAN,
        "image_std": owlet::image::CLIP_STD,
        "image_processor_type": "CLIPImageProcessor"
    });
    std::fs::write(
        dir.join("preprocessor_config.json"),
        serde_json::to_vec_pretty(&pre)?,
    )?;
    let gen = json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "temperature": 0.9, "top_p": 0.6, "max_length": 4096});
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::to_vec_pretty(&gen)?,
    )?;
    let tc = json!({"tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, "legacy": false});
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&tc)?,
    )?;
    std::fs::write(dir.join("tokenizer.model"), TOKENIZER_MODEL)?;
    Ok(())
}
