//! Video input on the committed demo model: the frames Q-Align samples, a video's frames
//! concatenated into the one `<|image|>` slot (bitwise the same as embedding each frame and
//! concatenating by hand), context errors that name the frame count, video scoring, and the
//! CLI's decoders (MP4/H.264, animated GIF, a folder of frames) on the clips committed under
//! tests/data/video/.

use std::path::{Path, PathBuf};

use owlet::image::{self, RgbImage};
use owlet::model::Model;
use owlet::prompt::IMAGE_TOKEN_ID;
use owlet::score::{Aspect, ScoreOptions, Scorer, Subject};
use owlet::session::{GenerateOptions, ImageEmbedding, Media, Session, SessionOptions};
use owlet::video;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn model() -> Model {
    Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap()
}

fn session(m: &Model) -> Session<'_> {
    let mut s = Session::new(
        m,
        SessionOptions {
            threads: 2,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    // Encode every frame: the comparison below is between two encodings, not cache hits.
    s.set_embed_cache(None);
    s
}

/// A small frame that differs from frame to frame (a moving gradient on a coloured ground).
fn frame(i: u32) -> RgbImage {
    let (w, h) = (48u32, 36u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.push(((x * 5 + i * 40) % 256) as u8);
            data.push(((y * 7 + i * 90) % 256) as u8);
            data.push((i * 60 % 256) as u8);
        }
    }
    image::from_rgb(w, h, &data).unwrap()
}

/// BOS, some text, the image slot, more text.
fn prompt_ids(n_slots: usize) -> Vec<i64> {
    let mut ids = vec![1, 3148, 1001, 29901];
    ids.extend(std::iter::repeat_n(IMAGE_TOKEN_ID, n_slots));
    ids.extend([29871, 13, 22933, 9047, 13566, 29901]);
    ids
}

#[test]
fn frame_indices_follow_q_aligns_load_video() {
    // int(fps * i) for i in range(int(len(vr) / fps)), evaluated in f64 as Python does.
    for (n, fps) in [
        (300usize, 30.0f64),
        (301, 29.97),
        (90, 24.0),
        (1799, 59.94),
        (25, 25.0),
        (24, 25.0),
        (13, 2.5),
    ] {
        let count = (n as f64 / fps) as usize;
        let want: Vec<usize> = (0..count).map(|i| (fps * i as f64) as usize).collect();
        assert_eq!(
            video::frame_indices(n, fps, 1.0).unwrap(),
            want,
            "{n} frames at {fps}"
        );
    }
    assert_eq!(video::frame_indices(90, 24.0, 1.0).unwrap(), [0, 24, 48]);
    // --fps 2 halves the step; --max-frames keeps an even subset.
    assert_eq!(
        video::frame_indices(100, 25.0, 2.0).unwrap(),
        [0, 12, 25, 37, 50, 62, 75, 87]
    );
    let s = video::Sampling {
        rate: 2.0,
        max_frames: Some(3),
    };
    assert_eq!(video::sample(100, 25.0, &s).unwrap(), [0, 25, 62]);
}

