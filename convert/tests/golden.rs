//! End to end against the upstream PyTorch goldens of `tests/data/owl2-tiny-a`: the fixture
//! checkpoint is converted with owlet-convert, loaded by the runtime, and every stage compared
//! with the tolerances of the fixture's README (f32 logits within 2e-5 of the f64 reference,
//! intermediates within 1e-4·max(1, absmax), pixels within 1e-6, uint8 images equal).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use owlet::image::{self, AspectMode, ImageLimits};
use owlet::kv_cache::KvType;
use owlet::model::text::TextTrace;
use owlet::model::Model;
use owlet::npy;
use owlet::quant::GgmlType;
use owlet::session::{ImageEmbedding, Session, SessionOptions};
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

/// Converts the f16 `.bin` checkpoint once per preset into a temporary directory.
fn converted(preset: Preset, vision: GgmlType, text_only: bool) -> PathBuf {
    let dir = scratch::run_dir(env!("CARGO_TARGET_TMPDIR"), "owlet-golden", None);
    let out = dir.join(format!(
        "tiny-{}-{}-{}.gguf",
        preset.name(),
        vision.name(),
        text_only
    ));
    if !out.exists() {
        let opts = Options {
            preset,
            vision_type: vision,
            text_only,
            name: None,
        };
        convert_dir(&data("owl2-tiny-a/checkpoint"), &out, &opts, true).unwrap();
    }
    out
}

fn f32_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(&converted(Preset::F32, GgmlType::F32, false)).unwrap())
}

fn session(m: &Model) -> Session<'_> {
    Session::new(
        m,
        SessionOptions {
            threads: 2,
            kv_type: KvType::F32,
            n_ctx: None,
        },
    )
    .unwrap()
}

/// max |a − b|
fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

fn assert_stage(name: &str, ours: &[f32], golden: &npy::NpyArray) {
    let g = golden.to_f64();
    let absmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = 1e-4 * absmax.max(1.0);
    let d = max_abs(ours, &g);
    assert!(d <= tol, "{name}: max |Δ| {d:.3e} > {tol:.3e}");
}

/// Image rows for a case, checking the preprocessing and vision stages on the way.
fn image_for_case(s: &Session<'_>, case: &str, file: &str, mode: AspectMode) -> ImageEmbedding {
    let img = image::load(&data(&format!("assets/{file}")), &ImageLimits::default()).unwrap();
    let p = s.preprocess_config(Some(mode)).unwrap();
    let u8img = image::preprocess_u8(&img, &p);
    assert_eq!(
        u8img.data,
        golden(&format!("{case}_resized_u8")).data,
        "{case}: resized uint8 image"
    );
    let px = image::preprocess(&img, &p);
    assert!(max_abs(&px, &golden(&format!("{case}_pixel_values_f32")).to_f64()) <= 1e-6);
    let m = s.model();
    let feats = m.encode_image(&px).unwrap();
    assert_stage(
        &format!("{case} vit"),
        &feats,
        &golden(&format!("{case}_vit_last_hidden_f32")),
    );
    let rows = m.abstract_image(&feats).unwrap();
    assert_stage(
        &format!("{case} abstractor"),
        &rows,
        &golden(&format!("{case}_image_features_f32")),
    );
    s.embed_pixels(&px).unwrap()
}

