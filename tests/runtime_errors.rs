//! Bad input through the library: every case is an [`owlet::Error`] of the right
//! [`ErrorKind`] with a one-line message naming what is wrong, never a panic. Broken model files
//! are modified copies of the committed demo model written with `owlet::gguf::GgufWriter`.

use std::path::{Path, PathBuf};

use owlet::error::ErrorKind;
use owlet::gguf::{Gguf, GgufWriter, Value};
use owlet::image::{self, ImageLimits, RgbImage};
use owlet::kv_cache::KvType;
use owlet::model::Model;
use owlet::prompt::{self, Role, Segment, Turn, IMAGE_TOKEN_ID};
use owlet::quant::GgmlType;
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, Session, SessionOptions};
use owlet::Error;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn demo_path() -> PathBuf {
    repo("models/owl2-tiny-a-f16.gguf")
}

fn demo() -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| Model::load(&demo_path()).unwrap())
}

fn session(m: &Model) -> Session<'_> {
    Session::new(
        m,
        SessionOptions {
            threads: 1,
            kv_type: KvType::F16,
            n_ctx: None,
        },
    )
    .unwrap()
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("owlet-runtime-errors-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts the kind, a one-line message and that it contains every `want`.
#[track_caller]
fn check(e: &Error, kind: ErrorKind, want: &[&str]) {
    let msg = e.to_string();
    assert_eq!(e.kind(), kind, "{msg}");
    assert!(
        !msg.contains('\n') && !msg.is_empty(),
        "not one line: {msg:?}"
    );
    for w in want {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[track_caller]
fn load_err(path: &Path) -> Error {
    match Model::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

/// A PNG signature and IHDR chunk claiming `w × h`.
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
fn bad_images_are_refused() {
    let l = ImageLimits::default();
    let dir = scratch();
    let e = image::load(&dir.join("no-such-image.png"), &l).unwrap_err();
    check(&e, ErrorKind::Io, &["no-such-image.png"]);

    let mut corrupt = std::fs::read(repo("tests/data/assets/coffee.png")).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    let p = dir.join("half.png");
    std::fs::write(&p, &corrupt).unwrap();
    check(
        &image::load(&p, &l).unwrap_err(),
        ErrorKind::BadImage,
        &["half.png"],
    );

    let cases: [(&[u8], &[&str]); 6] = [
        (b"", &["empty"]),
        (b"not an image", &["PNG and JPEG"]),
        (&png_header(0, 0), &["zero size"]),
        (&png_header(100_000, 1), &["100000", "16384"]),
        (&png_header(16_000, 16_000), &["256000000", "pixels"]),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &["GIF"]),
    ];
    for (bytes, want) in cases {
        check(
            &image::decode(bytes, &l).unwrap_err(),
            ErrorKind::BadImage,
            want,
        );
    }
    // A JPEG cut short after its start marker.
    check(
        &image::decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00], &l).unwrap_err(),
        ErrorKind::BadImage,
        &["JPEG"],
    );
    // Raw buffers: zero size and a wrong length.
    check(
        &image::from_rgb(0, 5, &[]).unwrap_err(),
        ErrorKind::BadImage,
        &["zero size"],
    );
    check(
        &image::from_rgb(2, 2, &[0; 11]).unwrap_err(),
        ErrorKind::BadImage,
        &["12", "11"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_session_and_sampling_arguments() {
    let m = demo();
    let e = Session::new(
        m,
        SessionOptions {
            threads: 0,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    check(&e, ErrorKind::InvalidArgument, &["threads", "0"]);
    for n_ctx in [0, 4097] {
        let e = Session::new(
            m,
            SessionOptions {
                n_ctx: Some(n_ctx),
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        check(
            &e,
            ErrorKind::InvalidArgument,
            &[&n_ctx.to_string(), "4096"],
        );
    }
    assert!("bf16".parse::<KvType>().unwrap_err().contains("bf16"));

    let mut s = session(m);
    let logits = s.prefill(&[1, 3148], &[], false, None).unwrap();
    for (p, name) in [
        (
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top-p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top-p",
        ),
        (
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            "repeat penalty",
        ),
        (
            SamplingParams {
                repeat_penalty: f32::INFINITY,
                ..Default::default()
            },
            "repeat penalty",
        ),
    ] {
        let opts = GenerateOptions {
            max_tokens: 2,
            sampling: p,
            ignore_eos: false,
        };
        let e = s
            .generate(logits.clone(), &opts, &mut |_, _| true)
            .unwrap_err();
        check(&e, ErrorKind::InvalidArgument, &[name]);
        let e = s
            .chat("hi", &[], None, &opts, &mut |_, _| true)
            .unwrap_err();
        check(&e, ErrorKind::InvalidArgument, &[name]);
    }
    assert_eq!(s.n_past(), 2, "failed calls change nothing");
}

#[test]
fn bad_prompts_are_refused_before_compute() {
    let m = demo();
    let mut s = Session::new(
        m,
        SessionOptions {
            threads: 1,
            kv_type: KvType::F16,
            n_ctx: Some(32),
        },
    )
    .unwrap();
    let img = s
        .embed_image(&RgbImage::filled(20, 10, [200, 10, 10]), None)
        .unwrap();

    // Longer than the context: both numbers, nothing fed.
    let long: Vec<i64> = std::iter::once(1)
        .chain(std::iter::repeat_n(450, 40))
        .collect();
    let e = s.prefill(&long, &[], false, None).unwrap_err();
    check(&e, ErrorKind::BadPrompt, &["41 positions", "32"]);
    assert_eq!(s.n_past(), 0);
    // Images count: 25 ids + 9 image rows = 34 > 32.
    let mut with_img = vec![1i64, IMAGE_TOKEN_ID];
    with_img.extend(std::iter::repeat_n(450, 24));
    let e = s.prefill(&with_img, &[&img], false, None).unwrap_err();
    check(
        &e,
        ErrorKind::BadPrompt,
        &[
            "the prompt needs 34 positions (25 text tokens + 1 image × 9)",
            "the context holds 32",
        ],
    );
    check(
        &s.check_prompt(&with_img).unwrap_err(),
        ErrorKind::BadPrompt,
        &["34", "32"],
    );
    assert_eq!(s.n_past(), 0);

    // Placeholders against images, both ways.
    let e = s
        .prefill(&[1, IMAGE_TOKEN_ID, 450], &[], false, None)
        .unwrap_err();
    check(&e, ErrorKind::BadPrompt, &["1 image placeholder(s) but 0"]);
    let e = s.prefill(&[1, 450], &[&img], false, None).unwrap_err();
    check(&e, ErrorKind::BadPrompt, &["0 image placeholder(s) but 1"]);
    let turns = [Turn {
        role: Role::User,
        text: "<|image|> vs <|image|>".into(),
        images: 1,
    }];
    check(
        &prompt::render_chat(&turns, true).unwrap_err(),
        ErrorKind::BadPrompt,
        &["2", "1 image"],
    );
    let e = s.chat(
        "<|image|> and <|image|>",
        &[RgbImage::filled(4, 4, [0; 3])],
        None,
        &GenerateOptions::default(),
        &mut |_, _| true,
    );
    check(&e.unwrap_err(), ErrorKind::BadPrompt, &["placeholder"]);

    // Out-of-vocabulary ids, an empty prompt.
    check(
        &s.prefill(&[1, 32000], &[], false, None).unwrap_err(),
        ErrorKind::BadPrompt,
        &["32000", "vocabulary"],
    );
    check(
        &s.prefill(&[1, -5], &[], false, None).unwrap_err(),
        ErrorKind::BadPrompt,
        &["-5"],
    );
    check(
        &s.prefill(&[], &[], false, None).unwrap_err(),
        ErrorKind::BadPrompt,
        &["empty"],
    );
    assert_eq!(s.n_past(), 0);
}

/// `</s>` and `<s>` typed by a user are text; the template's own `</s>` after an assistant turn
/// is the EOS id.
#[test]
fn special_token_text_is_only_control_where_the_template_puts_it() {
    let tok = demo().tokenizer();
    let (bos, eos) = (i64::from(tok.bos()), i64::from(tok.eos()));
    let user = "Is </s> the end? <s>no</s>";
    let turns = [Turn {
        role: Role::User,
        text: user.into(),
        images: 0,
    }];
    let ids = prompt::tokenize_segments(tok, &prompt::render_chat(&turns, true).unwrap());
    assert_eq!(ids[0], bos);
    assert!(!ids[1..].contains(&bos) && !ids.contains(&eos), "{ids:?}");
    let raw = prompt::tokenize_segments(tok, &prompt::parse_raw(user));
    assert!(!raw[1..].contains(&bos) && !raw.contains(&eos), "{raw:?}");

    let conv = [
        Turn {
            role: Role::User,
            text: "Hi </s>".into(),
            images: 0,
        },
        Turn {
            role: Role::Assistant,
            text: "Hello <s>".into(),
            images: 0,
        },
        Turn {
            role: Role::User,
            text: "Bye".into(),
            images: 0,
        },
    ];
    let segs = prompt::render_chat(&conv, true).unwrap();
    assert_eq!(segs.iter().filter(|s| **s == Segment::Eos).count(), 1);
    let ids = prompt::tokenize_segments(tok, &segs);
    assert_eq!(ids.iter().filter(|&&i| i == eos).count(), 1, "{ids:?}");
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "{ids:?}");
    // The EOS sits right after the assistant's text, before the next "USER:".
    let pos = ids.iter().position(|&i| i == eos).unwrap();
    let before = tok.decode(&ids[1..pos].iter().map(|&i| i as u32).collect::<Vec<_>>());
    assert!(before.ends_with("ASSISTANT: Hello <s>"), "{before:?}");
    let after = tok.decode(&ids[pos + 1..].iter().map(|&i| i as u32).collect::<Vec<_>>());
    assert!(after.trim_start().starts_with("USER: Bye"), "{after:?}");
}

/// Writes a copy of the demo model, changing the metadata and the tensor table (rows of
/// `(name, dims, type)` that the edit may drop or change). Data follows by name; a tensor whose
/// byte size changed is written as zeros.
fn modified_copy(
    name: &str,
    edit_meta: impl Fn(&mut Vec<(String, Value)>),
    edit_tensors: impl Fn(&mut Vec<(String, Vec<u64>, GgmlType)>),
) -> PathBuf {
    let g = Gguf::open(&demo_path()).unwrap();
    let mut meta: Vec<(String, Value)> = g.metadata().to_vec();
    edit_meta(&mut meta);
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = g
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.typ))
        .collect();
    edit_tensors(&mut tensors);
    let out = scratch().join(format!("{name}.gguf"));
    let f = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    let mut w = GgufWriter::new(f, &meta, &tensors, g.alignment()).unwrap();
    for (n, dims, typ) in &tensors {
        let data = g.tensor_data(n).unwrap();
        let n_el: u64 = dims.iter().product();
        let size = match typ {
            GgmlType::F32 => n_el as usize * 4,
            GgmlType::F16 => n_el as usize * 2,
            _ => data.len(),
        };
        if size == data.len() {
            w.write_tensor(n, data).unwrap();
        } else {
            w.write_tensor(n, &vec![0u8; size]).unwrap();
        }
    }
    w.finish().unwrap();
    out
}

#[test]
fn broken_model_files_are_refused_at_load() {
    let keep_meta = |_: &mut Vec<(String, Value)>| {};
    let keep_tensors = |_: &mut Vec<(String, Vec<u64>, GgmlType)>| {};

    // An unchanged copy loads: the edits below are what breaks the files.
    let same = modified_copy("same", keep_meta, keep_tensors);
    Model::load(&same).unwrap();

    for missing in [
        "blk.1.ffn_up.weight",
        "blk.2.attn_k_vis.weight",
        "v.blk.1.attn_q.bias",
        "abstractor.query_embd",
        "output_norm.weight",
    ] {
        let p = modified_copy("missing", keep_meta, |t| t.retain(|(n, _, _)| n != missing));
        check(
            &load_err(&p),
            ErrorKind::BadModel,
            &[missing, "missing", "owlet-convert", "missing.gguf"],
        );
    }
    // Same byte size, transposed shape.
    let p = modified_copy("transposed", keep_meta, |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "blk.0.ffn_gate.weight")
            .unwrap();
        e.1 = vec![160, 64];
    });
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["blk.0.ffn_gate.weight", "[160, 64]", "[64, 160]"],
    );
    // A norm vector of the wrong length (written as zeros).
    let p = modified_copy("vector", keep_meta, |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "v.blk.0.ln1.weight")
            .unwrap();
        e.1 = vec![80];
    });
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["v.blk.0.ln1.weight", "80", "96"],
    );
    // A matrix stored as a type owlet cannot multiply (same byte size: f32 [64, 80] for f16 [64, 160]).
    let p = modified_copy("type", keep_meta, |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "blk.2.ffn_down.weight")
            .unwrap();
        *e = (e.0.clone(), vec![80, 64], GgmlType::F32);
    });
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["blk.2.ffn_down.weight"],
    );

    let set = |key: &'static str, v: Value| {
        move |m: &mut Vec<(String, Value)>| {
            let e = m.iter_mut().find(|(k, _)| k == key).unwrap();
            e.1 = v.clone();
        }
    };
    let p = modified_copy(
        "arch",
        set("general.architecture", Value::from("gpt2")),
        keep_tensors,
    );
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["unknown architecture", "gpt2"],
    );
    let p = modified_copy(
        "noarch",
        |m| m.retain(|(k, _)| k != "general.architecture"),
        keep_tensors,
    );
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["general.architecture"],
    );
    // The config and the tensors disagree.
    let p = modified_copy(
        "width",
        set("mplug-owl2.feed_forward_length", Value::from(128u32)),
        keep_tensors,
    );
    check(&load_err(&p), ErrorKind::BadModel, &["ffn", "128"]);
    let p = modified_copy(
        "tok",
        set("tokenizer.ggml.model", Value::from("gpt2")),
        keep_tensors,
    );
    check(
        &load_err(&p),
        ErrorKind::BadModel,
        &["tokenizer.ggml.model", "gpt2"],
    );

    // Not a GGUF file at all, a missing file.
    check(
        &load_err(&repo("tests/data/owl2-tiny-a/README.md")),
        ErrorKind::BadModel,
        &["README.md"],
    );
    check(
        &load_err(&repo("no/such/model.gguf")),
        ErrorKind::Io,
        &["no/such/model.gguf"],
    );
    let _ = std::fs::remove_dir_all(scratch());
}

