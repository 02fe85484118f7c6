//! Prompts: mPLUG-Owl2's conversation template and upstream's image-aware tokenization.
//!
//! A prompt is a list of [`Segment`]s: text, control tokens the template writes (`</s>` after an
//! assistant turn) and image markers. [`render_chat`] builds it from turns, [`parse_raw`] from a
//! raw prompt string, and [`tokenize_segments`] turns it into ids exactly as upstream's
//! `tokenizer_image_token` with the slow HF `LlamaTokenizer` (transformers 4.31) does.

use crate::error::{bail_kind, Result};
use crate::tokenizer::{Tokenizer, SPACE_MARKER};

/// The id upstream puts where an image goes (`IMAGE_TOKEN_INDEX`); the model splices the
/// image's embeddings in its place.
pub const IMAGE_TOKEN_ID: i64 = -200;
/// The image placeholder in prompt text (`DEFAULT_IMAGE_TOKEN`).
pub const IMAGE_PLACEHOLDER: &str = "<|image|>";

/// One piece of a rendered prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Plain text, tokenized with SentencePiece (never parsed for special tokens).
    Text(String),
    /// A control token by id.
    Special(u32),
    /// The end-of-sequence control token (`</s>`), which the template writes after each
    /// assistant turn; tokenized as the tokenizer's EOS id, like [`Segment::Special`].
    Eos,
    /// One image.
    Image,
}

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One conversation turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    /// Images attached to this (user) turn.
    pub images: usize,
}

/// Renders turns with mPLUG-Owl2's template (`conv_mplug_owl2`, style TWO_NO_SYS, no system
/// prompt):
///
/// ```text
/// USER: {images}{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:
/// ```
///
/// Each user turn is `"USER: " + text + " "`, each assistant turn `"ASSISTANT: " + text` followed
/// by [`Segment::Eos`] (upstream writes the string `"</s>"`, which the HF tokenizer matches as the
/// EOS special token); `add_generation_prompt` appends `"ASSISTANT:"`. A user turn's
/// images go in front of its text as `<|image|>` placeholders with no space, as upstream's CLI
/// does; if the text already contains placeholders they mark the image positions instead, and
/// their number must equal `images`. Assistant text is literal (placeholders in it are text).
///
/// Errors (BadPrompt): placeholder count differs from `images`; an assistant turn with images.
pub fn render_chat(turns: &[Turn], add_generation_prompt: bool) -> Result<Vec<Segment>> {
    let mut segs = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        match turn.role {
            Role::User => {
                push_text(&mut segs, "USER: ");
                let placeholders = turn.text.matches(IMAGE_PLACEHOLDER).count();
                if placeholders == 0 {
                    segs.extend(std::iter::repeat_n(Segment::Image, turn.images));
                    push_text(&mut segs, &turn.text);
                } else if placeholders == turn.images {
                    for seg in parse_raw(&turn.text) {
                        push_seg(&mut segs, seg);
                    }
                } else {
                    bail_kind!(
                        BadPrompt,
                        "turn {} has {} {} placeholder(s) in its text but {} image(s) attached",
                        i,
                        placeholders,
                        IMAGE_PLACEHOLDER,
                        turn.images
                    );
                }
                push_text(&mut segs, " ");
            }
            Role::Assistant => {
                if turn.images != 0 {
                    bail_kind!(
                        BadPrompt,
                        "turn {} is an assistant turn with {} image(s)",
                        i,
                        turn.images
                    );
                }
                push_text(&mut segs, "ASSISTANT: ");
                push_text(&mut segs, &turn.text);
                segs.push(Segment::Eos);
            }
        }
    }
    if add_generation_prompt {
        push_text(&mut segs, "ASSISTANT:");
    }
    Ok(segs)
}

/// Splits a raw prompt (`--raw-prompt`) at `<|image|>`: placeholders become [`Segment::Image`],
/// everything else text. Special-token strings such as `"</s>"` stay text.
pub fn parse_raw(text: &str) -> Vec<Segment> {
    let mut segs = Vec::new();
    for (i, part) in text.split(IMAGE_PLACEHOLDER).enumerate() {
        if i > 0 {
            segs.push(Segment::Image);
        }
        push_text(&mut segs, part);
    }
    segs
}

/// Appends a segment, merging text into a preceding text segment.
fn push_seg(segs: &mut Vec<Segment>, seg: Segment) {
    match seg {
        Segment::Text(t) => push_text(segs, &t),
        other => segs.push(other),
    }
}

/// Appends text, merging it into a preceding text segment; empty text adds nothing.
fn push_text(segs: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(prev)) = segs.last_mut() {
        prev.push_str(text);
    } else {
        segs.push(Segment::Text(text.to_string()));
    }
}

