//! `owlet bench`: end-to-end speed of one model file on this machine.
//!
//! Measures, in this order: load time; image preprocessing, vision encoder and abstractor on a
//! synthetic 640×480 image (models with vision); prompt prefill at each requested length from an
//! empty context; greedy decoding of `decode_tokens` tokens after a one-token prompt (as
//! llama-bench's `tg` does); peak RSS (`VmHWM`); and last, so that its buffer does not count in
//! the peak RSS, a read-bandwidth probe (a multi-threaded sum over a large buffer). Decode is
//! reported against the bandwidth floor: text-path weight bytes per token ÷ read bandwidth.
//!
//! Token ids are pseudo-random ids from the vocabulary; speed depends only on shapes and types.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::image::{self, RgbImage};
use crate::kv_cache::KvType;
use crate::model::names::VIS_SUFFIX;
use crate::model::{CacheStatus, LoadOptions, Model, PackedCache};
use crate::session::{Session, SessionOptions};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub threads: usize,
    /// Prompt lengths to prefill (each from an empty context).
    pub prefill_lens: Vec<usize>,
    /// Tokens to decode.
    pub decode_tokens: usize,
    /// Size of the bandwidth probe's buffer (0 skips the probe).
    pub bandwidth_bytes: usize,
    /// Skip the vision encoder and abstractor.
    pub skip_vision: bool,
    /// Where the load keeps packed weights (see [`crate::model::packed_cache`]).
    pub packed_cache: PackedCache,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            threads: crate::threads::default_threads(),
            prefill_lens: vec![64, 512],
            decode_tokens: 128,
            bandwidth_bytes: 1 << 30,
            skip_vision: false,
            packed_cache: PackedCache::Off,
        }
    }
}

/// The measurements (times in milliseconds).
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub model: String,
    pub cpu: String,
    pub kernel: String,
    pub threads: usize,
    pub load_ms: f64,
    pub preprocess_ms: Option<f64>,
    pub vision_encode_ms: Option<f64>,
    pub abstractor_ms: Option<f64>,
    /// `(prompt length, tokens/s)` per prefill run.
    pub prefill: Vec<(usize, f64)>,
    pub decode_tokens: usize,
    pub decode_tokens_per_s: f64,
    pub peak_rss_bytes: u64,
    pub file_bytes: u64,
    /// Bytes of weights one decoded token streams (text path, without the embedding table and
    /// the visual MAM copies).
    pub text_weight_bytes_per_token: u64,
    pub read_bandwidth_gb_s: Option<f64>,
    /// Time to the first token of an image prompt (embed + prefill + argmax) for an image the
    /// embedding cache has not seen, and for the same image again (a cache hit).
    pub ttft_first_image_ms: Option<f64>,
    pub ttft_repeat_image_ms: Option<f64>,
    /// What the load did with the packed-weight cache: `off` (none asked for), `unused` (the
    /// variant packs nothing), `hit`, `written` or `failed`.
    pub packed_cache: String,
    /// Resident memory right after the load and at the end of the run, split into anonymous
    /// and file-backed (`/proc/self/smaps_rollup`); `None` where that file is unavailable.
    pub rss_after_load: Option<Rss>,
    pub rss_at_end: Option<Rss>,
}

/// Resident memory by kind, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// Anonymous pages (heap, anonymous maps: packed weights without a cache file).
    pub anon: u64,
    /// File-backed pages (the model file, a packed-weight cache file): the OS can drop and
    /// re-read them.
    pub file: u64,
}

/// Resident memory of this process by kind, from `/proc/self/smaps_rollup` (`Rss` and
/// `Anonymous`; file-backed = Rss − Anonymous); `None` where it is unavailable.
pub fn rss_by_kind() -> Option<Rss> {
    parse_smaps_rollup(&std::fs::read_to_string("/proc/self/smaps_rollup").ok()?)
}

