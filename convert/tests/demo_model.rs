//! The committed models are exactly what `scripts/make_models.sh` produces from their
//! checkpoints today: converting again must give the same bytes, so a file can never silently
//! go stale. `models/owl2-tiny-a-f16.gguf` is the `owlet` CLI's default `-m` today;
//! `models/owlet-shapes-q8_0.gguf` (issue 12) is to become it.

use std::path::{Path, PathBuf};

use owlet::quant::GgmlType;
use owlet_convert::convert::convert_dir;
use owlet_convert::plan::{Options, Preset};

#[path = "../../tests/common/scratch.rs"]
mod scratch;
use scratch::TempDir;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Converts `checkpoint` with `opts` and asserts the result equals the committed file `rel`.
fn assert_fresh_conversion(checkpoint: &str, rel: &str, opts: &Options) {
    let committed = repo(rel);
    let want = std::fs::read(&committed)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_models.sh)", committed.display()));

    let dir = TempDir::new(env!("CARGO_TARGET_TMPDIR"), "owlet-demo-model", "out");
    let name = Path::new(rel).file_name().unwrap();
    let out = dir.join(name);
    convert_dir(&repo(checkpoint), &out, opts, true).unwrap();
    let got = std::fs::read(&out).unwrap();
    drop(dir);

    assert_eq!(
        got.len(),
        want.len(),
        "{rel}: size differs: re-run scripts/make_models.sh and commit the result"
    );
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{rel} differs from a fresh conversion at byte {i}: re-run scripts/make_models.sh and commit the result");
    }
}

#[test]
fn committed_demo_model_is_byte_identical_to_a_fresh_conversion() {
    // The same settings as scripts/make_models.sh: --type f16 --vision-type f16.
    let opts = Options {
        preset: Preset::F16,
        vision_type: GgmlType::F16,
        text_only: false,
        name: None,
    };
    assert_fresh_conversion(
        "tests/data/owl2-tiny-a/checkpoint",
        "models/owl2-tiny-a-f16.gguf",
        &opts,
    );
}

#[test]
fn committed_owlet_shapes_model_is_byte_identical_to_a_fresh_conversion() {
    // The same settings as scripts/make_models.sh: --type q8_0 --vision-type q8_0.
    let opts = Options {
        preset: Preset::Q8_0,
        vision_type: GgmlType::Q8_0,
        text_only: false,
        name: None,
    };
    assert_fresh_conversion(
        "models/owlet-shapes/checkpoint",
        "models/owlet-shapes-q8_0.gguf",
        &opts,
    );
}
