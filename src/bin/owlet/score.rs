//! `owlet score`: Q-Align-style scores for a batch of images, one output line per input.
//!
//! Inputs are files, folders (their `.jpg`/`.jpeg`/`.png` files, sorted by name) and list
//! files (one path per line). Each input gets one JSONL object or CSV row, written and flushed
//! as soon as it is scored, carrying its error when it failed; a failed input never stops the
//! batch. `--resume` reads the output back and skips the inputs it already scored.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use owlet::image::{AspectMode, ExifOrientation};
use owlet::score::{Aspect, Scale, Score, ScoreOptions, Scorer, Subject};

use crate::{aspect, load_image, load_model_cached, session, ModelArgs, Res};

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images, and folders of images (their .jpg, .jpeg and .png files, sorted by name).
    inputs: Vec<PathBuf>,
    /// A file listing one input per line (empty lines and lines starting with # are skipped).
    #[arg(long = "list")]
    list: Option<PathBuf>,
    /// What to rate: quality or aesthetics (Q-Align's prompts).
    #[arg(long = "task", default_value = "quality")]
    task: String,
    /// Score range: 1-5 (weights 5..1) or 0-1 (weights 1..0).
    #[arg(long = "scale", default_value = "1-5")]
    scale: String,
    /// A raw prompt with one <|image|> instead of the task's (for other fine-tunes).
    #[arg(long = "prompt")]
    prompt: Option<String>,
    /// The five level words, best first, comma separated (default excellent,good,fair,poor,bad).
    #[arg(long = "levels")]
    levels: Option<String>,
    /// Aspect handling: resize, pad or crop (default pad, as Q-Align).
    #[arg(long = "image-mode")]
    image_mode: Option<String>,
    /// EXIF orientation of photos: apply (as viewers show them) or ignore (upstream-exact).
    #[arg(long = "exif", default_value = "apply", value_parser = crate::parse_exif)]
    exif: ExifOrientation,
    /// Output file (default stdout).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// jsonl or csv (default: csv for a .csv output, else jsonl).
    #[arg(long = "format")]
    format: Option<String>,
    /// Continue an existing output: skip the inputs it already has a score for.
    #[arg(long = "resume", requires = "out")]
    resume: bool,
    /// Replace an existing output.
    #[arg(long = "overwrite", conflicts_with = "resume")]
    overwrite: bool,
    /// Also write the five level probabilities.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Score videos (Q-Align's video prompt): each input is an MP4 (H.264), an animated GIF or
    /// a folder of frames; a folder holding videos stands for its videos.
    #[arg(long = "video")]
    video: bool,
    #[command(flatten)]
    frames: crate::FrameArgs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
}

/// One output line.
struct Record<'a> {
    path: &'a str,
    result: Result<Score, String>,
}

pub fn run(a: ScoreArgs) -> Res<()> {
    let opts = score_options(&a)?;
    let format = match a.format.as_deref() {
        Some("jsonl") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(f) => return Err(format!("unknown --format {f:?} (jsonl or csv)")),
        None if a
            .out
            .as_ref()
            .is_some_and(|o| o.extension().is_some_and(|e| e == "csv")) =>
        {
            Format::Csv
        }
        None => Format::Jsonl,
    };
    let inputs = collect_inputs(&a.inputs, a.list.as_deref(), a.video)?;
    if inputs.is_empty() {
        return Err("no inputs: give image files, folders or --list FILE".into());
    }
    let (mut out, done) = open_output(a.out.as_deref(), a.resume, a.overwrite, format)?;
    let m = load_model_cached(&a.model.model, &a.model.packed_cache)?;
    let mut s = session(&m, &a.model)?;
    let mut scorer = Scorer::new(&mut s, opts.clone()).map_err(|e| e.to_string())?;
    if out.fresh && format == Format::Csv {
        out.line(&csv_header(&opts, a.verbose))?;
    }
    let todo: Vec<&String> = inputs.iter().filter(|p| !done.contains(*p)).collect();
    let mut progress = Progress::new(todo.len(), inputs.len() - todo.len());
    let mut failed = 0usize;
    for path in todo {
        let result = if a.video {
            score_video(&mut scorer, Path::new(path), &a)
        } else {
            load_image(Path::new(path), a.exif)
                .and_then(|img| scorer.score_image(&img).map_err(|e| format!("{path}: {e}")))
        };
        failed += usize::from(result.is_err());
        let rec = Record { path, result };
        out.line(&match format {
            Format::Jsonl => jsonl(&rec, &opts, a.verbose),
            Format::Csv => csv_row(&rec, a.verbose),
        })?;
        progress.step(failed);
    }
    progress.finish(failed);
    if failed > 0 {
        return Err(format!(
            "{failed} of {} input(s) failed; their output lines name the errors",
            progress.total
        ));
    }
    Ok(())
}

