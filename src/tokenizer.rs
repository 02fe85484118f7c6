//! SentencePiece BPE tokenizer (the LLaMA-2 vocabulary), built from the GGUF arrays
//! `tokenizer.ggml.tokens` / `.scores` / `.token_type`.
//!
//! Encoding reproduces sentencepiece's BPE model (`bpe_model.cc`):
//! 1. normalise: every `' '` becomes `'▁'` (U+2581); with the dummy prefix one `'▁'` is prepended
//!    (never to empty text); no whitespace squeezing (LLaMA's `remove_extra_whitespaces` is off);
//! 2. split into UTF-8 characters (user-defined pieces are matched first, longest match, and frozen);
//! 3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the highest
//!    score, leftmost first on ties, through a priority queue with lazy invalidation (O(n log n));
//! 4. map pieces to ids; a symbol that is not a piece (a character outside the vocabulary) becomes
//!    one byte token `<0xXX>` per UTF-8 byte (byte fallback).
//!
//! Control tokens (`<s>`, `</s>`) are never produced from text: `"</s>"` typed by a user is text.
//! Decoding follows sentencepiece's `Decode`: `'▁'` becomes `' '`, byte tokens are reassembled into
//! UTF-8, control tokens vanish and the first piece loses its leading space.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::error::{bail_kind, Result};

/// The word-start marker sentencepiece uses for a space (U+2581 LOWER ONE EIGHTH BLOCK).
pub const SPACE_MARKER: char = '\u{2581}';
const SPACE_MARKER_STR: &str = "\u{2581}";

/// What sentencepiece prints for an unknown token (U+2047 DOUBLE QUESTION MARK, with spaces).
const UNKNOWN_SURFACE: &str = " \u{2047} ";

/// Token kinds, numbered as GGUF's `tokenizer.ggml.token_type` (= sentencepiece's piece type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// An ordinary piece (1).
    Normal,
    /// The unknown token (2).
    Unknown,
    /// A control token such as `<s>` / `</s>` (3).
    Control,
    /// A user-defined piece, always kept whole (4).
    UserDefined,
    /// A piece that is merged through but never emitted (5).
    Unused,
    /// A byte-fallback token `<0xXX>` (6).
    Byte,
}

