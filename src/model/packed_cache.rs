//! The packed-weight cache file: the load-time repacking of a model's matrices for one kernel
//! variant (see [`crate::kernels::Packing`]), written once and mapped read-only by later loads.
//!
//! Without it every load repacks the weights into anonymous memory: seconds for a 7B model, and
//! a multi-GB copy that the OS cannot drop under memory pressure (on a phone it counts fully
//! against the app). With it the first load writes the packed bytes to a file and every load
//! maps that file, so the packed weights are file pages: evictable, read back on demand, shared
//! between processes, and a warm load does no packing.
//!
//! The file is `<model stem>-<hash of the model's canonical path>.<variant>.owlpack` in the
//! cache folder. Layout (little-endian):
//!
//! ```text
//! 0   magic "OWLPACK\0"
//! 8   format version (u32)            -- FORMAT_VERSION
//! 12  header length H (u32)           -- bytes 0..H, checksum included
//! 16  identity (32 bytes)             -- see `identity`
//! 48  total file length (u64)
//! 56  variant name (u16 length, bytes)
//!     tensor count (u32), then per tensor:
//!       name (u16 length, bytes), ggml type id (u32), rows (u64), cols (u64),
//!       data offset (u64, a multiple of ALIGN), data length (u64)
//! H-32  SHA-256 of bytes 0..H-32
//!     zero padding, then each tensor's packed groups at its offset
//! ```
//!
//! The identity is a SHA-256 over the format version, the model file's length, modification
//! time, device and inode, its GGUF header and tensor table (every byte before the tensor
//! data), the variant name and each packed tensor's name, type, shape and record size. Any
//! change to the model file (rewritten, touched, replaced) or to what is packed changes it.
//!
//! A file is trusted only if its magic, version, header checksum, variant, identity, exact
//! length and tensor table all match, and a spot check passes: the first and the last 16-row
//! group of the first and the last tensor are repacked from the model and compared byte for
//! byte. There is deliberately no checksum over the data: hashing a 4 GB file costs more than
//! the repacking it saves (SHA-256 runs well under 1 GB/s here) and would read every page in,
//! defeating the lazy, evictable mapping. The failure modes that matter are covered without it:
//! a torn write cannot happen (files are written under a temporary name and renamed), a
//! truncation changes the length, a stale or foreign file has another identity, variant or
//! version, and a file from a wrong packing routine fails the spot check. Anything that fails
//! is reported as one line in the [`LoadReport`] and rebuilt.
//!
//! Temporary files carry the writer's `flock`; a load sweeps the ones whose lock is free (their
//! writer died) before writing its own. Like the model file, a cache file must not be truncated
//! in place while a process maps it (reads past the new end fault); rebuilding renames a new
//! file over it, which leaves existing mappings intact.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Mat;
use crate::filecache::{self, sha256, Sha256};
use crate::gguf::{Gguf, TensorInfo};
use crate::kernels::{Kernels, Packing, TILE_ROWS};
use crate::ops::matmul::{self, MatRef, PackedWeights};

const MAGIC: &[u8; 8] = b"OWLPACK\0";
/// Bumped whenever the layout or a packing routine's output changes (2: the Zen 4 table's
/// one-row-per-lane Q4_0, Q4_K and Q6_K records; 3: its Q8_0 records too).
pub const FORMAT_VERSION: u32 = 3;
/// Alignment of every tensor's data in the file (and so in the mapping): a page, so each
/// tensor starts on its own page and vector loads never straddle one at its start.
pub const ALIGN: u64 = 4096;
/// Largest header accepted (a 7B model's table is a few tens of KiB).
const MAX_HEADER: u64 = 64 << 20;
/// A temporary file younger than this is never swept, even with its lock free (its writer may
/// have created it and not locked it yet).
const SWEEP_MIN_AGE: Duration = Duration::from_secs(10);

/// Where a load keeps packed weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PackedCache {
    /// Pack into anonymous memory at every load (what [`super::Model::load`] does).
    #[default]
    Off,
    /// Keep cache files in this folder (created if missing).
    Dir(PathBuf),
    /// Keep the cache file in the model file's folder.
    BesideModel,
}

