//! SentencePiece `tokenizer.model` reader and HF `tokenizer.json` writer.
//!
//! `tokenizer.model` is a protobuf `ModelProto`; it is read here with a small hand-written
//! wire-format reader (no protobuf dependency). Only the fields owlet needs are decoded:
//!
//! ```text
//! ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
//! SentencePiece   1: string piece   2: float score   3: enum type (1 NORMAL default, 2 UNKNOWN,
//!                 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE)
//! TrainerSpec     3: enum model_type (1 UNIGRAM default, 2 BPE, 3 WORD, 4 CHAR)
//!                 35: bool byte_fallback   40/41/42/43: int32 unk/bos/eos/pad id (0/1/2/-1)
//!                 45: string unk_piece ("<unk>")
//! NormalizerSpec  1: string name   2: bytes precompiled_charsmap   3: bool add_dummy_prefix (true)
//!                 4: bool remove_extra_whitespaces (true)   5: bool escape_whitespaces (true)
//! ```
//!
//! Every other field is skipped by wire type. The piece types use the same numbers as GGUF's
//! `tokenizer.ggml.token_type`, so they are passed through unchanged.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// GGUF / sentencepiece token type numbers.
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_UNUSED: i32 = 5;
pub const TYPE_BYTE: i32 = 6;

/// sentencepiece `TrainerSpec.ModelType.BPE`.
const MODEL_TYPE_BPE: u64 = 2;

/// A SentencePiece BPE model, reduced to what the GGUF `tokenizer.ggml.*` keys carry.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmModel {
    /// Pieces by id (`tokenizer.ggml.tokens`).
    pub tokens: Vec<String>,
    /// Scores by id (`tokenizer.ggml.scores`).
    pub scores: Vec<f32>,
    /// Types by id, GGUF numbering (`tokenizer.ggml.token_type`).
    pub types: Vec<i32>,
    /// Unknown-token id.
    pub unk_id: u32,
    /// Beginning-of-sequence id, `None` when disabled (-1).
    pub bos_id: Option<u32>,
    /// End-of-sequence id, `None` when disabled (-1).
    pub eos_id: Option<u32>,
    /// Padding id, `None` when disabled (-1, LLaMA's case).
    pub pad_id: Option<u32>,
    /// `TrainerSpec.unk_piece` (used as HF's `unk_token`).
    pub unk_piece: String,
    /// `TrainerSpec.byte_fallback`.
    pub byte_fallback: bool,
    /// `NormalizerSpec.add_dummy_prefix`: prepend `'▁'` to the text.
    pub add_dummy_prefix: bool,
}

/// Reads and parses a `tokenizer.model` file.
pub fn read_spm(path: &Path) -> Result<SpmModel> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_spm(&bytes).with_context(|| format!("parsing SentencePiece model {}", path.display()))
}

