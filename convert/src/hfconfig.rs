//! The Hugging Face side files of a checkpoint: `config.json`, `preprocessor_config.json`,
//! `generation_config.json`, `tokenizer_config.json`. Every value the GGUF needs is read here,
//! with errors naming the file and key.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// mPLUG-Owl2's hyperparameters, in HF terms.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    /// `image_aspect_ratio` ("pad", "resize", ...); `None` when absent.
    pub image_aspect_ratio: Option<String>,
    pub vision: HfVision,
    pub abstractor: HfAbstractor,
}

#[derive(Clone, Debug)]
pub struct HfVision {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: String,
}

#[derive(Clone, Debug)]
pub struct HfAbstractor {
    pub hidden_size: usize,
    pub encoder_hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub num_learnable_queries: usize,
    pub layer_norm_eps: f32,
    pub grid_size: usize,
}

/// Image preprocessing, from `preprocessor_config.json`.
#[derive(Clone, Debug)]
pub struct HfPreprocessor {
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resample: u32,
}

/// Generation defaults, from `generation_config.json` (all optional).
#[derive(Clone, Debug, Default)]
pub struct HfGeneration {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub max_new_tokens: Option<u32>,
}

/// Tokenizer flags, from `tokenizer_config.json`.
#[derive(Clone, Debug)]
pub struct HfTokenizerConfig {
    pub add_bos: bool,
    pub add_eos: bool,
    /// transformers' `legacy` flag; absent means true (transformers 4.31's default).
    pub legacy: bool,
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

struct Obj<'a> {
    v: &'a Value,
    file: &'a str,
    prefix: String,
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str) -> Result<usize> {
        match self.get(key).and_then(Value::as_u64) {
            Some(v) if v > 0 && v < (1 << 32) => Ok(v as usize),
            Some(v) => bail!("{}: {}{key} = {v} is out of range", self.file, self.prefix),
            None => bail!(
                "{}: missing or non-integer key {}{key}",
                self.file,
                self.prefix
            ),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.get(key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x as f32),
                _ => bail!("{}: key {}{key} must be a number", self.file, self.prefix),
            },
        }
    }
    fn sub(&self, key: &str) -> Result<Obj<'a>> {
        match self.get(key) {
            Some(v) if v.is_object() => Ok(Obj {
                v,
                file: self.file,
                prefix: format!("{}{key}.", self.prefix),
            }),
            _ => bail!("{}: missing object {}{key}", self.file, self.prefix),
        }
    }
}

