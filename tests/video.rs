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
