//! Tokenizer and prompt tests against the real LLaMA-2 vocabulary (llama.cpp's vocab GGUF), the
//! llama.cpp tokenizer test cases and the owl2-tiny-a fixture prompts.

use std::path::{Path, PathBuf};

use owlet::gguf::Gguf;
use owlet::prompt::{
    parse_raw, render_chat, tokenize_segments, Role, Segment, Turn, IMAGE_TOKEN_ID,
};
use owlet::tokenizer::Tokenizer;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// `tokenizer.ggml.{tokens,scores,token_type}` of llama.cpp's LLaMA-2 vocab GGUF.
fn vocab_arrays() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let g = Gguf::open(&data("assets/ggml-vocab-llama-spm.gguf")).unwrap();
    let tokens = g
        .get_array("tokenizer.ggml.tokens")
        .unwrap()
        .as_strs()
        .unwrap();
    let scores = g
        .get_array("tokenizer.ggml.scores")
        .unwrap()
        .as_f32s()
        .unwrap();
    let types = g
        .get_array("tokenizer.ggml.token_type")
        .unwrap()
        .as_i64s()
        .unwrap();
    (
        tokens.into_iter().map(String::from).collect(),
        scores,
        types
            .into_iter()
            .map(|t| i32::try_from(t).unwrap())
            .collect(),
    )
}

/// The LLaMA-2 tokenizer from the vocab GGUF (its bos/eos/unk ids and add_bos flag) with the
/// given HF `legacy` flag.
fn llama(legacy: bool) -> Tokenizer {
    let g = Gguf::open(&data("assets/ggml-vocab-llama-spm.gguf")).unwrap();
    let id = |k: &str| g.get_u32(k).unwrap();
    let (bos, eos, unk) = (
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
        id("tokenizer.ggml.unknown_token_id"),
    );
    assert_eq!((bos, eos, unk), (1, 2, 0));
    let add_bos = g.get_bool("tokenizer.ggml.add_bos_token").unwrap();
    let (tokens, scores, types) = vocab_arrays();
    Tokenizer::from_arrays(tokens, scores, types, bos, eos, unk, add_bos, legacy).unwrap()
}