/// Parses a serialized SentencePiece `ModelProto`.
///
/// Refuses (with the reason) models the owlet runtime cannot reproduce: non-BPE models, models
/// without byte fallback or without all 256 byte pieces, whitespace squeezing
/// (`remove_extra_whitespaces`), normalization rules (a non-empty precompiled charsmap), pieces
/// that are empty, duplicated or have non-finite scores, and special ids out of range.
pub fn parse_spm(bytes: &[u8]) -> Result<SpmModel> {
    let mut tokens = Vec::new();
    let mut scores = Vec::new();
    let mut types = Vec::new();
    let mut trainer = TrainerSpec::default();
    let mut normalizer = NormalizerSpec::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                let (piece, score, ty) =
                    parse_piece(b).with_context(|| format!("piece {}", tokens.len()))?;
                tokens.push(piece);
                scores.push(score);
                types.push(ty);
            }
            (2, Value::Bytes(b)) => trainer = parse_trainer_spec(b).context("trainer_spec")?,
            (3, Value::Bytes(b)) => {
                normalizer = parse_normalizer_spec(b).context("normalizer_spec")?
            }
            (1..=3, _) => bail!("ModelProto field {} has the wrong wire type", field),
            _ => {}
        }
    }
    if trainer.model_type != MODEL_TYPE_BPE {
        let name = match trainer.model_type {
            1 => "UNIGRAM",
            3 => "WORD",
            4 => "CHAR",
            _ => "unknown",
        };
        bail!(
            "this SentencePiece model is of type {} ({}); only BPE models (LLaMA-style) are supported",
            name,
            trainer.model_type
        );
    }
    if tokens.is_empty() {
        bail!("the model has no pieces");
    }
    if !trainer.byte_fallback {
        bail!("the model has no byte fallback (trainer_spec.byte_fallback is false); owlet requires it");
    }
    if normalizer.remove_extra_whitespaces {
        bail!("normalizer_spec.remove_extra_whitespaces is true; owlet's tokenizer does not squeeze whitespace");
    }
    if normalizer.has_charsmap {
        bail!(
            "normalizer_spec {:?} has normalization rules (a precompiled charsmap); owlet supports only the identity normalizer",
            normalizer.name
        );
    }
    if !normalizer.escape_whitespaces {
        bail!("normalizer_spec.escape_whitespaces is false; owlet always maps ' ' to '\u{2581}'");
    }
    validate_pieces(&tokens, &scores, &types)?;
    let n = tokens.len();
    let id = |name: &str, v: i64| -> Result<Option<u32>> {
        if v < 0 {
            return Ok(None);
        }
        if v as u64 >= n as u64 {
            bail!(
                "trainer_spec.{}_id = {} is out of range (vocabulary of {})",
                name,
                v,
                n
            );
        }
        Ok(Some(v as u32))
    };
    let Some(unk_id) = id("unk", trainer.unk_id)? else {
        bail!("trainer_spec.unk_id is negative; sentencepiece requires an unknown piece");
    };
    Ok(SpmModel {
        bos_id: id("bos", trainer.bos_id)?,
        eos_id: id("eos", trainer.eos_id)?,
        pad_id: id("pad", trainer.pad_id)?,
        unk_id,
        unk_piece: trainer.unk_piece,
        byte_fallback: trainer.byte_fallback,
        add_dummy_prefix: normalizer.add_dummy_prefix,
        tokens,
        scores,
        types,
    })
}

/// Checks pieces: non-empty, unique, finite scores, and all 256 `<0xXX>` byte pieces present.
fn validate_pieces(tokens: &[String], scores: &[f32], types: &[i32]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut bytes = [false; 256];
    for (i, (piece, (&score, &ty))) in tokens.iter().zip(scores.iter().zip(types)).enumerate() {
        if piece.is_empty() {
            bail!("piece {} is empty", i);
        }
        if let Some(prev) = seen.insert(piece, i) {
            bail!(
                "piece {:?} is defined twice (ids {} and {})",
                piece,
                prev,
                i
            );
        }
        if !score.is_finite() {
            bail!("piece {} ({:?}) has a non-finite score {}", i, piece, score);
        }
        if ty == TYPE_BYTE {
            let b = piece
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match b {
                Some(b) => bytes[b as usize] = true,
                None => bail!("byte piece {} is {:?}, not of the form <0xXX>", i, piece),
            }
        }
    }
    if let Some(b) = bytes.iter().position(|&have| !have) {
        bail!("the byte-fallback piece <0x{:02X}> is missing", b);
    }
    Ok(())
}

/// One `SentencePiece` message -> (piece, score, type).
fn parse_piece(bytes: &[u8]) -> Result<(String, f32, i32)> {
    let mut piece = None;
    let mut score = 0.0f32;
    let mut ty = TYPE_NORMAL;
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                piece = Some(String::from_utf8(b.to_vec()).context("piece text is not UTF-8")?);
            }
            (2, Value::Fixed32(v)) => score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                ty = match v {
                    1..=6 => v as i32,
                    _ => bail!("unknown piece type {}", v),
                }
            }
            (1..=3, _) => bail!("SentencePiece field {} has the wrong wire type", field),
            _ => {}
        }
    }
    let Some(piece) = piece else {
        bail!("piece has no text (field 1)");
    };
    Ok((piece, score, ty))
}

