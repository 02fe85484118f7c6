//! owlet-convert: reads Hugging Face mPLUG-Owl2 checkpoints (PyTorch `.bin` zip pickles or
//! safetensors, sharded or not) without Python and writes one self-contained GGUF.
//!
//! Input side: [`pickle`] (a non-executing pickle VM), [`torch_zip`], [`safetensors`],
//! [`checkpoint`] (directory layouts and indices), [`spm`] (SentencePiece `tokenizer.model`),
//! [`hfconfig`]. Output side: [`plan`] (tensor names, shapes, types, reorderings), [`convert`]
//! (streaming), [`output`] (atomic writing, temporaries, signals), [`synth`] (with [`torch_writer`]), [`inspect`].

pub mod checkpoint;
pub mod convert;
pub mod hfconfig;
pub mod inspect;
pub mod output;
pub mod pickle;
pub mod plan;
pub mod safetensors;
pub mod spm;
pub mod synth;
pub mod torch_writer;
pub mod torch_zip;
