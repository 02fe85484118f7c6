//! The model: hyperparameters, weights (views into the memory-mapped GGUF) and the three
//! graphs (vision tower, visual abstractor, MAM LLaMA decoder).
//!
//! A [`Model`] is immutable and `Sync` once loaded; everything that changes during a
//! conversation (KV cache, positions, scratch) lives in a [`crate::session::Session`]. The
//! three graphs keep their activations the same way: in a scratch struct per graph
//! ([`text::TextScratch`], [`vision::VisionScratch`], [`abstractor::AbstractorScratch`]) whose
//! buffers are made on first use, sized for the largest input, and reused (`sized`).
//! A position's MAM copy is its [`Modality`]; LayerNorm weights are a `Norm`.

pub mod abstractor;
pub mod config;
pub mod names;
pub mod packed_cache;
pub mod text;
pub mod vision;

use std::path::Path;

use crate::error::{bail_kind, Error, ErrorKind, Result};
use crate::gguf::{Gguf, TensorInfo, Value};
use crate::kernels::{self, Kernels};
use crate::ops::matmul::{self, MatRef};
use crate::quant::GgmlType;
use crate::tokenizer::Tokenizer;

pub use config::{AbstractorConfig, Arch, Config, TextConfig, VisionConfig};
use names::{arch_key, gkey, key};
pub use packed_cache::{CacheStatus, LoadOptions, LoadReport, PackedCache};

/// A 2-D weight matrix inside the mapped file: `rows` outputs × `cols` inputs.
#[derive(Clone, Debug)]
pub struct Mat {
    info: TensorInfo,
    pub rows: usize,
    pub cols: usize,
    /// The rows repacked at load for the kernel variant's [`kernels::Packing`], if it has one
    /// for this type (shared by clones: a llama file's "visual" copies are the text ones).
    packed: Option<std::sync::Arc<matmul::PackedWeights>>,
}

impl Mat {
    pub fn typ(&self) -> GgmlType {
        self.info.typ
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// The first `n` elements of `buf`, grown (never shrunk) to hold them. The three graphs keep
/// their activations in such buffers ([`text::TextScratch`], [`vision::VisionScratch`],
/// [`abstractor::AbstractorScratch`], kept by a session): made on first use, sized for the
/// largest input seen, then reused, because fresh multi-megabyte allocations in every layer
/// cost a page fault on each first touch.
pub(crate) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// A linear layer with a bias, `y = x Wᵀ + b` (the vision tower's and the abstractor's).
pub(crate) struct Linear {
    pub w: Mat,
    pub b: Vec<f32>,
}

/// A LayerNorm's gain and bias.
pub(crate) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Norm {
    /// `x = LayerNorm(x)` row by row (rows of `weight.len()`).
    pub fn apply(&self, x: &mut [f32], eps: f32) {
        crate::ops::layer_norm(x, &self.weight, &self.bias, eps);
    }
}

/// Which copy of the Modality-Adaptive Module's tensors a position goes through: upstream's
/// `modality_indicators` (0 text, 1 image), the index `m` of its `multiway.{m}` modules.
/// In a GGUF file the text copy keeps the plain llama.cpp name and the visual one gets
/// [`names::VIS_SUFFIX`] (see [`names::blk()`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Modality {
    Text,
    Visual,
}

impl Modality {
    /// Both modalities, in upstream's multiway order.
    pub const ALL: [Modality; 2] = [Modality::Text, Modality::Visual];

    /// Upstream's multiway index (`model.layers.{i}.{module}.multiway.{index}`).
    pub fn multiway_index(self) -> usize {
        match self {
            Modality::Text => 0,
            Modality::Visual => 1,
        }
    }

    /// What this copy appends to a tensor's llama.cpp name.
    pub fn suffix(self) -> &'static str {
        match self {
            Modality::Text => "",
            Modality::Visual => names::VIS_SUFFIX,
        }
    }
}

/// One value per [`Modality`] (the MAM's two copies of a tensor).
#[derive(Clone, Debug)]
pub(crate) struct PerModality<T> {
    pub text: T,
    pub visual: T,
}

impl<T> PerModality<T> {
    pub fn get(&self, m: Modality) -> &T {
        match m {
            Modality::Text => &self.text,
            Modality::Visual => &self.visual,
        }
    }
}

