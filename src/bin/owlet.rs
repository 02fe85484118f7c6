//! `owlet`: ask mPLUG-Owl2 about images from the command line.

#[path = "owlet/chat.rs"]
mod chat;
#[path = "owlet/sys.rs"]
mod sys;
#[path = "owlet/video.rs"]
mod video;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use owlet::embed_cache::EmbedCache;
use owlet::image::{self, AspectMode, ExifOrientation, ImageLimits, Preprocess};
use owlet::kv_cache::KvType;
use owlet::model::{LoadOptions, Model, PackedCache};
use owlet::prompt::{self, Role, Turn};
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, ImageEmbedding, Session, SessionOptions};

// `owlet eval-shapes`, the owlet-shapes accuracy check (src/bin/owlet/eval_shapes.rs).
#[path = "owlet/eval_shapes.rs"]
mod eval_shapes;

// The batch scorer lives in its own file (src/bin/owlet/score.rs).
#[path = "owlet/score.rs"]
mod score;

// `owlet serve`, the OpenAI-compatible HTTP server (src/bin/owlet/serve.rs).
#[cfg(feature = "serve")]
#[path = "owlet/serve.rs"]
mod serve;
// Its HTTP/1.1 layer (src/bin/owlet/serve/http.rs).
#[cfg(feature = "serve")]
#[path = "owlet/serve/http.rs"]
mod serve_http;

/// The demo model committed with the sources, the default `-m` of every command: the one
/// place to switch it, as a path under the data folder ([`bundled`]). owlet-shapes, a small
/// mPLUG-Owl2 trained to answer questions about shapes (models/owlet-shapes/README.md).
const DEFAULT_MODEL: &str = "models/owlet-shapes-q8_0.gguf";

/// What `owlet run` asks when given no image and no prompt: the bundled example image
/// (models/owlet-shapes/example.py draws it) and a question about it.
const EXAMPLE_IMAGE: &str = "models/owlet-shapes/example.png";
const EXAMPLE_QUESTION: &str = "Describe the image.";

/// The owlet-shapes held-out set `owlet eval-shapes` scores by default (64 images, 381
/// questions; models/owlet-shapes/heldout/README.md says how it was drawn).
const DEFAULT_SHAPES_SET: &str = "models/owlet-shapes/heldout";

/// Where a bundled file (`rel`, e.g. `models/...`) is: the first that exists of
/// `$OWLET_DATA/rel`, `rel` beside the executable, `../share/owlet/rel` from the executable's
/// folder (an installed owlet: copy `models/` there), and the source tree owlet was built
/// from; the source-tree path when none exists, so that the error names where it looked last.
fn bundled(rel: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let mut places = Vec::new();
    if let Some(d) = std::env::var_os("OWLET_DATA") {
        places.push(PathBuf::from(d).join(rel));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        places.push(dir.join(rel));
        places.push(dir.join("../share/owlet").join(rel));
    }
    places.into_iter().find(|p| p.exists()).unwrap_or(source)
}

