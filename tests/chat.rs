//! Multi-turn chat in one session: every turn feeds what upstream feeds (the whole conversation
//! re-rendered with the template and re-tokenized), and reusing the KV cache for the unchanged
//! prefix gives bit for bit what a fresh session fed the whole conversation gives.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use owlet::image::{self, ImageLimits, RgbImage};
use owlet::kv_cache::KvType;
use owlet::model::Model;
use owlet::prompt::{self, Role, Turn, IMAGE_TOKEN_ID};
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, Generation, ImageEmbedding, Session, SessionOptions};

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

fn session(m: &Model) -> Session<'_> {
    Session::new(
        m,
        SessionOptions {
            threads: 2,
            kv_type: KvType::F16,
            n_ctx: None,
        },
    )
    .unwrap()
}

/// Greedy with a repetition penalty, so the penalty's history must match too.
fn gen_opts() -> GenerateOptions {
    GenerateOptions {
        max_tokens: 6,
        sampling: SamplingParams {
            repeat_penalty: 1.3,
            ..Default::default()
        },
        ignore_eos: true,
    }
}

fn user(text: &str, images: usize) -> Turn {
    Turn {
        role: Role::User,
        text: text.into(),
        images,
    }
}

fn assistant(g: &Generation) -> Turn {
    Turn {
        role: Role::Assistant,
        text: g.text.clone(),
        images: 0,
    }
}

/// What upstream feeds for a conversation: the template, then image-aware tokenization.
fn upstream_ids(m: &Model, turns: &[Turn]) -> Vec<i64> {
    prompt::tokenize_segments(m.tokenizer(), &prompt::render_chat(turns, true).unwrap())
}

/// LLM positions of ids (an image sentinel takes the model's image rows).
fn positions(m: &Model, ids: &[i64]) -> usize {
    ids.iter()
        .map(|&i| {
            if i == IMAGE_TOKEN_ID {
                m.config.image_tokens
            } else {
                1
            }
        })
        .sum()
}

/// A fresh session fed the whole conversation at once: last logits and the generation after.
fn fresh(m: &Model, ids: &[i64], images: &[&RgbImage]) -> (Vec<f32>, Generation) {
    let mut s = session(m);
    let embs: Vec<ImageEmbedding> = images
        .iter()
        .map(|i| s.embed_image(i, None).unwrap())
        .collect();
    let refs: Vec<&ImageEmbedding> = embs.iter().collect();
    let logits = s.prefill(ids, &refs, false, None).unwrap();
    let g = s
        .generate(logits.clone(), &gen_opts(), &mut |_, _| true)
        .unwrap();
    (logits, g)
}

/// Checks a turn just taken: the cache starts with upstream's ids of the whole conversation,
/// the prompt logits and the answer equal a fresh session's, and the reused positions are the
/// ones the previous cache shared with the new prompt.
fn check_turn(
    s: &Session<'_>,
    turns: &[Turn],
    images: &[&RgbImage],
    before: &[i64],
    g: &Generation,
) {
    let m = s.model();
    let ids = upstream_ids(m, turns);
    let cached = s.cached_ids();
    assert_eq!(
        &cached[..ids.len()],
        &ids[..],
        "the cache does not hold upstream's ids"
    );
    // Every generated token follows: each is fed back as soon as it is chosen.
    let fed: Vec<i64> = g.ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(&cached[ids.len()..], &fed[..]);
    assert_eq!(s.n_past(), positions(m, cached));

    let common = before
        .iter()
        .zip(&ids)
        .take_while(|(a, b)| a == b)
        .count()
        .min(ids.len() - 1);
    assert_eq!(s.reused_positions(), positions(m, &ids[..common]));

    let (logits, want) = fresh(m, &ids, images);
    assert!(
        s.chat_prompt_logits() == &logits[..],
        "reused-cache logits differ from a fresh session's"
    );
    assert_eq!(g.ids, want.ids);
    assert_eq!(g.text, want.text);
}