/// llama.cpp's test cases: inputs split as `test-tokenizer-0` does, expected ids without BOS.
fn llamacpp_cases() -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(data("assets/ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(data("assets/ggml-vocab-llama-spm.gguf.out")).unwrap();
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // The file ends with the separator: the last "input" is the empty remainder.
    assert_eq!(inputs.pop(), Some(""));
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(inputs.len(), 46);
    assert_eq!(outputs.len(), 46);
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| {
            (
                i.to_string(),
                o.split_whitespace().map(|t| t.parse().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn llamacpp_vocab_cases() {
    let tok = llama(false);
    assert_eq!(tok.vocab_size(), 32000);
    let mut failures = Vec::new();
    for (text, want) in llamacpp_cases() {
        let got = tok.encode(&text, true);
        if got != want {
            failures.push(format!("{:?}: got {:?}, want {:?}", text, got, want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 46 cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_round_trips_and_streaming() {
    let tok = llama(false);
    for (text, ids) in llamacpp_cases() {
        assert_eq!(tok.decode(&ids), text, "decode of {:?}", text);
        // With BOS and EOS around: control tokens vanish.
        let mut with_specials = vec![tok.bos()];
        with_specials.extend(&ids);
        with_specials.push(tok.eos());
        assert_eq!(tok.decode(&with_specials), text);
        // Streaming gives the same text, piece by piece, and never splits a character.
        let mut d = tok.decoder();
        let mut streamed = String::new();
        for &id in &with_specials {
            streamed.push_str(&d.push(id));
        }
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text, "stream decode of {:?}", text);
    }
}

#[test]
fn known_ids_and_pieces() {
    let tok = llama(false);
    assert_eq!(tok.encode("Hello world", true), vec![15043, 3186]);
    assert_eq!(tok.encode("USER:", true), vec![3148, 1001, 29901]);
    assert_eq!(tok.encode("USER:", false), vec![11889, 29901]);
    assert_eq!(tok.encode("", true), Vec::<u32>::new());
    assert_eq!(tok.token_piece(3148), Some("\u{2581}US"));
    assert_eq!(tok.token_piece(13), Some("<0x0A>"));
    assert_eq!(tok.token_piece(32000), None);
    assert_eq!(
        (tok.bos(), tok.eos(), tok.add_bos(), tok.legacy()),
        (1, 2, true, false)
    );
    // Special-token strings typed as text are text.
    let ids = tok.encode("</s><s><unk>", true);
    assert!(!ids.iter().any(|&i| i <= 2), "{:?}", ids);
    assert_eq!(tok.decode(&ids), "</s><s><unk>");
}

#[test]
fn fixture_prompts() {
    let tok = llama(false);
    let text_ids = owlet::npy::read(&data("owl2-tiny-a/golden/text_input_ids.npy"))
        .unwrap()
        .to_i64();
    let mm_ids = owlet::npy::read(&data("owl2-tiny-a/golden/mm_input_ids.npy"))
        .unwrap()
        .to_i64();
    assert_eq!(
        text_ids,
        [
            1, 3148, 1001, 29901, 24948, 592, 263, 5828, 1048, 263, 2319, 8152, 29880, 29889, 319,
            1799, 9047, 13566, 29901
        ]
    );
    assert_eq!(
        mm_ids,
        [
            1, 3148, 1001, 29901, 29871, -200, 20355, 915, 278, 1967, 29889, 319, 1799, 9047,
            13566, 29901
        ]
    );

    let text_turn = [Turn {
        role: Role::User,
        text: "Tell me a story about a small owl.".into(),
        images: 0,
    }];
    let segs = render_chat(&text_turn, true).unwrap();
    assert_eq!(
        segs,
        parse_raw("USER: Tell me a story about a small owl. ASSISTANT:")
    );
    assert_eq!(tokenize_segments(&tok, &segs), text_ids);

    let mm_turn = [Turn {
        role: Role::User,
        text: "Describe the image.".into(),
        images: 1,
    }];
    let segs = render_chat(&mm_turn, true).unwrap();
    assert_eq!(
        segs,
        parse_raw("USER: <|image|>Describe the image. ASSISTANT:")
    );
    assert_eq!(tokenize_segments(&tok, &segs), mm_ids);
    // A placeholder already in the text marks the spot instead.
    let inline = [Turn {
        role: Role::User,
        text: "<|image|>Describe the image.".into(),
        images: 1,
    }];
    assert_eq!(
        tokenize_segments(&tok, &render_chat(&inline, true).unwrap()),
        mm_ids
    );
    // Same ids whatever `legacy` says: no text follows a special token here.
    assert_eq!(tokenize_segments(&llama(true), &segs), mm_ids);
}

#[test]
fn legacy_flag_after_special_token() {
    let segs = [Segment::Special(2), Segment::Text("USER:".into())];
    // legacy false: the word-start marker of the text after </s> is removed ("US" = 3308).
    assert_eq!(
        tokenize_segments(&llama(false), &segs),
        [1, 2, 3308, 1001, 29901]
    );
    // legacy true: encoded like any text ("▁US" = 3148).
    assert_eq!(
        tokenize_segments(&llama(true), &segs),
        [1, 2, 3148, 1001, 29901]
    );
    // Text starting with a space keeps its tokens in both modes.
    let spaced = [Segment::Special(2), Segment::Text(" USER:".into())];
    let want = llama(false).encode(" USER:", true);
    for legacy in [false, true] {
        let ids = tokenize_segments(&llama(legacy), &spaced);
        assert_eq!(
            ids[2..],
            want.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()[..]
        );
    }
    // Non-legacy: a lone '▁' first token is dropped ("\n" -> "▁" "<0x0A>" -> "<0x0A>").
    let nl = [Segment::Special(2), Segment::Text("\n".into())];
    assert_eq!(tokenize_segments(&llama(false), &nl), [1, 2, 13]);
    assert_eq!(tokenize_segments(&llama(true), &nl), [1, 2, 29871, 13]);

    // A multi-turn chat: "... ASSISTANT: Hi</s>USER: Bye ASSISTANT:".
    let turns = [
        Turn {
            role: Role::User,
            text: "Hello".into(),
            images: 0,
        },
        Turn {
            role: Role::Assistant,
            text: "Hi".into(),
            images: 0,
        },
        Turn {
            role: Role::User,
            text: "Bye".into(),
            images: 0,
        },
    ];
    let tok = llama(false);
    let ids = tokenize_segments(&tok, &render_chat(&turns, true).unwrap());
    let eos_at = ids.iter().position(|&i| i == 2).unwrap();
    assert_eq!(ids[eos_at + 1..eos_at + 4], [3308, 1001, 29901]);
    assert_eq!(ids[eos_at - 1], 6324); // "▁Hi"
    let ids_legacy = tokenize_segments(&llama(true), &render_chat(&turns, true).unwrap());
    assert_eq!(ids_legacy[eos_at + 1..eos_at + 4], [3148, 1001, 29901]);
}

#[test]
fn image_chunk_edge_cases() {
    let tok = llama(false);
    let ids = |s: &str| tokenize_segments(&tok, &parse_raw(s));
    let enc = |s: &str| {
        tok.encode(s, true)
            .into_iter()
            .map(i64::from)
            .collect::<Vec<_>>()
    };
    // Prompt starting with an image: nothing is dropped, the image precedes the next chunk's BOS.
    let mut want = vec![IMAGE_TOKEN_ID, 1];
    want.extend(enc("Describe"));
    assert_eq!(ids("<|image|>Describe"), want);
    // Two adjacent images: one sentinel each, the empty chunk between them gives nothing.
    let mut want = vec![1];
    want.extend(enc("A"));
    want.extend([IMAGE_TOKEN_ID, IMAGE_TOKEN_ID]);
    want.extend(enc("B"));
    assert_eq!(ids("A<|image|><|image|>B"), want);
    // Trailing image, image only, empty prompt.
    let mut want = vec![1];
    want.extend(enc("A"));
    want.push(IMAGE_TOKEN_ID);
    assert_eq!(ids("A<|image|>"), want);
    assert_eq!(ids("<|image|>"), [IMAGE_TOKEN_ID]);
    assert_eq!(ids(""), Vec::<i64>::new());
    // "USER: " at a chunk end keeps its lone '▁' (29871).
    assert_eq!(
        ids("USER: <|image|>"),
        [1, 3148, 1001, 29901, 29871, IMAGE_TOKEN_ID]
    );
}

#[test]
fn odd_text() {
    let tok = llama(false);
    for text in [
        "a\0b",
        "\0",
        "👩\u{200d}👩\u{200d}👧\u{200d}👦 family",
        "我们的猫喜欢睡觉。",
        "e\u{301}\u{301}",
        "\u{10FFFF}\u{FFFD}",
        "tab\there  two  spaces",
        "▁already▁marked",
    ] {
        let ids = tok.encode(text, true);
        assert!(!ids.is_empty());
        assert!(
            ids.iter()
                .all(|&i| (i as usize) < tok.vocab_size() && i > 2),
            "{:?}: {:?}",
            text,
            ids
        );
        let back = tok.decode(&ids);
        // '▁' typed by the user decodes as a space, as in sentencepiece.
        assert_eq!(back, text.replace('\u{2581}', " "), "{:?}", text);
    }
    // NUL is not in the vocabulary: byte fallback <0x00> = id 3.
    assert_eq!(tok.encode("\0", false), [3]);
    // A character outside the vocabulary becomes its UTF-8 bytes (U+10FFFF = F4 8F BF BF).
    assert_eq!(
        tok.encode("\u{10FFFF}", false),
        [3 + 0xF4, 3 + 0x8F, 3 + 0xBF, 3 + 0xBF]
    );
    // Invalid UTF-8 from byte tokens decodes lossily; a split character is held by the stream.
    assert_eq!(tok.decode(&[3 + 0xFF, 3 + 0x41]), "\u{FFFD}A");
    let mut d = tok.decoder();
    assert_eq!(d.push(3 + 0xE6), "");
    assert_eq!(d.push(3 + 0x88), "");
    assert_eq!(d.push(3 + 0x91), "我");
}

#[test]
fn long_inputs_stay_subquadratic() {
    // No timing assertion: a quadratic merge loop would take minutes here, not milliseconds.
    let tok = llama(false);
    let text = "a".repeat(200_000);
    let ids = tok.encode(&text, true);
    assert_eq!(tok.decode(&ids), text);
    assert!(ids.len() < 200_000 / 2, "{} tokens", ids.len());
    let mixed: String = "The quick brown fox, 狐狸, 🦊! ".repeat(8_000);
    let ids = tok.encode(&mixed, true);
    assert_eq!(tok.decode(&ids), mixed);
}

#[test]
fn refuses_inconsistent_vocabularies() {
    let (tokens, scores, types) = vocab_arrays();
    let e = Tokenizer::from_arrays(
        tokens.clone(),
        scores[1..].to_vec(),
        types.clone(),
        1,
        2,
        0,
        true,
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind(), owlet::error::ErrorKind::BadModel);
    let e = Tokenizer::from_arrays(
        tokens.clone(),
        scores.clone(),
        types.clone(),
        1,
        32000,
        0,
        true,
        false,
    )
    .unwrap_err();
    assert!(e.message().contains("eos"), "{}", e);
    // Drop byte token <0x41> ('A') by turning it into a normal piece.
    let mut bad_types = types.clone();
    bad_types[3 + 0x41] = 1;
    let e = Tokenizer::from_arrays(tokens, scores, bad_types, 1, 2, 0, true, false).unwrap_err();
    assert!(e.message().contains("<0x41>"), "{}", e);
}
