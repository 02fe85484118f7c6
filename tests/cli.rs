//! The `owlet` command line, run as a child process on the committed demo model
//! (`models/owl2-tiny-a-f16.gguf`, the default `-m`): every subcommand works, its output agrees
//! with the library and the upstream goldens, and bad input gives a one-line error and a
//! non-zero exit code, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use owlet::image::{self, ImageLimits};
use owlet::model::Model;
use owlet::npy;
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, Session, SessionOptions};

/// The fixture's `mm` prompt ids (`USER: <|image|>Describe the image. ASSISTANT:`).
const MM_IDS: &str =
    "1,3148,1001,29901,29871,-200,20355,915,278,1967,29889,319,1799,9047,13566,29901";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn coffee() -> String {
    repo("tests/data/assets/coffee.png").display().to_string()
}

fn demo_model() -> PathBuf {
    repo("models/owl2-tiny-a-f16.gguf")
}

/// A scratch directory private to this test process.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("owlet-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `owlet` on the tiny demo model: these tests check its numbers (upstream goldens, the
/// 7B vocabulary, a 4096 context), so a command that takes a model and names none gets
/// `-m models/owl2-tiny-a-f16.gguf` even if the CLI's default model changes (issue 12).
fn owlet(args: &[&str]) -> Output {
    let demo = demo_model().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    let named = args.iter().any(|a| *a == "-m" || *a == "--model");
    match args.first() {
        Some(&("run" | "chat" | "logits" | "tokenize" | "eval-shapes" | "score")) if !named => {
            all.splice(1..1, ["-m", demo.as_str()]);
        }
        Some(&"info") if args.len() == 1 => all.push(demo.as_str()),
        _ => {}
    }
    owlet_as_is(&all)
}

