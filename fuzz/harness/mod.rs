//! The fuzz harness bodies, shared by the libFuzzer targets in `fuzz_targets/` and by the
//! stable-toolchain replay tests (`tests/fuzz_corpus_replay.rs` includes [`runtime`],
//! `convert/tests/hostile_inputs.rs` includes [`convert`]), so a committed corpus file runs
//! through exactly the code the fuzzer ran.
//!
//! Each function takes arbitrary bytes, must return normally for every input (errors are fine)
//! and asserts the invariants that should hold for accepted inputs; a panic is a finding.

#![allow(dead_code)]

#[path = "convert.rs"]
pub mod convert;
#[path = "runtime.rs"]
pub mod runtime;

pub use convert::pickle_reader;
pub use runtime::{gguf_reader, image_preprocess, tokenize};