#[derive(Parser)]
#[command(
    name = "owlet",
    version,
    about = "mPLUG-Owl2 on the CPU: answer questions about images",
    long_about = "mPLUG-Owl2 on the CPU: answer questions about images.\n\nExamples:\n  \
owlet run   (the bundled model describes the bundled example image)\n  \
owlet run -m owl2-q4_k_m.gguf --image photo.jpg -p \"Describe the image.\"\n  \
owlet chat -m owl2-q4_k_m.gguf   (then /image PATH, /reset, /quit)\n  \
owlet score -m one-align-q4_k_m.gguf photos/ -o scores.jsonl\n  \
owlet run -m owl2-q4_k_m.gguf --video clip.mp4 -p \"What happens?\"\n  \
owlet score -m one-align-q4_k_m.gguf --video clips/ -o video_scores.jsonl\n  \
owlet info owl2-q4_k_m.gguf"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// GGUF model file (default: the bundled demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Worker threads (default: all cores; the performance cores on ARM phones; more than
    /// the cores are capped).
    #[arg(short = 't', long = "threads", allow_negative_numbers = true)]
    threads: Option<usize>,
    /// KV cache type: f16 or f32.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: String,
    /// Context length in positions (default: the model's); generation stops when it is full.
    #[arg(short = 'c', long = "ctx-size", allow_negative_numbers = true)]
    ctx_size: Option<usize>,
    /// Keep image embeddings in this folder across runs (default: $XDG_CACHE_HOME/owlet/embeddings
    /// or ~/.cache/owlet/embeddings).
    #[arg(long = "embed-cache", value_name = "DIR")]
    embed_cache: Option<PathBuf>,
    /// Size cap of the embedding cache folder in MiB (least recently used entries go first).
    #[arg(long = "embed-cache-mib", default_value_t = 1024)]
    embed_cache_mib: u64,
    /// Encode every image afresh: no embedding cache folder (the in-memory cache stays).
    #[arg(long = "no-embed-cache", conflicts_with = "embed_cache")]
    no_embed_cache: bool,
    /// Packed-weight cache: a folder, `beside` (the model's folder) or `off` (default:
    /// $XDG_CACHE_HOME/owlet/packed or ~/.cache/owlet/packed, used only where the CPU's
    /// kernels repack weights at load).
    #[arg(long = "packed-cache", value_name = "DIR|beside|off")]
    packed_cache: Option<String>,
}

/// How frames are sampled from a video (Q-Align's default: one per second).
#[derive(Args, Clone)]
pub(crate) struct FrameArgs {
    /// Frames kept per second of video (Q-Align: 1).
    #[arg(long = "fps", default_value_t = 1.0, allow_negative_numbers = true)]
    fps: f64,
    /// At most this many frames, chosen evenly among the sampled ones.
    #[arg(long = "max-frames", allow_negative_numbers = true)]
    max_frames: Option<usize>,
}

impl FrameArgs {
    pub(crate) fn sampling(&self) -> owlet::video::Sampling {
        owlet::video::Sampling {
            rate: self.fps,
            max_frames: self.max_frames,
        }
    }
}

#[derive(Args, Clone)]
struct InputArgs {
    /// An image (JPEG or PNG); repeat for several.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A video: MP4 (H.264), animated GIF, or a folder of frames (.jpg/.png, in name order).
    /// Its sampled frames fill one <|image|> slot, the first (before any --image).
    #[arg(long = "video")]
    video: Option<PathBuf>,
    #[command(flatten)]
    frames: FrameArgs,
    /// The question; the chat template is applied and images go before it.
    #[arg(short = 'p', long = "prompt", conflicts_with_all = ["raw_prompt", "ids"])]
    prompt: Option<String>,
    /// A prompt used as is (no template); <|image|> marks where each image goes.
    #[arg(long = "raw-prompt", conflicts_with = "ids")]
    raw_prompt: Option<String>,
    /// Raw token ids, comma separated; -200 marks an image.
    #[arg(long = "ids", allow_hyphen_values = true)]
    ids: Option<String>,
    /// Aspect handling: resize, pad or crop (default: the model file's).
    #[arg(long = "image-mode")]
    image_mode: Option<String>,
    /// EXIF orientation of photos: apply (as viewers show them) or ignore (upstream-exact).
    #[arg(long = "exif", default_value = "apply", value_parser = parse_exif)]
    exif: ExifOrientation,
}