impl TokenType {
    /// The GGUF / sentencepiece number of a token type, `None` for an unknown number.
    pub fn from_gguf(v: i32) -> Option<TokenType> {
        Some(match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// Whether BPE merges may produce this piece (sentencepiece's `pieces_` map: normal,
    /// user-defined and unused pieces; control, unknown and byte pieces live elsewhere).
    fn mergeable(self) -> bool {
        matches!(
            self,
            TokenType::Normal | TokenType::UserDefined | TokenType::Unused
        )
    }
}

/// A SentencePiece BPE vocabulary with its special ids and flags.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// Pieces that merges may produce -> id.
    mergeable: HashMap<String, u32>,
    /// `<0xXX>` id for every byte value.
    byte_ids: [u32; 256],
    /// User-defined pieces, longest first (matched whole before BPE).
    user_defined: Vec<String>,
    bos: u32,
    eos: u32,
    unk: u32,
    add_bos: bool,
    legacy: bool,
}

impl Tokenizer {
    /// Builds a tokenizer from the three parallel GGUF arrays (one entry per token id) and the
    /// special ids. `legacy` is HF's `LlamaTokenizer.legacy` flag (see [`crate::prompt`]).
    ///
    /// Fails (BadModel) when the arrays differ in length, a type number is unknown, a special id
    /// is out of range, a piece is empty or duplicated among mergeable pieces, or one of the 256
    /// byte tokens `<0x00>`..`<0xFF>` is missing.
    #[allow(clippy::too_many_arguments)]
    pub fn from_arrays(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        bos: u32,
        eos: u32,
        unk: u32,
        add_bos: bool,
        legacy: bool,
    ) -> Result<Tokenizer> {
        let n = tokens.len();
        if n == 0 {
            bail_kind!(BadModel, "tokenizer.ggml.tokens is empty");
        }
        if scores.len() != n || types.len() != n {
            bail_kind!(
                BadModel,
                "tokenizer arrays differ in length: {} tokens, {} scores, {} token types",
                n,
                scores.len(),
                types.len()
            );
        }
        if n > u32::MAX as usize {
            bail_kind!(BadModel, "tokenizer has {} tokens, too many", n);
        }
        for (name, id) in [("bos", bos), ("eos", eos), ("unknown", unk)] {
            if id as usize >= n {
                bail_kind!(
                    BadModel,
                    "tokenizer {} token id {} is out of range (vocabulary of {})",
                    name,
                    id,
                    n
                );
            }
        }
        let mut kinds = Vec::with_capacity(n);
        for (i, &t) in types.iter().enumerate() {
            match TokenType::from_gguf(t) {
                Some(k) => kinds.push(k),
                None => bail_kind!(
                    BadModel,
                    "tokenizer.ggml.token_type[{}] = {} is not a known token type",
                    i,
                    t
                ),
            }
        }
        let mut mergeable = HashMap::with_capacity(n);
        let mut byte_ids = [u32::MAX; 256];
        let mut user_defined = Vec::new();
        for (i, (piece, &kind)) in tokens.iter().zip(&kinds).enumerate() {
            let id = i as u32;
            if piece.is_empty() {
                bail_kind!(BadModel, "tokenizer.ggml.tokens[{}] is an empty piece", i);
            }
            if kind == TokenType::Byte {
                match parse_byte_piece(piece) {
                    Some(b) => byte_ids[b as usize] = id,
                    None => bail_kind!(
                        BadModel,
                        "byte token {} is {:?}, not of the form <0xXX>",
                        i,
                        piece
                    ),
                }
            } else if kind.mergeable() {
                if let Some(prev) = mergeable.insert(piece.clone(), id) {
                    bail_kind!(
                        BadModel,
                        "tokenizer piece {:?} appears twice (ids {} and {})",
                        piece,
                        prev,
                        id
                    );
                }
                if kind == TokenType::UserDefined {
                    user_defined.push(piece.clone());
                }
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            bail_kind!(
                BadModel,
                "tokenizer lacks the byte-fallback token <0x{:02X}>",
                b
            );
        }
        user_defined.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Ok(Tokenizer {
            pieces: tokens,
            scores,
            types: kinds,
            mergeable,
            byte_ids,
            user_defined,
            bos,
            eos,
            unk,
            add_bos,
            legacy,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
    /// Beginning-of-sequence id (`<s>`, 1 for LLaMA).
    pub fn bos(&self) -> u32 {
        self.bos
    }
    /// End-of-sequence id (`</s>`, 2 for LLaMA).
    pub fn eos(&self) -> u32 {
        self.eos
    }
    /// Unknown-token id (`<unk>`, 0 for LLaMA).
    pub fn unk(&self) -> u32 {
        self.unk
    }
    /// Whether a prompt starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// HF `LlamaTokenizer.legacy`: how text right after a special token is tokenized.
    pub fn legacy(&self) -> bool {
        self.legacy
    }

    /// The piece of a token id (`"▁the"`, `"<0x0A>"`, `"</s>"`), `None` out of range.
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The type of a token id, `None` out of range.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of a piece that text can produce (normal, user-defined or unused), as
    /// sentencepiece's `PieceToId` finds it; `None` if there is no such piece.
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.mergeable.get(piece).copied()
    }

    /// Tokenizes plain text (no BOS, no special-token parsing). With `dummy_prefix` a `'▁'` is
    /// prepended, as sentencepiece's `add_dummy_prefix` does; empty text gives no ids.
    pub fn encode(&self, text: &str, dummy_prefix: bool) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let normalized = normalize(text, dummy_prefix);
        let mut rev_merge = HashMap::new();
        let mut out = Vec::new();
        for (start, end) in self.bpe(&normalized, &mut rev_merge) {
            self.emit_piece(&normalized[start..end], &rev_merge, &mut out);
        }
        out
    }

    /// Runs the BPE merges over `normalized`, returning the final symbols as byte ranges.
    /// `rev_merge` receives, for every unused piece a queued pair would form, the byte length of
    /// its left part (the last one queued wins, as in sentencepiece).
    fn bpe<'t>(
        &self,
        normalized: &'t str,
        rev_merge: &mut HashMap<&'t str, usize>,
    ) -> Vec<(usize, usize)> {
        let mut symbols = self.initial_symbols(normalized);
        let mut agenda = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_pair(normalized, &symbols, i - 1, i, &mut agenda, rev_merge);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (top.left, top.right);
            // Lazy invalidation: skip a pair whose symbols changed since it was queued (the right
            // one was merged away, or either grew, which changes the concatenated length).
            if symbols[l].len() == 0
                || symbols[r].len() == 0
                || symbols[l].len() + symbols[r].len() != top.len
            {
                continue;
            }
            symbols[l].end = symbols[r].end;
            symbols[l].next = symbols[r].next;
            if let Some(nx) = symbols[r].next {
                symbols[nx].prev = Some(l);
            }
            symbols[r].end = symbols[r].start; // now empty
            if let Some(pv) = symbols[l].prev {
                self.push_pair(normalized, &symbols, pv, l, &mut agenda, rev_merge);
            }
            if let Some(nx) = symbols[l].next {
                self.push_pair(normalized, &symbols, l, nx, &mut agenda, rev_merge);
            }
        }
        symbols
            .iter()
            .filter(|s| s.len() > 0)
            .map(|s| (s.start, s.end))
            .collect()
    }