/// Hand-made images and pixel buffers that do not hold what they claim are refused, not
/// encoded.
#[test]
fn invalid_images_and_pixels_are_refused_by_the_session() {
    let s = session(demo());
    let bad = [
        RgbImage {
            width: 0,
            height: 4,
            data: vec![],
        },
        RgbImage {
            width: 4,
            height: 4,
            data: vec![0; 47],
        },
    ];
    for img in &bad {
        check(
            &s.embed_image(img, None).unwrap_err(),
            ErrorKind::BadImage,
            &["image"],
        );
    }
    check(
        &s.embed_pixels(&[0.0; 100]).unwrap_err(),
        ErrorKind::BadImage,
        &["100", "112"],
    );
    assert_eq!(
        s.embed_pixels(&vec![0.0; 3 * 112 * 112])
            .unwrap()
            .rows
            .len(),
        9 * 64
    );
    // 1×1 and 1×10000 images work in every aspect mode.
    for mode in [
        image::AspectMode::Resize,
        image::AspectMode::Pad,
        image::AspectMode::Crop,
    ] {
        for (w, h) in [(1, 1), (1, 10_000), (10_000, 1)] {
            let e = s
                .embed_image(&RgbImage::filled(w, h, [9, 99, 199]), Some(mode))
                .unwrap();
            assert!(e.rows.iter().all(|v| v.is_finite()), "{mode} {w}x{h}");
        }
    }
}

