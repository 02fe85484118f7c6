//! owlet: mPLUG-Owl2 (ViT-L/14 + visual abstractor + LLaMA-2 with a Modality-Adaptive Module)
//! on CPUs, ARM boards and phones, from one self-contained GGUF file.
//!
//! Layers, bottom up (each depends only on the ones above it in this list):
//! - [`quant`]: ggml types (one row each: id, sizes, activation type, codec) and block layouts,
//!   scalar quantize/dequantize.
//! - [`kernels`]: dot products between weight blocks and activation blocks, one table per
//!   variant with a row per weight type (scalar twins + SIMD).
//! - [`gguf`]: zero-copy GGUF reader over a memory map, validated; streaming writer.
//! - [`ops`]: matmul, norms, attention, RoPE; the only place that spawns threads.
//! - [`kv_cache`]: the keys and values of past positions (f32 or f16, head-major), which the
//!   decoder writes and attention reads.
//! - [`image`], [`tokenizer`], [`prompt`], [`video`], [`sampling`], [`threads`]: inputs (images,
//!   text, chat prompts, which frames of a video are encoded), token sampling, and the default
//!   thread count (performance cores on ARM phones); none uses the model.
//! - `filecache` (crate-private): the per-user cache folder and SHA-256 of the on-disk caches.
//! - [`model`]: hyperparameters, the tensor-name table, the vision tower, the abstractor, the
//!   MAM LLaMA decoder, and the packed-weight cache.
//! - [`embed_cache`]: image embeddings computed once (in memory and in a folder).
//! - [`session`]: a conversation over an immutable [`model::Model`] (KV cache, scratch,
//!   images, sampling).
//! - [`score`]: Q-Align-style quality/aesthetics scores over a session.
//! - [`ffi`]: the C ABI (`include/owlet.h`) over sessions.
//!
//! Beside the layers: [`error`] (every layer's error type), [`npy`] (reads the goldens'
//! `.npy` arrays) and [`mod@bench`] (`owlet bench`, over all of them).

pub mod bench;
pub mod embed_cache;
pub mod error;
pub mod ffi;
pub(crate) mod filecache;
pub mod gguf;
pub mod image;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod npy;
pub mod ops;
pub mod prompt;
pub mod quant;
pub mod sampling;
pub mod score;
pub mod session;
pub mod threads;
pub mod tokenizer;
pub mod video;

pub use error::{Error, Result};

/// The README's Rust example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
