//! Hyperparameters read from GGUF metadata, validated before any tensor is touched.

use crate::error::{bail_kind, Result};
use crate::gguf::{Gguf, Value};
use crate::image::AspectMode;
use crate::model::names::{arch_key, gkey, key, ARCH_LLAMA, ARCH_MPLUG_OWL2};

/// Which graph a file describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// mPLUG-Owl2: vision tower + abstractor + MAM LLaMA decoder.
    MplugOwl2,
    /// A plain llama.cpp LLaMA file: text only, no `_vis` tensors.
    Llama,
}

/// The LLaMA decoder.
#[derive(Clone, Debug)]
pub struct TextConfig {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
    /// Q/K rows stored in llama.cpp's permuted order (RoPE rotates adjacent pairs).
    pub qk_permuted: bool,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
    /// Width of one position's keys (or values).
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_head_kv
    }
}

/// The ViT image encoder and its preprocessing.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub ln_eps: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub aspect_mode: AspectMode,
    pub pad_color: [u8; 3],
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Tokens out of the tower: one per patch plus CLS.
    pub fn n_tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// The visual abstractor.
#[derive(Clone, Debug)]
pub struct AbstractorConfig {
    pub n_query: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// ε of `ln_q`, `ln_kv`, `ln2` (PyTorch's default 1e-5 upstream, not the config value).
    pub ln_eps: f32,
    /// ε of the FFN's inner LayerNorm (the config's `layer_norm_eps`).
    pub ffn_ln_eps: f32,
    pub grid_size: usize,
}

/// Sampling defaults stored in the file (from `generation_config.json`).
#[derive(Clone, Debug, Default)]
pub struct GenerationDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
}

/// Everything the graph needs to know about a model file.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub name: String,
    pub text: TextConfig,
    pub vision: Option<VisionConfig>,
    pub abstractor: Option<AbstractorConfig>,
    /// LLM positions per image (abstractor queries + the end-of-image row).
    pub image_tokens: usize,
    pub generation: GenerationDefaults,
}

/// Typed access to metadata with errors that name the key.
pub(crate) struct Meta<'a> {
    pub gguf: &'a Gguf,
    pub arch: &'a str,
}

impl Meta<'_> {
    fn value(&self, k: &str) -> Result<&Value> {
        match self.gguf.get(k) {
            Some(v) => Ok(v),
            None => bail_kind!(
                BadModel,
                "metadata key {k} is missing; re-run owlet-convert to rebuild the file"
            ),
        }
    }
    pub fn u32(&self, k: &str) -> Result<u32> {
        let k = arch_key(self.arch, k);
        let v = self.value(&k)?;
        match v.as_u32() {
            Some(x) => Ok(x),
            None => bail_kind!(BadModel, "metadata key {k} must be an unsigned integer"),
        }
    }
    pub fn usize_nonzero(&self, k: &str) -> Result<usize> {
        let v = self.u32(k)? as usize;
        if v == 0 {
            bail_kind!(BadModel, "metadata key {}.{k} must not be 0", self.arch);
        }
        Ok(v)
    }
    pub fn f32(&self, k: &str) -> Result<f32> {
        let k = arch_key(self.arch, k);
        match self.value(&k)?.as_f32() {
            Some(x) if x.is_finite() => Ok(x),
            _ => bail_kind!(BadModel, "metadata key {k} must be a finite float"),
        }
    }
    pub fn opt_f32(&self, k: &str) -> Option<f32> {
        self.gguf
            .get(&arch_key(self.arch, k))
            .and_then(Value::as_f32)
    }
    pub fn opt_bool(&self, k: &str) -> Option<bool> {
        self.gguf
            .get(&arch_key(self.arch, k))
            .and_then(Value::as_bool)
    }
    pub fn opt_str(&self, k: &str) -> Option<&str> {
        self.gguf
            .get(&arch_key(self.arch, k))
            .and_then(Value::as_str)
    }
    pub fn f32_array<const N: usize>(&self, k: &str) -> Result<[f32; N]> {
        let k = arch_key(self.arch, k);
        let items = self.value(&k)?.as_array().map(|a| a.items.as_slice());
        let mut out = [0f32; N];
        match items {
            Some(items) if items.len() == N => {
                for (o, v) in out.iter_mut().zip(items) {
                    match v.as_f32() {
                        Some(x) if x.is_finite() => *o = x,
                        _ => bail_kind!(BadModel, "metadata key {k} must hold {N} finite floats"),
                    }
                }
                Ok(out)
            }
            _ => bail_kind!(BadModel, "metadata key {k} must be an array of {N} floats"),
        }
    }
    pub fn u8_array3(&self, k: &str) -> Result<[u8; 3]> {
        let k = arch_key(self.arch, k);
        let items = self.value(&k)?.as_array().map(|a| a.items.as_slice());
        let mut out = [0u8; 3];
        match items {
            Some(items) if items.len() == 3 => {
                for (o, v) in out.iter_mut().zip(items) {
                    match v.as_u32() {
                        Some(x) if x <= 255 => *o = x as u8,
                        _ => bail_kind!(BadModel, "metadata key {k} must hold 3 values 0..=255"),
                    }
                }
                Ok(out)
            }
            _ => bail_kind!(BadModel, "metadata key {k} must be an array of 3 integers"),
        }
    }
}