/// Samples, checks (before decoding: the frames must fit the context), decodes and scores one
/// video.
fn score_video(scorer: &mut Scorer<'_, '_>, path: &Path, a: &ScoreArgs) -> Res<Score> {
    let shown = path.display();
    let (_, idx) = crate::video::probe_and_sample(path, &a.frames.sampling())?;
    scorer
        .check_frames(idx.len())
        .map_err(|e| format!("{shown}: {e}"))?;
    let (_, _, frames) = crate::video::load(path, &a.frames.sampling(), a.exif)?;
    scorer
        .score_video(&frames)
        .map_err(|e| format!("{shown}: {e}"))
}

fn score_options(a: &ScoreArgs) -> Res<ScoreOptions> {
    let task: Aspect = a
        .task
        .parse()
        .map_err(|e: owlet::Error| format!("--task: {e}"))?;
    let subject = if a.video {
        Subject::Video
    } else {
        Subject::Image
    };
    let mut o = ScoreOptions::task(task, subject);
    o.scale = a
        .scale
        .parse::<Scale>()
        .map_err(|e| format!("--scale: {e}"))?;
    if let Some(p) = &a.prompt {
        o.prompt = p.clone();
    }
    if let Some(l) = &a.levels {
        let words: Vec<String> = l.split(',').map(|w| w.trim().to_string()).collect();
        o.levels = words.clone().try_into().map_err(|_| {
            format!(
                "--levels needs five comma-separated words, best first (got {})",
                words.len()
            )
        })?;
        if o.levels.iter().any(String::is_empty) {
            return Err("--levels: a level word is empty".into());
        }
    }
    o.mode = aspect(&a.image_mode)?.unwrap_or(AspectMode::Pad);
    Ok(o)
}

/// The inputs in order: each argument (a folder expands to its image files, sorted by name),
/// then the list file's lines. Paths are kept as given (they are the output's keys).
fn collect_inputs(args: &[PathBuf], list: Option<&Path>, video: bool) -> Res<Vec<String>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in args {
        if p.is_dir() && video {
            // A folder of videos stands for them; any other folder is one video's frames.
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: cannot list the folder: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_video_name(f))
                .collect();
            files.sort();
            if files.is_empty() {
                paths.push(p.clone());
            }
            paths.extend(files);
        } else if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: cannot list the folder: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image_name(f))
                .collect();
            files.sort();
            paths.extend(files);
        } else {
            paths.push(p.clone());
        }
    }
    if let Some(l) = list {
        let text = std::fs::read_to_string(l)
            .map_err(|e| format!("--list {}: cannot read it: {e}", l.display()))?;
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.starts_with('#'))
                .map(PathBuf::from),
        );
    }
    Ok(paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

fn is_video_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["mp4", "m4v", "mov", "gif"].contains(&e.to_ascii_lowercase().as_str()))
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Where the lines go.
struct Output {
    sink: Box<dyn Write>,
    /// Nothing was in it before this run (a CSV header is due).
    fresh: bool,
}