/// How to load a model: see [`super::Model::load_with_options`].
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// The kernel variant; `None` = `OWLET_KERNELS` or the best available (as `Model::load`).
    pub kernels: Option<&'static Kernels>,
    pub packed_cache: PackedCache,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("kernels", &self.kernels.map(|k| k.name))
            .field("packed_cache", &self.packed_cache)
            .finish()
    }
}

/// What happened to the cache during a load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache asked for, or the variant packs nothing for this model.
    #[default]
    Unused,
    /// A valid cache file was mapped; nothing was packed.
    Hit,
    /// The weights were packed and a cache file written and mapped (there was none, or the one
    /// there was rebuilt: see [`LoadReport::messages`]).
    Written,
    /// The cache could not be used (folder or file not writable); the weights were packed
    /// into anonymous memory as without a cache.
    Failed,
}

/// What a load did about packed weights.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The kernel variant.
    pub kernels: &'static str,
    /// Matrices packed by this load (0 on a cache hit).
    pub packed_tensors: usize,
    /// Matrices whose packed bytes come from a mapped cache file.
    pub mapped_tensors: usize,
    /// Bytes of packed weights (wherever they live).
    pub packed_bytes: u64,
    pub cache: CacheStatus,
    /// The cache file used or written.
    pub cache_file: Option<PathBuf>,
    /// One line each: why a cache file was rebuilt, or why the cache was not used.
    pub messages: Vec<String>,
}

/// The per-user default folder: `$XDG_CACHE_HOME/owlet/packed`, else `~/.cache/owlet/packed`;
/// `None` when neither variable is set.
pub fn default_dir() -> Option<PathBuf> {
    filecache::user_dir().map(|d| d.join("packed"))
}

/// One matrix to pack (each tensor once, even if several [`Mat`]s share it).
struct Job<'a> {
    info: TensorInfo,
    p: &'static Packing,
    w: MatRef<'a>,
    len: usize,
}

/// Packs every matrix of `mats` that `kernels` has a packing for, through the cache when one is
/// asked for, and records what it did.
pub(crate) fn pack_all(
    gguf: &Gguf,
    kernels: &'static Kernels,
    mut mats: Vec<&mut Mat>,
    cache: &PackedCache,
) -> LoadReport {
    let mut report = LoadReport {
        kernels: kernels.name,
        ..LoadReport::default()
    };
    let mut jobs: Vec<Job<'_>> = Vec::new();
    for m in mats.iter() {
        let Some(p) = kernels.packing(m.info.typ) else {
            continue;
        };
        if jobs.iter().any(|j| j.info.name == m.info.name) {
            continue;
        }
        let w = MatRef {
            typ: m.info.typ,
            rows: m.rows,
            cols: m.cols,
            data: gguf.tensor_bytes(&m.info),
            packed: None,
        };
        if let Some(len) = matmul::packed_len(p, w) {
            jobs.push(Job {
                info: m.info.clone(),
                p,
                w,
                len,
            });
        }
    }
    if jobs.is_empty() {
        return report;
    }
    report.packed_bytes = jobs.iter().map(|j| j.len as u64).sum();
    let packed = match cache_dir(gguf, cache) {
        None => None,
        Some(dir) => through_cache(gguf, kernels, &jobs, &dir, &mut report),
    };
    let packed = match packed {
        Some(p) => p,
        None => {
            report.packed_tensors = jobs.len();
            pack_anon(gguf, &jobs)
        }
    };
    for m in mats.iter_mut() {
        if let Some((_, p)) = packed.iter().find(|(n, _)| *n == m.info.name) {
            m.packed = Some(Arc::clone(p));
        }
    }
    report
}

type Packed = Vec<(String, Arc<PackedWeights>)>;