/// An immutable, loaded model.
pub struct Model {
    pub config: Config,
    gguf: Gguf,
    tokenizer: Tokenizer,
    pub(crate) text: text::TextWeights,
    pub(crate) vision: Option<vision::VisionWeights>,
    pub(crate) abstractor: Option<abstractor::AbstractorWeights>,
    /// The kernel variant chosen at load.
    kernels: &'static Kernels,
    /// What identifies the vision tower and abstractor (see `embed_cache::vision_identity`),
    /// computed when first needed.
    pub(crate) vision_id: std::sync::OnceLock<[u8; 32]>,
    /// What the load did about packed weights (packed, mapped from a cache file, ...).
    load_report: LoadReport,
}

impl Model {
    /// Memory-maps and validates a GGUF file (`mplug-owl2` from owlet-convert, or a llama.cpp
    /// `llama` file for text only). Every tensor the graph uses is checked for presence, type
    /// and shape before any compute.
    pub fn load(path: &Path) -> Result<Model> {
        let kernels = kernels::select().map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        Model::load_with_kernels(path, kernels)
    }

    /// [`Model::load`] with an explicit kernel variant (one of [`kernels::available`]) instead
    /// of the `OWLET_KERNELS`/best-available choice: lets tests and benchmarks compare variants
    /// in one process.
    pub fn load_with_kernels(path: &Path, kernels: &'static Kernels) -> Result<Model> {
        Model::load_with_options(
            path,
            &LoadOptions {
                kernels: Some(kernels),
                packed_cache: PackedCache::Off,
            },
        )
    }

    /// [`Model::load`] with options: the kernel variant, and a packed-weight cache
    /// ([`packed_cache`]): where the variant repacks weights, the first load writes them to a
    /// cache file and later loads map that file instead of packing. A cache that cannot be
    /// used never fails the load: the weights are then packed as without one, and
    /// [`Model::load_report`] says why in one line.
    pub fn load_with_options(path: &Path, opts: &LoadOptions) -> Result<Model> {
        let kernels = match opts.kernels {
            Some(k) => k,
            None => kernels::select().map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?,
        };
        // The reader's errors already name the path; a missing file stays an Io error.
        let gguf = Gguf::open(path).map_err(Error::from)?;
        Model::build(gguf, kernels, &opts.packed_cache)
            .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
    }

    /// Builds a model over an already parsed file.
    pub fn from_gguf(gguf: Gguf) -> Result<Model> {
        let kernels = kernels::select().map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        Model::build(gguf, kernels, &PackedCache::Off)
    }

    /// [`Model::from_gguf`] with an explicit kernel variant. With [`kernels::GENERIC`] (which
    /// repacks nothing) it is the cheapest full validation of a file: the converter's
    /// self-check, which must not hold a repacked copy of a 7B model in memory.
    pub fn from_gguf_with_kernels(gguf: Gguf, kernels: &'static Kernels) -> Result<Model> {
        Model::build(gguf, kernels, &PackedCache::Off)
    }