/// The `TrainerSpec` fields owlet uses, with sentencepiece's defaults.
#[derive(Debug)]
struct TrainerSpec {
    model_type: u64,
    byte_fallback: bool,
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    unk_piece: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: 1,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".to_string(),
        }
    }
}

fn parse_trainer_spec(bytes: &[u8]) -> Result<TrainerSpec> {
    let mut t = TrainerSpec::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (3, Value::Varint(v)) => t.model_type = v,
            (35, Value::Varint(v)) => t.byte_fallback = v != 0,
            // int32 fields: negative values are sign-extended 64-bit varints.
            (40, Value::Varint(v)) => t.unk_id = v as i64 as i32 as i64,
            (41, Value::Varint(v)) => t.bos_id = v as i64 as i32 as i64,
            (42, Value::Varint(v)) => t.eos_id = v as i64 as i32 as i64,
            (43, Value::Varint(v)) => t.pad_id = v as i64 as i32 as i64,
            (45, Value::Bytes(b)) => {
                t.unk_piece = String::from_utf8(b.to_vec()).context("unk_piece is not UTF-8")?
            }
            (3 | 35 | 40..=43 | 45, _) => {
                bail!("TrainerSpec field {} has the wrong wire type", field)
            }
            _ => {}
        }
    }
    Ok(t)
}

/// The `NormalizerSpec` fields owlet uses, with sentencepiece's defaults.
#[derive(Debug)]
struct NormalizerSpec {
    name: String,
    has_charsmap: bool,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            has_charsmap: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

fn parse_normalizer_spec(bytes: &[u8]) -> Result<NormalizerSpec> {
    let mut n = NormalizerSpec::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => n.name = String::from_utf8_lossy(b).into_owned(),
            (2, Value::Bytes(b)) => n.has_charsmap = !b.is_empty(),
            (3, Value::Varint(v)) => n.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => n.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => n.escape_whitespaces = v != 0,
            (1..=5, _) => bail!("NormalizerSpec field {} has the wrong wire type", field),
            _ => {}
        }
    }
    Ok(n)
}

/// A decoded protobuf field value.
#[derive(Debug)]
enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (no field owlet reads has it; the 8 bytes are skipped).
    Fixed64,
    /// Wire type 2 (strings, bytes, sub-messages, packed arrays).
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// Bounds-checked protobuf wire-format reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next (field number, value), `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self
            .varint()
            .with_context(|| format!("field key at byte {}", at))?;
        let field = key >> 3;
        if field == 0 {
            bail!("field number 0 at byte {}", at);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take_array::<8>()?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= self.buf.len() - self.pos);
                let Some(len) = len else {
                    bail!(
                        "length-delimited field {} at byte {} runs past the end of the message",
                        field,
                        at
                    );
                };
                let b = &self.buf[self.pos..self.pos + len];
                self.pos += len;
                Value::Bytes(b)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take_array::<4>()?)),
            w => bail!(
                "unsupported wire type {} (field {}) at byte {}",
                w,
                field,
                at
            ),
        };
        Ok(Some((field, value)))
    }

    /// A base-128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                bail!("truncated varint at byte {}", self.pos);
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint longer than 10 bytes ending at byte {}", self.pos)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some(s) = self.buf.get(self.pos..self.pos + N) else {
            bail!("truncated {}-byte field at byte {}", N, self.pos);
        };
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