#[test]
fn three_turns_feed_the_whole_conversation_and_reuse_the_cache() {
    let m = demo();
    let (coffee, chelsea) = (asset("coffee.png"), asset("chelsea.png"));
    let mut s = session(m);
    let mut turns = vec![user("What is in this picture?", 1)];

    let g1 = s
        .chat(
            &turns[0].text,
            std::slice::from_ref(&coffee),
            None,
            &gen_opts(),
            &mut |_, _| true,
        )
        .unwrap();
    check_turn(&s, &turns, &[&coffee], &[], &g1);
    assert_eq!(s.reused_positions(), 0);

    let before = s.cached_ids().to_vec();
    turns.push(assistant(&g1));
    turns.push(user("Is it </s> hot?", 0));
    let g2 = s
        .chat("Is it </s> hot?", &[], None, &gen_opts(), &mut |_, _| true)
        .unwrap();
    check_turn(&s, &turns, &[&coffee], &before, &g2);
    // At least the first turn's prompt (24 positions) came from the cache.
    assert!(s.reused_positions() >= 24, "{}", s.reused_positions());
    // The template's own </s> closes the answer; the user's "</s>" stayed text.
    let ids = upstream_ids(m, &turns);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);

    // A third turn with another image: it goes into that turn, after "USER: ".
    let before = s.cached_ids().to_vec();
    turns.push(assistant(&g2));
    turns.push(user("And this one?", 1));
    let g3 = s
        .chat(
            "And this one?",
            std::slice::from_ref(&chelsea),
            None,
            &gen_opts(),
            &mut |_, _| true,
        )
        .unwrap();
    check_turn(&s, &turns, &[&coffee, &chelsea], &before, &g3);
    let ids = upstream_ids(m, &turns);
    assert_eq!(ids.iter().filter(|&&i| i == IMAGE_TOKEN_ID).count(), 2);
    assert_eq!(
        ids.iter().filter(|&&i| i == 1).count(),
        1,
        "one BOS for the whole conversation"
    );

    // reset() forgets everything: the next turn is a first turn again.
    s.reset();
    assert_eq!((s.n_past(), s.cached_ids().len()), (0, 0));
    let again = s
        .chat(
            "What is in this picture?",
            std::slice::from_ref(&coffee),
            None,
            &gen_opts(),
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(again.ids, g1.ids);
    assert_eq!(s.reused_positions(), 0);
}

#[test]
fn two_images_in_one_prompt() {
    let m = demo();
    let (coffee, chelsea) = (asset("coffee.png"), asset("chelsea.png"));
    let mut s = session(m);
    let g = s
        .chat(
            "Compare the two pictures.",
            &[coffee.clone(), chelsea.clone()],
            None,
            &gen_opts(),
            &mut |_, _| true,
        )
        .unwrap();
    let turns = [user("Compare the two pictures.", 2)];
    check_turn(&s, &turns, &[&coffee, &chelsea], &[], &g);
    let ids = upstream_ids(m, &turns);
    // USER: then the two sentinels side by side, then the text.
    let first = ids.iter().position(|&i| i == IMAGE_TOKEN_ID).unwrap();
    assert_eq!(ids[first + 1], IMAGE_TOKEN_ID);
    assert_eq!(positions(m, &ids), ids.len() - 2 + 18);

    // Explicit placeholders put the images where they are, in order; swapping the images
    // changes the answer's logits (each placeholder gets its own image).
    let mut s2 = session(m);
    let text = "First <|image|> then <|image|>: which is warmer?";
    s2.chat(
        text,
        &[coffee.clone(), chelsea.clone()],
        None,
        &gen_opts(),
        &mut |_, _| true,
    )
    .unwrap();
    let turns = [user(text, 2)];
    let ids = upstream_ids(m, &turns);
    let (logits, _) = fresh(m, &ids, &[&coffee, &chelsea]);
    assert!(s2.chat_prompt_logits() == &logits[..]);
    let (swapped, _) = fresh(m, &ids, &[&chelsea, &coffee]);
    assert!(swapped != logits);
}