/// The numbers take a leading `-` as a value (`--temp -1`), so that a negative one gets the
/// same range message as `--temp=-1` instead of "unexpected argument".
#[derive(Args, Clone)]
struct GenArgs {
    /// Maximum new tokens.
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 256,
        allow_negative_numbers = true
    )]
    n_predict: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.0, allow_negative_numbers = true)]
    temp: f32,
    #[arg(long = "top-k", default_value_t = 0, allow_negative_numbers = true)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    repeat_penalty: f32,
    #[arg(long = "seed", default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one prompt, streaming the text to stdout; with no image and no prompt, describe
    /// the bundled example image.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// Print the generated ids as a comma list on the last line.
        #[arg(long = "print-ids")]
        print_ids: bool,
    },
    /// Interactive chat; /image PATH (or /video PATH) attaches an image to the next message.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// Aspect handling: resize, pad or crop (default: the model file's).
        #[arg(long = "image-mode")]
        image_mode: Option<String>,
        /// EXIF orientation of photos: apply (as viewers show them) or ignore (upstream-exact).
        #[arg(long = "exif", default_value = "apply", value_parser = parse_exif)]
        exif: ExifOrientation,
        #[command(flatten)]
        frames: FrameArgs,
    },
    /// Print the frames of a video that --video would use: index, time, mean colour.
    Frames {
        /// MP4 (H.264), animated GIF, or a folder of frames.
        file: PathBuf,
        #[command(flatten)]
        frames: FrameArgs,
        /// Also write each sampled frame as DIR/frame_INDEX.png (what the model is shown).
        #[arg(long = "save", value_name = "DIR")]
        save: Option<PathBuf>,
    },
    /// Write the logits of every prompt position as float32 .npy [positions, vocab].
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        input: InputArgs,
        #[arg(long = "out")]
        out: PathBuf,
    },
    /// Write an image's preprocessed pixels as float32 .npy [3, N, N].
    Pixels {
        #[arg(long = "image")]
        image: PathBuf,
        /// Side length (default: the model's, or 448).
        #[arg(long = "size")]
        size: Option<u32>,
        #[arg(long = "image-mode", default_value = "resize")]
        image_mode: String,
        /// EXIF orientation of photos: apply (as viewers show them) or ignore (upstream-exact).
        #[arg(long = "exif", default_value = "apply", value_parser = parse_exif)]
        exif: ExifOrientation,
        /// Take size, mean and std from this model.
        #[arg(short = 'm', long = "model")]
        model: Option<PathBuf>,
        #[arg(long = "out")]
        out: PathBuf,
    },
    /// Print the token ids of a prompt (-200 marks an image).
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Measure speed: load, image encoding, prefill 64/512, decode 128, peak RSS, bandwidth.
    Bench {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// Worker threads (default: all cores; the performance cores on ARM phones; more than
        /// the cores are capped).
        #[arg(short = 't', long = "threads", allow_negative_numbers = true)]
        threads: Option<usize>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Tokens to decode.
        #[arg(long = "decode", default_value_t = 128)]
        decode: usize,
        /// Prompt lengths to prefill, comma separated.
        #[arg(long = "prefill", value_delimiter = ',', default_values_t = [64, 512])]
        prefill: Vec<usize>,
        /// Bandwidth probe size in MiB (0 skips it).
        #[arg(long = "bandwidth-mib", default_value_t = 1024)]
        bandwidth_mib: usize,
        /// Skip the image encoding (vision encoder and abstractor) of models with vision.
        #[arg(long = "no-vision")]
        no_vision: bool,
        /// Packed-weight cache: a folder, `beside` or `off` (default: as for `run`). The
        /// report gives the load time, whether the cache was hit, and resident memory
        /// split into anonymous and file-backed.
        #[arg(long = "packed-cache", value_name = "DIR|beside|off")]
        packed_cache: Option<String>,
    },
    /// Exact-answer accuracy of an owlet-shapes model on a held-out set, per question type.
    EvalShapes {
        #[command(flatten)]
        model: ModelArgs,
        /// A folder written by models/owlet-shapes/gen.py: images and questions.jsonl
        /// (default: the committed held-out set, models/owlet-shapes/heldout).
        #[arg(long = "set", value_name = "DIR")]
        set: Option<PathBuf>,
        /// Ask only the first N questions (in file order).
        #[arg(long = "n", allow_negative_numbers = true)]
        n: Option<usize>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Print every wrong answer on stderr.
        #[arg(short = 'v', long = "verbose")]
        verbose: bool,
    },
    /// Rate image quality or aesthetics Q-Align-style, one JSONL/CSV line per input.
    Score(score::ScoreArgs),
    /// Serve the OpenAI chat API (and /v1/score) over HTTP; loopback by default.
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Print a model's configuration.
    Info {
        /// GGUF model file (default: the bundled demo model).
        model: Option<PathBuf>,
    },
}

type Res<T> = Result<T, String>;