impl Config {
    /// Reads and checks the hyperparameters of an `mplug-owl2` or `llama` file.
    pub fn from_gguf(gguf: &Gguf) -> Result<Config> {
        let arch_name = match gguf.get(gkey::ARCHITECTURE).and_then(Value::as_str) {
            Some(a) => a.to_string(),
            None => bail_kind!(
                BadModel,
                "metadata key general.architecture is missing: not a model file owlet can run"
            ),
        };
        let arch = match arch_name.as_str() {
            ARCH_MPLUG_OWL2 => Arch::MplugOwl2,
            ARCH_LLAMA => Arch::Llama,
            other => bail_kind!(
                BadModel,
                "unknown architecture {other:?}: owlet runs \"mplug-owl2\" (from owlet-convert) and \"llama\" files"
            ),
        };
        let m = Meta {
            gguf,
            arch: &arch_name,
        };
        let n_embd = m.usize_nonzero(key::EMBEDDING_LENGTH)?;
        let n_head = m.usize_nonzero(key::HEAD_COUNT)?;
        let n_head_kv = match gguf.get(&arch_key(&arch_name, key::HEAD_COUNT_KV)) {
            Some(_) => m.usize_nonzero(key::HEAD_COUNT_KV)?,
            None => n_head,
        };
        if n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            bail_kind!(
                BadModel,
                "inconsistent attention shape: embedding {n_embd}, heads {n_head}, kv heads {n_head_kv}"
            );
        }
        let head_dim = n_embd / n_head;
        let rope_dim = match gguf.get(&arch_key(&arch_name, key::ROPE_DIM)) {
            Some(_) => m.usize_nonzero(key::ROPE_DIM)?,
            None => head_dim,
        };
        if rope_dim != head_dim || head_dim % 2 != 0 {
            bail_kind!(
                BadModel,
                "rope.dimension_count {rope_dim} must equal the head size {head_dim} (partial RoPE is not supported)"
            );
        }
        let n_vocab = match gguf.get(&arch_key(&arch_name, key::VOCAB_SIZE)) {
            Some(_) => m.usize_nonzero(key::VOCAB_SIZE)?,
            None => match gguf.get(gkey::TOK_TOKENS).and_then(Value::as_array) {
                Some(a) => a.items.len(),
                None => bail_kind!(BadModel, "no vocab_size and no tokenizer.ggml.tokens"),
            },
        };
        let text = TextConfig {
            n_vocab,
            n_embd,
            n_layer: m.usize_nonzero(key::BLOCK_COUNT)?,
            n_head,
            n_head_kv,
            n_ff: m.usize_nonzero(key::FEED_FORWARD_LENGTH)?,
            n_ctx: m.usize_nonzero(key::CONTEXT_LENGTH)?,
            rms_eps: m.f32(key::RMS_EPS)?,
            rope_base: m.opt_f32(key::ROPE_FREQ_BASE).unwrap_or(10000.0),
            rope_dim,
            // llama.cpp's converter always permutes; owlet-convert records it explicitly.
            qk_permuted: m.opt_bool(key::ROPE_QK_PERMUTED).unwrap_or(true),
        };
        if text.rms_eps.is_nan() || text.rms_eps <= 0.0 || text.rope_base <= 0.0 {
            bail_kind!(BadModel, "rms epsilon and rope.freq_base must be positive");
        }
        let generation = GenerationDefaults {
            temperature: m.opt_f32(key::GEN_TEMPERATURE),
            top_p: m.opt_f32(key::GEN_TOP_P),
            top_k: gguf
                .get(&arch_key(&arch_name, key::GEN_TOP_K))
                .and_then(Value::as_u32),
        };
        let name = gguf
            .get(gkey::NAME)
            .and_then(Value::as_str)
            .unwrap_or(&arch_name)
            .to_string();
        if arch == Arch::Llama {
            return Ok(Config {
                arch,
                name,
                text,
                vision: None,
                abstractor: None,
                image_tokens: 0,
                generation,
            });
        }