/// Feeding the same ids in two pieces through the cache gives the same bits as one piece.
#[test]
fn chunked_prefill_equals_one_prefill() {
    let m = demo();
    let coffee = asset("coffee.png");
    let ids = upstream_ids(m, &[user("Describe the image.", 1)]);
    let (whole, _) = fresh(m, &ids, &[&coffee]);
    for split in [1, 5, 6, 12, ids.len() - 1] {
        let mut s = session(m);
        let e = s.embed_image(&coffee, None).unwrap();
        let (a, b) = ids.split_at(split);
        let imgs_a: Vec<&ImageEmbedding> = if a.contains(&IMAGE_TOKEN_ID) {
            vec![&e]
        } else {
            vec![]
        };
        let imgs_b: Vec<&ImageEmbedding> = if b.contains(&IMAGE_TOKEN_ID) {
            vec![&e]
        } else {
            vec![]
        };
        s.prefill(a, &imgs_a, false, None).unwrap();
        let last = s.prefill(b, &imgs_b, false, None).unwrap();
        assert!(last == whole, "split at {split}");
    }
}

/// A turn stopped with the cancel flag (what Ctrl-C in `owlet chat` sets) keeps its partial
/// answer in the conversation, and the next turn goes on from it, with the flag cleared.
#[test]
fn a_cancelled_answer_stays_in_the_conversation() {
    use owlet::session::StopReason;
    use std::sync::atomic::Ordering;
    let m = demo();
    let mut s = session(m);
    let cancel = s.cancel_handle();
    let mut n = 0;
    let g1 = s
        .chat("Tell me a story.", &[], None, &gen_opts(), &mut |_, _| {
            n += 1;
            if n == 3 {
                cancel.store(true, Ordering::Relaxed);
            }
            true
        })
        .unwrap();
    assert_eq!(g1.stop, StopReason::Cancelled);
    assert_eq!(g1.ids.len(), 3);
    let turns = [
        user("Tell me a story.", 0),
        assistant(&g1),
        user("And then?", 0),
    ];
    let before = s.cached_ids().to_vec();
    let g2 = s
        .chat("And then?", &[], None, &gen_opts(), &mut |_, _| true)
        .unwrap();
    assert_eq!(g2.stop, StopReason::MaxTokens);
    check_turn(&s, &turns, &[], &before, &g2);
}

/// `chat_conversation` (a whole conversation per call, as `owlet serve` gets it): a conversation
/// that extends the session's reuses the cache and answers as a fresh session does; another
/// conversation with a different image at the same place reuses nothing from the old image
/// (every image's sentinel is `-200`, so ids alone cannot tell the images apart).
#[test]
fn whole_conversations_reuse_the_cache_only_for_the_same_images() {
    let m = demo();
    let (coffee, chelsea) = (asset("coffee.png"), asset("chelsea.png"));
    let mut s = session(m);
    let emb = |s: &Session<'_>, i: &RgbImage| s.embed_image(i, None).unwrap();

    let t1 = vec![user("What is this?", 1)];
    let e1 = emb(&s, &coffee);
    let g1 = s
        .chat_conversation(&t1, vec![e1.clone()], &gen_opts(), &mut |_, _| true)
        .unwrap();
    let ids1 = upstream_ids(m, &t1);
    assert_eq!(g1.ids, fresh(m, &ids1, &[&coffee]).1.ids);

    // The same conversation, one turn longer: the first turn and its answer come from the cache.
    let t2 = vec![user("What is this?", 1), assistant(&g1), user("Sure?", 0)];
    let g2 = s
        .chat_conversation(&t2, vec![e1.clone()], &gen_opts(), &mut |_, _| true)
        .unwrap();
    let ids2 = upstream_ids(m, &t2);
    assert_eq!(g2.ids, fresh(m, &ids2, &[&coffee]).1.ids);
    assert!(
        s.reused_positions() > positions(m, &ids1),
        "{}",
        s.reused_positions()
    );

    // Another image where the coffee was: only the text before the image is reused.
    let e2 = emb(&s, &chelsea);
    let g3 = s
        .chat_conversation(&t1, vec![e2], &gen_opts(), &mut |_, _| true)
        .unwrap();
    assert_eq!(g3.ids, fresh(m, &ids1, &[&chelsea]).1.ids);
    let before_image = ids1.iter().position(|&i| i == IMAGE_TOKEN_ID).unwrap();
    assert!(s.reused_positions() <= before_image);

    // A conversation that ends with the assistant is refused.
    let bad = vec![user("What is this?", 1), assistant(&g1)];
    let e = s
        .chat_conversation(&bad, vec![e1], &gen_opts(), &mut |_, _| true)
        .unwrap_err();
    assert!(e.to_string().contains("user turn"), "{e}");
}