/// BPE merges as transformers 4.31's `SentencePieceExtractor.extract(vocab_scores)` lists them:
/// for every piece (in id order) every split into two pieces that are both in the vocabulary,
/// sorted within the piece by (left id, right id); then all of them stably sorted by the merged
/// piece's score, highest first. For LLaMA, whose scores fall with the id, that is: by merged id,
/// then left id, then right id. Cost: one hash lookup pair per character boundary of each piece.
pub fn bpe_merges(model: &SpmModel) -> Vec<(u32, u32)> {
    let ids: HashMap<&str, u32> = model
        .tokens
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i as u32))
        .collect();
    let mut merges: Vec<(f32, u32, u32)> = Vec::new();
    for (piece, &score) in model.tokens.iter().zip(&model.scores) {
        let mut local: Vec<(f32, u32, u32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(k, _)| {
                let (l, r) = piece.split_at(k);
                Some((score, *ids.get(l)?, *ids.get(r)?))
            })
            .collect();
        local.sort_by_key(|&(_, l, r)| (l, r));
        merges.extend(local);
    }
    // Stable: equal scores keep the order above (merged id, then left, then right).
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, l, r)| (l, r)).collect()
}

/// The HF fast-tokenizer `tokenizer.json` that transformers 4.31's `LlamaConverter` writes for
/// this model (tokenizers 0.13 layout, pretty-printed the way tokenizers' `save` does it):
/// a BPE model with byte fallback and `fuse_unk`, vocabulary in id order, merges from
/// [`bpe_merges`], normalizer Prepend `'▁'` + Replace `' '` -> `'▁'`, decoder Replace /
/// ByteFallback / Fuse / Strip, added special tokens for unk, bos and eos, and a post-processor
/// that puts BOS first (LLaMA's `add_bos_token` true, `add_eos_token` false).
pub fn hf_tokenizer_json(model: &SpmModel) -> String {
    // Ids come from parse_spm, which range-checked them; an id out of range gives "".
    let piece = |id: u32| model.tokens.get(id as usize).cloned().unwrap_or_default();
    let mut added = Vec::new();
    let mut specials: Vec<u32> = [Some(model.unk_id), model.bos_id, model.eos_id]
        .into_iter()
        .flatten()
        .collect();
    specials.dedup();
    for id in specials {
        added.push(J::obj([
            ("id", J::Int(id as i64)),
            ("content", J::Str(piece(id))),
            ("single_word", J::Bool(false)),
            ("lstrip", J::Bool(false)),
            ("rstrip", J::Bool(false)),
            ("normalized", J::Bool(false)),
            ("special", J::Bool(true)),
        ]));
    }
    let replace = |from: &str, to: &str| {
        J::obj([
            ("type", J::s("Replace")),
            ("pattern", J::obj([("String", J::s(from))])),
            ("content", J::s(to)),
        ])
    };
    let normalizer = J::obj([
        ("type", J::s("Sequence")),
        (
            "normalizers",
            J::Arr(vec![
                J::obj([("type", J::s("Prepend")), ("prepend", J::s("\u{2581}"))]),
                replace(" ", "\u{2581}"),
            ]),
        ),
    ]);
    let post_processor = match model.bos_id {
        Some(bos) => {
            let special = |type_id: i64| {
                J::obj([(
                    "SpecialToken",
                    J::obj([("id", J::Str(piece(bos))), ("type_id", J::Int(type_id))]),
                )])
            };
            let seq = |name: &str, type_id: i64| {
                J::obj([(
                    "Sequence",
                    J::obj([("id", J::s(name)), ("type_id", J::Int(type_id))]),
                )])
            };
            J::obj([
                ("type", J::s("TemplateProcessing")),
                ("single", J::Arr(vec![special(0), seq("A", 0)])),
                (
                    "pair",
                    J::Arr(vec![special(0), seq("A", 0), special(1), seq("B", 1)]),
                ),
                (
                    "special_tokens",
                    J::Obj(vec![(
                        piece(bos),
                        J::obj([
                            ("id", J::Str(piece(bos))),
                            ("ids", J::Arr(vec![J::Int(bos as i64)])),
                            ("tokens", J::Arr(vec![J::Str(piece(bos))])),
                        ]),
                    )]),
                ),
            ])
        }
        None => J::Null,
    };
    let decoder = J::obj([
        ("type", J::s("Sequence")),
        (
            "decoders",
            J::Arr(vec![
                replace("\u{2581}", " "),
                J::obj([("type", J::s("ByteFallback"))]),
                J::obj([("type", J::s("Fuse"))]),
                J::obj([
                    ("type", J::s("Strip")),
                    ("content", J::s(" ")),
                    ("start", J::Int(1)),
                    ("stop", J::Int(0)),
                ]),
            ]),
        ),
    ]);
    let vocab = J::Obj(
        model
            .tokens
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), J::Int(i as i64)))
            .collect(),
    );
    let merges = J::Arr(
        bpe_merges(model)
            .into_iter()
            .map(|(l, r)| {
                J::Str(format!(
                    "{} {}",
                    model.tokens[l as usize], model.tokens[r as usize]
                ))
            })
            .collect(),
    );
    let bpe = J::obj([
        ("type", J::s("BPE")),
        ("dropout", J::Null),
        ("unk_token", J::Str(model.unk_piece.clone())),
        ("continuing_subword_prefix", J::Null),
        ("end_of_word_suffix", J::Null),
        ("fuse_unk", J::Bool(true)),
        ("byte_fallback", J::Bool(true)),
        ("vocab", vocab),
        ("merges", merges),
    ]);
    let root = J::obj([
        ("version", J::s("1.0")),
        ("truncation", J::Null),
        ("padding", J::Null),
        ("added_tokens", J::Arr(added)),
        ("normalizer", normalizer),
        ("pre_tokenizer", J::Null),
        ("post_processor", post_processor),
        ("decoder", decoder),
        ("model", bpe),
    ]);
    let mut out = String::new();
    root.write_pretty(&mut out, 0);
    out
}