/// Tokenizes a prompt the way upstream's `tokenizer_image_token(prompt, tokenizer)` does with the
/// slow HF `LlamaTokenizer`:
///
/// 1. the prompt is split at the images into chunks; each chunk is tokenized on its own as
///    `tokenizer(chunk).input_ids`: BOS first (if `add_bos`), then its segments (see
///    [`tokenize_chunk`]); an empty chunk gives no ids at all (not even BOS);
/// 2. if the first chunk's ids start with BOS, one BOS is emitted and every chunk loses its first
///    id (its BOS); otherwise (the prompt starts with an image, or no BOS) nothing is dropped, so
///    the image comes before the next chunk's BOS;
/// 3. [`IMAGE_TOKEN_ID`] goes between consecutive chunks, once per image, even around empty
///    chunks (two adjacent images give two sentinels).
pub fn tokenize_segments(tok: &Tokenizer, segs: &[Segment]) -> Vec<i64> {
    let chunks: Vec<Vec<u32>> = segs
        .split(|s| *s == Segment::Image)
        .map(|c| tokenize_chunk(tok, c))
        .collect();
    let drop_first = chunks.first().and_then(|c| c.first()) == Some(&tok.bos()) && tok.add_bos();
    let mut ids = Vec::new();
    if drop_first {
        ids.push(i64::from(tok.bos()));
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            ids.push(IMAGE_TOKEN_ID);
        }
        let skip = usize::from(drop_first).min(chunk.len());
        ids.extend(chunk[skip..].iter().map(|&id| i64::from(id)));
    }
    ids
}

/// One chunk (no images) as the slow HF `LlamaTokenizer` of transformers 4.31 tokenizes it.
///
/// HF splits the text at special-token strings and tokenizes each piece of text separately with
/// sentencepiece (dummy prefix on). The special tokens here are `AddedToken`s with `lstrip` and
/// `rstrip` false (as in LLaMA-2's `tokenizer_config.json`), so no whitespace next to them is
/// eaten. What happens to text right after a special token depends on `legacy`:
///
/// - `legacy = true`: it is encoded like any text, dummy prefix included
///   (`"</s>USER:"` -> `</s> ▁US ER :`, ids 2 3148 1001 29901);
/// - `legacy = false`: `tokenize` prepends `'▁'` to the whole chunk (after turning every `'▁'`
///   in it into a space) and `_tokenize` strips that marker again from the first piece of text.
///   For any later piece of text (one that follows a special token) that does not start with a
///   space, the first sentencepiece token loses its leading `'▁'`: it is dropped when it was
///   just `'▁'`, otherwise the rest of the piece is looked up as a token, and a piece that is not
///   in the vocabulary becomes `<unk>` (HF's `piece_to_id`), a quirk kept for parity
///   (`"</s>USER:"` -> `</s> US ER :`, ids 2 3308 1001 29901).
///
/// Text at the start of the chunk always gets the dummy prefix; so does text after an image,
/// which starts a new chunk.
fn tokenize_chunk(tok: &Tokenizer, segs: &[Segment]) -> Vec<u32> {
    let non_empty = segs.iter().any(|s| match s {
        Segment::Text(t) => !t.is_empty(),
        _ => true,
    });
    if !non_empty {
        return Vec::new();
    }
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.push(tok.bos());
    }
    let mut after_special = false;
    for seg in segs {
        match seg {
            Segment::Special(id) => {
                ids.push(*id);
                after_special = true;
            }
            Segment::Eos => {
                ids.push(tok.eos());
                after_special = true;
            }
            Segment::Text(text) if text.is_empty() => {}
            Segment::Text(text) => {
                if after_special && !tok.legacy() {
                    ids.extend(encode_after_special_non_legacy(tok, text));
                } else {
                    ids.extend(tok.encode(text, true));
                }
                after_special = false;
            }
            Segment::Image => {} // chunks hold no images
        }
    }
    ids
}

/// Non-legacy HF encoding of text that follows a special token (see [`tokenize_chunk`]).
fn encode_after_special_non_legacy(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = tok.encode(text, true);
    // HF turned a leading '▁' into a space before this check, so both count as a space.
    if text.starts_with(' ') || text.starts_with(SPACE_MARKER) {
        return ids;
    }
    let Some(&first) = ids.first() else {
        return ids;
    };
    let Some(rest) = tok
        .token_piece(first)
        .and_then(|p| p.strip_prefix(SPACE_MARKER))
    else {
        return ids;
    };
    if rest.is_empty() {
        ids.remove(0);
    } else {
        ids[0] = tok.piece_id(rest).unwrap_or(tok.unk());
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_places_images_and_specials() {
        let turns = [
            Turn {
                role: Role::User,
                text: "Q1".into(),
                images: 2,
            },
            Turn {
                role: Role::Assistant,
                text: "A1".into(),
                images: 0,
            },
            Turn {
                role: Role::User,
                text: "x <|image|> y".into(),
                images: 1,
            },
        ];
        let segs = render_chat(&turns, true).unwrap();
        use Segment::*;
        assert_eq!(
            segs,
            vec![
                Text("USER: ".into()),
                Image,
                Image,
                Text("Q1 ASSISTANT: A1".into()),
                Eos,
                Text("USER: x ".into()),
                Image,
                Text(" y ASSISTANT:".into()),
            ]
        );
        let bad = [Turn {
            role: Role::User,
            text: "<|image|>".into(),
            images: 2,
        }];
        let e = render_chat(&bad, true).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::BadPrompt);
        let bad = [Turn {
            role: Role::Assistant,
            text: "a".into(),
            images: 1,
        }];
        assert!(render_chat(&bad, false).is_err());
    }

    #[test]
    fn raw_parse() {
        use Segment::*;
        assert_eq!(
            parse_raw("<|image|><|image|>a</s>"),
            vec![Image, Image, Text("a</s>".into())]
        );
        assert_eq!(parse_raw(""), vec![]);
    }
}