#[test]
fn a_video_fills_one_slot_with_its_frames_in_order() {
    let m = model();
    let frames: Vec<RgbImage> = (0..3).map(frame).collect();
    let s = session(&m);
    let (n_img, d) = (m.config.image_tokens, m.config.text.n_embd);

    // embed_video is the frames' embeddings concatenated in order.
    let v = s.embed_video(&frames, None).unwrap();
    let mut by_hand = Vec::new();
    for f in &frames {
        by_hand.extend_from_slice(&s.embed_image(f, None).unwrap().rows);
    }
    assert_eq!(v.rows.len(), 3 * n_img * d);
    assert_eq!(v.frames(n_img, d), 3);
    assert!(
        v.rows == by_hand,
        "embed_video differs from the frames' embeddings"
    );

    // One slot holding the video gives bitwise the logits of the hand-made concatenation and of
    // three consecutive image slots (the same rows at the same positions).
    let logits = |ids: &[i64], embs: &[&ImageEmbedding]| {
        let mut s = session(&m);
        let l = s.prefill(ids, embs, true, None).unwrap();
        (l, s.n_past())
    };
    let (a, na) = logits(&prompt_ids(1), &[&v]);
    let hand = ImageEmbedding { rows: by_hand };
    let (b, _) = logits(&prompt_ids(1), &[&hand]);
    let per: Vec<ImageEmbedding> = frames
        .iter()
        .map(|f| s.embed_image(f, None).unwrap())
        .collect();
    let (c, nc) = logits(&prompt_ids(3), &per.iter().collect::<Vec<_>>());
    assert_eq!(na, prompt_ids(1).len() - 1 + 3 * n_img);
    assert_eq!(na, nc);
    // Counting positions: a video's sentinel takes its frames' rows, an image's one image's.
    assert_eq!(s.positions_with_frames(&prompt_ids(1), &[3]), na);
    assert_eq!(s.positions(&prompt_ids(3)), nc);
    assert_eq!(s.positions(&prompt_ids(1)), na - 2 * n_img);
    assert!(a == b, "video slot vs hand-made concatenation");
    assert!(a == c, "video slot vs one slot per frame");

    // The frames' order matters.
    let rev: Vec<RgbImage> = frames.iter().rev().cloned().collect();
    let r = s.embed_video(&rev, None).unwrap();
    let (d2, _) = logits(&prompt_ids(1), &[&r]);
    assert!(a != d2, "reversed frames gave the same logits");
}

#[test]
fn chat_with_a_video_then_text_reuses_the_cache() {
    let m = model();
    let frames: Vec<RgbImage> = (0..2).map(frame).collect();
    let opts = GenerateOptions {
        max_tokens: 3,
        ..GenerateOptions::default()
    };
    let mut a = session(&m);
    a.chat_media(
        "What happens?",
        &[Media::Video(frames.clone())],
        None,
        &opts,
        &mut |_, _| true,
    )
    .unwrap();
    let (n_img, d) = (m.config.image_tokens, m.config.text.n_embd);
    assert!(a.n_past() > 2 * n_img);
    a.chat_media("And then?", &[], None, &opts, &mut |_, _| true)
        .unwrap();
    // The second turn reused the first (the video's two frames included) ...
    assert!(a.reused_positions() > 2 * n_img, "{}", a.reused_positions());
    // ... and gives what recomputing the whole conversation gives.
    let mut b = session(&m);
    b.chat_media(
        "What happens?",
        &[Media::Video(frames)],
        None,
        &opts,
        &mut |_, _| true,
    )
    .unwrap();
    b.truncate(0); // forget the cache: the next turn recomputes its whole prompt
    b.chat_media("And then?", &[], None, &opts, &mut |_, _| true)
        .unwrap();
    assert_eq!(b.reused_positions(), 0);
    let (la, lb) = (a.chat_prompt_logits(), b.chat_prompt_logits());
    let worst = la
        .iter()
        .zip(lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "reused vs recomputed: {worst}");
    assert_eq!(a.n_past(), b.n_past());
    let _ = d;
}

#[test]
fn too_many_frames_are_refused_naming_the_frame_count() {
    let m = model();
    let n_img = m.config.image_tokens;
    let n_ctx = 4 * n_img + 8;
    let mut s = Session::new(
        &m,
        SessionOptions {
            threads: 1,
            n_ctx: Some(n_ctx),
            ..SessionOptions::default()
        },
    )
    .unwrap();
    let frames: Vec<RgbImage> = (0..6).map(frame).collect();
    // More frames than the whole context: refused by embed_video before encoding.
    let e = s.embed_video(&frames, None).unwrap_err();
    let msg = e.message().to_string();
    assert!(msg.contains("6 frames"), "{msg}");
    assert!(msg.contains(&format!("context of {n_ctx}")), "{msg}");
    assert!(msg.contains("--max-frames 4"), "{msg}");
    assert!(!msg.contains('\n'));
    // Frames that fit alone but not with the chat's text: the chat names them too.
    let e = s
        .chat_media(
            "Describe the video.",
            &[Media::Video(frames[..4].to_vec())],
            None,
            &GenerateOptions::default(),
            &mut |_, _| true,
        )
        .unwrap_err();
    let msg = e.message().to_string();
    assert!(msg.contains("4 frames"), "{msg}");
    assert!(msg.contains("--max-frames 3"), "{msg}");
    assert_eq!(s.n_past(), 0);
    // A scorer too.
    let mut sc = Scorer::new(&mut s, ScoreOptions::task(Aspect::Quality, Subject::Video)).unwrap();
    let e = sc.score_video(&frames[..4]).unwrap_err();
    assert!(e.message().contains("4 frames"), "{e}");
    assert!(sc.score_video(&[]).is_err());
}