/// The stages called directly: a text-only model has no vision tower or abstractor, and inputs
/// of the wrong size are refused (they were an `unreachable!` panic and a `debug_assert`).
#[test]
fn vision_stages_refuse_text_only_models_and_wrong_sizes() {
    let llama = Model::load(&repo("tests/data/llamacpp-tiny/tiny-Q8_0.gguf")).unwrap();
    assert!(!llama.has_vision());
    check(
        &llama.encode_image(&[0.0; 12]).unwrap_err(),
        ErrorKind::BadPrompt,
        &["text-only", "vision"],
    );
    check(
        &llama.abstract_image(&[0.0; 12]).unwrap_err(),
        ErrorKind::BadPrompt,
        &["text-only", "abstractor"],
    );
    let m = demo();
    check(
        &m.encode_image(&[0.0; 100]).unwrap_err(),
        ErrorKind::BadImage,
        &["100", "[3, 112, 112]"],
    );
    let feats = m.encode_image(&vec![0.0; 3 * 112 * 112]).unwrap();
    check(
        &m.abstract_image(&feats[1..]).unwrap_err(),
        ErrorKind::BadImage,
        &[&(feats.len() - 1).to_string(), "abstractor"],
    );
    assert_eq!(m.abstract_image(&feats).unwrap().len(), 9 * 64);
}

