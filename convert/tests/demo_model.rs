//! The committed demo model `models/owl2-tiny-a-f16.gguf` (the `owlet` CLI's default `-m`) is
//! exactly what `scripts/make_models.sh` produces from the fixture checkpoint today: converting
//! again must give the same bytes, so the file can never silently go stale.

use std::path::{Path, PathBuf};

use owlet::quant::GgmlType;
use owlet_convert::convert::convert_dir;
use owlet_convert::plan::{Options, Preset};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn committed_demo_model_is_byte_identical_to_a_fresh_conversion() {
    let committed = repo("models/owl2-tiny-a-f16.gguf");
    let want = std::fs::read(&committed)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_models.sh)", committed.display()));

    let dir = std::env::temp_dir().join(format!("owlet-demo-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("owl2-tiny-a-f16.gguf");
    // The same settings as scripts/make_models.sh: --type f16 --vision-type f16.
    let opts = Options {
        preset: Preset::F16,
        vision_type: GgmlType::F16,
        text_only: false,
        name: None,
    };
    convert_dir(
        &repo("tests/data/owl2-tiny-a/checkpoint"),
        &out,
        &opts,
        true,
    )
    .unwrap();
    let got = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        got.len(),
        want.len(),
        "size differs: re-run scripts/make_models.sh and commit the result"
    );
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("the committed demo model differs from a fresh conversion at byte {i}: re-run scripts/make_models.sh and commit the result");
    }
}