#[test]
fn score_video_is_the_score_of_the_concatenated_frames() {
    let m = model();
    let frames: Vec<RgbImage> = (0..3).map(frame).collect();
    let o = ScoreOptions::task(Aspect::Quality, Subject::Video);
    assert!(o.prompt.contains("quality of this video"));
    let mut s = session(&m);
    let mut sc = Scorer::new(&mut s, o.clone()).unwrap();
    let got = sc.score_video(&frames).unwrap();
    assert!((1.0..=5.0).contains(&got.score));
    // By hand: Q-Align pads each frame, encodes, concatenates.
    let s2 = session(&m);
    let mut rows = Vec::new();
    for f in &frames {
        rows.extend(s2.embed_image(f, Some(o.mode)).unwrap().rows);
    }
    let mut s3 = session(&m);
    let mut sc3 = Scorer::new(&mut s3, o.clone()).unwrap();
    let want = sc3.score_embedding(&ImageEmbedding { rows }).unwrap();
    assert_eq!(got, want);
    // A one-frame video scores like that frame as an image with the same prompt.
    let one = sc.score_video(&frames[..1]).unwrap();
    let img = sc.score_image(&frames[0]).unwrap();
    assert_eq!(one, img);
    assert_ne!(one, got);
}

// ---------------------------------------------------------------------------------------------
// The CLI: decoders, `owlet frames`, `--video` on run/logits/tokenize/score, `/video` in chat.
// ---------------------------------------------------------------------------------------------

use std::process::{Command, Output, Stdio};

#[path = "common/scratch.rs"]
mod scratch;

fn clip(name: &str) -> String {
    repo("tests/data/video").join(name).display().to_string()
}

/// A command that takes a model, on the tiny demo model whose numbers these tests check
/// (whatever the CLI's default model is).
fn owlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(args)
        .arg("--no-embed-cache")
        .arg("-m")
        .arg(repo("models/owl2-tiny-a-f16.gguf"))
        .current_dir(repo(""))
        .output()
        .expect("spawn owlet")
}

/// `owlet frames` takes no model arguments.
fn frames_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owlet"))
        .arg("frames")
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("spawn owlet")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The one-line error of a failed run.
fn fails(o: Output, what: &str) -> String {
    assert!(!o.status.success(), "{what} succeeded");
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "{what}: not one line: {e}");
    assert!(!e.contains("panicked"), "{what}: {e}");
    e
}

/// A scratch directory private to this test.
fn scratch(name: &str) -> PathBuf {
    scratch::run_dir(env!("CARGO_TARGET_TMPDIR"), "owlet-video", Some(name))
}

/// `owlet frames` lines: (index, mean colour).
fn sampled(out: &str) -> Vec<(usize, [i32; 3])> {
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let c: Vec<i32> = f[2].split(',').map(|x| x.parse().unwrap()).collect();
            (f[0].parse().unwrap(), [c[0], c[1], c[2]])
        })
        .collect()
}

fn near(got: [i32; 3], want: [i32; 3]) -> bool {
    got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 12)
}

