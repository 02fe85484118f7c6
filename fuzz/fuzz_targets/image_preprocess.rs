//! libFuzzer entry point for [`harness::image_preprocess`] (see `fuzz/harness/mod.rs`).
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::image_preprocess(data));