/// Packs into anonymous memory (no cache), releasing the file pages each packing read.
fn pack_anon(gguf: &Gguf, jobs: &[Job<'_>]) -> Packed {
    let mut out = Vec::new();
    for j in jobs {
        if let Some(bytes) = matmul::pack(j.p, j.w) {
            gguf.release(&j.info);
            out.push((j.info.name.clone(), Arc::new(bytes)));
        }
    }
    out
}

fn cache_dir(gguf: &Gguf, cache: &PackedCache) -> Option<PathBuf> {
    match cache {
        PackedCache::Off => None,
        PackedCache::Dir(d) => Some(d.clone()),
        PackedCache::BesideModel => {
            let p = gguf.path()?;
            Some(match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
        }
    }
}

/// The cache path: maps a valid file, or writes one and maps it. `None` (with a message) when
/// the cache cannot be used; the caller then packs into anonymous memory.
fn through_cache(
    gguf: &Gguf,
    kernels: &'static Kernels,
    jobs: &[Job<'_>],
    dir: &Path,
    report: &mut LoadReport,
) -> Option<Packed> {
    let (Some(model), Some(meta)) = (gguf.path(), gguf.file_metadata()) else {
        // An in-memory model has no file to tie a cache to.
        return None;
    };
    if jobs
        .iter()
        .any(|j| j.info.name.len() > usize::from(u16::MAX))
    {
        // The table stores names with a 16-bit length (GGUF names are far shorter).
        return None;
    }
    let file = dir.join(file_name(model, kernels.name));
    report.cache_file = Some(file.clone());
    let id = identity(gguf, &meta, kernels.name, jobs);
    match open(&file, &id, kernels.name, jobs) {
        Ok(p) => {
            report.cache = CacheStatus::Hit;
            report.mapped_tensors = p.len();
            for j in jobs {
                // Only the spot check read the model's copies; drop what it paged in.
                gguf.release(&j.info);
            }
            return Some(p);
        }
        Err(Invalid::Missing) => {}
        Err(Invalid::Bad(why)) => report.messages.push(format!(
            "packed-weight cache {}: {why}; rebuilding it",
            file.display()
        )),
    }
    if let Err(e) = fs::create_dir_all(dir) {
        report.cache = CacheStatus::Failed;
        report.messages.push(format!(
            "packed-weight cache folder {}: cannot create it ({e}); loading without the cache",
            dir.display()
        ));
        return None;
    }
    sweep(dir);
    report.packed_tensors = jobs.len();
    if let Err(e) = write(gguf, &file, &id, kernels.name, jobs) {
        report.cache = CacheStatus::Failed;
        report.messages.push(format!(
            "packed-weight cache {}: cannot write it ({e}); loading without the cache",
            file.display()
        ));
        return None;
    }
    match open(&file, &id, kernels.name, jobs) {
        Ok(p) => {
            report.cache = CacheStatus::Written;
            report.mapped_tensors = p.len();
            Some(p)
        }
        Err(e) => {
            // Another process renamed a different file over ours between the two steps, or
            // the folder lies about writes: still never trusted.
            report.cache = CacheStatus::Failed;
            let why = match e {
                Invalid::Missing => "it vanished after it was written".to_string(),
                Invalid::Bad(w) => w,
            };
            report.messages.push(format!(
                "packed-weight cache {}: {why}; loading without the cache",
                file.display()
            ));
            None
        }
    }
}

/// `<model stem>-<16 hex digits of SHA-256 of the canonical path>.<variant>.owlpack`.
pub fn file_name(model: &Path, variant: &str) -> String {
    let canon = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    let h = sha256(canon.as_os_str().as_encoded_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    let stem: String = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{stem}-{hex}.{variant}.owlpack")
}

/// The identity of what a cache file holds (see the module docs).
fn identity(gguf: &Gguf, meta: &fs::Metadata, variant: &str, jobs: &[Job<'_>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"owlet-packed-id\0");
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(&meta.len().to_le_bytes());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    h.update(&mtime.as_secs().to_le_bytes());
    h.update(&mtime.subsec_nanos().to_le_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        h.update(&meta.dev().to_le_bytes());
        h.update(&meta.ino().to_le_bytes());
    }
    let head = usize::try_from(gguf.data_offset())
        .unwrap_or(usize::MAX)
        .min(gguf.as_bytes().len());
    h.update(&(head as u64).to_le_bytes());
    h.update(&gguf.as_bytes()[..head]);
    h.update(variant.as_bytes());
    h.update(&[0]);
    for j in jobs {
        h.update(j.info.name.as_bytes());
        h.update(&[0]);
        h.update(&j.info.typ.id().to_le_bytes());
        h.update(&(j.w.rows as u64).to_le_bytes());
        h.update(&(j.w.cols as u64).to_le_bytes());
        h.update(&(j.p.record_bytes as u64).to_le_bytes());
    }
    h.finish()
}

/// The header and table for `jobs`, and each tensor's data offset.
fn header(id: &[u8; 32], variant: &str, jobs: &[Job<'_>]) -> (Vec<u8>, Vec<u64>, u64) {
    let mut names_len = 0usize;
    for j in jobs {
        names_len += 2 + j.info.name.len() + 4 + 8 * 4;
    }
    let head_len = 56 + 2 + variant.len() + 4 + names_len + 32;
    let mut offsets = Vec::with_capacity(jobs.len());
    let mut at = (head_len as u64).div_ceil(ALIGN) * ALIGN;
    for j in jobs {
        offsets.push(at);
        at = (at + j.len as u64).div_ceil(ALIGN) * ALIGN;
    }
    let total = offsets
        .last()
        .zip(jobs.last())
        .map(|(o, j)| o + j.len as u64)
        .unwrap_or(at);
    let mut b = Vec::with_capacity(head_len);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(head_len as u32).to_le_bytes());
    b.extend_from_slice(id);
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(&(variant.len() as u16).to_le_bytes());
    b.extend_from_slice(variant.as_bytes());
    b.extend_from_slice(&(jobs.len() as u32).to_le_bytes());
    for (j, off) in jobs.iter().zip(&offsets) {
        b.extend_from_slice(&(j.info.name.len() as u16).to_le_bytes());
        b.extend_from_slice(j.info.name.as_bytes());
        b.extend_from_slice(&j.info.typ.id().to_le_bytes());
        b.extend_from_slice(&(j.w.rows as u64).to_le_bytes());
        b.extend_from_slice(&(j.w.cols as u64).to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&(j.len as u64).to_le_bytes());
    }
    let sum = sha256(&b);
    b.extend_from_slice(&sum);
    (b, offsets, total)
}

/// Writes the cache file under a temporary name (locked while it is written) and renames it
/// into place. The tensors are packed one at a time, so memory stays near the largest one.
fn write(
    gguf: &Gguf,
    file: &Path,
    id: &[u8; 32],
    variant: &str,
    jobs: &[Job<'_>],
) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (head, offsets, _) = header(id, variant, jobs);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = file.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| {
        let f = fs::File::create(&tmp)?;
        // The lock tells a sweeping process that this writer is alive. Best effort: where the
        // file system has no locks, sweeping falls back on the file's age.
        let _ = f.lock();
        let mut w = io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&head)?;
        let mut at = head.len() as u64;
        for (j, &off) in jobs.iter().zip(&offsets) {
            pad(&mut w, off - at)?;
            let Some(bytes) = matmul::pack(j.p, j.w) else {
                return Err(io::Error::other(format!(
                    "tensor {} cannot be packed",
                    j.info.name
                )));
            };
            w.write_all(&bytes)?;
            at = off + bytes.len() as u64;
            drop(bytes);
            gguf.release(&j.info);
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, file)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

fn pad(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Removes temporary files of dead writers: ones whose `flock` is free (and older than
/// [`SWEEP_MIN_AGE`]); where locks are unsupported, ones older than an hour.
fn sweep(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.contains(".owlpack.") && name.ends_with(".tmp")) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let age = now
            .duration_since(meta.modified().unwrap_or(now))
            .unwrap_or_default();
        if age < SWEEP_MIN_AGE {
            continue;
        }
        let Ok(f) = fs::File::open(e.path()) else {
            continue;
        };
        let dead = match f.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(_)) => age > Duration::from_secs(3600),
        };
        if dead {
            let _ = fs::remove_file(e.path());
        }
    }
}

enum Invalid {
    /// No file (a plain miss: nothing to report).
    Missing,
    /// A file that must not be trusted, and why (one line).
    Bad(String),
}

/// A little-endian reader over the header that fails instead of panicking.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// Maps `file` read-only and checks it against what this load would write (see the module
/// docs); on success, each job's packed bytes as a range of the shared mapping.
fn open(file: &Path, id: &[u8; 32], variant: &str, jobs: &[Job<'_>]) -> Result<Packed, Invalid> {
    let bad = |s: &str| Invalid::Bad(s.to_string());
    let f = match fs::File::open(file) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Invalid::Missing)
        }
        Err(e) => return Err(Invalid::Bad(format!("cannot open it ({e})"))),
    };
    let len = f
        .metadata()
        .map_err(|e| Invalid::Bad(format!("cannot stat it ({e})")))?
        .len();
    if len < 16 {
        return Err(Invalid::Bad(format!("truncated ({len} bytes)")));
    }
    // SAFETY: the file is mapped read-only and only read through `&[u8]`; the map is owned by
    // the `Arc` every `PackedWeights::File` holds, so no slice outlives it. Cache files are
    // only ever replaced by rename (existing maps keep the old inode), never rewritten in
    // place; a file truncated in place by someone else while mapped would fault on read, the
    // same accepted risk as the model file's own mapping (see `Gguf::open`).
    let map = Arc::new(
        unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| Invalid::Bad(format!("cannot map it ({e})")))?,
    );
    let b: &[u8] = &map;
    let mut c = Cursor { b, at: 0 };
    if c.take(8) != Some(&MAGIC[..]) {
        return Err(bad("not a packed-weight cache file (bad magic)"));
    }
    let version = c.u32().unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(Invalid::Bad(format!(
            "format version {version}, this owlet reads {FORMAT_VERSION}"
        )));
    }
    let head_len = c.u32().unwrap_or(0) as u64;
    if !(56 + 32..=MAX_HEADER.min(len)).contains(&head_len) {
        return Err(Invalid::Bad(format!(
            "truncated or corrupted header (header length {head_len}, file {len} bytes)"
        )));
    }
    let head_len = head_len as usize;
    let (body, sum) = b[..head_len].split_at(head_len - 32);
    if sha256(body) != sum {
        return Err(bad("header checksum mismatch (corrupted)"));
    }
    let mut c = Cursor { b: body, at: 16 };
    let file_id = c.take(32);
    let total = c.u64();
    let file_variant = c.str();
    if file_variant != Some(variant.as_bytes()) {
        return Err(Invalid::Bad(format!(
            "packed for kernel variant {:?}, this load uses {variant:?}",
            String::from_utf8_lossy(file_variant.unwrap_or_default())
        )));
    }
    if file_id != Some(&id[..]) {
        return Err(bad(
            "made for another model file or another version of it (stale)",
        ));
    }
    if total != Some(len) {
        return Err(Invalid::Bad(format!(
            "{len} bytes but its header says {} (truncated or extended)",
            total.unwrap_or(0)
        )));
    }
    let table = bad("its tensor table does not match the model (corrupted)");
    if c.u32() != Some(jobs.len() as u32) {
        return Err(table);
    }
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let ok = c.str() == Some(j.info.name.as_bytes())
            && c.u32() == Some(j.info.typ.id())
            && c.u64() == Some(j.w.rows as u64)
            && c.u64() == Some(j.w.cols as u64);
        let (off, n) = (c.u64().unwrap_or(1), c.u64().unwrap_or(0));
        let end = off.saturating_add(n);
        if !ok
            || n != j.len as u64
            || !off.is_multiple_of(ALIGN)
            || off < head_len as u64
            || end > len
        {
            return Err(table);
        }
        let r = off as usize..end as usize;
        out.push((
            j.info.name.clone(),
            Arc::new(PackedWeights::File(Arc::clone(&map), r)),
        ));
    }
    if c.at != body.len() {
        return Err(table);
    }
    // The spot check: first and last group of the first and the last tensor.
    let mut group = Vec::new();
    for (j, (_, p)) in [jobs.first(), jobs.last()]
        .into_iter()
        .flatten()
        .zip([out.first(), out.last()].into_iter().flatten())
    {
        let gb = j.p.group_bytes(j.w.cols);
        let groups = j.w.rows / TILE_ROWS;
        for g in [0, groups - 1] {
            group.clear();
            group.resize(gb, 0);
            matmul::pack_group(j.p, j.w, g, &mut group);
            if p.get(g * gb..(g + 1) * gb) != Some(&group[..]) {
                return Err(Invalid::Bad(format!(
                    "the packed bytes of {} differ from the model's (corrupted)",
                    j.info.name
                )));
            }
        }
    }
    Ok(out)
}

/// SHA-256, for tests that forge cache headers (a foreign variant or version with a valid
/// checksum).
#[doc(hidden)]
pub fn sha256_for_tests(data: &[u8]) -> [u8; 32] {
    sha256(data)
}