#[test]
fn clips_decode_to_their_frames_and_colours() {
    // 3 s at 10 fps: red, green (ffmpeg's "green" is 0,128,0), blue; one frame a second.
    let colours = [[255, 0, 0], [0, 128, 0], [0, 0, 255]];
    for name in ["baseline.mp4", "high.mp4", "clip.gif"] {
        let o = frames_cmd(&[&clip(name)]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        let out = ok(o, name);
        assert!(err.contains("30 frames at 10.000 fps"), "{name}: {err}");
        let s = sampled(&out);
        assert_eq!(
            s.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 10, 20],
            "{name}"
        );
        for ((_, got), want) in s.iter().zip(colours) {
            assert!(near(*got, want), "{name}: {got:?} vs {want:?}");
        }
    }
    // --fps and --max-frames.
    let out = ok(
        frames_cmd(&[&clip("high.mp4"), "--fps", "5", "--max-frames", "6"]),
        "--fps 5",
    );
    let idx: Vec<usize> = sampled(&out).iter().map(|x| x.0).collect();
    assert_eq!(idx, [0, 4, 10, 14, 20, 24]);
    let out = ok(frames_cmd(&[&clip("clip.gif"), "--max-frames", "2"]), "gif");
    assert_eq!(
        sampled(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
        [0, 10]
    );
}

#[test]
fn a_folder_of_frames_is_a_video_in_name_order() {
    let dir = scratch("folder");
    // Saved frames of the MP4 (lossless PNG), named so that plain sorting would misorder them.
    let saved = scratch("saved");
    ok(
        frames_cmd(&[&clip("baseline.mp4"), "--save", saved.to_str().unwrap()]),
        "--save",
    );
    for (i, n) in [(0, "f2.png"), (10, "f10.png"), (20, "f11.png")] {
        std::fs::copy(saved.join(format!("frame_{i:06}.png")), dir.join(n)).unwrap();
    }
    let out = ok(frames_cmd(&[dir.to_str().unwrap()]), "folder");
    let s = sampled(&out);
    assert_eq!(s.len(), 3);
    assert!(near(s[0].1, [255, 0, 0]) && near(s[1].1, [0, 128, 0]) && near(s[2].1, [0, 0, 255]));

    // The folder and the MP4 give bitwise the same logits, which are the Rust API's on the
    // frames embedded one by one and concatenated.
    let prompt = "USER: <|image|>\nWhat happens? ASSISTANT:";
    let npy = |input: &str, name: &str| {
        let p = dir.join(name);
        ok(
            owlet(&[
                "logits",
                "--raw-prompt",
                prompt,
                "--video",
                input,
                "--out",
                p.to_str().unwrap(),
            ]),
            name,
        );
        owlet::npy::read(&p).unwrap().to_f32()
    };
    let from_mp4 = npy(&clip("baseline.mp4"), "mp4.npy");
    let from_dir = npy(dir.to_str().unwrap(), "dir.npy");
    assert!(from_mp4 == from_dir, "MP4 and folder of its frames differ");

    let m = model();
    let mut s = session(&m);
    let mut rows = Vec::new();
    for n in ["f2.png", "f10.png", "f11.png"] {
        let img = image::load(&dir.join(n), &Default::default()).unwrap();
        rows.extend(s.embed_image(&img, None).unwrap().rows);
    }
    let ids = owlet::prompt::tokenize_segments(m.tokenizer(), &owlet::prompt::parse_raw(prompt));
    let want = s
        .prefill(&ids, &[&ImageEmbedding { rows }], true, None)
        .unwrap();
    assert!(from_mp4 == want, "CLI --video vs the Rust API");
}

#[test]
fn run_tokenize_score_and_chat_take_a_video() {
    let out = ok(
        owlet(&[
            "tokenize",
            "-p",
            "What happens?",
            "--video",
            &clip("clip.gif"),
        ]),
        "tokenize",
    );
    assert_eq!(out.matches("-200").count(), 1, "{out}");
    let out = ok(
        owlet(&[
            "run",
            "--video",
            &clip("high.mp4"),
            "-p",
            "What happens?",
            "-n",
            "3",
            "--ignore-eos",
            "--print-ids",
        ]),
        "run",
    );
    assert_eq!(out.lines().last().unwrap().split(',').count(), 3, "{out}");

    // score --video: Q-Align's video prompt over the sampled frames.
    let out = ok(
        owlet(&["score", "--video", &clip("baseline.mp4"), "-v"]),
        "score",
    );
    let at = out.find("\"score\":").unwrap() + 8;
    let got: f64 = out[at..].split([',', '}']).next().unwrap().parse().unwrap();
    let saved = scratch("score");
    ok(
        frames_cmd(&[&clip("baseline.mp4"), "--save", saved.to_str().unwrap()]),
        "--save",
    );
    let frames: Vec<RgbImage> = [0, 10, 20]
        .iter()
        .map(|i| {
            image::load(
                &saved.join(format!("frame_{i:06}.png")),
                &Default::default(),
            )
            .unwrap()
        })
        .collect();
    let m = model();
    let mut s = session(&m);
    let want = Scorer::new(&mut s, ScoreOptions::task(Aspect::Quality, Subject::Video))
        .unwrap()
        .score_video(&frames)
        .unwrap();
    assert!((got - want.score).abs() < 1e-9, "{got} vs {}", want.score);
    // A bad video in a batch is a line with its error; the batch goes on.
    let out = owlet(&["score", "--video", &clip("hevc.mp4"), &clip("clip.gif")]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().next().unwrap().contains("H.265"), "{text}");
    assert!(text.lines().nth(1).unwrap().contains("\"score\""), "{text}");

    // chat: /video attaches the sampled frames to the next message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_owlet"))
        .args(["chat", "-n", "2", "--no-embed-cache", "-m"])
        .arg(repo("models/owl2-tiny-a-f16.gguf"))
        .current_dir(repo(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "/video {}\nWhat happens?\n/video\n/quit",
            clip("baseline.mp4")
        )
        .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("video attached to the next message: 3 frames"),
        "{err}"
    );
    assert!(err.contains("usage: /video PATH"), "{err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn bad_videos_and_too_many_frames_are_one_line_errors() {
    let e = fails(frames_cmd(&[&clip("hevc.mp4")]), "hevc");
    assert!(e.contains("H.265") && e.contains("ffmpeg -i"), "{e}");
    let e = fails(frames_cmd(&["Cargo.toml"]), "text file");
    assert!(e.contains("not a video"), "{e}");
    let e = fails(frames_cmd(&["/nonexistent/clip.mp4"]), "missing");
    assert!(e.contains("/nonexistent/clip.mp4"), "{e}");
    let dir = scratch("bad");
    // A truncated MP4, an MP4 whose H.264 data is garbage, a truncated GIF, an empty folder.
    let mp4 = std::fs::read(clip("baseline.mp4")).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &mp4[..mp4.len() / 2]).unwrap();
    let mut garbage = mp4.clone();
    let n = garbage.len();
    for (i, b) in garbage[n - 900..].iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    let bad = dir.join("garbage.mp4");
    std::fs::write(&bad, &garbage).unwrap();
    let gif = std::fs::read(clip("clip.gif")).unwrap();
    let cut_gif = dir.join("cut.gif");
    std::fs::write(&cut_gif, &gif[..gif.len() / 3]).unwrap();
    let empty = scratch("empty");
    for p in [&cut, &cut_gif, &empty] {
        let e = fails(frames_cmd(&[p.to_str().unwrap()]), &p.display().to_string());
        assert!(e.contains(p.to_str().unwrap()), "{e}");
    }
    // Garbage may decode to some picture or fail; it must not crash or print a panic.
    let o = frames_cmd(&[bad.to_str().unwrap()]);
    assert!(o.status.code().is_some(), "killed by a signal");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    let e = fails(frames_cmd(&[&clip("clip.gif"), "--fps", "0"]), "--fps 0");
    assert!(e.contains("--fps"), "{e}");
    let e = fails(
        frames_cmd(&[&clip("clip.gif"), "--max-frames", "0"]),
        "--max-frames 0",
    );
    assert!(e.contains("--max-frames"), "{e}");

    // More frames than the context: named before any frame is encoded.
    let m = model();
    let ctx = (2 * m.config.image_tokens + 30).to_string();
    let e = fails(
        owlet(&[
            "run",
            "--video",
            &clip("high.mp4"),
            "-p",
            "Describe.",
            "-c",
            &ctx,
            "--fps",
            "2",
        ]),
        "too many frames",
    );
    assert!(e.contains("6 frames") && e.contains("--max-frames"), "{e}");
    let e = fails(
        owlet(&[
            "run",
            "--video",
            &clip("high.mp4"),
            "--image",
            "x.png",
            "--raw-prompt",
            "<|image|>",
        ]),
        "placeholders",
    );
    assert!(e.contains("1 image placeholder"), "{e}");
}