fn load_model(path: &Option<PathBuf>) -> Res<Model> {
    let p = path.clone().unwrap_or_else(|| bundled(DEFAULT_MODEL));
    sys::report_sigbus_for(&p);
    Model::load(&p).map_err(|e| e.to_string())
}

/// The model with the packed-weight cache `--packed-cache` asks for; the load's cache
/// problems (a rebuilt file, an unwritable folder) are printed, one line each.
fn load_model_cached(path: &Option<PathBuf>, packed: &Option<String>) -> Res<Model> {
    let p = path.clone().unwrap_or_else(|| bundled(DEFAULT_MODEL));
    sys::report_sigbus_for(&p);
    let opts = LoadOptions {
        kernels: None,
        packed_cache: packed_cache(packed)?,
    };
    let m = Model::load_with_options(&p, &opts).map_err(|e| e.to_string())?;
    for msg in &m.load_report().messages {
        eprintln!("owlet: warning: {msg}");
    }
    Ok(m)
}

/// `--packed-cache DIR|beside|off`; absent: the per-user cache folder (off without one).
pub(crate) fn packed_cache(arg: &Option<String>) -> Res<PackedCache> {
    Ok(match arg.as_deref() {
        None => {
            owlet::model::packed_cache::default_dir().map_or(PackedCache::Off, PackedCache::Dir)
        }
        Some("off") => PackedCache::Off,
        Some("beside") => PackedCache::BesideModel,
        Some("") => return Err("--packed-cache: give a folder, beside or off".to_string()),
        Some(dir) => PackedCache::Dir(PathBuf::from(dir)),
    })
}

/// `-t`, capped at the cores there are: more threads than cores only wait for each other
/// (`-t 1000` ran 56 times slower than `-t 2` on two cores). 0 stays, for the library's error.
fn threads(t: Option<usize>) -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match t {
        Some(t) if t > cores => {
            eprintln!(
                "owlet: warning: -t {t} is more than the {cores} cores available; using {cores}"
            );
            Some(cores)
        }
        t => t,
    }
}

fn session<'m>(m: &'m Model, a: &ModelArgs) -> Res<Session<'m>> {
    let mut o = SessionOptions::default();
    if let Some(t) = threads(a.threads) {
        o.threads = t;
    }
    o.kv_type = a.kv_type.parse::<KvType>()?;
    o.n_ctx = a.ctx_size;
    let mut s = Session::new(m, o).map_err(|e| e.to_string())?;
    if let Some(c) = embed_cache(a)? {
        s.set_embed_cache(Some(c));
    }
    Ok(s)
}

/// The embedding cache folder the arguments ask for. The default folder is best effort: if it
/// cannot be created, images are still cached in memory.
fn embed_cache(a: &ModelArgs) -> Res<Option<std::sync::Arc<EmbedCache>>> {
    if a.no_embed_cache {
        return Ok(None);
    }
    let cap = a.embed_cache_mib.saturating_mul(1 << 20);
    match &a.embed_cache {
        Some(dir) => EmbedCache::shared_dir(dir, cap)
            .map(Some)
            .map_err(|e| format!("--embed-cache: {e}")),
        None => Ok(owlet::embed_cache::default_dir()
            .and_then(|dir| EmbedCache::shared_dir(&dir, cap).ok())),
    }
}

fn aspect(mode: &Option<String>) -> Res<Option<AspectMode>> {
    match mode {
        None => Ok(None),
        Some(s) => s
            .parse::<AspectMode>()
            .map(Some)
            .map_err(|_| format!("unknown --image-mode {s:?} (resize, pad or crop)")),
    }
}

pub(crate) fn parse_exif(s: &str) -> Res<ExifOrientation> {
    s.parse()
        .map_err(|_| format!("{s:?} is not apply or ignore"))
}

fn load_image(p: &Path, exif: ExifOrientation) -> Res<image::RgbImage> {
    image::load_with(p, &ImageLimits::default(), exif).map_err(|e| e.to_string())
}