    /// Splits normalized text into characters, except that user-defined pieces (longest match)
    /// become single frozen symbols, as sentencepiece's prefix matcher does.
    fn initial_symbols(&self, normalized: &str) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(normalized.len());
        let mut pos = 0;
        while pos < normalized.len() {
            let rest = &normalized[pos..];
            let user = self
                .user_defined
                .iter()
                .find(|p| rest.starts_with(p.as_str()));
            let (len, frozen) = match user {
                Some(p) => (p.len(), true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let idx = symbols.len();
            symbols.push(Symbol {
                start: pos,
                end: pos + len,
                prev: idx.checked_sub(1),
                next: None,
                frozen,
            });
            if idx > 0 {
                symbols[idx - 1].next = Some(idx);
            }
            pos += len;
        }
        symbols
    }

    /// Queues the pair (`l`, `r`) if their concatenation is a mergeable piece.
    fn push_pair<'t>(
        &self,
        text: &'t str,
        symbols: &[Symbol],
        l: usize,
        r: usize,
        agenda: &mut BinaryHeap<Pair>,
        rev_merge: &mut HashMap<&'t str, usize>,
    ) {
        let (a, b) = (&symbols[l], &symbols[r]);
        if a.frozen || b.frozen {
            return;
        }
        // Adjacent symbols are contiguous in the text, so the concatenation is a slice.
        let merged = &text[a.start..b.end];
        if let Some(&id) = self.mergeable.get(merged) {
            if self.types[id as usize] == TokenType::Unused {
                rev_merge.insert(merged, a.len());
            }
            agenda.push(Pair {
                score: self.scores[id as usize],
                left: l,
                right: r,
                len: b.end - a.start,
            });
        }
    }

    /// Appends the id(s) of one final BPE symbol: its piece id; for an unused piece, the pieces
    /// it was merged from (recursively, sentencepiece's resegmentation); for a symbol outside the
    /// vocabulary, one byte token per UTF-8 byte (byte fallback).
    fn emit_piece(&self, piece: &str, rev_merge: &HashMap<&str, usize>, out: &mut Vec<u32>) {
        match self.mergeable.get(piece) {
            Some(&id) if self.types[id as usize] != TokenType::Unused => out.push(id),
            Some(&id) => match rev_merge.get(piece) {
                Some(&split)
                    if split > 0 && split < piece.len() && piece.is_char_boundary(split) =>
                {
                    let (a, b) = piece.split_at(split);
                    self.emit_piece(a, rev_merge, out);
                    self.emit_piece(b, rev_merge, out);
                }
                _ => out.push(id),
            },
            None => out.extend(piece.bytes().map(|b| self.byte_ids[b as usize])),
        }
    }