impl Output {
    /// Writes one line and flushes it, so an interrupted batch keeps every finished line.
    fn line(&mut self, l: &str) -> Res<()> {
        let mut buf = String::with_capacity(l.len() + 1);
        buf.push_str(l);
        buf.push('\n');
        self.sink
            .write_all(buf.as_bytes())
            .and_then(|_| self.sink.flush())
            .map_err(|e| format!("cannot write the output: {e}"))
    }
}

/// Opens the output; with `resume`, also returns the inputs it already scored. An existing,
/// non-empty output is refused unless `resume` or `overwrite` says what to do with it. A last
/// line cut short by an interrupted run is dropped before appending.
fn open_output(
    out: Option<&Path>,
    resume: bool,
    overwrite: bool,
    format: Format,
) -> Res<(Output, HashSet<String>)> {
    let Some(path) = out else {
        let sink = Box::new(std::io::stdout());
        return Ok((Output { sink, fresh: true }, HashSet::new()));
    };
    let name = path.display();
    let existing = match std::fs::metadata(path) {
        Ok(m) => m.len() > 0,
        Err(_) => false,
    };
    if existing && !resume && !overwrite {
        return Err(format!(
            "--out {name} already exists: pass --resume to continue it or --overwrite to replace it"
        ));
    }
    if !resume || !existing {
        let f = File::create(path).map_err(|e| format!("--out {name}: cannot create it: {e}"))?;
        return Ok((
            Output {
                sink: Box::new(f),
                fresh: true,
            },
            HashSet::new(),
        ));
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("--out {name}: cannot open it: {e}"))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| format!("--out {name}: cannot read it: {e}"))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        f.set_len(keep as u64)
            .map_err(|e| format!("--out {name}: cannot drop its unfinished last line: {e}"))?;
    }
    f.seek(SeekFrom::Start(keep as u64))
        .map_err(|e| format!("--out {name}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes[..keep]);
    let done = text
        .lines()
        .filter_map(|l| match format {
            Format::Jsonl => scored_path_jsonl(l),
            Format::Csv => scored_path_csv(l),
        })
        .collect();
    Ok((
        Output {
            sink: Box::new(f),
            fresh: keep == 0,
        },
        done,
    ))
}

// ---------------------------------------------------------------------------------------------
// JSONL
// ---------------------------------------------------------------------------------------------

/// `{"path":...,"score":...}` (plus `"probs"` with `--verbose`) or `{"path":...,"error":...}`.
fn jsonl(r: &Record<'_>, o: &ScoreOptions, verbose: bool) -> String {
    let mut s = format!("{{\"path\":{}", json_str(r.path));
    match &r.result {
        Ok(sc) => {
            s += &format!(",\"score\":{}", sc.score);
            if verbose {
                let probs: Vec<String> = o
                    .levels
                    .iter()
                    .zip(sc.probs)
                    .map(|(w, p)| format!("{}:{p}", json_str(w)))
                    .collect();
                s += &format!(",\"probs\":{{{}}}", probs.join(","));
            }
        }
        Err(e) => s += &format!(",\"error\":{}", json_str(e)),
    }
    s.push('}');
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The path of a JSONL line this command wrote with a score (`{"path":"...","score":...`).
fn scored_path_jsonl(line: &str) -> Option<String> {
    let rest = line.strip_prefix("{\"path\":")?;
    let (path, after) = parse_json_str(rest)?;
    after.starts_with(",\"score\":").then_some(path)
}

/// A JSON string literal at the start of `s`: its value and what follows it.
fn parse_json_str(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|c| c.1)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// CSV (RFC 4180 quoting)
// ---------------------------------------------------------------------------------------------

fn csv_header(o: &ScoreOptions, verbose: bool) -> String {
    let mut cols = vec!["path".to_string(), "score".to_string()];
    if verbose {
        cols.extend(o.levels.iter().map(|w| csv_field(&format!("p_{w}"))));
    }
    cols.push("error".into());
    cols.join(",")
}

fn csv_row(r: &Record<'_>, verbose: bool) -> String {
    let mut cols = vec![csv_field(r.path)];
    match &r.result {
        Ok(sc) => {
            cols.push(sc.score.to_string());
            if verbose {
                cols.extend(sc.probs.iter().map(f64::to_string));
            }
            cols.push(String::new());
        }
        Err(e) => {
            cols.push(String::new());
            if verbose {
                cols.extend(std::iter::repeat_n(String::new(), 5));
            }
            cols.push(csv_field(e));
        }
    }
    cols.join(",")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The path of a CSV row with a score (the header and error rows give `None`).
fn scored_path_csv(line: &str) -> Option<String> {
    let (path, rest) = if let Some(q) = line.strip_prefix('"') {
        let mut path = String::new();
        let mut it = q.char_indices().peekable();
        loop {
            let (i, c) = it.next()?;
            if c == '"' {
                if it.peek().map(|p| p.1) == Some('"') {
                    it.next();
                    path.push('"');
                } else {
                    break (path, &q[i + 1..]);
                }
            } else {
                path.push(c);
            }
        }
    } else {
        let (p, _) = line.split_once(',')?;
        (p.to_string(), &line[p.len()..])
    };
    let score = rest.strip_prefix(',')?.split(',').next()?;
    score.parse::<f64>().ok().map(|_| path)
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// A one-line progress bar on stderr (only when stderr is a terminal): done/total, rate, ETA.
struct Progress {
    total: usize,
    done: usize,
    skipped: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    fn new(todo: usize, skipped: usize) -> Progress {
        let p = Progress {
            total: todo,
            done: 0,
            skipped,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        };
        if p.tty {
            p.draw(0);
        }
        p
    }

    fn step(&mut self, failed: usize) {
        self.done += 1;
        if self.tty {
            self.draw(failed);
        }
    }

    fn draw(&self, failed: usize) {
        const WIDTH: usize = 30;
        let frac = if self.total == 0 {
            1.0
        } else {
            self.done as f64 / self.total as f64
        };
        let fill = (frac * WIDTH as f64) as usize;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            clock((self.total - self.done) as f64 / rate)
        } else {
            "?".into()
        };
        eprint!(
            "\r[{}{}] {}/{} {:.1}/min ETA {eta}{}   ",
            "#".repeat(fill),
            ".".repeat(WIDTH - fill),
            self.done,
            self.total,
            rate * 60.0,
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            }
        );
    }

    fn finish(&self, failed: usize) {
        if self.tty {
            eprintln!();
        }
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!(
            "scored {} of {} in {} ({:.1}/min){}{}",
            self.done - failed,
            self.total,
            clock(secs),
            if secs > 0.0 {
                self.done as f64 * 60.0 / secs
            } else {
                0.0
            },
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            if self.skipped > 0 {
                format!(", {} already in the output", self.skipped)
            } else {
                String::new()
            }
        );
    }
}

/// `1h02m03s`, `2m03s` or `3s`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_lines_read_back() {
        let o = ScoreOptions::default();
        let sc = Score {
            score: 3.25,
            probs: [0.2; 5],
        };
        for path in ["a.jpg", "we\"ird,\\ name\n.png", "ü/ß.jpg"] {
            let ok = Record {
                path,
                result: Ok(sc),
            };
            let bad = Record {
                path,
                result: Err("x".into()),
            };
            assert_eq!(
                scored_path_jsonl(&jsonl(&ok, &o, true)).as_deref(),
                Some(path)
            );
            assert_eq!(scored_path_jsonl(&jsonl(&bad, &o, true)), None);
            assert_eq!(scored_path_csv(&csv_row(&ok, true)).as_deref(), Some(path));
            assert_eq!(scored_path_csv(&csv_row(&bad, false)), None);
        }
        assert_eq!(scored_path_csv(&csv_header(&o, true)), None);
        assert_eq!(clock(3725.0), "1h02m05s");
    }
}