/// A model file changed under a loaded model: every session call that would read it says so,
/// naming the file, instead of reading a truncated map (SIGBUS) or other weights.
#[test]
fn a_model_file_changed_while_loaded_is_refused() {
    // Not under scratch(), which another test removes when it ends.
    let d = std::env::temp_dir().join(format!("owlet-changed-model-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let (shrunk, rewritten, replaced) = (
        d.join("shrunk.gguf"),
        d.join("rewritten.gguf"),
        d.join("replaced.gguf"),
    );
    for p in [&shrunk, &rewritten, &replaced] {
        std::fs::copy(demo_path(), p).unwrap();
    }
    let opts = || SessionOptions {
        threads: 1,
        kv_type: KvType::F16,
        n_ctx: Some(64),
    };
    let want = "changed or was truncated while in use";

    // Truncated: prefill, generation and image encoding refuse; nothing is read.
    let m = Model::load(&shrunk).unwrap();
    let mut s = Session::new(&m, opts()).unwrap();
    let logits = s.prefill(&[1, 450], &[], false, None).unwrap();
    m.check_file().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shrunk)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let name = shrunk.display().to_string();
    check(
        &m.check_file().unwrap_err(),
        ErrorKind::Io,
        &[&name, want, "4096 now"],
    );
    check(
        &s.prefill(&[450], &[], false, None).unwrap_err(),
        ErrorKind::Io,
        &[&name, want, "reload the model"],
    );
    check(
        &s.generate(logits, &GenerateOptions::default(), &mut |_, _| true)
            .unwrap_err(),
        ErrorKind::Io,
        &[&name, want],
    );
    check(
        &s.embed_pixels(&vec![0.0; 3 * 112 * 112]).unwrap_err(),
        ErrorKind::Io,
        &[&name, want],
    );
    check(
        &s.chat("hi", &[], None, &GenerateOptions::default(), &mut |_, _| {
            true
        })
        .unwrap_err(),
        ErrorKind::Io,
        &[&name, want],
    );

    // Rewritten in place with the same length: the modification time tells.
    let m = Model::load(&rewritten).unwrap();
    let mut s = Session::new(&m, opts()).unwrap();
    let bytes = std::fs::read(&rewritten).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rewritten)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert_eq!(
        std::fs::metadata(&rewritten).unwrap().len(),
        bytes.len() as u64
    );
    check(
        &s.prefill(&[1], &[], false, None).unwrap_err(),
        ErrorKind::Io,
        &[
            &rewritten.display().to_string(),
            "modified since it was loaded",
        ],
    );

    // Replaced by a rename: the mapped file itself is intact, so the model keeps working.
    let m = Model::load(&replaced).unwrap();
    let mut s = Session::new(&m, opts()).unwrap();
    let other = d.join("other.gguf");
    std::fs::write(&other, b"not a model").unwrap();
    std::fs::rename(&other, &replaced).unwrap();
    m.check_file().unwrap();
    s.prefill(&[1, 450], &[], false, None).unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

