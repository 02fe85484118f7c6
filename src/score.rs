//! Q-Align-style scoring: how good an image (or a video) looks, as the expectation of five
//! level words under the model's next-token distribution.
//!
//! Q-Align (and OneAlign) fine-tune mPLUG-Owl2 to answer `The quality of the image is` with one
//! of five words. Their scorer (`q_align/evaluate/scorer.py`) reads the logits of the last
//! prompt position at those words' ids, applies a softmax over just those five, and takes the
//! expectation with weights 1, 0.75, 0.5, 0.25, 0 (or 5..1 as in the paper's tables). Images
//! are first padded to a square on a canvas of `int(255 * image_mean)` per channel, i.e. the
//! processor's normalisation mean as an 8-bit colour, (122, 116, 104) for CLIP — not the
//! image's own average colour. That is owlet's `pad` aspect mode with the model file's pad
//! colour, followed by the same shortest-edge resize and centre crop.
//!
//! The prompt is the same for every image, so the text before the `<|image|>` placeholder is
//! prefilled once; each image rewinds the KV cache to the end of that prefix and feeds only
//! the image rows and the text after it.

use std::str::FromStr;

use crate::error::{bail_kind, Error, Result};
use crate::image::{AspectMode, RgbImage};
use crate::prompt::{self, IMAGE_PLACEHOLDER, IMAGE_TOKEN_ID};
use crate::session::{ImageEmbedding, Session};

/// Q-Align's level words, best first.
pub const LEVELS: [&str; 5] = ["excellent", "good", "fair", "poor", "bad"];

/// What is rated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aspect {
    Quality,
    Aesthetics,
}

/// What the rated input is called in the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Image,
    Video,
}

impl FromStr for Aspect {
    type Err = Error;
    fn from_str(s: &str) -> Result<Aspect> {
        match s {
            "quality" => Ok(Aspect::Quality),
            "aesthetics" => Ok(Aspect::Aesthetics),
            _ => bail_kind!(
                InvalidArgument,
                "unknown scoring task {s:?}: expected quality or aesthetics"
            ),
        }
    }
}

/// Q-Align's prompt for a task: `USER: How would you rate the {aspect} of this {subject}?\n
/// <|image|>\nASSISTANT: The {aspect} of the {subject} is`.
pub fn task_prompt(aspect: Aspect, subject: Subject) -> String {
    let a = match aspect {
        Aspect::Quality => "quality",
        Aspect::Aesthetics => "aesthetics",
    };
    let s = match subject {
        Subject::Image => "image",
        Subject::Video => "video",
    };
    format!("USER: How would you rate the {a} of this {s}?\n{IMAGE_PLACEHOLDER}\nASSISTANT: The {a} of the {s} is")
}

/// The range of the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// Weights 5, 4, 3, 2, 1 (the Q-Align paper's tables).
    #[default]
    OneToFive,
    /// Weights 1, 0.75, 0.5, 0.25, 0 (Q-Align's `scorer.py`).
    ZeroToOne,
}

impl Scale {
    /// The weight of each level, best first.
    pub fn weights(self) -> [f64; 5] {
        match self {
            Scale::OneToFive => [5.0, 4.0, 3.0, 2.0, 1.0],
            Scale::ZeroToOne => [1.0, 0.75, 0.5, 0.25, 0.0],
        }
    }
}

impl FromStr for Scale {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scale> {
        match s {
            "1-5" => Ok(Scale::OneToFive),
            "0-1" => Ok(Scale::ZeroToOne),
            _ => bail_kind!(
                InvalidArgument,
                "unknown score scale {s:?}: expected 1-5 or 0-1"
            ),
        }
    }
}

/// How to score.
#[derive(Clone, Debug)]
pub struct ScoreOptions {
    /// A raw prompt (no chat template) with exactly one `<|image|>`.
    pub prompt: String,
    /// The five level words, best first.
    pub levels: [String; 5],
    pub scale: Scale,
    /// Aspect handling; Q-Align pads.
    pub mode: AspectMode,
}

impl ScoreOptions {
    /// Q-Align's settings for a task.
    pub fn task(aspect: Aspect, subject: Subject) -> ScoreOptions {
        ScoreOptions {
            prompt: task_prompt(aspect, subject),
            levels: LEVELS.map(String::from),
            scale: Scale::default(),
            mode: AspectMode::Pad,
        }
    }
}

