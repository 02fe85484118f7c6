//! libFuzzer entry point for [`harness::pickle_reader`] (see `fuzz/harness/mod.rs`).
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::pickle_reader(data));
