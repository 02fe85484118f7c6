//! Plain llama.cpp LLaMA files (written and quantized by llama.cpp itself) run on the same code
//! path as mPLUG-Owl2's text decoder, and agree with llama.cpp's own logits, with every kernel
//! variant (see [`variants`]).

use std::path::{Path, PathBuf};

use owlet::kernels::{self, Kernels};
use owlet::kv_cache::KvType;
use owlet::model::{Arch, Model};
use owlet::npy;
use owlet::sampling::argmax;
use owlet::session::{Session, SessionOptions};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp-tiny")
}

/// The prompt and greedy continuation from manifest.json (a tiny hand parse: no JSON crate in
/// the runtime's dependencies).
fn manifest_ids(key: &str) -> Vec<i64> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let at = text.find(&format!("\"{key}\"")).unwrap();
    let open = at + text[at..].find('[').unwrap();
    let close = open + text[open..].find(']').unwrap();
    text[open + 1..close]
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

/// The kernel variants to compare: every one this CPU can run (a 2-layer model of width 256:
/// each costs well under a second natively, a few seconds for `generic` in the dev profile).
/// On aarch64 only the selected one: CI runs this binary under qemu once per CPU model
/// (`scripts/ci/aarch64.sh`), each model selects a different NEON variant, and emulation makes
/// every extra variant cost tens of seconds; the generic kernels are portable scalar code, run
/// on x86.
fn variants() -> Vec<&'static Kernels> {
    if cfg!(target_arch = "aarch64") {
        vec![kernels::select().unwrap()]
    } else {
        kernels::available()
    }
}

fn logits_for(file: &str, k: &'static Kernels) -> (Model, Vec<f32>) {
    let m = Model::load_with_kernels(&dir().join(file), k).unwrap();
    assert_eq!(m.config.arch, Arch::Llama);
    let mut s = Session::new(
        &m,
        SessionOptions {
            threads: 2,
            kv_type: KvType::F32,
            n_ctx: None,
        },
    )
    .unwrap();
    let l = s
        .prefill(&manifest_ids("prompt_ids"), &[], true, None)
        .unwrap();
    (m, l)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn f32_file_matches_llama_cpp_logits_and_greedy_ids() {
    for k in variants() {
        f32_file_with(k);
    }
}

fn f32_file_with(k: &'static Kernels) {
    let (m, logits) = logits_for("tiny-f32.gguf", k);
    let want = npy::read(&dir().join("logits-f32.npy")).unwrap().to_f32();
    assert_eq!(logits.len(), want.len());
    let d = max_abs(&logits, &want);
    eprintln!("{}: f32: max abs vs llama.cpp {d:.2e}", k.name);
    assert!(d <= 1e-4, "{}: max |Δ| {d}", k.name);
    // greedy16 (the first "greedy16" in the manifest is the f32 file's)
    let greedy = manifest_ids("greedy16");
    let mut s = Session::new(
        &m,
        SessionOptions {
            threads: 1,
            kv_type: KvType::F32,
            n_ctx: None,
        },
    )
    .unwrap();
    let mut l = s
        .prefill(&manifest_ids("prompt_ids"), &[], false, None)
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..16 {
        let id = argmax(&l) as i64;
        got.push(id);
        l = s.prefill(&[id], &[], false, None).unwrap();
    }
    assert_eq!(got, greedy, "{}", k.name);
}

/// owlet quantizes activations the way llama.cpp does and uses the same integer block sums, so
/// on a quantized file its logits equal llama.cpp's up to f32 rounding (measured: ≤ 2.4e-6), a
/// thousand times below llama.cpp's own quantization error (0.16 for Q8_0 to 2.0 for Q4_0).
///
/// This holds only while every variant rounds like the kernels that made the reference: each
/// quantized matmul's outputs are re-quantized to 8 bits before the next one, so an output
/// within an ulp of a rounding tie flips a quant, and this prompt has such outputs (e.g. a
/// Q8_K value at −62.5000038 of a step). ggml's scalar Q4_K formula (eight lane sums) moved
/// the Q4_K_M logits by 7.5e-2, and so does nudging every Q4_K dot of the per-super-block
/// formula by one ulp; hence one K-quant formula in every variant (`kernels::generic`).
#[test]
fn quantized_files_track_llama_cpp() {
    let f32_ref = npy::read(&dir().join("logits-f32.npy")).unwrap().to_f32();
    for k in variants() {
        for t in ["Q8_0", "Q6_K", "Q4_K_M", "Q4_K_S", "Q4_0"] {
            let (_, logits) = logits_for(&format!("tiny-{t}.gguf"), k);
            let theirs = npy::read(&dir().join(format!("logits-{t}.npy")))
                .unwrap()
                .to_f32();
            let to_llama = max_abs(&logits, &theirs);
            let llama_quant_err = max_abs(&theirs, &f32_ref);
            eprintln!(
                "{}: {t}: max abs owlet vs llama.cpp {to_llama:.2e}; llama.cpp vs its f32 \
                 {llama_quant_err:.2e}",
                k.name
            );
            assert!(
                to_llama <= 1e-4 && to_llama <= 1e-3 * llama_quant_err,
                "{}: {t}: |owlet − llama.cpp| {to_llama} vs llama.cpp's own quantization error \
                 {llama_quant_err}",
                k.name
            );
        }
    }
}