/// Token ids (with -200 sentinels) and image embeddings for the inputs.
fn prepare(s: &Session<'_>, inp: &InputArgs) -> Res<(Vec<i64>, Vec<ImageEmbedding>)> {
    let model = s.model();
    let tok = model.tokenizer();
    let ids: Vec<i64> = if let Some(list) = &inp.ids {
        list.split(',')
            .map(|x| {
                x.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("--ids: {x:?} is not an integer"))
            })
            .collect::<Res<_>>()?
    } else if let Some(raw) = &inp.raw_prompt {
        prompt::tokenize_segments(tok, &prompt::parse_raw(raw))
    } else if let Some(p) = &inp.prompt {
        let turns = [Turn {
            role: Role::User,
            text: p.clone(),
            images: n_media(inp),
        }];
        let segs = prompt::render_chat(&turns, true).map_err(|e| e.to_string())?;
        prompt::tokenize_segments(tok, &segs)
    } else {
        return Err("give a prompt with -p, --raw-prompt or --ids".into());
    };
    let n_placeholders = ids.iter().filter(|&&i| i == prompt::IMAGE_TOKEN_ID).count();
    if n_placeholders != n_media(inp) {
        let video = if inp.video.is_some() {
            " and a --video"
        } else {
            ""
        };
        return Err(format!(
            "the prompt has {n_placeholders} image placeholder(s) but {} --image{video} given",
            inp.images.len()
        ));
    }
    let mode = aspect(&inp.image_mode)?;
    let mut embs = Vec::new();
    if let Some(v) = &inp.video {
        // Refuse a prompt that cannot fit before decoding or encoding anything.
        let (_, idx) = video::probe_and_sample(v, &inp.frames.sampling())?;
        s.check_prompt_frames(&ids, &[idx.len()])
            .map_err(|e| format!("{}: {e}", v.display()))?;
        let (_, _, frames) = video::load(v, &inp.frames.sampling(), inp.exif)?;
        embs.push(
            s.embed_video(&frames, mode)
                .map_err(|e| format!("{}: {e}", v.display()))?,
        );
    } else {
        // Refuse a prompt that cannot fit before encoding any image.
        s.check_prompt(&ids).map_err(|e| e.to_string())?;
    }
    for p in &inp.images {
        let img = load_image(p, inp.exif)?;
        embs.push(
            s.embed_image(&img, mode)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    Ok((ids, embs))
}

/// Whether `owlet run` was given nothing to ask: no image, video or prompt of any kind. It
/// then asks [`EXAMPLE_QUESTION`] about [`EXAMPLE_IMAGE`].
fn is_bare(inp: &InputArgs) -> bool {
    inp.images.is_empty()
        && inp.video.is_none()
        && inp.prompt.is_none()
        && inp.raw_prompt.is_none()
        && inp.ids.is_none()
}

/// The `<|image|>` slots the inputs fill: one per image, one for the video.
fn n_media(inp: &InputArgs) -> usize {
    inp.images.len() + usize::from(inp.video.is_some())
}

/// `owlet frames`: the sampled frames, one line each (index, seconds, mean RGB); the video's
/// summary on stderr.
fn print_frames(file: &Path, frames: &FrameArgs, save: Option<&Path>) -> Res<()> {
    let (probe, idx, imgs) = video::load(file, &frames.sampling(), ExifOrientation::Apply)?;
    eprintln!(
        "{}: {}, {} frames at {:.3} fps, {}x{}; {} sampled",
        file.display(),
        probe.kind,
        probe.n_frames,
        probe.fps,
        probe.width,
        probe.height,
        idx.len()
    );
    println!("index\ttime_s\tmean_rgb");
    if let Some(dir) = save {
        std::fs::create_dir_all(dir).map_err(|e| format!("--save {}: {e}", dir.display()))?;
    }
    for (i, img) in idx.iter().zip(&imgs) {
        if let Some(dir) = save {
            let out = dir.join(format!("frame_{i:06}.png"));
            ::image::save_buffer(
                &out,
                &img.data,
                img.width,
                img.height,
                ::image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| format!("{}: {e}", out.display()))?;
        }
        let mut sum = [0u64; 3];
        for px in img.data.chunks_exact(3) {
            for c in 0..3 {
                sum[c] += u64::from(px[c]);
            }
        }
        let n = (img.data.len() / 3).max(1) as u64;
        println!(
            "{i}\t{:.3}\t{},{},{}",
            *i as f64 / probe.fps,
            sum[0] / n,
            sum[1] / n,
            sum[2] / n
        );
    }
    Ok(())
}

/// Generation settings, checked before the model is loaded.
fn gen_options(g: &GenArgs) -> Res<GenerateOptions> {
    let o = GenerateOptions {
        max_tokens: g.n_predict,
        sampling: SamplingParams {
            temperature: g.temp,
            top_k: g.top_k,
            top_p: g.top_p,
            repeat_penalty: g.repeat_penalty,
            seed: g.seed,
        },
        ignore_eos: g.ignore_eos,
    };
    o.sampling.validate()?;
    Ok(o)
}

fn run(cmd: Command) -> Res<()> {
    match cmd {
        Command::Run {
            model,
            input,
            gen,
            print_ids,
        } => {
            let opts = gen_options(&gen)?;
            let example = is_bare(&input);
            let mut input = input;
            if example {
                input.images.push(bundled(EXAMPLE_IMAGE));
                input.prompt = Some(EXAMPLE_QUESTION.to_string());
            }
            let m = load_model_cached(&model.model, &model.packed_cache)?;
            let mut s = session(&m, &model)?;
            let (ids, embs) = prepare(&s, &input)?;
            let refs: Vec<&ImageEmbedding> = embs.iter().collect();
            let logits = s
                .prefill(&ids, &refs, false, None)
                .map_err(|e| e.to_string())?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if example {
                // The question first, so that the answer below it reads as one.
                let _ = writeln!(
                    out,
                    "{}: {EXAMPLE_QUESTION}",
                    bundled(EXAMPLE_IMAGE).display()
                );
            }
            let g = s
                .generate(logits, &opts, &mut |_, piece| {
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                    true
                })
                .map_err(|e| e.to_string())?;
            let _ = writeln!(out);
            if print_ids {
                let list: Vec<String> = g.ids.iter().map(|i| i.to_string()).collect();
                let _ = writeln!(out, "{}", list.join(","));
            }
            Ok(())
        }
        Command::Chat {
            model,
            gen,
            image_mode,
            exif,
            frames,
        } => chat::chat(&model, &gen, &image_mode, exif, &frames),
        Command::Frames { file, frames, save } => print_frames(&file, &frames, save.as_deref()),
        Command::Logits { model, input, out } => {
            let m = load_model_cached(&model.model, &model.packed_cache)?;
            let mut s = session(&m, &model)?;
            let (ids, embs) = prepare(&s, &input)?;
            let refs: Vec<&ImageEmbedding> = embs.iter().collect();
            let logits = s
                .prefill(&ids, &refs, true, None)
                .map_err(|e| e.to_string())?;
            let v = m.config.text.n_vocab;
            owlet::npy::write_f32(&out, &[logits.len() / v, v], &logits)
                .map_err(|e| format!("{}: {e}", out.display()))
        }
        Command::Pixels {
            image: path,
            size,
            image_mode,
            exif,
            model,
            out,
        } => {
            let mode: AspectMode = image_mode.parse().map_err(|_| {
                format!("unknown --image-mode {image_mode:?} (resize, pad or crop)")
            })?;
            // Without a model: the 7B's side and OpenAI CLIP's normalisation.
            let mut p = Preprocess::clip(size.unwrap_or(448), mode);
            if let Some(mp) = &model {
                let m = load_model(&Some(mp.clone()))?;
                let v = m
                    .config
                    .vision
                    .as_ref()
                    .ok_or("this model has no vision tower")?;
                p.size = size.unwrap_or(v.image_size as u32);
                p.mean = v.mean;
                p.std = v.std;
                p.pad_color = v.pad_color;
            }
            if p.size == 0 || p.size > 4096 {
                return Err(format!("--size {} must be between 1 and 4096", p.size));
            }
            let img = load_image(&path, exif)?;
            let px = image::preprocess(&img, &p);
            let n = p.size as usize;
            owlet::npy::write_f32(&out, &[3, n, n], &px)
                .map_err(|e| format!("{}: {e}", out.display()))
        }
        Command::Tokenize { model, input } => {
            let m = load_model_cached(&model.model, &model.packed_cache)?;
            let tok = m.tokenizer();
            let ids = if let Some(raw) = &input.raw_prompt {
                prompt::tokenize_segments(tok, &prompt::parse_raw(raw))
            } else if let Some(p) = &input.prompt {
                let turns = [Turn {
                    role: Role::User,
                    text: p.clone(),
                    images: n_media(&input),
                }];
                prompt::tokenize_segments(
                    tok,
                    &prompt::render_chat(&turns, true).map_err(|e| e.to_string())?,
                )
            } else {
                return Err("give --raw-prompt or -p".into());
            };
            let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            println!("{}", list.join(","));
            Ok(())
        }
        Command::Bench {
            model,
            threads,
            json,
            decode,
            prefill,
            bandwidth_mib,
            no_vision,
            packed_cache,
        } => {
            let mut o = owlet::bench::BenchOptions::default();
            o.threads = self::threads(threads).unwrap_or(o.threads);
            o.decode_tokens = decode;
            o.prefill_lens = prefill;
            o.bandwidth_bytes = bandwidth_mib << 20;
            sys::report_sigbus_for(&model);
            o.skip_vision = no_vision;
            o.packed_cache = self::packed_cache(&packed_cache)?;
            // Each stage on stderr as it finishes; the report itself goes to stdout.
            let r = owlet::bench::run_with_progress(&model, &o, &mut |stage| {
                eprintln!("bench: {stage}")
            })
            .map_err(|e| e.to_string())?;
            if json {
                println!("{}", r.to_json());
            } else {
                print!("{}", r.to_text());
            }
            Ok(())
        }
        Command::EvalShapes {
            model,
            set,
            n,
            json,
            verbose,
        } => {
            if n == Some(0) {
                return Err("--n must be at least 1".into());
            }
            let dir = set.unwrap_or_else(|| bundled(DEFAULT_SHAPES_SET));
            // The set is checked before the model is loaded.
            let set = eval_shapes::load_set(&dir)?;
            let m = load_model_cached(&model.model, &model.packed_cache)?;
            let mut s = session(&m, &model)?;
            let report = eval_shapes::evaluate(&mut s, &set, n, &mut |q, got, ok| {
                if verbose && !ok {
                    eprintln!(
                        "{} [{}] {:?}: got {:?}, want {:?}",
                        q.image,
                        q.qtype,
                        q.question,
                        got.trim(),
                        q.answer
                    );
                }
            })?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Score(a) => score::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(a),
        Command::Info { model } => {
            let m = load_model(&model)?;
            let c = &m.config;
            let t = &c.text;
            println!("name: {}", c.name);
            println!("architecture: {:?}", c.arch);
            println!(
                "text: {} layers, width {}, {} heads ({} kv), ffn {}, vocab {}, context {}, rms eps {:e}",
                t.n_layer, t.n_embd, t.n_head, t.n_head_kv, t.n_ff, t.n_vocab, t.n_ctx, t.rms_eps
            );
            if let (Some(v), Some(a)) = (&c.vision, &c.abstractor) {
                println!(
                    "vision: {}px patch {}, {} layers, width {}, {} heads, aspect mode {}",
                    v.image_size, v.patch_size, v.n_layer, v.n_embd, v.n_head, v.aspect_mode
                );
                println!(
                    "abstractor: {} queries, {} layers, ffn {}; {} LLM positions per image",
                    a.n_query, a.n_layer, a.n_ff, c.image_tokens
                );
            }
            let mut types: Vec<(String, usize, u64)> = Vec::new();
            for ti in m.gguf().tensors() {
                let n = ti.typ.name().to_string();
                match types.iter_mut().find(|e| e.0 == n) {
                    Some(e) => {
                        e.1 += 1;
                        e.2 += ti.size;
                    }
                    None => types.push((n, 1, ti.size)),
                }
            }
            for (n, c, b) in types {
                println!("  {n:<6} {c:>5} tensors {:>10.2} MB", b as f64 / 1e6);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("owlet: {e}");
            ExitCode::FAILURE
        }
    }
}
