//! owlet-convert library: readers for Hugging Face checkpoints (and, later, the
//! GGUF writer used by the `owlet-convert` binary).

pub mod checkpoint;
pub mod pickle;
pub mod safetensors;
pub mod torch_zip;
