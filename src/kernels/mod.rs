//! Dot products between a row of weight blocks and a row of activations.
//!
//! Each kernel takes the element count `n`, the weight row as raw block bytes (as stored in a
//! GGUF file, possibly unaligned) and the activation row in the weight type's
//! [`crate::quant::vec_dot_type`] (quantized blocks, or f32 for float weights), and returns one
//! f32. Kernels know no model names, spawn no threads and allocate nothing.
//!
//! - [`generic`]: portable scalar kernels that compute what ggml's scalar (`*_generic`) vec_dot
//!   functions compute — integer sums inside each block, then scaling and accumulation in f32
//!   in the same order — so that results match ggml closely. They are the reference ("scalar
//!   twins") that the SIMD variants (`avx2.rs`, `neon.rs`, to come) are tested against.

pub mod generic;