impl HfConfig {
    pub fn read(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let v = read_json(&path)?;
        let file = path.display().to_string();
        let o = Obj {
            v: &v,
            file: &file,
            prefix: String::new(),
        };
        match o.get("model_type").and_then(Value::as_str) {
            Some("mplug_owl2") => {}
            Some(other) => bail!(
                "{file}: model_type is {other:?}, not \"mplug_owl2\" (owlet-convert converts mPLUG-Owl2 checkpoints)"
            ),
            None => bail!("{file}: missing key model_type"),
        }
        if let Some(s) = o.get("rope_scaling") {
            bail!("{file}: rope_scaling {s} is not supported (mPLUG-Owl2 uses none)");
        }
        let vc = o.sub("visual_config")?;
        let vm = vc.sub("visual_model")?;
        let va = vc.sub("visual_abstractor")?;
        let heads = o.usize("num_attention_heads")?;
        let vision = HfVision {
            hidden_size: vm.usize_or("hidden_size", 1024)?,
            intermediate_size: vm.usize_or("intermediate_size", 4096)?,
            num_hidden_layers: vm.usize_or("num_hidden_layers", 24)?,
            num_attention_heads: vm.usize_or("num_attention_heads", 16)?,
            image_size: vm.usize_or("image_size", 448)?,
            patch_size: vm.usize_or("patch_size", 14)?,
            layer_norm_eps: vm.f32_or("layer_norm_eps", 1e-6)?,
            hidden_act: vm
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("quick_gelu")
                .to_string(),
        };
        let grid_default = vision.image_size / vision.patch_size;
        let abstractor = HfAbstractor {
            hidden_size: va.usize_or("hidden_size", 1024)?,
            encoder_hidden_size: va.usize_or("encoder_hidden_size", 1024)?,
            num_hidden_layers: va.usize_or("num_hidden_layers", 6)?,
            num_attention_heads: va.usize_or("num_attention_heads", 16)?,
            intermediate_size: va.usize_or("intermediate_size", 2816)?,
            num_learnable_queries: va.usize_or("num_learnable_queries", 64)?,
            layer_norm_eps: va.f32_or("layer_norm_eps", 1e-6)?,
            grid_size: va.usize_or("grid_size", grid_default)?,
        };
        let c = HfConfig {
            vocab_size: o.usize("vocab_size")?,
            hidden_size: o.usize("hidden_size")?,
            intermediate_size: o.usize("intermediate_size")?,
            num_hidden_layers: o.usize("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: o.usize_or("num_key_value_heads", heads)?,
            max_position_embeddings: o.usize_or("max_position_embeddings", 2048)?,
            rms_norm_eps: o.f32_or("rms_norm_eps", 1e-6)?,
            rope_theta: o.f32_or("rope_theta", 10000.0)?,
            bos_token_id: o.usize_or("bos_token_id", 1)? as u32,
            eos_token_id: o.usize_or("eos_token_id", 2)? as u32,
            pad_token_id: o.get("pad_token_id").and_then(Value::as_u64).unwrap_or(0) as u32,
            image_aspect_ratio: o
                .get("image_aspect_ratio")
                .and_then(Value::as_str)
                .map(str::to_string),
            vision,
            abstractor,
        };
        c.check(&file)?;
        Ok(c)
    }

    fn check(&self, file: &str) -> Result<()> {
        let (v, a) = (&self.vision, &self.abstractor);
        if !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
            || !(self.hidden_size / self.num_attention_heads).is_multiple_of(2)
        {
            bail!(
                "{file}: hidden_size {} is not divisible into {} heads ({} kv heads) of even size",
                self.hidden_size,
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if v.image_size % v.patch_size != 0 || v.hidden_size % v.num_attention_heads != 0 {
            bail!("{file}: visual_model image_size/patch_size/heads are inconsistent");
        }
        if v.hidden_act != "quick_gelu" {
            bail!(
                "{file}: visual_model.hidden_act {:?} is not supported (quick_gelu)",
                v.hidden_act
            );
        }
        if a.hidden_size != a.encoder_hidden_size || a.hidden_size != v.hidden_size {
            bail!(
                "{file}: visual_abstractor hidden_size {} / encoder_hidden_size {} must equal the vision hidden_size {}",
                a.hidden_size,
                a.encoder_hidden_size,
                v.hidden_size
            );
        }
        if a.grid_size != v.image_size / v.patch_size || a.hidden_size % a.num_attention_heads != 0
        {
            bail!(
                "{file}: visual_abstractor grid_size/heads are inconsistent with the vision tower"
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.num_key_value_heads
    }
}

impl HfPreprocessor {
    /// Reads `preprocessor_config.json`; falls back to the CLIP defaults at `image_size` when
    /// the file is absent.
    pub fn read(dir: &Path, image_size: usize) -> Result<HfPreprocessor> {
        let path = dir.join("preprocessor_config.json");
        let clip = HfPreprocessor {
            size: image_size,
            mean: owlet::image::CLIP_MEAN,
            std: owlet::image::CLIP_STD,
            resample: 3,
        };
        if !path.exists() {
            return Ok(clip);
        }
        let v = read_json(&path)?;
        let file = path.display().to_string();
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x
                            .as_f64()
                            .with_context(|| format!("{file}: {key} must hold numbers"))?
                            as f32;
                    }
                    Ok(out)
                }
                Some(_) => bail!("{file}: {key} must be a list of 3 numbers"),
            }
        };
        let size = match v.get("size") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
            Some(Value::Object(o)) => o
                .get("shortest_edge")
                .or_else(|| o.get("height"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize,
            _ => image_size,
        };
        if size != image_size {
            bail!(
                "{file}: size {size} disagrees with visual_model.image_size {image_size} in config.json"
            );
        }
        let resample = v.get("resample").and_then(Value::as_u64).unwrap_or(3) as u32;
        if resample != 3 {
            bail!("{file}: resample {resample} is not supported (3 = bicubic)");
        }
        let std = triple("image_std", clip.std)?;
        if std.contains(&0.0) {
            bail!("{file}: image_std must not contain 0");
        }
        Ok(HfPreprocessor {
            size,
            mean: triple("image_mean", clip.mean)?,
            std,
            resample,
        })
    }
}

impl HfGeneration {
    pub fn read(dir: &Path) -> Result<HfGeneration> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(HfGeneration::default());
        }
        let v = read_json(&path)?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        Ok(HfGeneration {
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: v.get("top_k").and_then(Value::as_u64).map(|x| x as u32),
            max_new_tokens: v
                .get("max_new_tokens")
                .and_then(Value::as_u64)
                .map(|x| x as u32),
        })
    }
}

impl HfTokenizerConfig {
    pub fn read(dir: &Path) -> Result<HfTokenizerConfig> {
        let path = dir.join("tokenizer_config.json");
        if !path.exists() {
            return Ok(HfTokenizerConfig {
                add_bos: true,
                add_eos: false,
                legacy: true,
            });
        }
        let v = read_json(&path)?;
        let b = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        Ok(HfTokenizerConfig {
            add_bos: b("add_bos_token", true),
            add_eos: b("add_eos_token", false),
            legacy: b("legacy", true),
        })
    }
}
