//! libFuzzer entry point for [`harness::gguf_reader`] (see `fuzz/harness/mod.rs`).
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gguf_reader(data));