/// A directory, or a file of an unconverted checkpoint, as the model: say what it is and how
/// to convert it (`No such device (os error 19)` before).
#[test]
fn a_directory_or_checkpoint_file_as_the_model_says_how_to_convert() {
    let ckpt = repo("tests/data/owl2-tiny-a/checkpoint");
    let hint = format!(
        "owlet-convert {} -o model.gguf --type q4_k_m",
        ckpt.display()
    );
    check(
        &load_err(&ckpt),
        ErrorKind::BadModel,
        &[
            &ckpt.display().to_string(),
            "is a directory",
            "Hugging Face checkpoint",
            &hint,
        ],
    );
    for f in [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "tokenizer.model",
    ] {
        let p = ckpt.join(f);
        check(
            &load_err(&p),
            ErrorKind::BadModel,
            &[&p.display().to_string(), "not a GGUF file", &hint],
        );
    }
    let empty = std::env::temp_dir().join(format!("owlet-empty-dir-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    check(
        &load_err(&empty),
        ErrorKind::BadModel,
        &[
            &empty.display().to_string(),
            "is a directory, not a GGUF model file",
        ],
    );
    // A stray non-GGUF file elsewhere keeps the plain message.
    let e = load_err(&repo("tests/data/llamacpp-tiny/README.md"));
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
    assert!(!e.to_string().contains("owlet-convert"), "{e}");
    let _ = std::fs::remove_dir(&empty);
}