impl Default for ScoreOptions {
    /// Image quality, 1–5.
    fn default() -> Self {
        ScoreOptions::task(Aspect::Quality, Subject::Image)
    }
}

/// One score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// `Σ probs[i] · weights[i]`.
    pub score: f64,
    /// The softmax over the five level words' logits, best level first.
    pub probs: [f64; 5],
}

/// The scorer's arithmetic on the last position's logits: the softmax over the levels' logits
/// (f64, max-subtracted) and the expectation of the scale's weights.
pub fn score_from_logits(logits: &[f32], level_ids: &[u32; 5], scale: Scale) -> Result<Score> {
    let mut l = [0f64; 5];
    for (o, &id) in l.iter_mut().zip(level_ids) {
        *o = match logits.get(id as usize) {
            Some(&v) => f64::from(v),
            None => bail_kind!(
                Internal,
                "level token id {id} is outside the logits ({})",
                logits.len()
            ),
        };
    }
    let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = l.map(|x| (x - max).exp());
    let sum: f64 = e.iter().sum();
    let probs = e.map(|x| x / sum);
    let score = probs.iter().zip(scale.weights()).map(|(p, w)| p * w).sum();
    Ok(Score { score, probs })
}

/// A level word's id as Q-Align takes it: `tokenizer(word).input_ids[1]`, the first token
/// after BOS of the word tokenized alone (so with SentencePiece's dummy prefix: `▁excellent`).
pub fn level_id(session: &Session<'_>, word: &str) -> Result<u32> {
    if word.contains(IMAGE_PLACEHOLDER) {
        bail_kind!(
            InvalidArgument,
            "level word {word:?} contains {IMAGE_PLACEHOLDER}"
        );
    }
    let tok = session.model().tokenizer();
    let ids = prompt::tokenize_segments(tok, &prompt::parse_raw(word));
    let skip = usize::from(tok.add_bos() && ids.first() == Some(&i64::from(tok.bos())));
    match ids.get(skip) {
        Some(&id) => Ok(id as u32),
        None => bail_kind!(InvalidArgument, "level word {word:?} gives no token"),
    }
}

/// Scores images one after the other over one session, reusing the prompt's prefix.
pub struct Scorer<'s, 'm> {
    session: &'s mut Session<'m>,
    opts: ScoreOptions,
    /// The prompt's ids; `ids[split]` is the image sentinel.
    ids: Vec<i64>,
    split: usize,
    level_ids: [u32; 5],
}

impl<'s, 'm> Scorer<'s, 'm> {
    /// Checks the options against the session's model (vision, one placeholder, the prompt fits
    /// the context, every level word tokenizes) without computing anything. From the first
    /// score on, the scorer owns the session's KV cache: it keeps the prompt's prefix there, so
    /// a later scorer with the same prompt over the same session reuses it too. A chat on the
    /// session afterwards recomputes its whole prompt.
    pub fn new(session: &'s mut Session<'m>, opts: ScoreOptions) -> Result<Scorer<'s, 'm>> {
        session.preprocess_config(Some(opts.mode))?; // text-only models fail here
        let n = opts.prompt.matches(IMAGE_PLACEHOLDER).count();
        if n != 1 {
            bail_kind!(
                InvalidArgument,
                "the scoring prompt must hold exactly one {IMAGE_PLACEHOLDER} (it has {n})"
            );
        }
        let ids = prompt::tokenize_segments(
            session.model().tokenizer(),
            &prompt::parse_raw(&opts.prompt),
        );
        let Some(split) = ids.iter().position(|&i| i == IMAGE_TOKEN_ID) else {
            bail_kind!(Internal, "the scoring prompt lost its image placeholder");
        };
        // Scoring always starts at position 0: the prompt's text plus one image must fit.
        let (n_ctx, n_img) = (session.n_ctx(), session.model().config.image_tokens);
        if ids.len() - 1 + n_img > n_ctx {
            bail_kind!(
                BadPrompt,
                "the scoring prompt needs {} positions (with one image of {n_img}) but the context has {n_ctx}",
                ids.len() - 1 + n_img
            );
        }
        let mut level_ids = [0u32; 5];
        for (o, w) in level_ids.iter_mut().zip(&opts.levels) {
            *o = level_id(session, w)?;
        }
        Ok(Scorer {
            session,
            opts,
            ids,
            split,
            level_ids,
        })
    }

    /// The level words' token ids, best first.
    pub fn level_ids(&self) -> [u32; 5] {
        self.level_ids
    }