/// Runs a case's ids and checks embeddings, layers, final norm and logits.
fn check_case(case: &str, images: &[&ImageEmbedding], m: &Model, strict: bool) -> Vec<f32> {
    let mut s = session(m);
    let ids = golden(&format!("{case}_input_ids")).to_i64();
    let mut tr = TextTrace::default();
    let logits = s.prefill(&ids, images, true, Some(&mut tr)).unwrap();
    let v = m.config.text.n_vocab;
    let t = logits.len() / v;
    assert_eq!(t, golden(&format!("{case}_modality_indicators")).len());
    if strict {
        assert_stage(
            &format!("{case} inputs_embeds"),
            &tr.inputs_embeds,
            &golden(&format!("{case}_inputs_embeds_f32")),
        );
        let layers = golden(&format!("{case}_layer_outputs_f32")).to_f32();
        let per = layers.len() / tr.layer_outputs.len();
        for (l, ours) in tr.layer_outputs.iter().enumerate() {
            let g = npy::NpyArray {
                shape: vec![per],
                dtype: npy::NpyDtype::F32,
                data: layers[l * per..(l + 1) * per]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            assert_stage(&format!("{case} layer {l}"), ours, &g);
        }
        assert_stage(
            &format!("{case} final norm"),
            &tr.final_norm,
            &golden(&format!("{case}_final_norm_f32")),
        );
    }
    // Last 4 positions in full against the f64 reference.
    let last4 = golden(&format!("{case}_logits_last4_f64")).to_f64();
    let d = max_abs(&logits[(t - 4) * v..], &last4);
    eprintln!("{case}: last-4 logits max abs delta vs f64 = {d:.3e}");
    if strict {
        assert!(d <= 2e-5, "{case}: last-4 logits max |Δ| {d:.3e} > 2e-5");
        // Top-20 at every position.
        let ids20 = golden(&format!("{case}_top20_ids_f64")).to_i64();
        let l20 = golden(&format!("{case}_top20_logits_f64")).to_f64();
        for p in 0..t {
            let row = &logits[p * v..(p + 1) * v];
            assert_eq!(
                owlet::sampling::argmax(row) as i64,
                ids20[p * 20],
                "{case}: argmax at {p}"
            );
            for k in 0..20 {
                let ours = row[ids20[p * 20 + k] as usize] as f64;
                assert!(
                    (ours - l20[p * 20 + k]).abs() <= 2e-5,
                    "{case}: top-20 logit at {p}"
                );
            }
        }
    }
    logits
}

#[test]
fn text_case_matches_f64_reference() {
    check_case("text", &[], f32_model(), true);
}

#[test]
fn mm_case_resize_mode_matches() {
    let m = f32_model();
    let s = session(m);
    let img = image_for_case(&s, "mm", "coffee.png", AspectMode::Resize);
    check_case("mm", &[&img], m, true);
}

#[test]
fn pad_case_matches() {
    let m = f32_model();
    let s = session(m);
    let img = image_for_case(&s, "pad", "chelsea.png", AspectMode::Pad);
    check_case("pad", &[&img], m, true);
}

/// 16 greedy tokens continuing `mm`, with the KV cache, equal to upstream and to a run that
/// recomputes the whole sequence at every step.
#[test]
fn greedy_generation_with_and_without_cache() {
    let m = f32_model();
    let s0 = session(m);
    let img = image_for_case(&s0, "mm", "coffee.png", AspectMode::Resize);
    let want: Vec<i64> = golden("gen_new_ids").to_i64();
    let ids = golden("mm_input_ids").to_i64();
    let v = m.config.text.n_vocab;

    let mut s = session(m);
    let mut logits = s.prefill(&ids, &[&img], false, None).unwrap();
    let step20 = golden("gen_step_top20_ids_f32").to_i64();
    let step20l = golden("gen_step_top20_logits_f32").to_f64();
    let mut cached = Vec::new();
    for step in 0..16 {
        let id = owlet::sampling::argmax(&logits);
        for k in 0..20 {
            let ours = logits[step20[step * 20 + k] as usize] as f64;
            assert!(
                (ours - step20l[step * 20 + k]).abs() <= 1e-4,
                "step {step} top-20 logit"
            );
        }
        cached.push(id as i64);
        logits = s.prefill(&[id as i64], &[], false, None).unwrap();
    }
    assert_eq!(cached, want, "greedy ids with the KV cache");

    let mut seq = ids.clone();
    let mut uncached = Vec::new();
    for _ in 0..16 {
        let mut s = session(m);
        let all = s.prefill(&seq, &[&img], false, None).unwrap();
        assert_eq!(all.len(), v);
        let id = owlet::sampling::argmax(&all) as i64;
        uncached.push(id);
        seq.push(id);
    }
    assert_eq!(uncached, want, "greedy ids recomputed without the cache");
}

/// The default f16 KV cache gives the same greedy ids.
#[test]
fn f16_kv_cache_keeps_greedy_ids() {
    let m = f32_model();
    let s0 = session(m);
    let img = image_for_case(&s0, "mm", "coffee.png", AspectMode::Resize);
    let mut s = Session::new(
        m,
        SessionOptions {
            threads: 1,
            kv_type: KvType::F16,
            n_ctx: None,
        },
    )
    .unwrap();
    let mut logits = s
        .prefill(&golden("mm_input_ids").to_i64(), &[&img], false, None)
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..16 {
        let id = owlet::sampling::argmax(&logits) as i64;
        got.push(id);
        logits = s.prefill(&[id], &[], false, None).unwrap();
    }
    assert_eq!(got, golden("gen_new_ids").to_i64());
}

/// A `--text-only` (plain llama) conversion gives the text case's logits too.
#[test]
fn text_only_file_matches_text_case() {
    let m = Model::load(&converted(Preset::F32, GgmlType::F32, true)).unwrap();
    assert!(!m.has_vision());
    check_case("text", &[], &m, true);
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y;
        aa += (x as f64).powi(2);
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Quantized conversions run end to end and stay within the README's bounds.
#[test]
fn quantized_files_stay_within_bounds() {
    for (preset, vt, min_cos, top1) in [
        (Preset::F16, GgmlType::F16, 0.9999, true),
        (Preset::Q8_0, GgmlType::Q8_0, 0.998, true),
        (Preset::Q4_0, GgmlType::Q8_0, 0.8, false),
        (Preset::Q4KM, GgmlType::Q8_0, 0.8, false),
    ] {
        let m = Model::load(&converted(preset, vt, false)).unwrap();
        let s = session(&m);
        let img = image::load(&data("assets/coffee.png"), &ImageLimits::default()).unwrap();
        let emb = s.embed_image(&img, Some(AspectMode::Resize)).unwrap();
        let logits = check_case("mm", &[&emb], &m, false);
        let v = m.config.text.n_vocab;
        let t = logits.len() / v;
        let last4 = golden("mm_logits_last4_f64").to_f64();
        let c = cosine(&logits[(t - 4) * v..], &last4);
        assert!(c >= min_cos, "{}: cosine {c} < {min_cos}", preset.name());
        if top1 {
            let ids20 = golden("mm_top20_ids_f64").to_i64();
            let hits = (0..t)
                .filter(|&p| {
                    owlet::sampling::argmax(&logits[p * v..(p + 1) * v]) as i64 == ids20[p * 20]
                })
                .count();
            assert!(
                hits as f64 >= 0.9 * t as f64,
                "{}: top-1 {hits}/{t}",
                preset.name()
            );
        }
    }
}