    /// Decodes ids to text, sentencepiece-style: `'▁'` -> `' '`, runs of byte tokens reassembled
    /// into UTF-8 (invalid bytes become U+FFFD), control tokens skipped, the leading space of
    /// the first emitted piece removed, unknown tokens shown as `" ⁇ "`. Ids out of range are
    /// skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut d = self.decoder();
        let mut s = String::new();
        for &id in ids {
            s.push_str(&d.push(id));
        }
        s.push_str(&d.finish());
        s
    }

    /// An incremental decoder for streaming generated tokens.
    pub fn decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            pending: Vec::new(),
            at_start: true,
        }
    }
}

/// Incremental detokenizer: `push` returns only text that is complete. A multi-byte UTF-8
/// character spread over several byte tokens is held back until its last byte arrives; the
/// leading space of the first piece is removed as in [`Tokenizer::decode`]. Concatenating every
/// `push` result and `finish` gives exactly `decode` of the same ids.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    /// Bytes of an incomplete UTF-8 sequence from byte tokens.
    pending: Vec<u8>,
    /// No text has been produced and no leading `'▁'` removed yet: the next piece loses its
    /// leading `'▁'`.
    at_start: bool,
}

impl StreamDecoder<'_> {
    /// Feeds one token id; returns the newly complete text (often empty for byte tokens).
    pub fn push(&mut self, id: u32) -> String {
        let Some(kind) = self.tok.token_type(id) else {
            return String::new();
        };
        match kind {
            TokenType::Control => String::new(),
            TokenType::Byte => {
                let piece = &self.tok.pieces[id as usize];
                // from_arrays checked every byte token's form.
                if let Some(b) = parse_byte_piece(piece) {
                    self.pending.push(b);
                }
                self.drain_pending(false)
            }
            TokenType::Unknown => {
                let mut s = self.drain_pending(true);
                s.push_str(UNKNOWN_SURFACE);
                self.at_start = false;
                s
            }
            TokenType::Normal | TokenType::UserDefined | TokenType::Unused => {
                let mut s = self.drain_pending(true);
                let mut piece = self.tok.pieces[id as usize].as_str();
                if self.at_start {
                    // sentencepiece removes the dummy-prefix space once: from the first piece
                    // that is decoded while no text exists yet, if it starts with '▁'.
                    if let Some(rest) = piece.strip_prefix(SPACE_MARKER_STR) {
                        piece = rest;
                        self.at_start = false;
                    }
                }
                s.push_str(&piece.replace(SPACE_MARKER, " "));
                if !s.is_empty() {
                    self.at_start = false;
                }
                s
            }
        }
    }

    /// Ends the stream: returns any held-back bytes of an incomplete character (as U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain_pending(true)
    }

    /// Converts pending bytes to text. Without `all`, an incomplete UTF-8 sequence at the end is
    /// kept for the next byte token; invalid bytes become U+FFFD either way.
    fn drain_pending(&mut self, all: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by the definition of `valid_up_to`.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None if all => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.to_vec();
        self.pending = keep;
        if !out.is_empty() {
            self.at_start = false;
        }
        out
    }
}

/// sentencepiece normalization for LLaMA (identity rules): spaces become `'▁'`, and with
/// `dummy_prefix` one `'▁'` goes in front.
fn normalize(text: &str, dummy_prefix: bool) -> String {
    let mut s = String::with_capacity(text.len() + 3);
    if dummy_prefix {
        s.push(SPACE_MARKER);
    }
    for c in text.chars() {
        s.push(if c == ' ' { SPACE_MARKER } else { c });
    }
    s
}

/// `"<0x0A>"` -> 0x0A.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// One BPE symbol: a byte range of the normalized text in a doubly linked list.
#[derive(Clone, Debug)]
struct Symbol {
    start: usize,
    end: usize,
    prev: Option<usize>,
    next: Option<usize>,
    /// A user-defined piece: never merged with neighbours.
    frozen: bool,
}

impl Symbol {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged piece when queued (detects stale entries).
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_pieces() -> Vec<String> {
        (0..256).map(|b| format!("<0x{:02X}>", b)).collect()
    }

