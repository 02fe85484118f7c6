//! A conversation over an immutable [`Model`]: the KV cache, the position, the images seen so
//! far, the three graphs' scratch buffers and a private thread pool. Many sessions can share one model from many threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use crate::embed_cache::{self, EmbedCache, EmbedKey};
use crate::error::{bail_kind, Error, ErrorKind, Result};
use crate::image::{self, AspectMode, Preprocess, RgbImage};
use crate::kv_cache::{KvCache, KvType};
use crate::model::abstractor::AbstractorScratch;
use crate::model::text::{TextScratch, TextTrace};
use crate::model::vision::VisionScratch;
use crate::model::{Modality, Model};
use crate::prompt::{self, Role, Turn, IMAGE_TOKEN_ID};
use crate::sampling::{Sampler, SamplingParams};

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Worker threads for this session's matmuls (≥ 1); defaults to
    /// [`crate::threads::default_threads`] (the performance cores on aarch64 Linux/Android,
    /// else all CPUs).
    pub threads: usize,
    pub kv_type: KvType,
    /// Context length; defaults to the model's.
    pub n_ctx: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: crate::threads::default_threads(),
            kv_type: KvType::F16,
            n_ctx: None,
        }
    }
}

/// An image (or a video) turned into the LLM rows that replace one `<|image|>` placeholder.
#[derive(Clone, Debug)]
pub struct ImageEmbedding {
    /// `[n_image_tokens × d_llm]` for an image; a video's frames' rows one after the other,
    /// `[n_frames × n_image_tokens × d_llm]`.
    pub rows: Vec<f32>,
}

impl ImageEmbedding {
    /// How many frames' rows this holds for a model whose images take `image_tokens` rows of
    /// `n_embd` (1 for an image); 0 when the size is not a whole number of frames.
    pub fn frames(&self, image_tokens: usize, n_embd: usize) -> usize {
        let per = image_tokens * n_embd;
        if per == 0 || !self.rows.len().is_multiple_of(per) {
            0
        } else {
            self.rows.len() / per
        }
    }
}

/// What fills one `<|image|>` placeholder of a chat turn.
#[derive(Clone, Debug)]
pub enum Media {
    Image(RgbImage),
    /// Frames in order (already sampled, see [`crate::video`]); their embeddings are
    /// concatenated into the one slot, as mPLUG-Owl2 and Q-Align feed a video.
    Video(Vec<RgbImage>),
}

impl Media {
    /// 1 for an image, the frame count for a video.
    pub fn frames(&self) -> usize {
        match self {
            Media::Image(_) => 1,
            Media::Video(f) => f.len(),
        }
    }
}

/// What to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Keep going past the end-of-sequence token.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            ignore_eos: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    ContextFull,
    Callback,
    Cancelled,
}

/// The result of one generation.
#[derive(Clone, Debug)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
}

/// The image graphs' activation buffers (see [`crate::model::sized`]).
#[derive(Default)]
struct ImageScratch {
    vision: VisionScratch,
    abstractor: AbstractorScratch,
}