    fn build(gguf: Gguf, kernels: &'static Kernels, cache: &PackedCache) -> Result<Model> {
        let config = Config::from_gguf(&gguf)?;
        let tokenizer = load_tokenizer(&gguf)?;
        if tokenizer.vocab_size() != config.text.n_vocab {
            bail_kind!(
                BadModel,
                "the vocabulary has {} tokens but the model expects {}",
                tokenizer.vocab_size(),
                config.text.n_vocab
            );
        }
        let ld = Loader { gguf: &gguf };
        let mut text = text::TextWeights::load(&ld, &config)?;
        let (mut vision, mut abstractor) = match (&config.vision, &config.abstractor) {
            (Some(v), Some(a)) => (
                Some(vision::VisionWeights::load(&ld, v)?),
                Some(abstractor::AbstractorWeights::load(
                    &ld,
                    a,
                    v,
                    &config.text,
                )?),
            ),
            _ => (None, None),
        };
        let mats: Vec<&mut Mat> = text
            .matrices_mut()
            .chain(vision.iter_mut().flat_map(|v| v.matrices_mut()))
            .chain(abstractor.iter_mut().flat_map(|a| a.matrices_mut()))
            .collect();
        let load_report = packed_cache::pack_all(&gguf, kernels, mats, cache);
        Ok(Model {
            config,
            gguf,
            tokenizer,
            text,
            vision,
            abstractor,
            kernels,
            vision_id: std::sync::OnceLock::new(),
            load_report,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The underlying file (metadata, tensor table).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// Whether the model can take images.
    pub fn has_vision(&self) -> bool {
        self.vision.is_some()
    }

    /// Checks that the model's file was not changed or truncated since it was loaded (see
    /// [`Gguf::check_unchanged`]): the weights are read from the memory-mapped file, so a file
    /// shrunk under a running model faults (SIGBUS) instead of failing. Sessions call it before
    /// every image encoding, prefill and generated token; the error names the file and says to
    /// reload the model.
    pub fn check_file(&self) -> Result<()> {
        self.gguf.check_unchanged().map_err(Error::from)
    }

    /// The kernel variant in use (`generic`, `avx2`, ...).
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// What the load did about packed weights: how many matrices it packed or mapped from a
    /// cache file, and one line for each cache problem it met (the CLI prints them).
    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    pub(crate) fn mat<'a>(&'a self, m: &'a Mat) -> MatRef<'a> {
        MatRef {
            typ: m.info.typ,
            rows: m.rows,
            cols: m.cols,
            data: self.gguf.tensor_bytes(&m.info),
            packed: m.packed.as_deref().map(|p| &**p),
        }
    }

    /// `y = x Wᵀ + b` for a [`Linear`].
    pub(crate) fn affine(&self, l: &Linear, x: &[f32]) -> Vec<f32> {
        self.linear(&l.w, Some(&l.b), x)
    }

    /// `y = x Wᵀ + b` into `y` (`rows × l.w.rows`) for a [`Linear`].
    pub(crate) fn affine_into(&self, l: &Linear, x: &[f32], y: &mut [f32]) {
        self.linear_into(&l.w, x, y);
        crate::ops::add_bias(y, &l.b);
    }

    /// `y = x Wᵀ` into `y` (`rows × m.rows`) for `x` of `rows × m.cols`.
    pub(crate) fn linear_into(&self, m: &Mat, x: &[f32], y: &mut [f32]) {
        matmul::matmul(self.kernels, self.mat(m), x, y);
    }

    /// `y = x Wᵀ (+ bias)` for `x` of `rows × m.cols`.
    pub(crate) fn linear(&self, m: &Mat, bias: Option<&[f32]>, x: &[f32]) -> Vec<f32> {
        let n_rows = x.len() / m.cols;
        let mut y = vec![0f32; n_rows * m.rows];
        matmul::matmul(self.kernels, self.mat(m), x, &mut y);
        if let Some(b) = bias {
            crate::ops::add_bias(&mut y, b);
        }
        y
    }
}

fn load_tokenizer(gguf: &Gguf) -> Result<Tokenizer> {
    let model = gguf
        .get(gkey::TOK_MODEL)
        .and_then(Value::as_str)
        .unwrap_or("");
    if model != "llama" {
        bail_kind!(
            BadModel,
            "tokenizer.ggml.model is {model:?}; owlet supports the LLaMA SentencePiece tokenizer (\"llama\")"
        );
    }
    let arr = |k: &str| -> Result<&[Value]> {
        match gguf.get(k).and_then(Value::as_array) {
            Some(a) => Ok(a.items.as_slice()),
            None => bail_kind!(BadModel, "metadata key {k} is missing or not an array"),
        }
    };
    let mut tokens = Vec::new();
    for v in arr(gkey::TOK_TOKENS)? {
        match v.as_str() {
            Some(s) => tokens.push(s.to_string()),
            None => bail_kind!(BadModel, "{} must hold strings", gkey::TOK_TOKENS),
        }
    }
    // Mistyped arrays (scores declared i8, types as strings, a type past i32) are refused
    // rather than read as defaults or truncated: in llama.cpp the same type confusion was a
    // memory-safety bug, here it would silently change the tokenization.
    let scores: Vec<f32> = match gguf.get(gkey::TOK_SCORES) {
        Some(_) => {
            let mut out = Vec::new();
            for v in arr(gkey::TOK_SCORES)? {
                match v.as_f32() {
                    Some(x) => out.push(x),
                    None => bail_kind!(BadModel, "{} must hold floats", gkey::TOK_SCORES),
                }
            }
            out
        }
        None => vec![0.0; tokens.len()],
    };
    let types: Vec<i32> = match gguf.get(gkey::TOK_TYPES) {
        Some(_) => {
            let mut out = Vec::new();
            for (i, v) in arr(gkey::TOK_TYPES)?.iter().enumerate() {
                match (v.as_i64(), v.as_i64().and_then(|t| i32::try_from(t).ok())) {
                    (_, Some(t)) => out.push(t),
                    (Some(t), None) => bail_kind!(
                        BadModel,
                        "{}[{i}] = {t} is not a known token type",
                        gkey::TOK_TYPES
                    ),
                    (None, _) => bail_kind!(BadModel, "{} must hold integers", gkey::TOK_TYPES),
                }
            }
            out
        }
        None => vec![1; tokens.len()],
    };
    // Absent keys take llama.cpp's defaults; present ones must have the right type.
    let id = |k: &str, default: u32| -> Result<u32> {
        Ok(config::opt_key(gguf, k, "a token id", Value::as_u32)?.unwrap_or(default))
    };
    let flag = |k: &str| config::opt_key(gguf, k, "a bool", Value::as_bool);
    let add_bos = flag(gkey::TOK_ADD_BOS)?.unwrap_or(true);
    if flag(gkey::TOK_ADD_EOS)? == Some(true) {
        bail_kind!(
            BadModel,
            "metadata key {} is true; owlet never appends </s> to a prompt (LLaMA's tokenizer does not)",
            gkey::TOK_ADD_EOS
        );
    }
    // transformers 4.31 (the version upstream pins) assumes legacy = true when the flag is absent.
    let legacy = flag(&arch_key(names::ARCH_MPLUG_OWL2, key::TOKENIZER_LEGACY))?.unwrap_or(true);
    Tokenizer::from_arrays(
        tokens,
        scores,
        types,
        id(gkey::TOK_BOS, 1)?,
        id(gkey::TOK_EOS, 2)?,
        id(gkey::TOK_UNK, 0)?,
        add_bos,
        legacy,
    )
    .map_err(|e| Error::new(ErrorKind::BadModel, format!("tokenizer: {e}")))
}

/// Looks tensors up with shape and type checks whose errors name the tensor.
pub(crate) struct Loader<'a> {
    pub gguf: &'a Gguf,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        match self.gguf.tensor(name) {
            Some(t) => Ok(t),
            None => bail_kind!(
                BadModel,
                "tensor {name} is missing; the file is incomplete or was written by an older owlet-convert: re-run owlet-convert"
            ),
        }
    }

