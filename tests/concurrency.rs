//! Threads and limits: one immutable `Model` shared by many sessions in many threads gives
//! exactly the sequential results; thread counts do not change a single bit; cancellation from
//! another thread stops within one token; the context end stops generation cleanly; a prompt
//! that cannot fit is refused before any compute.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use owlet::error::ErrorKind;
use owlet::image::{self, AspectMode, ImageLimits, RgbImage};
use owlet::kv_cache::KvType;
use owlet::model::Model;
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, Generation, Session, SessionOptions, StopReason};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn demo() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap())
}

fn asset(name: &str) -> RgbImage {
    image::load(
        &repo(&format!("tests/data/assets/{name}")),
        &ImageLimits::default(),
    )
    .unwrap()
}

fn opts(threads: usize, n_ctx: Option<usize>) -> SessionOptions {
    SessionOptions {
        threads,
        kv_type: KvType::F16,
        n_ctx,
    }
}

/// The fixture's `mm` prompt ids (one image).
const MM: [i64; 16] = [
    1, 3148, 1001, 29901, 29871, -200, 20355, 915, 278, 1967, 29889, 319, 1799, 9047, 13566, 29901,
];

/// Compile-time: a `Model` can be shared between threads and a `Session` moved to one.
#[test]
fn model_is_sync_and_session_is_send() {
    fn shareable<T: Send + Sync>() {}
    fn sendable<T: Send>() {}
    shareable::<Model>();
    sendable::<Session<'static>>();
}

/// One job of the 8: its own prompt, image, aspect mode and sampling seed.
fn job(m: &Model, i: usize, img: &RgbImage) -> (Generation, Generation) {
    let mut s = Session::new(m, opts(1 + i % 2, None)).unwrap();
    let mode = [AspectMode::Resize, AspectMode::Pad, AspectMode::Crop][i % 3];
    let sampling = SamplingParams {
        temperature: if i.is_multiple_of(4) {
            0.0
        } else {
            0.7 + 0.1 * i as f32
        },
        top_k: 10 * i,
        top_p: 0.95,
        repeat_penalty: 1.0 + 0.05 * (i % 3) as f32,
        seed: 1000 + i as u64,
    };
    let g = GenerateOptions {
        max_tokens: 6,
        sampling,
        ignore_eos: true,
    };
    let a = s
        .chat(
            &format!("Question {i}: what is shown?"),
            std::slice::from_ref(img),
            Some(mode),
            &g,
            &mut |_, _| true,
        )
        .unwrap();
    let b = s
        .chat("Tell me more.", &[], None, &g, &mut |_, _| true)
        .unwrap();
    (a, b)
}

#[test]
fn eight_threads_give_the_sequential_results() {
    let m = demo();
    let imgs = [asset("coffee.png"), asset("chelsea.png")];
    let sequential: Vec<_> = (0..8).map(|i| job(m, i, &imgs[i % 2])).collect();
    let threaded: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let img = &imgs[i % 2];
                sc.spawn(move || job(m, i, img))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ((sa, sb), (ta, tb))) in sequential.iter().zip(&threaded).enumerate() {
        assert_eq!(
            (&sa.ids, &sa.text, sa.stop),
            (&ta.ids, &ta.text, ta.stop),
            "job {i}, turn 1"
        );
        assert_eq!(
            (&sb.ids, &sb.text, sb.stop),
            (&tb.ids, &tb.text, tb.stop),
            "job {i}, turn 2"
        );
    }
    // The jobs really differ from each other.
    let distinct: std::collections::HashSet<_> =
        sequential.iter().map(|(a, _)| a.ids.clone()).collect();
    assert!(distinct.len() >= 6, "{distinct:?}");
}

#[test]
fn thread_count_does_not_change_any_bit() {
    let m = demo();
    let img = asset("chelsea.png");
    let run = |threads: usize| {
        let mut s = Session::new(m, opts(threads, None)).unwrap();
        let e = s.embed_image(&img, Some(AspectMode::Pad)).unwrap();
        let logits = s.prefill(&MM, &[&e], true, None).unwrap();
        let g = GenerateOptions {
            max_tokens: 6,
            ..Default::default()
        };
        let gen = s
            .generate(logits[logits.len() - 32000..].to_vec(), &g, &mut |_, _| {
                true
            })
            .unwrap();
        (e.rows, logits, gen.ids)
    };
    let one = run(1);
    assert_eq!(one.1.len(), 24 * 32000);
    for t in [2, 3] {
        let other = run(t);
        assert!(one.0 == other.0, "image rows differ with {t} threads");
        assert!(one.1 == other.1, "logits differ with {t} threads");
        assert_eq!(one.2, other.2, "generated ids differ with {t} threads");
    }
}