/// A JSON value with ordered object keys (tokenizers writes keys in struct order).
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn s(v: &str) -> J {
        J::Str(v.to_string())
    }
    fn obj<const N: usize>(entries: [(&str, J); N]) -> J {
        J::Obj(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// serde_json's pretty format: two-space indent, `"key": value`, empty containers as
    /// `[]` / `{}`; strings escaped by serde_json itself.
    fn write_pretty(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{}", i);
            }
            J::Str(s) => out.push_str(&json_string(s)),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Obj(items) if items.is_empty() => out.push_str("{}"),
            J::Arr(items) => {
                out.push_str("[\n");
                for (i, v) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    v.write_pretty(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            J::Obj(items) => {
                out.push_str("{\n");
                for (i, (k, v)) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    out.push_str(&json_string(k));
                    out.push_str(": ");
                    v.write_pretty(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// A JSON string literal, escaped as serde_json (and so tokenizers) escapes it.
fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    /// Protobuf encoding helpers for hand-built models.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn field_varint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }
    fn piece(p: &str, score: f32, ty: u64) -> Vec<u8> {
        let mut m = Vec::new();
        field_bytes(1, p.as_bytes(), &mut m);
        varint(2 << 3 | 5, &mut m);
        m.extend_from_slice(&score.to_le_bytes());
        if ty != 1 {
            field_varint(3, ty, &mut m);
        }
        m
    }
    /// A minimal BPE model: <unk> <s> </s>, 256 bytes, "a", "b", "ab", "▁a".
    fn tiny_model(model_type: u64, byte_fallback: bool, remove_ws: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut add = |p: &str, s: f32, t: u64| field_bytes(1, &piece(p, s, t), &mut out);
        add("<unk>", 0.0, 2);
        add("<s>", 0.0, 3);
        add("</s>", 0.0, 3);
        for b in 0..256 {
            add(&format!("<0x{:02X}>", b), 0.0, 6);
        }
        add("a", -1.0, 1);
        add("b", -2.0, 1);
        add("ab", -3.0, 1);
        add("\u{2581}a", -4.0, 1);
        let mut t = Vec::new();
        field_varint(3, model_type, &mut t);
        field_varint(35, byte_fallback as u64, &mut t);
        field_varint(43, u64::MAX, &mut t); // pad_id = -1
        field_bytes(999, b"unknown field", &mut t);
        field_bytes(2, &t, &mut out);
        let mut n = Vec::new();
        field_bytes(1, b"identity", &mut n);
        field_varint(4, remove_ws as u64, &mut n);
        field_bytes(3, &n, &mut out);
        out
    }

    /// `tokenizer.ggml.{tokens,scores,token_type}` of a GGUF.
    fn gguf_vocab(path: &Path) -> (Vec<String>, Vec<f32>, Vec<i32>) {
        let g = owlet::gguf::Gguf::open(path).unwrap();
        let arr = |k: &str| g.get_array(k).unwrap();
        let tokens = arr("tokenizer.ggml.tokens").as_strs().unwrap();
        let types = arr("tokenizer.ggml.token_type").as_i64s().unwrap();
        (
            tokens.into_iter().map(String::from).collect(),
            arr("tokenizer.ggml.scores").as_f32s().unwrap(),
            types.into_iter().map(|t| t as i32).collect(),
        )
    }

    #[test]
    fn parses_hand_built_model() {
        let m = parse_spm(&tiny_model(2, true, false)).unwrap();
        assert_eq!(m.tokens.len(), 263);
        assert_eq!(&m.tokens[259..], ["a", "b", "ab", "\u{2581}a"]);
        assert_eq!(m.types[0..4], [2, 3, 3, 6]);
        assert_eq!(m.scores[261], -3.0);
        assert_eq!(
            (m.unk_id, m.bos_id, m.eos_id, m.pad_id),
            (0, Some(1), Some(2), None)
        );
        assert!(m.add_dummy_prefix && m.byte_fallback);
        assert_eq!(bpe_merges(&m), vec![(259, 260)]);
    }

    #[test]
    fn refuses_bad_models() {
        let msg = |b: &[u8]| format!("{:#}", parse_spm(b).unwrap_err());
        assert!(msg(&tiny_model(1, true, false)).contains("UNIGRAM"));
        assert!(msg(&tiny_model(2, false, false)).contains("byte fallback"));
        assert!(msg(&tiny_model(2, true, true)).contains("remove_extra_whitespaces"));
        let good = tiny_model(2, true, false);
        // Every truncation is an error, never a panic.
        for cut in [1, 2, 5, 17, good.len() / 2, good.len() - 1] {
            assert!(parse_spm(&good[..cut]).is_err(), "cut at {}", cut);
        }
        // A length prefix that runs past the end.
        assert!(msg(&[0x0a, 0xff, 0x01, 0x00]).contains("past the end"));
        // Wire types 3/4 (groups) are refused.
        assert!(msg(&[0x0b]).contains("wire type"));
        // Overlong varint.
        assert!(
            msg(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .contains("varint")
        );
    }

    #[test]
    fn llama_tokenizer_model_matches_vocab_gguf() {
        let m = read_spm(&data("tests/data/owl2-tiny-a/checkpoint/tokenizer.model")).unwrap();
        assert_eq!(m.tokens.len(), 32000);
        assert_eq!(
            (m.unk_id, m.bos_id, m.eos_id, m.pad_id),
            (0, Some(1), Some(2), None)
        );
        assert!(m.add_dummy_prefix && m.byte_fallback);
        let g = gguf_vocab(&data("tests/data/assets/ggml-vocab-llama-spm.gguf"));
        assert_eq!(m.tokens, g.0);
        let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&m.scores), bits(&g.1));
        assert_eq!(m.types, g.2);
    }

    #[test]
    fn hf_tokenizer_json_matches_transformers() {
        let m = read_spm(&data("tests/data/assets/llama2-tokenizer/tokenizer.model")).unwrap();
        let ours = hf_tokenizer_json(&m);
        let want =
            std::fs::read_to_string(data("tests/data/assets/llama2-tokenizer/tokenizer.json"))
                .unwrap();
        let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let b: serde_json::Value = serde_json::from_str(&want).unwrap();
        assert_eq!(a["model"]["vocab"], b["model"]["vocab"]);
        assert_eq!(a["model"]["merges"], b["model"]["merges"]);
        assert_eq!(a, b);
        // Same bytes too: the layout is tokenizers' pretty printer.
        assert_eq!(ours.trim_end(), want.trim_end());
    }
}