fn parse_smaps_rollup(text: &str) -> Option<Rss> {
    let kb = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let rss = kb("Rss:")? * 1024;
    let anon = kb("Anonymous:")? * 1024;
    Some(Rss {
        anon,
        file: rss.saturating_sub(anon),
    })
}

impl BenchReport {
    /// Tokens/s of the longest prefill run (512 with the defaults).
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefill.iter().max_by_key(|p| p.0).map_or(0.0, |p| p.1)
    }

    /// Decode floor in tokens/s (bandwidth ÷ bytes per token), when the probe ran.
    pub fn decode_floor_tokens_per_s(&self) -> Option<f64> {
        let bw = self.read_bandwidth_gb_s?;
        (self.text_weight_bytes_per_token > 0)
            .then(|| bw * 1e9 / self.text_weight_bytes_per_token as f64)
    }

    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        s += &format!("model            {}\n", self.model);
        s += &format!("cpu              {}\n", self.cpu);
        s += &format!(
            "kernel           {}   threads {}\n",
            self.kernel, self.threads
        );
        s += &format!(
            "load             {:.1} ms (packed-weight cache: {})\n",
            self.load_ms, self.packed_cache
        );
        let rss = |r: Option<Rss>| {
            r.map_or("n/a".to_string(), |r| {
                format!(
                    "anonymous {:.1} MiB, file-backed {:.1} MiB",
                    r.anon as f64 / 1048576.0,
                    r.file as f64 / 1048576.0
                )
            })
        };
        s += &format!("RSS after load   {}\n", rss(self.rss_after_load));
        s += &format!("RSS at end       {}\n", rss(self.rss_at_end));
        s += &format!("image preprocess {}\n", opt(self.preprocess_ms));
        s += &format!("vision encoder   {}\n", opt(self.vision_encode_ms));
        s += &format!("abstractor       {}\n", opt(self.abstractor_ms));
        s += &format!(
            "first token      {} new image, {} repeated (embedding cache hit)\n",
            opt(self.ttft_first_image_ms),
            opt(self.ttft_repeat_image_ms)
        );
        for (n, tps) in &self.prefill {
            s += &format!("prefill {n:<8} {tps:.2} tokens/s\n");
        }
        s += &format!(
            "decode {:<9} {:.2} tokens/s\n",
            self.decode_tokens, self.decode_tokens_per_s
        );
        s += &format!(
            "peak RSS         {:.1} MiB\n",
            self.peak_rss_bytes as f64 / 1048576.0
        );
        s += &format!(
            "weights/token    {:.3} GB (file {:.3} GB)\n",
            self.text_weight_bytes_per_token as f64 / 1e9,
            self.file_bytes as f64 / 1e9
        );
        if let (Some(bw), Some(floor)) =
            (self.read_bandwidth_gb_s, self.decode_floor_tokens_per_s())
        {
            s += &format!("read bandwidth   {bw:.1} GB/s\n");
            s += &format!(
                "decode floor     {floor:.2} tokens/s (decode at {:.0}% of it)\n",
                100.0 * self.decode_tokens_per_s / floor
            );
        }
        s
    }

    /// One JSON object (hand-written: the runtime has no serde).
    pub fn to_json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.4}")
            } else {
                "null".to_string()
            }
        };
        let opt = |v: Option<f64>| v.map_or("null".to_string(), num);
        let rss = |v: Option<u64>| v.map_or("null".to_string(), |b| b.to_string());
        let prefill: Vec<String> = self
            .prefill
            .iter()
            .map(|(n, t)| format!("\"{n}\":{}", num(*t)))
            .collect();
        let floor = self.decode_floor_tokens_per_s();
        let pct = floor.map(|f| 100.0 * self.decode_tokens_per_s / f);
        format!(
            concat!(
                "{{\"model\":{},\"cpu\":{},\"kernel\":{},\"threads\":{},\"load_ms\":{},",
                "\"preprocess_ms\":{},\"vision_encode_ms\":{},\"abstractor_ms\":{},",
                "\"prefill_tokens_per_s\":{},\"prefill\":{{{}}},\"decode_tokens\":{},",
                "\"decode_tokens_per_s\":{},\"peak_rss_bytes\":{},\"file_bytes\":{},",
                "\"text_weight_bytes_per_token\":{},\"read_bandwidth_gb_s\":{},",
                "\"decode_floor_tokens_per_s\":{},\"decode_pct_of_floor\":{},",
                "\"ttft_first_image_ms\":{},\"ttft_repeat_image_ms\":{},",
                "\"packed_cache\":{},\"anon_rss_bytes_after_load\":{},",
                "\"file_rss_bytes_after_load\":{},\"anon_rss_bytes_at_end\":{},",
                "\"file_rss_bytes_at_end\":{}}}"
            ),
            json_str(&self.model),
            json_str(&self.cpu),
            json_str(&self.kernel),
            self.threads,
            num(self.load_ms),
            opt(self.preprocess_ms),
            opt(self.vision_encode_ms),
            opt(self.abstractor_ms),
            num(self.prefill_tokens_per_s()),
            prefill.join(","),
            self.decode_tokens,
            num(self.decode_tokens_per_s),
            self.peak_rss_bytes,
            self.file_bytes,
            self.text_weight_bytes_per_token,
            opt(self.read_bandwidth_gb_s),
            opt(floor),
            opt(pct),
            opt(self.ttft_first_image_ms),
            opt(self.ttft_repeat_image_ms),
            json_str(&self.packed_cache),
            rss(self.rss_after_load.map(|r| r.anon)),
            rss(self.rss_after_load.map(|r| r.file)),
            rss(self.rss_at_end.map(|r| r.anon)),
            rss(self.rss_at_end.map(|r| r.file)),
        )
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The CPU's model name from /proc/cpuinfo (or the architecture where that is unavailable).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Peak resident set size (`VmHWM`) in bytes, 0 where /proc is unavailable.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Weight bytes one decoded token streams: every text-decoder tensor except the embedding
/// table (one row is gathered) and the visual MAM copies (read only for image positions).
pub fn text_weight_bytes_per_token(m: &Model) -> u64 {
    let tied = m.gguf().tensor("output.weight").is_none();
    m.gguf()
        .tensors()
        .iter()
        .filter(|t| {
            let n = t.name.as_str();
            (n.starts_with("blk.") && !n.contains(VIS_SUFFIX))
                || n.starts_with("output")
                || (tied && n == "token_embd.weight")
        })
        .map(|t| t.size)
        .sum()
}