        let aspect = m.opt_str(key::V_ASPECT_MODE).unwrap_or("resize");
        let aspect_mode: AspectMode = match aspect.parse() {
            Ok(a) => a,
            Err(_) => bail_kind!(
                BadModel,
                "metadata key {ARCH_MPLUG_OWL2}.{} has unknown value {aspect:?}",
                key::V_ASPECT_MODE
            ),
        };
        let vision = VisionConfig {
            image_size: m.usize_nonzero(key::V_IMAGE_SIZE)?,
            patch_size: m.usize_nonzero(key::V_PATCH_SIZE)?,
            n_embd: m.usize_nonzero(key::V_EMBEDDING_LENGTH)?,
            n_ff: m.usize_nonzero(key::V_FEED_FORWARD_LENGTH)?,
            n_layer: m.usize_nonzero(key::V_BLOCK_COUNT)?,
            n_head: m.usize_nonzero(key::V_HEAD_COUNT)?,
            ln_eps: m.f32(key::V_LN_EPS)?,
            mean: m.f32_array::<3>(key::V_IMAGE_MEAN)?,
            std: m.f32_array::<3>(key::V_IMAGE_STD)?,
            aspect_mode,
            pad_color: m.u8_array3(key::V_PAD_COLOR)?,
        };
        if !vision.image_size.is_multiple_of(vision.patch_size)
            || !vision.n_embd.is_multiple_of(vision.n_head)
            || vision.image_size > 4096
        {
            bail_kind!(
                BadModel,
                "inconsistent vision shape: image {} patch {} width {} heads {}",
                vision.image_size,
                vision.patch_size,
                vision.n_embd,
                vision.n_head
            );
        }
        if vision.std.contains(&0.0) {
            bail_kind!(BadModel, "vision.image_std must not contain 0");
        }
        let abstractor = AbstractorConfig {
            n_query: m.usize_nonzero(key::A_QUERY_COUNT)?,
            n_embd: m.usize_nonzero(key::A_EMBEDDING_LENGTH)?,
            n_ff: m.usize_nonzero(key::A_FEED_FORWARD_LENGTH)?,
            n_layer: m.usize_nonzero(key::A_BLOCK_COUNT)?,
            n_head: m.usize_nonzero(key::A_HEAD_COUNT)?,
            ln_eps: m.f32(key::A_LN_EPS)?,
            ffn_ln_eps: m.f32(key::A_FFN_LN_EPS)?,
            grid_size: m.usize_nonzero(key::A_GRID_SIZE)?,
        };
        if abstractor.n_embd != vision.n_embd
            || abstractor.grid_size != vision.grid()
            || !abstractor.n_embd.is_multiple_of(abstractor.n_head)
        {
            bail_kind!(
                BadModel,
                "abstractor width {} / grid {} must match the vision tower ({} / {})",
                abstractor.n_embd,
                abstractor.grid_size,
                vision.n_embd,
                vision.grid()
            );
        }
        let image_tokens = abstractor.n_query + 1;
        if let Some(v) = gguf.get(&arch_key(&arch_name, key::IMAGE_TOKEN_COUNT)) {
            if v.as_u32() != Some(image_tokens as u32) {
                bail_kind!(
                    BadModel,
                    "{ARCH_MPLUG_OWL2}.{} disagrees with abstractor.query_count + 1 = {image_tokens}",
                    key::IMAGE_TOKEN_COUNT
                );
            }
        }
        Ok(Config {
            arch,
            name,
            text,
            vision: Some(vision),
            abstractor: Some(abstractor),
            image_tokens,
            generation,
        })
    }
}