/// Runs `owlet` with exactly these arguments (the CLI's own default model).
fn owlet_as_is(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("spawn owlet")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `owlet` and asserts success.
fn ok(args: &[&str]) -> Output {
    let o = owlet(args);
    assert!(o.status.success(), "owlet {args:?} failed: {}", stderr(&o));
    o
}

/// Runs `owlet`, asserts a clean failure (exit code 1, one `owlet: ...` line on stderr, no
/// panic) and returns that line.
fn fails(args: &[&str]) -> String {
    let o = owlet(args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "owlet {args:?} should fail; stdout: {}",
        stdout(&o)
    );
    assert!(!err.contains("panicked"), "owlet {args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "owlet {args:?}: expected one error line, got {err:?}"
    );
    assert!(lines[0].starts_with("owlet: "), "owlet {args:?}: {err:?}");
    lines[0].to_string()
}

/// The comma list of ids on the last line of `run --print-ids` output.
fn printed_ids(o: &Output) -> Vec<i64> {
    let out = stdout(o);
    let last = out.lines().last().expect("some output");
    last.split(',')
        .map(|x| {
            x.parse::<i64>()
                .unwrap_or_else(|_| panic!("not an id list: {last:?}"))
        })
        .collect()
}

fn golden_gen_ids() -> Vec<i64> {
    npy::read(&repo("tests/data/owl2-tiny-a/golden/gen_new_ids.npy"))
        .unwrap()
        .to_i64()
}

#[test]
fn run_prints_ids_and_matches_upstream_greedy_ids() {
    let c = coffee();
    let o = ok(&[
        "run",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "8",
        "--print-ids",
    ]);
    let ids = printed_ids(&o);
    assert_eq!(ids.len(), 8);
    // The demo model is the f16 conversion of the golden fixture: it keeps upstream's greedy ids.
    assert_eq!(ids, golden_gen_ids()[..8]);

    // The same with an explicit -m, with raw ids and with a raw prompt.
    let m = demo_model().display().to_string();
    let with_m = ok(&[
        "run",
        "-m",
        &m,
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "8",
        "--print-ids",
    ]);
    assert_eq!(printed_ids(&with_m), ids);
    let by_ids = ok(&[
        "run",
        "--image",
        &c,
        "--ids",
        MM_IDS,
        "-n",
        "8",
        "--print-ids",
    ]);
    assert_eq!(printed_ids(&by_ids), ids);
    let raw = ok(&[
        "run",
        "--image",
        &c,
        "--raw-prompt",
        "USER: <|image|>Describe the image. ASSISTANT:",
        "-n",
        "8",
        "--print-ids",
    ]);
    assert_eq!(printed_ids(&raw), ids);
    // Streamed text comes first and equals the decoded ids.
    let m = Model::load(&demo_model()).unwrap();
    let text: String = stdout(&o).lines().next().unwrap().to_string();
    let u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    assert_eq!(text, m.tokenizer().decode(&u).trim_end_matches('\n'));
}

#[test]
fn logits_last_row_gives_the_first_greedy_choice() {
    let c = coffee();
    let d = scratch("logits");
    let out = d.join("mm.npy");
    let o = out.display().to_string();
    ok(&[
        "logits",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "--out",
        &o,
    ]);
    let a = npy::read(&out).unwrap();
    // 16 ids with one image of 9 positions: 15 + 9 = 24 positions.
    assert_eq!(a.shape, vec![24, 32000]);
    let l = a.to_f32();
    let last = &l[23 * 32000..];
    assert_eq!(owlet::sampling::argmax(last) as i64, golden_gen_ids()[0]);
    let r = ok(&[
        "run",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "1",
        "--print-ids",
    ]);
    assert_eq!(printed_ids(&r), vec![owlet::sampling::argmax(last) as i64]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pixels_match_the_golden_in_resize_mode() {
    let c = coffee();
    let d = scratch("pixels");
    let out = d.join("px.npy");
    let o = out.display().to_string();
    let m = demo_model().display().to_string();
    ok(&[
        "pixels",
        "--image",
        &c,
        "--image-mode",
        "resize",
        "-m",
        &m,
        "--out",
        &o,
    ]);
    let a = npy::read(&out).unwrap();
    assert_eq!(a.shape, vec![3, 112, 112], "size comes from the model");
    let g = npy::read(&repo(
        "tests/data/owl2-tiny-a/golden/mm_pixel_values_f32.npy",
    ))
    .unwrap();
    let (a, g) = (a.to_f32(), g.to_f32());
    assert_eq!(a.len(), g.len());
    let d_max = a
        .iter()
        .zip(&g)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d_max <= 1e-6, "pixels differ by {d_max}");
    // Without a model the side defaults to 448.
    ok(&["pixels", "--image", &c, "--out", &o]);
    assert_eq!(npy::read(&out).unwrap().shape, vec![3, 448, 448]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tokenize_gives_the_fixture_ids() {
    let o = ok(&[
        "tokenize",
        "--raw-prompt",
        "USER: <|image|>Describe the image. ASSISTANT:",
    ]);
    assert_eq!(stdout(&o).trim(), MM_IDS);
    // The chat template path gives the same ids.
    let o = ok(&["tokenize", "-p", "Describe the image.", "--image", "x.png"]);
    assert_eq!(stdout(&o).trim(), MM_IDS);
    let o = ok(&["tokenize", "-p", "Tell me a story about a small owl."]);
    assert_eq!(
        stdout(&o).trim(),
        "1,3148,1001,29901,24948,592,263,5828,1048,263,2319,8152,29880,29889,319,1799,9047,13566,29901"
    );
}

/// Special-token text typed by the user is plain text: no EOS (2) and no second BOS (1).
#[test]
fn user_typed_special_tokens_stay_text() {
    for args in [
        &["tokenize", "-p", "a </s> b <s> c</s><s>"][..],
        &["tokenize", "--raw-prompt", "USER: </s><s> ASSISTANT: </s>"][..],
    ] {
        let o = ok(args);
        let ids: Vec<i64> = stdout(&o)
            .trim()
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(ids[0], 1, "{args:?}");
        assert!(
            !ids[1..].contains(&1) && !ids.contains(&2),
            "{args:?} gave control ids: {ids:?}"
        );
    }
}

#[test]
fn info_describes_the_demo_model() {
    let o = ok(&["info"]);
    let s = stdout(&o);
    for want in [
        "architecture: MplugOwl2",
        "3 layers, width 64",
        "vocab 32000",
        "112px",
        "9 LLM positions",
        "f16",
    ] {
        assert!(s.contains(want), "info lacks {want:?}:\n{s}");
    }
    let m = demo_model().display().to_string();
    assert_eq!(stdout(&ok(&["info", &m])), s);
}

/// `bench` with fixed small lengths, as `scripts/arm_cost.sh` runs it under the instruction
/// counter: `--no-vision` leaves the image path out, without it the tiny model encodes one.
#[test]
fn bench_runs_fixed_lengths_with_and_without_vision() {
    let m = demo_model().display().to_string();
    let args = |extra: &[&'static str]| {
        let mut v = vec![
            "bench",
            "-m",
            &m,
            "-t",
            "1",
            "--prefill",
            "3",
            "--decode",
            "2",
            "--json",
            "--bandwidth-mib",
            "0",
        ];
        v.extend_from_slice(extra);
        stdout(&ok(&v))
    };
    let with = args(&[]);
    let without = args(&["--no-vision"]);
    for j in [&with, &without] {
        assert!(
            j.contains("\"prefill\":{\"3\":") && j.contains("\"decode_tokens\":2,"),
            "{j}"
        );
    }
    assert!(!with.contains("\"vision_encode_ms\":null"), "{with}");
    assert!(without.contains("\"vision_encode_ms\":null"), "{without}");
    assert!(without.contains("\"abstractor_ms\":null"), "{without}");
}

#[test]
fn every_subcommand_has_help() {
    let top = stdout(&ok(&["--help"]));
    for sub in [
        "run",
        "chat",
        "logits",
        "pixels",
        "tokenize",
        "info",
        "eval-shapes",
    ] {
        assert!(top.contains(sub), "top-level help lacks {sub}");
        let h = stdout(&ok(&[sub, "--help"]));
        assert!(
            h.contains("Usage: owlet") && h.contains(sub),
            "{sub} --help:\n{h}"
        );
    }
    let h = stdout(&ok(&["run", "--help"]));
    for flag in [
        "--model",
        "--threads",
        "--kv-type",
        "--image",
        "--prompt",
        "--raw-prompt",
        "--ids",
        "--temp",
        "--top-k",
        "--top-p",
        "--seed",
        "--print-ids",
    ] {
        assert!(h.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn chat_over_stdin_answers_twice_like_the_library() {
    let c = coffee();
    let mut child = Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(["chat", "-n", "6", "-m"])
        .arg(demo_model())
        .current_dir(repo(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!("/image {c}\nWhat is in the picture?\nAnd what colour is it?\n/quit\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("image attached"), "{}", stderr(&o));

    // The library, with the same settings, gives the same two answers.
    let m = Model::load(&demo_model()).unwrap();
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    let img = image::load(Path::new(&c), &ImageLimits::default()).unwrap();
    let opts = GenerateOptions {
        max_tokens: 6,
        ..Default::default()
    };
    let a1 = s
        .chat(
            "What is in the picture?",
            &[img],
            None,
            &opts,
            &mut |_, _| true,
        )
        .unwrap();
    let a2 = s
        .chat("And what colour is it?", &[], None, &opts, &mut |_, _| true)
        .unwrap();
    assert!(!a1.ids.is_empty() && !a2.ids.is_empty());
    assert_eq!(stdout(&o), format!("{}\n{}\n", a1.text, a2.text));
}

#[test]
fn seeded_sampling_reproduces() {
    let c = coffee();
    let args = [
        "run",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "12",
        "--print-ids",
        "--temp",
        "0.8",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ];
    let a = printed_ids(&ok(&args));
    let b = printed_ids(&ok(&args));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b);
    // The same through the library.
    let m = Model::load(&demo_model()).unwrap();
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    let img = image::load(Path::new(&c), &ImageLimits::default()).unwrap();
    let sampling = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
        repeat_penalty: 1.0,
        seed: 7,
    };
    let opts = GenerateOptions {
        max_tokens: 12,
        sampling,
        ignore_eos: false,
    };
    let g = s
        .chat("Describe the image.", &[img], None, &opts, &mut |_, _| true)
        .unwrap();
    assert_eq!(g.ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), a);
}

/// A PNG signature and IHDR chunk claiming `w × h` (the CRC is not checked before the limits).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(&13u32.to_be_bytes());
    b.extend_from_slice(b"IHDR");
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    b
}

#[test]
fn bad_images_fail_with_one_line() {
    let d = scratch("images");
    let c = coffee();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let mut corrupt = std::fs::read(&c).unwrap();
    corrupt.truncate(corrupt.len() / 3);
    let cases = [
        (d.join("missing.png").display().to_string(), "missing.png"),
        (write("corrupt.png", &corrupt), "corrupt.png"),
        (
            write("garbage.png", b"this is not an image at all"),
            "garbage.png",
        ),
        (write("empty.png", b""), "empty"),
        (write("zero.png", &png_header(0, 10)), "zero size"),
        (write("wide.png", &png_header(100_000, 1)), "100000"),
        (
            write("anim.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
            "GIF",
        ),
    ];
    for (path, want) in &cases {
        let e = fails(&[
            "run",
            "--image",
            path,
            "-p",
            "Describe the image.",
            "-n",
            "2",
        ]);
        assert!(e.contains(want), "{path}: {e}");
        let out = d.join("px.npy").display().to_string();
        let e = fails(&["pixels", "--image", path, "--out", &out]);
        assert!(e.contains(want), "pixels {path}: {e}");
    }
    let _ = std::fs::remove_dir_all(&d);
    let _ = c;
}

#[test]
fn bad_arguments_fail_with_one_line() {
    let c = coffee();
    let base = [
        "run",
        "--image",
        c.as_str(),
        "-p",
        "Describe the image.",
        "-n",
        "2",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&a)
    };
    let e = run(with(&["-t", "0"]));
    assert!(e.contains("threads") && e.contains('0'), "{e}");
    let e = run(with(&["--kv-type", "bf16"]));
    assert!(e.contains("bf16") && e.contains("f16 or f32"), "{e}");
    let e = run(with(&["--top-p", "0"]));
    assert!(e.contains("top-p"), "{e}");
    let e = run(with(&["--temp=-1"]));
    assert!(e.contains("temperature"), "{e}");
    let e = run(with(&["--repeat-penalty", "0"]));
    assert!(e.contains("repeat penalty"), "{e}");
    let e = run(with(&["--image-mode", "zoom"]));
    assert!(e.contains("zoom"), "{e}");
    let e = run(with(&["-m", "/nonexistent/owl.gguf"]));
    assert!(
        e.contains("/nonexistent/owl.gguf") && e.contains("No such file"),
        "{e}"
    );
    let not_gguf = repo("tests/data/owl2-tiny-a/README.md")
        .display()
        .to_string();
    let e = run(with(&["-m", &not_gguf]));
    assert!(e.contains("README.md"), "{e}");

    // Image count against placeholders, both ways.
    let e = fails(&[
        "run",
        "--image",
        &c,
        "--raw-prompt",
        "USER: hi ASSISTANT:",
        "-n",
        "1",
    ]);
    assert!(e.contains("0 image placeholder(s) but 1"), "{e}");
    let e = fails(&[
        "run",
        "--raw-prompt",
        "USER: <|image|><|image|>hi ASSISTANT:",
        "-n",
        "1",
    ]);
    assert!(e.contains("2 image placeholder(s) but 0"), "{e}");
    let e = fails(&[
        "run",
        "--image",
        &c,
        "-p",
        "<|image|> and <|image|>",
        "-n",
        "1",
    ]);
    assert!(e.contains("2") && e.contains("1 image"), "{e}");
    let e = fails(&["run", "--ids", "1,-200,-200,5", "--image", &c, "-n", "1"]);
    assert!(e.contains("2 image placeholder(s) but 1"), "{e}");
    let e = fails(&["run", "--ids", "1,x", "-n", "1"]);
    assert!(e.contains("\"x\""), "{e}");
    let e = fails(&["run", "--ids", "1,32000", "-n", "1"]);
    assert!(e.contains("32000") && e.contains("vocabulary"), "{e}");
    // An image without a question (with no image and no prompt, `run` asks about the
    // bundled example instead).
    let e = fails(&["run", "--image", &c, "-n", "1"]);
    assert!(e.contains("prompt"), "{e}");

    // A prompt longer than the context (4096): both numbers in the message.
    let long = vec!["1"; 5000].join(",");
    let e = fails(&["run", "--ids", &long, "-n", "1"]);
    assert!(e.contains("5000") && e.contains("4096"), "{e}");
}

#[test]
fn context_size_limits_prompt_and_generation() {
    let c = coffee();
    // The mm prompt takes 24 positions.
    let e = fails(&[
        "run",
        "-c",
        "20",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "4",
    ]);
    assert!(e.contains("24 positions") && e.contains("20"), "{e}");
    // With 30 positions, generation stops when the context is full: 30 - 24 + 1 tokens (the
    // last one is sampled from the last position's logits and needs no position of its own).
    let o = ok(&[
        "run",
        "-c",
        "30",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "100",
        "--ignore-eos",
        "--print-ids",
    ]);
    assert_eq!(printed_ids(&o), golden_gen_ids()[..7]);
    let e = fails(&["run", "-c", "0", "--ids", "1", "-n", "1"]);
    assert!(e.contains("context length 0"), "{e}");
    let e = fails(&["run", "-c", "5000", "--ids", "1", "-n", "1"]);
    assert!(e.contains("5000") && e.contains("4096"), "{e}");
}

/// `--temp -1` is a negative number, not an unknown flag: the same message as `--temp=-1`.
#[test]
fn negative_numbers_are_values_not_flags() {
    let base = ["run", "--ids", "1", "-n", "1"];
    let run = |extra: &[&str]| {
        let a: Vec<&str> = base.iter().chain(extra).copied().collect();
        fails(&a)
    };
    let e = run(&["--temp", "-1"]);
    assert!(e.contains("temperature"), "{e}");
    assert_eq!(e, run(&["--temp=-1"]));
    let e = run(&["--top-p", "-0.5"]);
    assert!(e.contains("top-p"), "{e}");
    let e = run(&["--repeat-penalty", "-2"]);
    assert!(e.contains("repeat penalty"), "{e}");
    // Counts that cannot be negative name the argument and the value.
    let o = owlet(&["run", "--ids", "1", "-n", "-1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("'-1'") && err.contains("--n-predict"), "{err}");
    assert!(!err.contains("unexpected argument"), "{err}");
}

/// `-t 1000` runs (with a warning) on the cores there are instead of 56 times slower.
#[test]
fn too_many_threads_are_capped_with_a_warning() {
    let o = ok(&["run", "--ids", "1", "-n", "1", "-t", "1000"]);
    let err = stderr(&o);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        err.contains("warning: -t 1000") && err.contains(&format!("using {cores}")),
        "{err}"
    );
    let o = ok(&["run", "--ids", "1", "-n", "1", "-t", "1"]);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// A prompt too long for the context says what it is made of and what fits.
#[test]
fn a_prompt_too_long_says_what_it_needs() {
    let long = vec!["1"; 5000].join(",");
    let e = fails(&["run", "--ids", &long, "-n", "1"]);
    assert!(
        e.contains("the prompt needs 5000 positions (5000 text tokens) but the context holds 4096"),
        "{e}"
    );
    let c = coffee();
    let e = fails(&[
        "run",
        "-c",
        "20",
        "--image",
        &c,
        "-p",
        "Describe the image.",
        "-n",
        "1",
    ]);
    assert!(
        e.contains("needs 24 positions (15 text tokens + 1 image × 9) but the context holds 20"),
        "{e}"
    );
}

/// A directory or a file of an unconverted checkpoint as the model (`No such device (os error
/// 19)` before): says what it is and the command that converts it.
#[test]
fn a_checkpoint_instead_of_a_model_says_how_to_convert_it() {
    let ckpt = repo("tests/data/owl2-tiny-a/checkpoint");
    let dir = ckpt.display().to_string();
    let hint = format!("owlet-convert {dir} -o model.gguf --type q4_k_m");
    let e = fails(&["run", "-m", &dir, "-p", "hi", "-n", "1"]);
    assert!(
        e.contains(&dir) && e.contains("is a directory") && e.contains(&hint),
        "{e}"
    );
    let e = fails(&["info", &dir]);
    assert!(e.contains("is a directory") && e.contains(&hint), "{e}");
    for f in ["config.json", "pytorch_model-00001-of-00002.bin"] {
        let p = ckpt.join(f).display().to_string();
        let e = fails(&["run", "-m", &p, "-p", "hi", "-n", "1"]);
        assert!(e.contains(&p) && e.contains(&hint), "{e}");
    }
    let empty = scratch("empty-model-dir");
    let e = fails(&["info", &empty.display().to_string()]);
    assert!(e.contains("is a directory, not a GGUF model file"), "{e}");
    let _ = std::fs::remove_dir_all(&empty);
}

/// `owlet bench` shows each stage on stderr as it finishes (it printed nothing until the end).
#[test]
fn bench_shows_each_stage_on_stderr() {
    let m = demo_model().display().to_string();
    let o = ok(&[
        "bench",
        "-m",
        &m,
        "-t",
        "1",
        "--prefill",
        "8",
        "--decode",
        "2",
        "--bandwidth-mib",
        "1",
    ]);
    let err = stderr(&o);
    let stages = [
        "bench: load ",
        "bench: image preprocess ",
        "bench: vision encoder ",
        "bench: abstractor ",
        "bench: prefill 8: ",
        "bench: decode 2: ",
        "bench: read bandwidth ",
    ];
    let mut at = 0;
    for s in stages {
        let i = err[at..]
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} missing or out of order in {err}"));
        at += i + s.len();
    }
    // The report itself is on stdout, as before.
    assert!(stdout(&o).contains("decode floor"), "{}", stdout(&o));
}

/// A copy of the demo model in a scratch directory, for tests that damage it.
fn model_copy(name: &str) -> PathBuf {
    let p = scratch(name).join("live.gguf");
    std::fs::copy(demo_model(), &p).unwrap();
    p
}

fn truncate(p: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(4096)
        .unwrap();
}

/// Checks a run that ended because its model shrank: exit code 1 (not a signal), one line
/// naming the file, no panic.
#[track_caller]
fn ended_by_truncation(status: std::process::ExitStatus, err: &str, model: &Path) {
    assert_eq!(status.code(), Some(1), "status {status:?}, stderr {err:?}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("owlet: {}: ", model.display()))
            && last.contains("changed or was truncated while in use"),
        "{err:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Bus error"),
        "{err:?}"
    );
}

/// `owlet chat`, the model file truncated between two questions: one line, exit code 1 (it was
/// "Bus error", exit 135).
#[test]
fn a_model_truncated_between_chat_turns_ends_the_chat_with_one_line() {
    use std::io::BufRead;
    let model = model_copy("truncated-chat");
    let m = model.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(["chat", "-m", &m, "-n", "4", "--ignore-eos"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"What is in the picture?\n").unwrap();
    stdin.flush().unwrap();
    let mut first = String::new();
    answers.read_line(&mut first).unwrap();
    truncate(&model);
    stdin.write_all(b"And what colour is it?\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    ended_by_truncation(o.status, &stderr(&o), &model);
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

/// The model file truncated while `owlet run` generates: whether the library's check between
/// tokens or the SIGBUS handler inside a token catches it, one line and exit code 1.
#[test]
fn a_model_truncated_during_generation_ends_the_run_with_one_line() {
    use std::io::Read;
    let model = model_copy("truncated-run");
    let m = model.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args([
            "run",
            "-m",
            &m,
            "--ids",
            "1",
            "-n",
            "4000",
            "--ignore-eos",
            "-t",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Generation has started once text arrives.
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 32 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the run ended before the truncation");
        got += n;
    }
    truncate(&model);
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let o = child.wait_with_output().unwrap();
    ended_by_truncation(o.status, &stderr(&o), &model);
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

/// `--packed-cache`: `owlet bench` writes the cache, then hits it (with the hidden portable
/// packing, since x86 AVX2 packs nothing), reports anonymous and file-backed memory, and
/// `owlet run` gives the same ids with and without the cache; an unwritable folder is one
/// warning line and the run still succeeds.
#[test]
fn packed_cache_is_written_then_hit_and_changes_no_answer() {
    let d = scratch("packed");
    let model = d.join("tiny-q4km.gguf");
    std::fs::copy(repo("tests/data/llamacpp-tiny/tiny-Q4_K_M.gguf"), &model).unwrap();
    let m = model.display().to_string();
    let cache = d.join("cache").display().to_string();
    let with_env = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_owlet"))
            .args(args)
            .env("OWLET_KERNELS", "generic-packed")
            .env("XDG_CACHE_HOME", d.join("xdg"))
            .current_dir(repo(""))
            .output()
            .expect("spawn owlet")
    };
    let bench = |pc: &str| {
        let o = with_env(&[
            "bench",
            "-m",
            &m,
            "-t",
            "1",
            "--prefill",
            "3",
            "--decode",
            "2",
            "--json",
            "--bandwidth-mib",
            "0",
            "--packed-cache",
            pc,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let first = bench(&cache);
    assert!(first.contains("\"packed_cache\":\"written\""), "{first}");
    assert!(first.contains("\"file_rss_bytes_after_load\":"), "{first}");
    let second = bench(&cache);
    assert!(second.contains("\"packed_cache\":\"hit\""), "{second}");
    assert!(bench("off").contains("\"packed_cache\":\"off\""));

    let run = |pc: &str| {
        let o = with_env(&[
            "run",
            "-m",
            &m,
            "--ids",
            "1,450,100,200",
            "-n",
            "4",
            "--ignore-eos",
            "--print-ids",
            "--packed-cache",
            pc,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (stdout(&o), stderr(&o))
    };
    let (plain, _) = run("off");
    let (hit, err) = run(&cache);
    assert_eq!(hit, plain);
    assert!(!err.contains("warning"), "{err}");
    // The default folder lives under XDG_CACHE_HOME.
    let o = with_env(&["run", "-m", &m, "--ids", "1,450", "-n", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.join("xdg/owlet/packed").is_dir());
    // A folder that cannot be created: one warning line, same answer.
    std::fs::write(d.join("file"), b"x").unwrap();
    let (out, err) = run(&d.join("file/cache").display().to_string());
    assert_eq!(out, plain);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("without the cache"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The committed owlet-shapes held-out set (`owlet eval-shapes`' default `--set`).
fn heldout() -> PathBuf {
    repo("models/owlet-shapes/heldout")
}

#[test]
fn eval_shapes_counts_an_answer_right_only_when_it_is_exact() {
    // What `owlet run` answers about a held-out image becomes the expected answer of one
    // question; a different answer to the same question must count as wrong. So eval-shapes
    // asks exactly as `run` does (template, image, greedy) and compares trimmed text.
    let img = heldout().join("0000.png").display().to_string();
    let q = "How many shapes are there?";
    let o = ok(&["run", "--image", &img, "-p", q, "-n", "32"]);
    let said = stdout(&o).trim().to_string();
    let dir = scratch("eval-set");
    std::fs::copy(heldout().join("0000.png"), dir.join("0000.png")).unwrap();
    let line = |t: &str, a: &str| {
        serde_json::json!({"image": "0000.png", "type": t, "question": q, "answer": a}).to_string()
    };
    let lines = [
        line("count", &format!("  {said} ")),
        line("count", &format!("{said} not")),
        line("other", &said),
    ];
    std::fs::write(dir.join("questions.jsonl"), lines.join("\n") + "\n").unwrap();
    let set = dir.display().to_string();
    let o = ok(&["eval-shapes", "--set", &set, "--json", "--no-embed-cache"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["questions"], 3, "{v}");
    assert_eq!(v["correct"], 2, "{v}");
    assert_eq!(v["types"]["count"]["correct"], 1, "{v}");
    assert_eq!(v["types"]["count"]["total"], 2, "{v}");
    assert_eq!(v["types"]["other"]["correct"], 1, "{v}");
    // The table: known types first, then the others, then the overall row.
    let o = ok(&["eval-shapes", "--set", &set, "--n", "2", "--no-embed-cache"]);
    let rows: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[1].starts_with("count ") && rows[1].contains(" 1 "),
        "{rows:?}"
    );
    assert!(
        rows[2].starts_with("overall") && rows[2].ends_with("0.500"),
        "{rows:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_shapes_defaults_to_the_committed_heldout_set() {
    let text = std::fs::read_to_string(heldout().join("questions.jsonl")).unwrap();
    let n_lines = text.lines().count();
    assert!(n_lines >= 300, "the held-out set has {n_lines} questions");
    let o = ok(&["eval-shapes", "--n", "8", "--json", "--no-embed-cache"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["questions"], 8, "{v}");
    let by_type: u64 = v["types"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["total"].as_u64().unwrap())
        .sum();
    assert_eq!(by_type, 8, "{v}");
}

#[test]
fn eval_shapes_bad_sets_fail_with_one_line() {
    let e = fails(&["eval-shapes", "--set", "/nonexistent/set"]);
    assert!(
        e.contains("/nonexistent/set/questions.jsonl") && e.contains("gen.py"),
        "{e}"
    );
    let dir = scratch("eval-bad");
    let set = dir.display().to_string();
    let q = dir.join("questions.jsonl");
    let cases: [(&str, &str); 5] = [
        ("", "no questions"),
        ("{\"image\": \"a.png\"", "questions.jsonl:1: not JSON"),
        (
            "\n{\"image\": \"a.png\", \"question\": \"q\", \"answer\": \"a\"}",
            "questions.jsonl:2: no string field \"type\"",
        ),
        (
            "{\"image\": \"../a.png\", \"type\": \"t\", \"question\": \"q\", \"answer\": \"a\"}",
            "must be a file name",
        ),
        (
            "{\"image\": \"a.png\", \"type\": \"t\", \"question\": \"q\", \"answer\": \"a\"}",
            "a.png",
        ),
    ];
    for (body, want) in cases {
        std::fs::write(&q, body).unwrap();
        let e = fails(&["eval-shapes", "--set", &set, "--no-embed-cache"]);
        assert!(e.contains(want), "{body:?}: {e}");
    }
    let e = fails(&["eval-shapes", "--n", "0"]);
    assert!(e.contains("--n"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `owlet run` with no arguments asks about, and the answer a model that does the task
/// gives (models/owlet-shapes/example.py draws the image).
const EXAMPLE_QUESTION: &str = "Describe the image.";
const EXAMPLE_ANSWER: &str = "a red circle, a yellow star and a blue square";

/// `owlet run` with no arguments: the question (after the example image's path), then the
/// default model's answer, exactly what `run --image example.png -p QUESTION` prints.
fn bare_run_answer() -> String {
    let example = repo("models/owlet-shapes/example.png");
    let o = owlet_as_is(&["run"]);
    assert!(o.status.success(), "owlet run: {}", stderr(&o));
    let out = stdout(&o);
    let (first, answer) = out.split_once('\n').unwrap_or((&out, ""));
    assert_eq!(
        first,
        format!("{}: {EXAMPLE_QUESTION}", example.display()),
        "{out}"
    );
    let img = example.display().to_string();
    let o = owlet_as_is(&["run", "--image", &img, "-p", EXAMPLE_QUESTION]);
    assert_eq!(answer, stdout(&o), "bare run and explicit run differ");
    answer.trim().to_string()
}

#[test]
fn run_with_no_arguments_asks_about_the_example_image() {
    let answer = bare_run_answer();
    assert!(!answer.is_empty());
}

#[test]
fn run_with_no_arguments_describes_the_example_image_correctly() {
    assert_eq!(bare_run_answer(), EXAMPLE_ANSWER);
}

/// The bundled files are looked up in `$OWLET_DATA` first (then beside the executable, then in
/// the source tree), so an installed owlet finds its default model: a damaged default model
/// placed there is the one `owlet info` reads, and its error names that path.
#[test]
fn the_default_model_is_found_in_owlet_data_first() {
    let data = scratch("owlet-data");
    // Every bundled GGUF name, so the test does not depend on which one is the default.
    std::fs::create_dir_all(data.join("models")).unwrap();
    for e in std::fs::read_dir(repo("models")).unwrap() {
        let n = e.unwrap().file_name();
        if n.to_string_lossy().ends_with(".gguf") {
            std::fs::write(data.join("models").join(&n), b"not a gguf").unwrap();
        }
    }
    let o = Command::new(env!("CARGO_BIN_EXE_owlet"))
        .arg("info")
        .env("OWLET_DATA", &data)
        .current_dir(repo(""))
        .output()
        .expect("spawn owlet");
    assert!(
        !o.status.success(),
        "a damaged model in OWLET_DATA must be read"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&data.display().to_string()),
        "the error names the OWLET_DATA file: {err}"
    );
    // Without OWLET_DATA the source tree's model loads.
    let o = owlet_as_is(&["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&data).ok();
}