    /// A weight matrix `[rows, cols]` (GGUF dims `[cols, rows]`; a 4-D patch kernel may be
    /// given as `[.., .., .., rows]` whose first three dims multiply to `cols`).
    pub fn mat(&self, name: &str, rows: usize, cols: usize) -> Result<Mat> {
        let t = self.info(name)?;
        let d = &t.dims;
        let inner: u64 = d.iter().take(d.len().saturating_sub(1)).product();
        let outer = d.last().copied().unwrap_or(0);
        if d.len() < 2 || inner != cols as u64 || outer != rows as u64 {
            bail_kind!(
                BadModel,
                "tensor {name} has shape {:?} (GGUF order), expected [{cols}, {rows}]",
                d
            );
        }
        if !matmul::supported(t.typ) {
            bail_kind!(
                BadModel,
                "tensor {name} has type {} which owlet cannot multiply",
                t.typ
            );
        }
        Ok(Mat {
            info: t.clone(),
            rows,
            cols,
            packed: None,
        })
    }

    /// Any tensor with exactly `n` elements, dequantized to f32.
    pub fn vec(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        if t.n_elements() != n as u64 {
            bail_kind!(
                BadModel,
                "tensor {name} has {} elements (shape {:?}), expected {n}",
                t.n_elements(),
                t.dims
            );
        }
        let mut out = vec![0f32; n];
        let bytes = self.gguf.tensor_bytes(t);
        if crate::quant::dequantize_row(t.typ, bytes, &mut out).is_err() {
            bail_kind!(
                BadModel,
                "tensor {name} of type {} cannot be read as floats",
                t.typ
            );
        }
        Ok(out)
    }

    /// `{prefix}.weight` (`[rows, cols]`) and `{prefix}.bias` (`[rows]`).
    pub fn linear(&self, prefix: &str, rows: usize, cols: usize) -> Result<Linear> {
        Ok(Linear {
            w: self.mat(&format!("{prefix}.weight"), rows, cols)?,
            b: self.vec(&format!("{prefix}.bias"), rows)?,
        })
    }

    /// `{prefix}.weight` and `{prefix}.bias`, both `[n]`.
    pub fn norm(&self, prefix: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.vec(&format!("{prefix}.weight"), n)?,
            bias: self.vec(&format!("{prefix}.bias"), n)?,
        })
    }

    /// Whether a tensor exists.
    pub fn has(&self, name: &str) -> bool {
        self.gguf.tensor(name).is_some()
    }
}