    /// The prompt's token ids (`-200` for the image).
    pub fn prompt_ids(&self) -> &[i64] {
        &self.ids
    }

    pub fn options(&self) -> &ScoreOptions {
        &self.opts
    }

    /// The session the scorer runs on (to embed images with it).
    pub fn session(&self) -> &Session<'m> {
        self.session
    }

    /// Preprocesses (in the options' aspect mode), encodes and scores one image.
    pub fn score_image(&mut self, img: &RgbImage) -> Result<Score> {
        let emb = self.session.embed_image(img, Some(self.opts.mode))?;
        self.score_embedding(&emb)
    }

    /// Scores a video the way Q-Align's `QAlignVideoScorer` does: each frame (already sampled,
    /// see [`crate::video`]) padded and encoded like an image, the frames' embeddings
    /// concatenated into the prompt's one `<|image|>` slot. Use [`ScoreOptions::task`] with
    /// [`Subject::Video`] for Q-Align's video prompt. Refuses, before encoding, more frames
    /// than the context holds after the prompt's text (the error names the frame count).
    pub fn score_video(&mut self, frames: &[RgbImage]) -> Result<Score> {
        self.check_frames(frames.len())?;
        let emb = self.session.embed_video(frames, Some(self.opts.mode))?;
        self.score_embedding(&emb)
    }

    /// Whether a video of `n` frames fits the context with the prompt's text (the error names
    /// the frame count and how many fit); lets a caller check before decoding the frames.
    pub fn check_frames(&self, n: usize) -> Result<()> {
        let (n_ctx, n_img) = (
            self.session.n_ctx(),
            self.session.model().config.image_tokens,
        );
        let text = self.ids.len() - 1;
        if text + n.saturating_mul(n_img) > n_ctx {
            let fit = n_ctx.saturating_sub(text) / n_img.max(1);
            bail_kind!(
                BadPrompt,
                "{n} frames × {n_img} queries = {} positions (plus {text} of the scoring prompt) exceed the context of {n_ctx}; use --max-frames {fit} or fewer (or a lower --fps)",
                n * n_img
            );
        }
        Ok(())
    }

    /// Scores an already encoded image (or video, see [`Session::embed_video`]).
    pub fn score_embedding(&mut self, emb: &ImageEmbedding) -> Result<Score> {
        // The text before the image is the same for every image: compute it once. (It holds
        // no image, so equal ids mean equal keys and values.)
        let prefix = &self.ids[..self.split];
        if self.session.cached_ids().get(..self.split) != Some(prefix) {
            self.session.reset();
            if !prefix.is_empty() {
                self.session.prefill(prefix, &[], false, None)?;
            }
        }
        self.session.truncate(self.split);
        let logits = self
            .session
            .prefill(&self.ids[self.split..], &[emb], false, None)
            .inspect_err(|_| self.session.truncate(self.split))?;
        score_from_logits(&logits, &self.level_ids, self.opts.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_the_middle_of_the_scale() {
        let logits = vec![0.5f32; 10];
        let ids = [1, 3, 5, 7, 9];
        let s = score_from_logits(&logits, &ids, Scale::OneToFive).unwrap();
        assert!((s.score - 3.0).abs() < 1e-12);
        let s = score_from_logits(&logits, &ids, Scale::ZeroToOne).unwrap();
        assert!((s.score - 0.5).abs() < 1e-12);
        assert!(s.probs.iter().all(|p| (p - 0.2).abs() < 1e-12));
    }

    #[test]
    fn a_dominant_level_and_large_logits_stay_finite() {
        let mut logits = vec![0f32; 6];
        logits[5] = 1e4; // "bad"
        logits[1] = -1e4;
        let s = score_from_logits(&logits, &[1, 2, 3, 4, 5], Scale::OneToFive).unwrap();
        assert!((s.score - 1.0).abs() < 1e-12, "{s:?}");
        assert!(score_from_logits(&logits, &[1, 2, 3, 4, 6], Scale::OneToFive).is_err());
    }

    #[test]
    fn task_prompts_are_q_aligns() {
        assert_eq!(
            task_prompt(Aspect::Aesthetics, Subject::Video),
            "USER: How would you rate the aesthetics of this video?\n<|image|>\nASSISTANT: The aesthetics of the video is"
        );
        assert_eq!("0-1".parse::<Scale>().unwrap(), Scale::ZeroToOne);
        assert!("1-10".parse::<Scale>().is_err());
    }
}