/// The token callback asks a second thread to cancel; that thread sets the flag and notes how
/// many tokens had come out when it did: at most one more may follow.
#[test]
fn cancel_from_another_thread_stops_within_one_token() {
    let m = demo();
    let mut s = Session::new(m, opts(1, None)).unwrap();
    let logits = s
        .prefill(&[1, 3148, 1001, 29901, 15043], &[], false, None)
        .unwrap();
    let cancel = s.cancel_handle();
    let produced = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<()>();
    let canceller = {
        let produced = Arc::clone(&produced);
        std::thread::spawn(move || {
            rx.recv().unwrap();
            cancel.store(true, Ordering::SeqCst);
            produced.load(Ordering::SeqCst)
        })
    };
    let g = GenerateOptions {
        max_tokens: 400,
        ignore_eos: true,
        ..Default::default()
    };
    let gen = s
        .generate(logits, &g, &mut |_, _| {
            let n = produced.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 {
                tx.send(()).unwrap();
            } else if n > 3 {
                // A slow consumer: the cancel lands at arbitrary points of the loop.
                std::thread::sleep(Duration::from_millis(2));
            }
            true
        })
        .unwrap();
    let at_cancel = canceller.join().unwrap();
    assert_eq!(gen.stop, StopReason::Cancelled);
    assert!(at_cancel >= 3);
    assert!(
        gen.ids.len() <= at_cancel + 1,
        "{} tokens after the cancel at {at_cancel}",
        gen.ids.len() - at_cancel
    );
    // Every emitted token was fed back before the cancel was seen.
    assert_eq!(s.n_past(), 5 + gen.ids.len());

    // A cancel left over from an earlier generation does not hit the next prompt.
    s.cancel_handle().store(true, Ordering::SeqCst);
    let logits = s.prefill(&[450], &[], false, None).unwrap();
    let gen = s
        .generate(
            logits,
            &GenerateOptions {
                max_tokens: 3,
                ..g.clone()
            },
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!((gen.ids.len(), gen.stop), (3, StopReason::MaxTokens));
    // A cancel set between prefill and generate stops before the first token.
    let logits = s.prefill(&[450], &[], false, None).unwrap();
    s.cancel_handle().store(true, Ordering::SeqCst);
    let gen = s.generate(logits, &g, &mut |_, _| true).unwrap();
    assert_eq!((gen.ids.len(), gen.stop), (0, StopReason::Cancelled));
}

#[test]
fn generation_stops_cleanly_at_the_context_end() {
    let m = demo();
    let img = asset("coffee.png");
    let mut s = Session::new(m, opts(2, Some(30))).unwrap();
    let g = GenerateOptions {
        max_tokens: 100,
        ignore_eos: true,
        ..Default::default()
    };
    // 24 prompt positions; the last token needs no position: 30 - 24 + 1 tokens.
    let gen = s
        .chat(
            "Describe the image.",
            std::slice::from_ref(&img),
            None,
            &g,
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(gen.stop, StopReason::ContextFull);
    assert_eq!(gen.ids.len(), 7);
    assert_eq!(s.n_past(), 30);
    // The same ids as an unconstrained session (upstream's greedy ids).
    let want = owlet::npy::read(&repo("tests/data/owl2-tiny-a/golden/gen_new_ids.npy"))
        .unwrap()
        .to_i64();
    assert_eq!(
        gen.ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
        want[..7]
    );

    // The next turn cannot fit: refused with both numbers, nothing changes.
    let e = s
        .chat("And then?", &[], None, &g, &mut |_, _| true)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadPrompt);
    assert!(e.to_string().contains("30"), "{e}");
    assert_eq!(s.n_past(), 30);
    // Decoding by hand stops with an error at the end, not a panic.
    let mut s = Session::new(m, opts(1, Some(3))).unwrap();
    s.prefill(&[1, 450, 450], &[], false, None).unwrap();
    let e = s.prefill(&[450], &[], false, None).unwrap_err();
    assert!(e.to_string().contains("0 of the context's 3"), "{e}");
}

#[test]
fn prompt_and_images_over_the_context_are_refused_before_compute() {
    let m = demo();
    let mut s = Session::new(m, opts(1, Some(30))).unwrap();
    // Two images (18 positions) + the template's text exceed the 30 positions.
    let imgs = [asset("coffee.png"), asset("chelsea.png")];
    let g = GenerateOptions {
        max_tokens: 4,
        ..Default::default()
    };
    let e = s
        .chat(
            "Compare the two pictures in every detail please.",
            &imgs,
            None,
            &g,
            &mut |_, _| true,
        )
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::BadPrompt);
    assert!(
        msg.contains("the conversation with this message needs")
            && msg.contains("+ 2 images × 9")
            && msg.contains("the context holds 30"),
        "{msg}"
    );
    assert_eq!(s.n_past(), 0, "nothing was fed");
    assert!(s.chat_prompt_logits().is_empty());

    // After 5 positions: ids with an image (9 + 30 positions) against the 25 free ones.
    s.prefill(&[1, 3148, 1001, 29901, 15043], &[], false, None)
        .unwrap();
    let emb = s.embed_image(&imgs[0], None).unwrap();
    let mut ids = vec![-200i64];
    ids.extend(std::iter::repeat_n(450, 30));
    check_refused(&s.check_prompt(&ids).unwrap_err());
    check_refused(&s.prefill(&ids, &[&emb], false, None).unwrap_err());
    assert_eq!(s.n_past(), 5);
    assert_eq!(s.cached_ids(), &[1, 3148, 1001, 29901, 15043]);
}

fn check_refused(e: &owlet::Error) {
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::BadPrompt);
    assert!(
        msg.contains("39 positions") && msg.contains("only 25 of the context's 30"),
        "{msg}"
    );
}
