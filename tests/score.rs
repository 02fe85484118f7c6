//! `owlet score` and [`owlet::score`] on the committed demo model: the score is Q-Align's
//! formula applied to what `owlet logits` prints for the same prompt (computed here
//! independently, level ids from `owlet tokenize`), for each task and scale; batches keep going
//! past bad files, resume, and write CSV.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use owlet::image::{self, ImageLimits, Preprocess, CLIP_MEAN};
use owlet::model::Model;
use owlet::score::{Aspect, ScoreOptions, Scorer, Subject};
use owlet::session::{Session, SessionOptions};

#[path = "common/scratch.rs"]
mod scratch;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn asset(name: &str) -> String {
    repo("tests/data/assets").join(name).display().to_string()
}

/// A scratch directory private to this test.
fn scratch(name: &str) -> PathBuf {
    scratch::run_dir(env!("CARGO_TARGET_TMPDIR"), "owlet-score", Some(name))
}

fn owlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("spawn owlet")
}

fn ok(args: &[&str]) -> String {
    let o = owlet(args);
    assert!(
        o.status.success(),
        "owlet {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A number after `"key":` in a JSON line this test expects.
fn json_num(line: &str, key: &str) -> f64 {
    let at = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {line}"));
    let rest = &line[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

const LEVELS: [&str; 5] = ["excellent", "good", "fair", "poor", "bad"];

/// Q-Align's arithmetic, written out again: softmax over the five logits, then the expectation.
fn reference_score(logits_row: &[f32], ids: &[usize], weights: &[f64]) -> (f64, Vec<f64>) {
    let l: Vec<f64> = ids.iter().map(|&i| f64::from(logits_row[i])).collect();
    let m = l.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
    let p: Vec<f64> = l.iter().map(|x| (x - m).exp() / z).collect();
    (p.iter().zip(weights).map(|(p, w)| p * w).sum(), p)
}

#[test]
fn score_is_the_formula_on_owlet_logits_for_each_task_and_scale() {
    let dir = scratch("formula");
    // Each level word's first token after BOS, as `owlet tokenize` gives it.
    let ids: Vec<usize> = LEVELS
        .iter()
        .map(|w| {
            let out = ok(&["tokenize", "--raw-prompt", w]);
            let v: Vec<&str> = out.trim().split(',').collect();
            assert_eq!(v[0], "1", "BOS first for {w}");
            v[1].parse().unwrap()
        })
        .collect();
    let cases = [
        ("quality", "image", "--task", "quality"),
        ("aesthetics", "image", "--task", "aesthetics"),
        // The video prompt through --prompt (a one-frame video is scored like an image).
        ("quality", "video", "--prompt", ""),
    ];
    for (aspect, subject, flag, value) in cases {
        let prompt = format!(
            "USER: How would you rate the {aspect} of this {subject}?\n<|image|>\nASSISTANT: The {aspect} of the {subject} is"
        );
        let npy = dir.join(format!("{aspect}-{subject}.npy"));
        ok(&[
            "logits",
            "--raw-prompt",
            &prompt,
            "--image",
            &asset("chelsea.png"),
            "--image-mode",
            "pad",
            "--out",
            npy.to_str().unwrap(),
        ]);
        let a = owlet::npy::read(&npy).unwrap();
        let v = *a.shape.last().unwrap();
        let logits = a.to_f32();
        let last = &logits[logits.len() - v..];
        let value = if flag == "--prompt" {
            prompt.as_str()
        } else {
            value
        };
        for (scale, weights) in [
            ("1-5", [5.0, 4.0, 3.0, 2.0, 1.0]),
            ("0-1", [1.0, 0.75, 0.5, 0.25, 0.0]),
        ] {
            let out = ok(&[
                "score",
                &asset("chelsea.png"),
                flag,
                value,
                "--scale",
                scale,
                "-v",
            ]);
            let (want, probs) = reference_score(last, &ids, &weights);
            let got = json_num(&out, "score");
            assert!(
                (got - want).abs() < 1e-9,
                "{aspect} of {subject}, {scale}: score {got} vs the formula's {want}"
            );
            for (w, p) in LEVELS.iter().zip(&probs) {
                let gp = json_num(&out, w);
                assert!(
                    (gp - p).abs() < 1e-9,
                    "{aspect}/{scale}: p({w}) {gp} vs {p}"
                );
            }
        }
    }
}

#[test]
fn pad_mode_uses_q_aligns_mean_colour() {
    // Q-Align pads with tuple(int(x*255) for x in image_processor.image_mean): the CLIP mean as
    // an 8-bit colour, which the demo model's file stores and the scorer's pad mode uses.
    let m = Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap();
    let v = m.config.vision.as_ref().unwrap();
    assert_eq!(v.pad_color, [122, 116, 104]);
    assert_eq!(Preprocess::pad_color_for_mean(CLIP_MEAN), [122, 116, 104]);
    assert_eq!(ScoreOptions::default().mode, image::AspectMode::Pad);
}

#[test]
fn the_reused_prefix_gives_the_same_scores_as_fresh_sessions() {
    let m = Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap();
    let opts = SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    };
    let imgs: Vec<_> = ["chelsea.png", "coffee.png"]
        .iter()
        .map(|n| image::load(Path::new(&asset(n)), &ImageLimits::default()).unwrap())
        .collect();
    let fresh: Vec<f64> = imgs
        .iter()
        .map(|img| {
            let mut s = Session::new(&m, opts.clone()).unwrap();
            let mut sc = Scorer::new(&mut s, ScoreOptions::default()).unwrap();
            sc.score_image(img).unwrap().score
        })
        .collect();
    let mut s = Session::new(&m, opts).unwrap();
    let mut sc = Scorer::new(&mut s, ScoreOptions::task(Aspect::Quality, Subject::Image)).unwrap();
    assert_eq!(sc.level_ids(), [15129, 1781, 6534, 6460, 4319]);
    for (img, want) in imgs.iter().chain(&imgs).zip(fresh.iter().chain(&fresh)) {
        assert_eq!(sc.score_image(img).unwrap().score, *want);
    }
    assert_ne!(fresh[0], fresh[1]);
}

#[test]
fn bad_options_are_refused_before_scoring() {
    let m = Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap();
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    let o = ScoreOptions {
        prompt: "no placeholder".into(),
        ..ScoreOptions::default()
    };
    let e = Scorer::new(&mut s, o).err().unwrap();
    assert!(e.message().contains("exactly one <|image|>"), "{e}");
    for (args, needle) in [
        (vec!["score", "x.png", "--scale", "1-10"], "--scale"),
        (vec!["score", "x.png", "--task", "beauty"], "--task"),
        (vec!["score", "x.png", "--levels", "a,b"], "five"),
        (vec!["score"], "no inputs"),
        (vec!["score", "x.png", "--format", "xml"], "--format"),
        (
            vec!["score", "x.png", "--list", "/nonexistent/list.txt"],
            "--list",
        ),
    ] {
        let o = owlet(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The folder `dir` with a good image, a corrupt one and a non-image file; a list file naming
/// one more good image and a missing one.
fn batch_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(asset("coffee.png"), imgs.join("a.png")).unwrap();
    std::fs::write(imgs.join("b.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(imgs.join("notes.txt"), b"skipped").unwrap();
    let list = dir.join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# inputs\n{}\n\n{}\n",
            asset("chelsea.png"),
            dir.join("missing.jpg").display()
        ),
    )
    .unwrap();
    (imgs, list)
}

#[test]
fn a_batch_keeps_going_past_bad_files_and_resumes() {
    let dir = scratch("batch");
    let (imgs, list) = batch_inputs(&dir);
    let out = dir.join("out.jsonl");
    let args = [
        "score",
        imgs.to_str().unwrap(),
        "--list",
        list.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let o = owlet(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("owlet: 2 of 4 input(s) failed"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("a.png\",\"score\":"), "{}", lines[0]);
    assert!(
        lines[1].contains("b.png\",\"error\":") && lines[1].contains("b.png:"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("chelsea.png\",\"score\":"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("missing.jpg\",\"error\":"),
        "{}",
        lines[3]
    );

    // The same output again without --resume is refused, and left alone.
    let o = owlet(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

    // An interrupted run: the first line, and half of the next one.
    std::fs::write(&out, format!("{}\n{}", lines[0], &lines[2][..20])).unwrap();
    std::fs::write(
        imgs.join("b.png"),
        std::fs::read(asset("chelsea.png")).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(dir.join("missing.jpg")).ok();
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = owlet(&resume);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "missing.jpg still fails");
    assert!(err.contains("1 already in the output"), "{err}");
    let text2 = std::fs::read_to_string(&out).unwrap();
    let lines2: Vec<&str> = text2.lines().collect();
    assert_eq!(lines2.len(), 4, "{text2}");
    assert_eq!(lines2[0], lines[0], "the kept line is untouched");
    assert!(
        lines2[1].contains("b.png\",\"score\":"),
        "fixed file scored: {}",
        lines2[1]
    );
    assert_eq!(lines2[2], lines[2], "same image, same score");
    assert!(lines2[3].contains("missing.jpg\",\"error\":"));
    // The repaired b.png is chelsea.png: same pixels, same score.
    assert_eq!(json_num(lines2[1], "score"), json_num(lines[2], "score"));
}

#[test]
fn csv_output_quotes_and_resumes() {
    let dir = scratch("csv");
    let odd = dir.join("a, \"b\".png");
    std::fs::copy(asset("coffee.png"), &odd).unwrap();
    let out = dir.join("s.csv");
    let o = out.to_str().unwrap();
    ok(&[
        "score",
        odd.to_str().unwrap(),
        "-o",
        o,
        "-v",
        "--scale",
        "0-1",
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "path,score,p_excellent,p_good,p_fair,p_poor,p_bad,error"
    );
    let quoted = format!("\"{}\",", odd.display().to_string().replace('"', "\"\""));
    assert!(lines[1].starts_with(&quoted), "{}", lines[1]);
    let cols: Vec<&str> = lines[1][quoted.len()..].split(',').collect();
    assert_eq!(cols.len(), 7, "{}", lines[1]);
    let score: f64 = cols[0].parse().unwrap();
    assert!((0.0..=1.0).contains(&score));
    let psum: f64 = cols[1..6].iter().map(|c| c.parse::<f64>().unwrap()).sum();
    assert!((psum - 1.0).abs() < 1e-12);
    assert_eq!(cols[6], "");
    // Resuming with the same input adds nothing.
    ok(&[
        "score",
        odd.to_str().unwrap(),
        "-o",
        o,
        "-v",
        "--scale",
        "0-1",
        "--resume",
    ]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

mod c_abi {
    use std::ffi::{CStr, CString};
    use std::ptr::{null, null_mut};

    use owlet::ffi::*;

    use super::*;

    fn last_error() -> String {
        // SAFETY: owlet_last_error never returns NULL.
        unsafe { CStr::from_ptr(owlet_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn session() -> (*mut owlet_model, *mut owlet_session) {
        let path = CString::new(repo("models/owl2-tiny-a-f16.gguf").to_str().unwrap()).unwrap();
        let mut params = owlet_model_params_default();
        params.threads = 2;
        let (mut m, mut s) = (null_mut(), null_mut());
        unsafe {
            assert_eq!(owlet_model_load(path.as_ptr(), &params, &mut m), OWLET_OK);
            assert_eq!(owlet_session_new(m, &mut s), OWLET_OK);
        }
        (m, s)
    }

    /// The Rust API's score for an asset.
    fn rust_score(name: &str, opts: ScoreOptions) -> (f64, [f64; 5]) {
        let m = Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap();
        let mut s = Session::new(
            &m,
            SessionOptions {
                threads: 2,
                ..SessionOptions::default()
            },
        )
        .unwrap();
        let img = image::load(Path::new(&asset(name)), &ImageLimits::default()).unwrap();
        let r = Scorer::new(&mut s, opts)
            .unwrap()
            .score_image(&img)
            .unwrap();
        (r.score, r.probs)
    }

    #[test]
    fn c_scores_equal_the_rust_api_and_reuse_the_prefix() {
        let (m, s) = session();
        let file = CString::new(asset("coffee.png")).unwrap();
        let want = rust_score("coffee.png", ScoreOptions::default());
        for _ in 0..2 {
            let (mut score, mut probs) = (0.0, [0.0; 5]);
            unsafe {
                assert_eq!(owlet_session_add_image_file(s, file.as_ptr()), OWLET_OK);
                let rc = owlet_session_score(s, null(), &mut score, probs.as_mut_ptr());
                assert_eq!(rc, OWLET_OK, "{}", last_error());
            }
            assert_eq!((score, probs), want);
        }
        // Aesthetics on 0..1 with the level words given explicitly.
        let words: Vec<CString> = LEVELS.iter().map(|w| CString::new(*w).unwrap()).collect();
        let ptrs: Vec<*const std::ffi::c_char> = words.iter().map(|w| w.as_ptr()).collect();
        let mut p = owlet_score_params_default();
        p.task = OWLET_SCORE_AESTHETICS;
        p.scale = OWLET_SCALE_0_1;
        p.levels = ptrs.as_ptr();
        let mut o = ScoreOptions::task(Aspect::Aesthetics, Subject::Image);
        o.scale = owlet::score::Scale::ZeroToOne;
        let want = rust_score("coffee.png", o);
        let mut score = 0.0;
        unsafe {
            assert_eq!(owlet_session_add_image_file(s, file.as_ptr()), OWLET_OK);
            assert_eq!(owlet_session_score(s, &p, &mut score, null_mut()), OWLET_OK);
        }
        assert_eq!(score, want.0);

        // No image, two images, a bad enum, a NULL output: clean errors.
        unsafe {
            assert_eq!(
                owlet_session_score(s, null(), &mut score, null_mut()),
                OWLET_ERR_BAD_PROMPT
            );
            assert!(
                last_error().contains("exactly one image or video (0 added"),
                "{}",
                last_error()
            );
            owlet_session_add_image_file(s, file.as_ptr());
            owlet_session_add_image_file(s, file.as_ptr());
            assert_eq!(
                owlet_session_score(s, null(), &mut score, null_mut()),
                OWLET_ERR_BAD_PROMPT
            );
            owlet_session_reset(s);
            owlet_session_add_image_file(s, file.as_ptr());
            p.scale = 7;
            assert_eq!(
                owlet_session_score(s, &p, &mut score, null_mut()),
                OWLET_ERR_INVALID_ARGUMENT
            );
            assert!(last_error().contains("scale"), "{}", last_error());
            assert_eq!(
                owlet_session_score(s, null(), null_mut(), null_mut()),
                OWLET_ERR_INVALID_ARGUMENT
            );
            let bad = CString::new("no placeholder").unwrap();
            let mut p = owlet_score_params_default();
            p.prompt = bad.as_ptr();
            assert_eq!(
                owlet_session_score(s, &p, &mut score, null_mut()),
                OWLET_ERR_INVALID_ARGUMENT
            );
            owlet_session_free(s);
            owlet_model_free(m);
        }
    }

    #[cfg(feature = "ffi-panic-test")]
    #[test]
    fn a_panic_in_the_scorer_entry_points_is_caught() {
        use owlet::ffi::panic_hook::set_force_panic;
        let (m, s) = session();
        let mut score = 0.0;
        set_force_panic(true);
        let rc = unsafe { owlet_session_score(s, null(), &mut score, null_mut()) };
        let p = owlet_score_params_default();
        set_force_panic(false);
        assert_eq!(rc, OWLET_ERR_PANIC);
        assert_eq!(p.scale, OWLET_SCALE_1_5);
        unsafe {
            owlet_session_free(s);
            owlet_model_free(m);
        }
    }
}