/// Read bandwidth in GB/s: the best of three multi-threaded sums over `bytes` of memory.
pub fn read_bandwidth_gb_s(pool: &rayon::ThreadPool, bytes: usize) -> f64 {
    let words = bytes / 8;
    let buf: Vec<u64> = pool.install(|| {
        let mut v = vec![0u64; words];
        v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = (i as u64) << 20 ^ j as u64;
            }
        });
        v
    });
    let threads = pool.current_num_threads().max(1);
    let per = words.div_ceil(threads).max(1);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let sum: u64 = pool.install(|| {
            buf.par_chunks(per)
                .map(|c| {
                    // Four independent lanes so the loop is load-bound, not add-latency-bound.
                    let mut acc = [0u64; 4];
                    for q in c.chunks_exact(4) {
                        for l in 0..4 {
                            acc[l] = acc[l].wrapping_add(q[l]);
                        }
                    }
                    acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Pseudo-random token ids in `3..vocab` (past the usual specials).
fn token_ids(n: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (3 + s % (vocab.max(4) as u64 - 3)) as i64
        })
        .collect()
}

/// A deterministic 640×480 test image.
fn test_image() -> RgbImage {
    let (w, h) = (640u32, 480u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// Milliseconds to the first token of `USER: <|image|>` + 16 text tokens for an image the
/// session's (private, empty) embedding cache has not seen, then for the same image again.
fn time_to_first_token(m: &Model, o: SessionOptions, img: &RgbImage) -> Result<(f64, f64)> {
    let mut s = Session::new(m, o)?;
    s.set_embed_cache(Some(std::sync::Arc::new(
        crate::embed_cache::EmbedCache::memory(crate::embed_cache::DEFAULT_MEMORY_BYTES),
    )));
    let mut ids = vec![1, crate::prompt::IMAGE_TOKEN_ID];
    ids.extend(token_ids(16, m.config.text.n_vocab, 7));
    let mut once = || -> Result<f64> {
        s.reset();
        let t = Instant::now();
        let emb = s.embed_image(img, None)?;
        let logits = s.prefill(&ids, &[&emb], false, None)?;
        std::hint::black_box(crate::sampling::argmax(&logits));
        Ok(ms(t))
    };
    let first = once()?;
    Ok((first, once()?))
}

/// Runs the benchmark on the model at `path`.
pub fn run(path: &Path, o: &BenchOptions) -> Result<BenchReport> {
    run_with_progress(path, o, &mut |_| {})
}

/// [`run`], calling `progress` with one line (e.g. `"prefill 512: 61.20 tokens/s"`) as each
/// stage finishes: a 7B run takes minutes, and its stages are worth seeing as they come.
pub fn run_with_progress(
    path: &Path,
    o: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    if o.threads == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "threads must be at least 1",
        ));
    }
    let mut r = BenchReport {
        model: path.display().to_string(),
        cpu: cpu_model(),
        threads: o.threads,
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        ..Default::default()
    };
    let t = Instant::now();
    let m = Model::load_with_options(
        path,
        &LoadOptions {
            kernels: None,
            packed_cache: o.packed_cache.clone(),
        },
    )?;
    r.load_ms = ms(t);
    r.rss_after_load = rss_by_kind();
    r.packed_cache = match (&o.packed_cache, m.load_report().cache) {
        (PackedCache::Off, _) => "off",
        (_, CacheStatus::Unused) => "unused",
        (_, CacheStatus::Hit) => "hit",
        (_, CacheStatus::Written) => "written",
        (_, CacheStatus::Failed) => "failed",
    }
    .to_string();
    for msg in &m.load_report().messages {
        progress(msg);
    }
    progress(&format!(
        "load {:.1} ms ({}, packed-weight cache {})",
        r.load_ms,
        m.kernels().name,
        r.packed_cache
    ));
    r.kernel = m.kernels().name.to_string();
    r.text_weight_bytes_per_token = text_weight_bytes_per_token(&m);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("thread pool: {e}")))?;
    let sopts = |n_ctx: usize| SessionOptions {
        threads: o.threads,
        kv_type: KvType::F16,
        n_ctx: Some(n_ctx.min(m.config.text.n_ctx)),
    };

    if m.has_vision() && !o.skip_vision {
        let s = Session::new(&m, sopts(16))?;
        let p = s.preprocess_config(None)?;
        let img = test_image();
        let t = Instant::now();
        let px = image::preprocess(&img, &p);
        let t_ms = ms(t);
        r.preprocess_ms = Some(t_ms);
        progress(&format!("image preprocess {t_ms:.1} ms"));
        m.check_file()?;
        let t = Instant::now();
        let feats = pool.install(|| m.encode_image(&px))?;
        let t_ms = ms(t);
        r.vision_encode_ms = Some(t_ms);
        progress(&format!("vision encoder {t_ms:.1} ms"));
        let t = Instant::now();
        let rows = pool.install(|| m.abstract_image(&feats))?;
        let t_ms = ms(t);
        r.abstractor_ms = Some(t_ms);
        progress(&format!("abstractor {t_ms:.1} ms"));
        std::hint::black_box(rows);
        let (first, repeat) = time_to_first_token(&m, sopts(m.config.image_tokens + 32), &img)?;
        r.ttft_first_image_ms = Some(first);
        r.ttft_repeat_image_ms = Some(repeat);
    }

    let vocab = m.config.text.n_vocab;
    for &n in &o.prefill_lens {
        let mut s = Session::new(&m, sopts(n + 1))?;
        let ids = token_ids(n, vocab, n as u64);
        let t = Instant::now();
        let logits = s.prefill(&ids, &[], false, None)?;
        let tps = n as f64 / t.elapsed().as_secs_f64();
        r.prefill.push((n, tps));
        progress(&format!("prefill {n}: {tps:.2} tokens/s"));
        std::hint::black_box(logits);
    }

    if o.decode_tokens > 0 {
        let mut s = Session::new(&m, sopts(o.decode_tokens + 2))?;
        let mut logits = s.prefill(&[1], &[], false, None)?;
        let t = Instant::now();
        for _ in 0..o.decode_tokens {
            let id = crate::sampling::argmax(&logits) as i64;
            logits = s.prefill(&[id], &[], false, None)?;
        }
        r.decode_tokens = o.decode_tokens;
        r.decode_tokens_per_s = o.decode_tokens as f64 / t.elapsed().as_secs_f64();
        progress(&format!(
            "decode {}: {:.2} tokens/s",
            r.decode_tokens, r.decode_tokens_per_s
        ));
    }
    r.peak_rss_bytes = peak_rss_bytes();
    r.rss_at_end = rss_by_kind();
    if o.bandwidth_bytes > 0 {
        let bw = read_bandwidth_gb_s(&pool, o.bandwidth_bytes);
        r.read_bandwidth_gb_s = Some(bw);
        progress(&format!("read bandwidth {bw:.1} GB/s"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_object_with_the_required_keys() {
        let r = BenchReport {
            model: "a \"b\"\\c".into(),
            prefill: vec![(64, 10.0), (512, 8.5)],
            read_bandwidth_gb_s: Some(40.0),
            text_weight_bytes_per_token: 4_000_000_000,
            decode_tokens_per_s: 5.0,
            ..Default::default()
        };
        let j = r.to_json();
        assert!(j.starts_with('{') && j.ends_with('}'));
        for k in [
            "decode_tokens_per_s",
            "prefill_tokens_per_s\":8.5000",
            "vision_encode_ms\":null",
            "abstractor_ms",
            "load_ms",
            "peak_rss_bytes",
            "threads",
            "kernel",
            "cpu",
            "decode_floor_tokens_per_s\":10.0000",
            "decode_pct_of_floor\":50.0000",
            "ttft_first_image_ms\":null",
            "anon_rss_bytes_after_load\":null",
            "file_rss_bytes_at_end\":null",
            "packed_cache",
            "\"a \\\"b\\\"\\\\c\"",
        ] {
            assert!(j.contains(k), "{k} missing in {j}");
        }
    }

    #[test]
    fn bandwidth_probe_and_proc_readers_work() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(read_bandwidth_gb_s(&pool, 1 << 20) > 0.0);
        assert!(!cpu_model().is_empty());
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes() > 0);
        }
    }

    #[test]
    fn smaps_rollup_splits_anonymous_and_file_backed() {
        let text = "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0   [rollup]\n\
                    Rss:              204800 kB\nPss:              200000 kB\n\
                    Anonymous:         51200 kB\nSwap:                  0 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Some(Rss {
                anon: 50 << 20,
                file: 150 << 20
            })
        );
        assert_eq!(parse_smaps_rollup("Rss: 10 kB\n"), None);
        let r = BenchReport::default();
        assert!(r.to_text().contains("RSS after load   n/a"));
        if std::path::Path::new("/proc/self/smaps_rollup").exists() {
            let r = rss_by_kind().unwrap();
            assert!(r.anon > 0 && r.file > 0, "{r:?}");
        }
    }
}
