//! Hyperparameters read from GGUF metadata, validated before any tensor is touched.

use crate::error::{bail_kind, Result};
use crate::gguf::{Gguf, Value};
use crate::image::AspectMode;
use crate::model::names::{
    arch_key, blk, gkey, key, ARCH_LLAMA, ARCH_MPLUG_OWL2, IMAGE_PLACEHOLDER, VIS_SUFFIX,
};

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

impl<'a> Meta<'a> {
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
    /// An optional float: absent is `None`; present, it must be a finite f32/f64.
    pub fn opt_f32(&self, k: &str) -> Result<Option<f32>> {
        opt_key(self.gguf, &arch_key(self.arch, k), "a finite float", |v| {
            v.as_f32().filter(|x| x.is_finite())
        })
    }
    /// An optional unsigned integer (any integer type whose value fits in u32).
    pub fn opt_u32(&self, k: &str) -> Result<Option<u32>> {
        opt_key(
            self.gguf,
            &arch_key(self.arch, k),
            "an unsigned integer",
            Value::as_u32,
        )
    }
    pub fn opt_bool(&self, k: &str) -> Result<Option<bool>> {
        opt_key(self.gguf, &arch_key(self.arch, k), "a bool", Value::as_bool)
    }
    pub fn opt_str(&self, k: &str) -> Result<Option<&str>> {
        opt_key(
            self.gguf,
            &arch_key(self.arch, k),
            "a string",
            Value::as_str,
        )
    }
    /// A key recording a choice owlet has exactly one implementation of (the converter
    /// writes it so that other tools know): absent, or present with `implemented`, is fine;
    /// anything else would run silently wrong, so it is refused, naming the key and value.
    pub fn only<T: PartialEq + std::fmt::Debug>(
        &self,
        k: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
        implemented: T,
    ) -> Result<()> {
        let k = arch_key(self.arch, k);
        match opt_key(self.gguf, &k, want, get)? {
            Some(v) if v != implemented => bail_kind!(
                BadModel,
                "metadata key {k} is {}; owlet implements only {implemented:?}",
                shown(self.gguf.get(&k).expect("present"))
            ),
            _ => Ok(()),
        }
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

/// The optional key `k` read with `get`: `None` when absent, an error naming the key, the
/// expected kind (`want`) and what the file holds when `get` refuses the value (a mistyped or
/// out-of-range value is never replaced by a default).
pub(crate) fn opt_key<'a, T>(
    gguf: &'a Gguf,
    k: &str,
    want: &str,
    get: impl Fn(&'a Value) -> Option<T>,
) -> Result<Option<T>> {
    match gguf.get(k) {
        None => Ok(None),
        Some(v) => match get(v) {
            Some(x) => Ok(Some(x)),
            None => bail_kind!(
                BadModel,
                "metadata key {k} must be {want}, but it is {} {}",
                v.value_type(),
                shown(v)
            ),
        },
    }
}

/// A value for an error message, long strings and arrays cut short.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
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
            // llama.cpp's default when the key is absent; present, it must be usable.
            rope_base: opt_key(
                gguf,
                &arch_key(&arch_name, key::ROPE_FREQ_BASE),
                "a finite positive float",
                |v| v.as_f32().filter(|x| x.is_finite() && *x > 0.0),
            )?
            .unwrap_or(10000.0),
            rope_dim,
            // llama.cpp's converter always permutes; owlet-convert records it explicitly.
            qk_permuted: m.opt_bool(key::ROPE_QK_PERMUTED)?.unwrap_or(true),
        };
        if text.rms_eps <= 0.0 {
            bail_kind!(
                BadModel,
                "metadata key {} must be positive",
                arch_key(&arch_name, key::RMS_EPS)
            );
        }
        let generation = GenerationDefaults {
            temperature: m.opt_f32(key::GEN_TEMPERATURE)?,
            top_p: m.opt_f32(key::GEN_TOP_P)?,
            top_k: m.opt_u32(key::GEN_TOP_K)?,
        };
        m.opt_u32(key::GEN_MAX_NEW_TOKENS)?;
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

        check_implemented(&m)?;
        let aspect = m.opt_str(key::V_ASPECT_MODE)?.unwrap_or("resize");
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

/// The keys of an `mplug-owl2` file that describe choices owlet implements one way only (the
/// Modality-Adaptive Module, the image placeholder, the vision tower's activation, class token
/// and resampler): each must be absent or say exactly that.
fn check_implemented(m: &Meta<'_>) -> Result<()> {
    m.only(
        key::MAM_MODALITY_COUNT,
        "an unsigned integer",
        Value::as_u32,
        2,
    )?;
    m.only(
        key::MAM_VISUAL_SUFFIX,
        "a string",
        Value::as_str,
        VIS_SUFFIX,
    )?;
    // The set of duplicated tensors, in any order.
    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v
    }
    m.only(
        key::MAM_TENSORS,
        "an array of strings",
        |v| v.as_array().and_then(|a| a.as_strs()).map(sorted),
        sorted(blk::MAM.to_vec()),
    )?;
    m.only(
        key::IMAGE_PLACEHOLDER,
        "a string",
        Value::as_str,
        IMAGE_PLACEHOLDER,
    )?;
    // CLIP's x * sigmoid(1.702 x) (`ops::quick_gelu`).
    m.only(key::V_ACTIVATION, "a string", Value::as_str, "quick_gelu")?;
    m.only(key::V_HAS_CLASS_TOKEN, "a bool", Value::as_bool, true)?;
    // Pillow's bicubic (`image::resize_bicubic`).
    m.only(key::V_RESAMPLE, "a string", Value::as_str, "bicubic")?;
    Ok(())
}