/// One conversation.
pub struct Session<'m> {
    model: &'m Model,
    pool: rayon::ThreadPool,
    kv: KvCache,
    /// The decoder's activation buffers, reused from call to call.
    scratch: TextScratch,
    /// The vision tower's and the abstractor's, reused from image to image (behind a lock
    /// because images are encoded through `&self`, possibly from several threads).
    image_scratch: Mutex<ImageScratch>,
    /// Ids in the KV cache (-200 marks an image's first row; the image's other rows follow
    /// implicitly), used to reuse the cache when a new prompt extends the old one.
    cached: Vec<i64>,
    /// The positions each image sentinel of `cached` takes, in order (the model's image rows
    /// times the frame count: a video fills one sentinel with all its frames).
    cached_image_positions: Vec<usize>,
    n_past: usize,
    /// Chat history and the embeddings of every image attached so far, in order.
    turns: Vec<Turn>,
    /// Logits of the last prompt position of the latest chat turn (`n_vocab`; empty before).
    chat_prompt_logits: Vec<f32>,
    /// Positions of the latest chat turn's prompt taken from the cache.
    reused: usize,
    /// Whether everything cached was fed by `chat` (whose images are `images`, in order); a
    /// public `prefill` may have fed other images behind the same `-200` ids.
    chat_owned: bool,
    images: Vec<ImageEmbedding>,
    /// Ids generated or prompted so far (for the repetition penalty).
    history: Vec<u32>,
    cancel: Arc<AtomicBool>,
    /// Where image embeddings are looked up before encoding (the process-wide memory cache
    /// unless [`Session::set_embed_cache`] says otherwise).
    embed_cache: Option<Arc<EmbedCache>>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, opts: SessionOptions) -> Result<Session<'m>> {
        if opts.threads == 0 {
            bail_kind!(InvalidArgument, "threads must be at least 1 (got 0)");
        }
        let n_ctx = opts.n_ctx.unwrap_or(model.config.text.n_ctx);
        if n_ctx == 0 || n_ctx > model.config.text.n_ctx {
            bail_kind!(
                InvalidArgument,
                "context length {n_ctx} must be between 1 and the model's {}",
                model.config.text.n_ctx
            );
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("thread pool: {e}")))?;
        let t = &model.config.text;
        Ok(Session {
            model,
            pool,
            kv: KvCache::new(opts.kv_type, t.n_layer, n_ctx, t.kv_dim(), t.head_dim()),
            scratch: TextScratch::default(),
            image_scratch: Mutex::default(),
            cached: Vec::new(),
            cached_image_positions: Vec::new(),
            n_past: 0,
            turns: Vec::new(),
            chat_prompt_logits: Vec::new(),
            reused: 0,
            chat_owned: true,
            images: Vec::new(),
            history: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            embed_cache: Some(EmbedCache::process()),
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions used so far.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    /// The ids whose keys and values the cache holds, in order (`-200` marks an image, whose
    /// other positions follow implicitly): the prompt as it was fed, plus every generated
    /// token that was fed back.
    pub fn cached_ids(&self) -> &[i64] {
        &self.cached
    }

    /// The logits (`n_vocab`) at the last position of the latest [`Session::chat`] turn's
    /// prompt, i.e. what chose the answer's first token; empty before the first turn.
    pub fn chat_prompt_logits(&self) -> &[f32] {
        &self.chat_prompt_logits
    }

    /// How many positions of the latest [`Session::chat`] turn's prompt were reused from the KV
    /// cache instead of being recomputed.
    pub fn reused_positions(&self) -> usize {
        self.reused
    }

    /// A flag that, once set from any thread, stops the running generation before its next
    /// token: at most the token being computed when it is set still comes out. It is cleared
    /// when the next [`Session::prefill`] or [`Session::chat`] starts (not by
    /// [`Session::generate`], so a cancel set between a prefill and its generation holds).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Forgets the conversation (keeps the allocations).
    pub fn reset(&mut self) {
        self.cached.clear();
        self.cached_image_positions.clear();
        self.n_past = 0;
        self.turns.clear();
        self.chat_prompt_logits.clear();
        self.reused = 0;
        self.chat_owned = true;
        self.images.clear();
        self.history.clear();
    }

    /// The preprocessing the model's file describes, with an optional aspect-mode override.
    pub fn preprocess_config(&self, mode: Option<AspectMode>) -> Result<Preprocess> {
        let Some(v) = &self.model.config.vision else {
            bail_kind!(BadPrompt, "this model is text-only: it cannot take images");
        };
        Ok(Preprocess {
            size: v.image_size as u32,
            mean: v.mean,
            std: v.std,
            mode: mode.unwrap_or(v.aspect_mode),
            pad_color: v.pad_color,
        })
    }

    /// Preprocesses, encodes and abstracts one image (or takes its embedding from the cache).
    pub fn embed_image(&self, img: &RgbImage, mode: Option<AspectMode>) -> Result<ImageEmbedding> {
        let p = self.preprocess_config(mode)?;
        img.validate()?;
        let pixels = image::preprocess(img, &p);
        self.embed_pixels_as(&pixels, p.mode.as_str())
    }

    /// Encodes a video's frames (already sampled, in order) and concatenates their embeddings
    /// into one `[n_frames × n_image_tokens × d_llm]` block that fills one `<|image|>`
    /// placeholder, as mPLUG-Owl2's `prepare_inputs_labels_for_multimodal` flattens a list of
    /// frames. Each frame goes through [`Session::embed_image`] (and so the embedding cache).
    /// Refuses, before encoding anything, more frames than the context can hold or than memory
    /// can take, naming the frame count.
    pub fn embed_video(
        &self,
        frames: &[RgbImage],
        mode: Option<AspectMode>,
    ) -> Result<ImageEmbedding> {
        self.preprocess_config(mode)?;
        if frames.is_empty() {
            bail_kind!(BadImage, "the video has no frames");
        }
        let m = self.model;
        let (n_img, d) = (m.config.image_tokens, m.config.text.n_embd);
        let n = frames.len();
        let positions = n.saturating_mul(n_img);
        let n_ctx = self.kv.n_ctx;
        if positions > n_ctx {
            bail_kind!(
                BadPrompt,
                "{n} frames × {n_img} queries = {positions} positions exceed the context of {n_ctx}; use --max-frames {} or fewer (or a lower --fps)",
                (n_ctx / n_img.max(1)).max(1)
            );
        }
        let len = positions.saturating_mul(d);
        let mut rows: Vec<f32> = Vec::new();
        if rows.try_reserve_exact(len).is_err() {
            bail_kind!(
                BadPrompt,
                "{n} frames need {} MiB for their embeddings, more than this machine can allocate; use --max-frames",
                (len as u64 * 4) >> 20
            );
        }
        for (i, f) in frames.iter().enumerate() {
            let e = self.embed_image(f, mode).map_err(|e| {
                Error::new(e.kind(), format!("video frame {i} of {n}: {}", e.message()))
            })?;
            rows.extend_from_slice(&e.rows);
        }
        Ok(ImageEmbedding { rows })
    }

    /// Encodes already preprocessed pixels (`[3, S, S]`, `S` the model's image size).
    pub fn embed_pixels(&self, pixels: &[f32]) -> Result<ImageEmbedding> {
        self.embed_pixels_as(pixels, "pixels")
    }

    /// The embedding cache this session uses; `None` turns caching off.
    pub fn set_embed_cache(&mut self, cache: Option<Arc<EmbedCache>>) {
        self.embed_cache = cache;
    }

    pub fn embed_cache(&self) -> Option<&Arc<EmbedCache>> {
        self.embed_cache.as_ref()
    }

    /// [`Session::embed_pixels`], keyed in the cache under the preprocessing mode's name.
    fn embed_pixels_as(&self, pixels: &[f32], mode: &str) -> Result<ImageEmbedding> {
        let s = self.preprocess_config(None)?.size as usize;
        if pixels.len() != 3 * s * s {
            bail_kind!(
                BadImage,
                "preprocessed pixels hold {} values, but this model takes [3, {s}, {s}] = {}",
                pixels.len(),
                3 * s * s
            );
        }
        let m = self.model;
        m.check_file()?;
        let len = m.config.image_tokens * m.config.text.n_embd;
        let key = self.embed_cache.as_ref().map(|c| {
            let k = EmbedKey::new(&embed_cache::vision_identity(m), mode, s as u32, pixels);
            (c, k)
        });
        if let Some((c, k)) = &key {
            if let Some((rows, _)) = c.get(k, len) {
                return Ok(ImageEmbedding {
                    rows: rows.to_vec(),
                });
            }
        }
        let encode = |s: &mut ImageScratch| {
            let ImageScratch { vision, abstractor } = s;
            self.pool.install(|| {
                m.abstract_image_with(&m.encode_image_with(pixels, vision)?, abstractor)
            })
        };
        // An image encoded while another thread encodes one through this session gets buffers
        // of its own rather than waiting. A panic while the lock was held leaves nothing to
        // distrust: every element a graph reads from its scratch it has written first.
        let rows = match self.image_scratch.try_lock() {
            Ok(mut s) => encode(&mut s),
            Err(TryLockError::Poisoned(p)) => encode(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => encode(&mut ImageScratch::default()),
        }?;
        if let Some((c, k)) = &key {
            c.put(k, Arc::new(rows.clone()));
        }
        Ok(ImageEmbedding { rows })
    }

    /// Checks, before any compute (image encoding included), that `ids` (with `-200`
    /// sentinels) fit in the context after the current position. The error names both numbers.
    pub fn check_prompt(&self, ids: &[i64]) -> Result<()> {
        self.check_fits("the prompt", ids, self.n_past, &[])
            .map(|_| ())
    }

    /// [`Session::check_prompt`] when some placeholders will hold videos: `frames[i]` is the
    /// frame count of the `i`-th placeholder (1 for an image; missing entries are images). The
    /// error names the frame count and how many frames would fit.
    pub fn check_prompt_frames(&self, ids: &[i64], frames: &[usize]) -> Result<()> {
        self.check_fits("the prompt", ids, self.n_past, frames)
            .map(|_| ())
    }

    /// The positions `ids` take (each image sentinel counts as the model's image rows), checked
    /// against the context when feeding starts at position `start`; `what` names the ids in the
    /// error ("the prompt").
    fn check_fits(&self, what: &str, ids: &[i64], start: usize, frames: &[usize]) -> Result<usize> {
        let n_sent = ids.iter().filter(|&&i| i == IMAGE_TOKEN_ID).count();
        let n_img = self.model.config.image_tokens;
        let frames_of = |j: usize| frames.get(j).copied().unwrap_or(1);
        let n_frames: usize = (0..n_sent).map(frames_of).sum();
        let total = (ids.len() - n_sent).saturating_add(n_frames.saturating_mul(n_img));
        let n_ctx = self.kv.n_ctx;
        if start.saturating_add(total) > n_ctx && (0..n_sent).any(|j| frames_of(j) > 1) {
            // e.g. "the prompt needs 800 positions (20 text tokens + 12 frames × 65 queries =
            // 780) but the context holds 512; use --max-frames 7 or fewer".
            let videos: usize = (0..n_sent).filter(|&j| frames_of(j) > 1).count();
            let video_frames: usize = (0..n_sent).map(frames_of).filter(|&f| f > 1).sum();
            let others = total - video_frames * n_img;
            let room = n_ctx.saturating_sub(start).saturating_sub(others) / n_img.max(1);
            let hint = if room == 0 {
                "the text and images alone fill it".to_string()
            } else if videos == 1 {
                format!("use --max-frames {room} or fewer (or a lower --fps)")
            } else {
                format!("use fewer frames ({room} in all fit)")
            };
            bail_kind!(
                BadPrompt,
                "{what} needs {total} positions ({} text tokens + {n_frames} frames × {n_img} queries = {}) but {}; {hint}",
                ids.len() - n_sent,
                n_frames * n_img,
                if start == 0 {
                    format!("the context holds {n_ctx}")
                } else {
                    format!(
                        "only {} of the context's {n_ctx} positions are left",
                        n_ctx.saturating_sub(start)
                    )
                }
            );
        }
        if start + total > n_ctx {
            // e.g. "the prompt needs 20010 positions (20010 text tokens) but the context holds
            // 4096", or "... (37 text tokens + 2 images × 65) but only 100 of the context's 4096
            // positions are left".
            let images = match n_sent {
                0 => String::new(),
                1 => format!(" + 1 image × {n_img}"),
                n => format!(" + {n} images × {n_img}"),
            };
            let room = if start == 0 {
                format!("the context holds {n_ctx}")
            } else {
                format!(
                    "only {} of the context's {n_ctx} positions are left",
                    n_ctx.saturating_sub(start)
                )
            };
            bail_kind!(
                BadPrompt,
                "{what} needs {total} positions ({} text tokens{images}) but {room}",
                ids.len() - n_sent
            );
        }
        Ok(total)
    }

    /// Splices ids (with `-200` image sentinels) and image rows into embeddings + modalities.
    fn splice(&self, ids: &[i64], images: &[&ImageEmbedding]) -> Result<(Vec<f32>, Vec<Modality>)> {
        let m = self.model;
        let d = m.config.text.n_embd;
        let n_sent = ids.iter().filter(|&&i| i == IMAGE_TOKEN_ID).count();
        if n_sent != images.len() {
            bail_kind!(
                BadPrompt,
                "the prompt has {n_sent} image placeholder(s) but {} image(s) were given",
                images.len()
            );
        }
        let n_img = m.config.image_tokens;
        let mut frames = Vec::with_capacity(images.len());
        for img in images {
            match img.frames(n_img, d) {
                0 => bail_kind!(
                    BadPrompt,
                    "an image embedding has the wrong size for this model"
                ),
                f => frames.push(f),
            }
        }
        let total = self.check_fits("the prompt", ids, self.n_past, &frames)?;
        let mut x = Vec::with_capacity(total * d);
        let mut modality = Vec::with_capacity(total);
        let mut next_image = images.iter();
        for &id in ids {
            if id == IMAGE_TOKEN_ID {
                let Some(img) = next_image.next() else {
                    unreachable!("counted above")
                };
                // A video's frames fill the one slot, one after the other.
                x.extend_from_slice(&img.rows);
                modality.extend(std::iter::repeat_n(Modality::Visual, img.rows.len() / d));
            } else if id < 0 || id as usize >= m.config.text.n_vocab {
                bail_kind!(
                    BadPrompt,
                    "token id {id} is outside the vocabulary (0..{})",
                    m.config.text.n_vocab
                );
            } else {
                x.extend_from_slice(&m.embed_tokens(&[id as u32]));
                modality.push(Modality::Text);
            }
        }
        Ok((x, modality))
    }

    /// Feeds ids (with `-200` sentinels, one per image in `images`) at the current position.
    /// Returns the logits of every new position (`T × n_vocab`) when `all_logits`, else of the
    /// last one only. Clears the cancel flag (see [`Session::cancel_handle`]).
    pub fn prefill(
        &mut self,
        ids: &[i64],
        images: &[&ImageEmbedding],
        all_logits: bool,
        trace: Option<&mut TextTrace>,
    ) -> Result<Vec<f32>> {
        self.cancel.store(false, Ordering::Relaxed);
        self.chat_owned = false;
        self.feed(ids, images, all_logits, trace)
    }

    /// [`Session::prefill`] without touching the cancel flag (used inside a generation).
    fn feed(
        &mut self,
        ids: &[i64],
        images: &[&ImageEmbedding],
        all_logits: bool,
        trace: Option<&mut TextTrace>,
    ) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail_kind!(BadPrompt, "the prompt is empty");
        }
        let m = self.model;
        // The weights (the embedding rows first) are read from the mapped file: refuse to
        // compute if it changed.
        m.check_file()?;
        let (x, modality) = self.splice(ids, images)?;
        let d = m.config.text.n_embd;
        let image_positions: Vec<usize> = images.iter().map(|e| e.rows.len() / d).collect();
        let pos0 = self.n_past;
        let (kv, scratch) = (&mut self.kv, &mut self.scratch);
        let logits = self.pool.install(|| {
            let h = m.forward_text(x, &modality, pos0, kv, scratch, trace);
            if all_logits {
                m.lm_head(&h)
            } else {
                m.lm_head(&h[h.len() - d..])
            }
        });
        self.n_past += modality.len();
        self.cached.extend_from_slice(ids);
        self.cached_image_positions.extend(image_positions);
        self.history
            .extend(ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32));
        Ok(logits)
    }

    /// Generates after the current position, starting from `logits` of the last position.
    /// `on_token(id, text_piece)` gets each token as it is chosen; returning `false` stops.
    pub fn generate(
        &mut self,
        mut logits: Vec<f32>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        opts.sampling
            .validate()
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        let mut sampler = Sampler::new(opts.sampling.clone());
        let tok = self.model.tokenizer();
        let mut decoder = tok.decoder();
        let mut ids = Vec::new();
        let mut text = String::new();
        let eos = tok.eos();
        let mut stop = StopReason::MaxTokens;
        while ids.len() < opts.max_tokens {
            if self.cancel.swap(false, Ordering::Relaxed) {
                stop = StopReason::Cancelled;
                break;
            }
            let id = sampler.sample(&mut logits, &self.history);
            ids.push(id);
            if id == eos && !opts.ignore_eos {
                stop = StopReason::Eos;
                // The end-of-turn token belongs to the conversation: cache it too.
                if self.n_past < self.kv.n_ctx {
                    self.feed(&[id as i64], &[], false, None)?;
                }
                break;
            }
            let piece = decoder.push(id);
            text.push_str(&piece);
            if !on_token(id, &piece) {
                stop = StopReason::Callback;
                break;
            }
            if self.n_past >= self.kv.n_ctx {
                stop = StopReason::ContextFull;
                break;
            }
            logits = self.feed(&[id as i64], &[], false, None)?;
        }
        Ok(Generation { ids, text, stop })
    }

    /// One chat turn: the user's text with any images, answered by the model. The whole
    /// conversation is re-rendered with the chat template and tokenized as upstream does;
    /// the KV cache is reused for the part that did not change.
    pub fn chat(
        &mut self,
        user_text: &str,
        new_images: &[RgbImage],
        mode: Option<AspectMode>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        let media: Vec<Media> = new_images.iter().cloned().map(Media::Image).collect();
        self.chat_media(user_text, &media, mode, opts, on_token)
    }

    /// [`Session::chat`] with images and videos: each [`Media`] fills one `<|image|>`
    /// placeholder (a video's frames all go into its one slot).
    pub fn chat_media(
        &mut self,
        user_text: &str,
        new_media: &[Media],
        mode: Option<AspectMode>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        self.begin_answer(opts)?;
        let mut turns = self.turns.clone();
        turns.push(Turn {
            role: Role::User,
            text: user_text.to_string(),
            images: new_media.len(),
        });
        let segs = prompt::render_chat(&turns, true)?;
        let ids = prompt::tokenize_segments(self.model.tokenizer(), &segs);
        // The whole conversation must fit; refuse before encoding any image.
        let frames: Vec<usize> = (self.images.iter().map(|e| self.frames_of(e)))
            .chain(new_media.iter().map(Media::frames))
            .collect();
        self.check_fits("the conversation with this message", &ids, 0, &frames)?;
        let mut embs = Vec::with_capacity(new_media.len());
        for item in new_media {
            embs.push(match item {
                Media::Image(img) => self.embed_image(img, mode)?,
                Media::Video(f) => self.embed_video(f, mode)?,
            });
        }
        let mut all_images: Vec<ImageEmbedding> = self.images.clone();
        all_images.extend(embs);
        self.answer(turns, &ids, all_images, opts, on_token)
    }

    /// A whole conversation given at once (as an HTTP client sends it): `turns` end with the
    /// user's turn to answer and `images` are the embeddings of every image in them, in order.
    /// The session's KV cache is reused for the longest prefix that matches what it holds (a
    /// conversation that extends this session's previous one recomputes only the new part);
    /// the result is the same as [`Session::chat`] over the same turns. Afterwards the session
    /// holds `turns` plus the answer, as if they had been chatted one by one.
    ///
    /// Errors (BadPrompt): no turns, a last turn that is not the user's, an image count that
    /// differs from the placeholders, a conversation that does not fit the context.
    pub fn chat_conversation(
        &mut self,
        turns: &[Turn],
        images: Vec<ImageEmbedding>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        self.begin_answer(opts)?;
        if turns.last().map(|t| t.role) != Some(Role::User) {
            bail_kind!(BadPrompt, "the conversation must end with a user turn");
        }
        let ids = self.conversation_ids(turns)?;
        let n_sent = ids.iter().filter(|&&i| i == IMAGE_TOKEN_ID).count();
        if n_sent != images.len() {
            bail_kind!(
                BadPrompt,
                "the conversation has {n_sent} image placeholder(s) but {} image(s) were given",
                images.len()
            );
        }
        let frames: Vec<usize> = images.iter().map(|e| self.frames_of(e)).collect();
        self.check_fits("the conversation", &ids, 0, &frames)?;
        self.answer(turns.to_vec(), &ids, images, opts, on_token)
    }

    /// What every chat entry point does first: clears a previous cancel and checks the
    /// sampling options.
    fn begin_answer(&self, opts: &GenerateOptions) -> Result<()> {
        self.cancel.store(false, Ordering::Relaxed);
        opts.sampling
            .validate()
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))
    }

    /// The frames an embedding fills (1 for an image, the frame count for a video).
    fn frames_of(&self, e: &ImageEmbedding) -> usize {
        e.frames(
            self.model.config.image_tokens,
            self.model.config.text.n_embd,
        )
    }

    /// Feeds the conversation `ids` (already checked to fit) with all its `images`, answers,
    /// and makes the session hold `turns` plus the answer.
    fn answer(
        &mut self,
        mut turns: Vec<Turn>,
        ids: &[i64],
        images: Vec<ImageEmbedding>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        let logits = self.feed_conversation(ids, &images)?;
        self.chat_prompt_logits.clone_from(&logits);
        let gen = self.generate(logits, opts, on_token)?;
        turns.push(Turn {
            role: Role::Assistant,
            text: gen.text.clone(),
            images: 0,
        });
        self.turns = turns;
        self.images = images;
        Ok(gen)
    }

    /// The ids (with `-200` sentinels) of `turns` rendered with the chat template and a
    /// generation prompt, tokenized as upstream does.
    pub fn conversation_ids(&self, turns: &[Turn]) -> Result<Vec<i64>> {
        let segs = prompt::render_chat(turns, true)?;
        Ok(prompt::tokenize_segments(self.model.tokenizer(), &segs))
    }

    /// The positions `ids` (with `-200` sentinels) take in the context when every sentinel
    /// holds one image (the model's image rows). A sentinel that holds a video takes its frame
    /// count times that: see [`Session::positions_with_frames`].
    pub fn positions(&self, ids: &[i64]) -> usize {
        self.positions_with_frames(ids, &[])
    }

    /// The positions `ids` take when the `j`-th sentinel holds `frames[j]` frames (an image is
    /// one frame; sentinels beyond `frames` hold images), as [`Session::embed_video`]'s
    /// embeddings fill them.
    pub fn positions_with_frames(&self, ids: &[i64], frames: &[usize]) -> usize {
        let n_img = self.model.config.image_tokens;
        let mut j = 0;
        ids.iter()
            .map(|&i| {
                if i == IMAGE_TOKEN_ID {
                    j += 1;
                    frames
                        .get(j - 1)
                        .copied()
                        .unwrap_or(1)
                        .saturating_mul(n_img)
                } else {
                    1
                }
            })
            .fold(0usize, usize::saturating_add)
    }

    /// Makes the cache hold exactly `ids` (with all conversation images), reusing the longest
    /// cached prefix that matches and recomputing the rest; returns the last position's logits.
    ///
    /// The cache may hold more than the common prefix: generated tokens that the re-rendered
    /// conversation tokenizes differently (upstream re-tokenizes the whole history every turn).
    /// Those positions are dropped by rewinding; attention only reads positions below the
    /// current one, so their stale keys and values are overwritten before they are used.
    fn feed_conversation(&mut self, ids: &[i64], images: &[ImageEmbedding]) -> Result<Vec<f32>> {
        let mut common = self
            .cached
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one id must be fed to get logits.
        if common == ids.len() {
            common = common.saturating_sub(1);
        }
        if !self.chat_owned {
            common = 0;
        }
        // Image sentinels are all `-200`: the cache holds an image only up to the first one
        // whose embedding differs from the one cached (a new conversation may send another).
        let same = self
            .images
            .iter()
            .zip(images)
            .take_while(|(a, b)| same_rows(&a.rows, &b.rows))
            .count();
        if let Some(at) = ids
            .iter()
            .enumerate()
            .filter(|(_, &i)| i == IMAGE_TOKEN_ID)
            .nth(same)
            .map(|(at, _)| at)
        {
            common = common.min(at);
        }
        self.chat_owned = true;
        self.rewind(common);
        self.reused = self.n_past;
        let used = ids[..common]
            .iter()
            .filter(|&&i| i == IMAGE_TOKEN_ID)
            .count();
        let refs: Vec<&ImageEmbedding> = images.get(used..).unwrap_or(&[]).iter().collect();
        self.feed(&ids[common..], &refs, false, None)
    }

    /// Keeps only the first `n_ids` of [`Session::cached_ids`] (and their positions), so that
    /// a prompt prefix computed once can be continued many times (the scorer does this). The
    /// chat history no longer matches the cache afterwards: the next [`Session::chat`]
    /// recomputes its whole prompt.
    pub fn truncate(&mut self, n_ids: usize) {
        self.chat_owned = false;
        self.rewind(n_ids.min(self.cached.len()));
    }

    /// Keeps only the first `n_ids` cached ids (and their positions).
    fn rewind(&mut self, n_ids: usize) {
        self.cached.truncate(n_ids);
        let n_sent = self.cached.iter().filter(|&&i| i == IMAGE_TOKEN_ID).count();
        self.cached_image_positions.truncate(n_sent);
        self.n_past =
            self.cached.len() - n_sent + self.cached_image_positions.iter().sum::<usize>();
        self.history = self
            .cached
            .iter()
            .filter(|&&i| i >= 0)
            .map(|&i| i as u32)
            .collect();
    }
}

/// Bitwise equality of two embeddings (so that a NaN never makes an image differ from itself).
fn same_rows(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