    /// A toy vocabulary: <unk> <s> </s>, 256 bytes, then the given (piece, score) list.
    fn toy(extra: &[(&str, f32, i32)]) -> Tokenizer {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut scores = vec![0.0; 3];
        let mut types = vec![2, 3, 3];
        for p in byte_pieces() {
            tokens.push(p);
            scores.push(0.0);
            types.push(6);
        }
        for &(p, s, t) in extra {
            tokens.push(p.to_string());
            scores.push(s);
            types.push(t);
        }
        Tokenizer::from_arrays(tokens, scores, types, 1, 2, 0, true, false).unwrap()
    }

    fn id(t: &Tokenizer, p: &str) -> u32 {
        t.piece_id(p).unwrap()
    }

    #[test]
    fn merges_by_score_then_leftmost() {
        // "abc": "ab" (score -1) vs "bc" (score -0.5): bc wins.
        let t = toy(&[
            ("a", -10.0, 1),
            ("b", -10.0, 1),
            ("c", -10.0, 1),
            ("ab", -1.0, 1),
            ("bc", -0.5, 1),
        ]);
        assert_eq!(t.encode("abc", false), vec![id(&t, "a"), id(&t, "bc")]);
        // Equal scores: leftmost first.
        let t = toy(&[
            ("a", -10.0, 1),
            ("b", -10.0, 1),
            ("c", -10.0, 1),
            ("ab", -1.0, 1),
            ("bc", -1.0, 1),
        ]);
        assert_eq!(t.encode("abc", false), vec![id(&t, "ab"), id(&t, "c")]);
    }

    #[test]
    fn byte_fallback_and_unused_and_user_defined() {
        let t = toy(&[
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("ab", -0.5, 5), // unused: merged through, then split back
            ("abb", -0.1, 1),
            ("<x>", 0.0, 4),
        ]);
        assert_eq!(t.encode("abb", false), vec![id(&t, "abb")]);
        assert_eq!(t.encode("ab", false), vec![id(&t, "a"), id(&t, "b")]);
        // é = C3 A9 -> two byte tokens.
        assert_eq!(t.encode("é", false), vec![3 + 0xC3, 3 + 0xA9]);
        // user-defined piece kept whole and not merged with neighbours
        assert_eq!(
            t.encode("a<x>b", false),
            vec![id(&t, "a"), id(&t, "<x>"), id(&t, "b")]
        );
    }

    #[test]
    fn validation_errors() {
        let e = Tokenizer::from_arrays(vec!["a".into()], vec![], vec![1], 0, 0, 0, true, false)
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::BadModel);
        let e = Tokenizer::from_arrays(vec!["a".into()], vec![0.0], vec![1], 0, 0, 0, true, false)
            .unwrap_err();
        assert!(e.message().contains("<0x00>"), "{}", e);
        let mut tokens = byte_pieces();
        tokens.push("a".into());
        let n = tokens.len();
        let e = Tokenizer::from_arrays(
            tokens.clone(),
            vec![0.0; n],
            vec![6; n],
            0,
            0,
            n as u32,
            true,
            false,
        )
        .unwrap_err();
        assert!(e.message().contains("out of range"), "{}", e);
        let mut types = vec![6; n];
        types[n - 1] = 9;
        let e =
            Tokenizer::from_arrays(tokens, vec![0.0; n], types, 0, 0, 0, true, false).unwrap_err();
        assert!(e.message().contains("token type"), "{}", e);
    }

    #[test]
    fn stream_decoder_holds_incomplete_utf8() {
        let t = toy(&[("\u{2581}hi", -1.0, 1)]);
        let mut d = t.decoder();
        assert_eq!(d.push(1), "");
        assert_eq!(d.push(id(&t, "\u{2581}hi")), "hi");
        // "€" = E2 82 AC
        assert_eq!(d.push(3 + 0xE2), "");
        assert_eq!(d.push(3 + 0x82), "");
        assert_eq!(d.push(3 + 0xAC), "€");
        assert_eq!(d.push(id(&t, "\u{2581}hi")), " hi");
        // a dangling lead byte is flushed as U+FFFD
        assert_eq!(d.push(3 + 0xE2), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
