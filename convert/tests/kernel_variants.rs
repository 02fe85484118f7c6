//! Every kernel variant this CPU can run, forced at load, keeps the tiny fixture's logits
//! within the golden tolerances, and every variant gives bitwise the same logits for every
//! thread count; on aarch64 the NEON variants (`neon`, `neon-dotprod`, `neon-i8mm`) give
//! bitwise the same logits as each other, packed tiles or not.

use std::path::{Path, PathBuf};

use owlet::image::{self, AspectMode, ImageLimits};
use owlet::kv_cache::KvType;
use owlet::model::Model;
use owlet::npy;
use owlet::quant::GgmlType;
use owlet::session::{Session, SessionOptions};
use owlet_convert::convert::convert_dir;
use owlet_convert::plan::{Options, Preset};

#[path = "../../tests/common/scratch.rs"]
mod scratch;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

fn golden(name: &str) -> npy::NpyArray {
    npy::read(&data(&format!("owl2-tiny-a/golden/{name}.npy"))).unwrap()
}

fn converted(preset: Preset, vision: GgmlType) -> PathBuf {
    let dir = scratch::run_dir(env!("CARGO_TARGET_TMPDIR"), "owlet-variants", None);
    let out = dir.join(format!("tiny-{}-{}.gguf", preset.name(), vision.name()));
    if !out.exists() {
        let opts = Options {
            preset,
            vision_type: vision,
            text_only: false,
            name: None,
        };
        convert_dir(&data("owl2-tiny-a/checkpoint"), &out, &opts, true).unwrap();
    }
    out
}

/// All logits of the `mm` case (coffee image, resize mode) with `threads` threads.
fn mm_logits(m: &Model, threads: usize) -> Vec<f32> {
    let opts = SessionOptions {
        threads,
        kv_type: KvType::F32,
        n_ctx: None,
    };
    let mut s = Session::new(m, opts).unwrap();
    let img = image::load(&data("assets/coffee.png"), &ImageLimits::default()).unwrap();
    let emb = s.embed_image(&img, Some(AspectMode::Resize)).unwrap();
    s.prefill(&golden("mm_input_ids").to_i64(), &[&emb], true, None)
        .unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// f32 weights: every variant within the golden's 2e-5 of the f64 logits (last 4 positions).
#[test]
fn every_variant_matches_f64_golden() {
    let path = converted(Preset::F32, GgmlType::F32);
    let last4 = golden("mm_logits_last4_f64").to_f64();
    for k in owlet::kernels::available() {
        let m = Model::load_with_kernels(&path, k).unwrap();
        assert_eq!(m.kernels().name, k.name);
        let logits = mm_logits(&m, 2);
        let tail = &logits[logits.len() - last4.len()..];
        let d = tail
            .iter()
            .zip(&last4)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0.0, f64::max);
        assert!(
            d <= 2e-5,
            "{}: last-4 logits max |Δ| {d:.3e} > 2e-5",
            k.name
        );
    }
}

/// Quantized weights: every variant's logits stay next to the generic ones, and each variant
/// gives bitwise identical logits with 1, 2 and 3 threads.
#[test]
fn quantized_variants_agree_and_ignore_thread_count() {
    for (preset, vt) in [
        (Preset::Q4_0, GgmlType::Q8_0),
        (Preset::Q4KM, GgmlType::Q8_0),
        (Preset::Q8_0, GgmlType::Q8_0),
        (Preset::F16, GgmlType::F16),
    ] {
        let path = converted(preset, vt);
        let generic = mm_logits(
            &Model::load_with_kernels(&path, &owlet::kernels::GENERIC).unwrap(),
            2,
        );
        let absmax = generic.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut neon: Option<(&str, Vec<f32>)> = None;
        for k in owlet::kernels::available() {
            let m = Model::load_with_kernels(&path, k).unwrap();
            let one = mm_logits(&m, 1);
            if k.name.starts_with("neon") {
                match &neon {
                    None => neon = Some((k.name, one.clone())),
                    Some((first, logits)) => assert!(
                        logits
                            .iter()
                            .zip(&one)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{}: {} and {first} logits differ",
                        preset.name(),
                        k.name
                    ),
                }
            }
            for threads in [2, 3] {
                let other = mm_logits(&m, threads);
                assert!(
                    one.iter()
                        .zip(&other)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {}: logits differ between 1 and {threads} threads",
                    preset.name(),
                    k.name
                );
            }
            let d = max_abs(&one, &generic);
            assert!(
                d <= 1e-3 * absmax.max(1.0),
                "{} {}: logits {d:.3e} from the generic variant's (absmax {absmax})",
                preset.name(),
                k.name
            );
        }
    }
}
