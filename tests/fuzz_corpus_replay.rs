//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) and every named crash
//! regression (`fuzz/regressions/<target>/`, if any) through the same harness functions the
//! libFuzzer targets run (`fuzz/harness/runtime.rs`), on the stable toolchain, so CI keeps
//! them passing without cargo-fuzz. The `pickle_reader` corpus is replayed by
//! `convert/tests/hostile_inputs.rs` (the harness needs owlet-convert).

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../fuzz/harness/runtime.rs"]
mod harness;

/// The corpus and regression files of one target, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for sub in ["corpus", "regressions"] {
        if let Ok(dir) = std::fs::read_dir(root.join(sub).join(target)) {
            files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

/// Runs `f` on every input of `target`; a panic names the file.
fn replay(target: &str, f: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let start = Instant::now();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| f(&bytes)).is_err() {
            panic!("{target}: {} fails the harness", path.display());
        }
    }
    eprintln!("{target}: {} inputs in {:?}", files.len(), start.elapsed());
}

#[test]
fn gguf_reader_corpus() {
    replay("gguf_reader", harness::gguf_reader);
}

#[test]
fn image_preprocess_corpus() {
    replay("image_preprocess", harness::image_preprocess);
}

#[test]
fn tokenize_corpus() {
    replay("tokenize", harness::tokenize);
}
