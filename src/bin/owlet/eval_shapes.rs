//! `owlet eval-shapes`: exact-answer accuracy of an owlet-shapes model (issue 12) on a set
//! written by `models/owlet-shapes/gen.py`: a folder of images and `questions.jsonl`, one
//! `{"image", "type", "question", "answer"}` object per line.
//!
//! Every question is asked the way a user would ask it (the chat template, the image before
//! the question, greedy decoding) and the answer counts when it equals the expected one after
//! trimming whitespace. Each image is decoded and encoded once, and its questions follow one
//! another so that the session's KV cache keeps `USER: <image>` and recomputes only the
//! question.
//!
//! This file depends on the library and `serde_json` only: convert/tests/owlet_shapes.rs
//! includes it to run the same evaluation on a freshly converted checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use owlet::image::{self, ExifOrientation, ImageLimits};
use owlet::prompt::{Role, Turn};
use owlet::sampling::SamplingParams;
use owlet::session::{GenerateOptions, ImageEmbedding, Session};

/// The question types of the task, in the order reports list them.
pub const TYPES: [&str; 6] = ["color", "shape", "count", "exists", "where", "describe"];

/// New tokens allowed per answer: the longest (a three-shape description) takes about 15.
pub const MAX_ANSWER_TOKENS: usize = 32;

/// One line of `questions.jsonl`.
#[derive(Clone, Debug)]
pub struct Question {
    pub image: String,
    pub qtype: String,
    pub question: String,
    pub answer: String,
}

/// A held-out set: its folder and its questions in file order.
#[derive(Clone, Debug)]
pub struct ShapesSet {
    pub dir: PathBuf,
    pub questions: Vec<Question>,
}

/// Reads `dir/questions.jsonl`. Errors name the file (and line) and say what is wrong; the
/// images themselves are read by [`evaluate`].
pub fn load_set(dir: &Path) -> Result<ShapesSet, String> {
    let path = dir.join("questions.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (--set takes a folder written by models/owlet-shapes/gen.py)",
            path.display()
        )
    })?;
    let mut questions = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: not JSON: {e}", at()))?;
        let field = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{}: no string field {k:?}", at()))
        };
        let q = Question {
            image: field("image")?,
            qtype: field("type")?,
            question: field("question")?,
            answer: field("answer")?,
        };
        // The image must be a file of the set's folder, not a path elsewhere.
        if q.image.is_empty() || q.image.contains(['/', '\\']) || q.image.starts_with('.') {
            return Err(format!(
                "{}: image {:?} must be a file name in {}",
                at(),
                q.image,
                dir.display()
            ));
        }
        questions.push(q);
    }
    if questions.is_empty() {
        return Err(format!("{}: no questions", path.display()));
    }
    Ok(ShapesSet {
        dir: dir.to_path_buf(),
        questions,
    })
}

/// Correct answers out of asked questions, for one type or overall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    pub fn accuracy(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// The result of an evaluation: per question type (in [`TYPES`] order, then any other type
/// the set uses, by name) and overall.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub per_type: Vec<(String, Tally)>,
    pub overall: Tally,
}

impl Report {
    fn add(&mut self, qtype: &str, ok: bool) {
        let i = match self.per_type.iter().position(|(t, _)| t == qtype) {
            Some(i) => i,
            None => {
                self.per_type.push((qtype.to_string(), Tally::default()));
                self.per_type.len() - 1
            }
        };
        for t in [&mut self.per_type[i].1, &mut self.overall] {
            t.total += 1;
            t.correct += usize::from(ok);
        }
    }

    fn sort(&mut self) {
        let rank = |t: &str| TYPES.iter().position(|&x| x == t).unwrap_or(TYPES.len());
        self.per_type
            .sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    }

    /// A table: one row per type, then `overall`.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{:<10} {:>7} {:>6} {:>9}\n",
            "type", "correct", "total", "accuracy"
        );
        let rows = self.per_type.iter().map(|(t, n)| (t.as_str(), *n));
        for (t, n) in rows.chain([("overall", self.overall)]) {
            s += &format!(
                "{t:<10} {:>7} {:>6} {:>9.3}\n",
                n.correct,
                n.total,
                n.accuracy()
            );
        }
        s
    }

    /// One JSON object: `questions`, `correct`, `accuracy`, and `types` mapping each type to
    /// its `correct`, `total` and `accuracy`.
    pub fn to_json(&self) -> String {
        let tally = |n: Tally| serde_json::json!({"correct": n.correct, "total": n.total, "accuracy": n.accuracy()});
        let types: serde_json::Map<String, serde_json::Value> = self
            .per_type
            .iter()
            .map(|(t, n)| (t.clone(), tally(*n)))
            .collect();
        serde_json::json!({
            "questions": self.overall.total,
            "correct": self.overall.correct,
            "accuracy": self.overall.accuracy(),
            "types": types,
        })
        .to_string()
    }
}

/// Whether a generated answer counts: equal to the expected one after trimming whitespace.
pub fn is_correct(got: &str, want: &str) -> bool {
    got.trim() == want.trim()
}

/// Asks one question about an image (its embedding) through the chat template, greedily,
/// in a fresh conversation; returns the answer's text. The session's KV cache keeps the
/// prompt's common prefix from the previous question.
pub fn ask(s: &mut Session<'_>, emb: &ImageEmbedding, question: &str) -> Result<String, String> {
    let opts = GenerateOptions {
        max_tokens: MAX_ANSWER_TOKENS,
        sampling: SamplingParams::default(),
        ignore_eos: false,
    };
    let turns = [Turn {
        role: Role::User,
        text: question.to_string(),
        images: 1,
    }];
    let g = s
        .chat_conversation(&turns, vec![emb.clone()], &opts, &mut |_, _| true)
        .map_err(|e| e.to_string())?;
    Ok(g.text)
}

/// Asks the first `n` questions of the set (all when `None`) and tallies exact answers.
/// `on_answer(question, answer, correct)` sees each one as it is scored.
pub fn evaluate(
    s: &mut Session<'_>,
    set: &ShapesSet,
    n: Option<usize>,
    on_answer: &mut dyn FnMut(&Question, &str, bool),
) -> Result<Report, String> {
    if s.model().config.vision.is_none() {
        return Err(
            "this model has no vision tower: eval-shapes needs an owlet-shapes model".into(),
        );
    }
    // Greedy decoding needs no seed; sampling defaults are greedy.
    let qs = &set.questions[..n.unwrap_or(usize::MAX).min(set.questions.len())];
    let mut embeddings: HashMap<&str, ImageEmbedding> = HashMap::new();
    let mut report = Report::default();
    for q in qs {
        if !embeddings.contains_key(q.image.as_str()) {
            let path = set.dir.join(&q.image);
            // The library's error names the file.
            let img = image::load_with(&path, &ImageLimits::default(), ExifOrientation::Apply)
                .map_err(|e| e.to_string())?;
            let emb = s
                .embed_image(&img, None)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            embeddings.insert(q.image.as_str(), emb);
        }
        let emb = &embeddings[q.image.as_str()];
        let got = ask(s, emb, &q.question)?;
        let ok = is_correct(&got, &q.answer);
        on_answer(q, &got, ok);
        report.add(&q.qtype, ok);
    }
    report.sort();
    Ok(report)
}
