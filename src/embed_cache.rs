//! Image embeddings computed once: an in-memory LRU for the process and an optional folder
//! that keeps them across runs.
//!
//! An embedding (the abstractor's output rows for one image) depends only on the preprocessed
//! pixels and on the vision tower's and abstractor's weights and settings: every kernel variant
//! and thread count computes it bitwise the same. So the key is a SHA-256 of
//! - the model's *vision identity*: the vision and abstractor configuration, and each `v.*` and
//!   `abstractor.*` tensor's name, type, shape and data (tensors up to 64 KiB whole; larger ones
//!   as 16 evenly spaced 4 KiB samples, which any fine-tune changes, so a 7B file is identified
//!   in milliseconds instead of hashing 400 MB),
//! - the preprocessing mode's name and the image side,
//! - the preprocessed pixels themselves (float32 bytes).
//!
//! On disk each entry is one file `<key hex>.emb`: a header (magic, version, rows, width, key),
//! the float32 rows, and a SHA-256 of everything before it. A file whose length, header or
//! checksum is wrong is ignored (a miss) and rewritten by the caller's `put`. Files are written
//! to a private temporary name and renamed into place, so a reader, or a second process writing
//! the same entry, never sees a torn file. Hits refresh the file's modification time; after
//! each write the folder is trimmed to its byte cap by deleting the least recently used
//! entries (and temporary files left by crashed processes).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::filecache::{self, sha256, Sha256};
use crate::model::Model;

/// A cache key (SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EmbedKey(pub [u8; 32]);

impl EmbedKey {
    /// The key of preprocessed `pixels` for a model (see the module docs).
    pub fn new(vision_id: &[u8; 32], mode: &str, size: u32, pixels: &[f32]) -> EmbedKey {
        let mut h = Sha256::new();
        h.update(b"owlet-embed-key-v1\0");
        h.update(vision_id);
        h.update(mode.as_bytes());
        h.update(&[0]);
        h.update(&size.to_le_bytes());
        h.update(bytemuck::cast_slice(pixels));
        EmbedKey(h.finish())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a lookup was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    Memory,
    Disk,
}

/// Counters since the cache was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    /// Disk entries found damaged (wrong length, header or checksum) and ignored.
    pub corrupt: u64,
    pub disk_writes: u64,
}

/// The in-memory part: embeddings by key, evicted least recently used first.
struct Memory {
    map: HashMap<EmbedKey, (Arc<Vec<f32>>, u64)>,
    bytes: usize,
    tick: u64,
}

/// An embedding cache; share one between sessions with an `Arc`.
pub struct EmbedCache {
    memory: Mutex<Memory>,
    memory_cap: usize,
    dir: Option<PathBuf>,
    disk_cap: u64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    disk_writes: AtomicU64,
}

impl std::fmt::Debug for EmbedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedCache")
            .field("memory_cap", &self.memory_cap)
            .field("dir", &self.dir)
            .field("disk_cap", &self.disk_cap)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Default in-memory budget of the process-wide cache.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// Default byte cap of a cache folder.
pub const DEFAULT_DISK_BYTES: u64 = 1 << 30;

impl EmbedCache {
    /// A memory-only cache holding up to `memory_bytes` of embeddings.
    pub fn memory(memory_bytes: usize) -> EmbedCache {
        EmbedCache {
            memory: Mutex::new(Memory {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            memory_cap: memory_bytes,
            dir: None,
            disk_cap: 0,
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            disk_writes: AtomicU64::new(0),
        }
    }

    /// A cache that also keeps entries in `dir` (created if missing), trimmed to `disk_bytes`.
    pub fn with_dir(memory_bytes: usize, dir: &Path, disk_bytes: u64) -> Result<EmbedCache> {
        fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "embedding cache folder {}: cannot create it: {e}",
                    dir.display()
                ),
            )
        })?;
        let mut c = EmbedCache::memory(memory_bytes);
        c.dir = Some(dir.to_path_buf());
        c.disk_cap = disk_bytes;
        Ok(c)
    }

    /// The process-wide memory-only cache every new session starts with.
    pub fn process() -> Arc<EmbedCache> {
        static PROCESS: OnceLock<Arc<EmbedCache>> = OnceLock::new();
        Arc::clone(PROCESS.get_or_init(|| Arc::new(EmbedCache::memory(DEFAULT_MEMORY_BYTES))))
    }

    /// One cache per folder for the whole process (so sessions on the same folder share the
    /// memory part too); the first call for a folder sets its byte cap.
    pub fn shared_dir(dir: &Path, disk_bytes: u64) -> Result<Arc<EmbedCache>> {
        static DIRS: Mutex<Vec<(PathBuf, Arc<EmbedCache>)>> = Mutex::new(Vec::new());
        fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "embedding cache folder {}: cannot create it: {e}",
                    dir.display()
                ),
            )
        })?;
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = dirs.iter().find(|(d, _)| *d == canon) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(EmbedCache::with_dir(
            DEFAULT_MEMORY_BYTES,
            &canon,
            disk_bytes,
        )?);
        dirs.push((canon, Arc::clone(&c)));
        Ok(c)
    }

    /// The folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            disk_writes: self.disk_writes.load(Ordering::Relaxed),
        }
    }

    /// The embedding for `key` if it is cached with `len` values (memory first, then disk).
    pub fn get(&self, key: &EmbedKey, len: usize) -> Option<(Arc<Vec<f32>>, Hit)> {
        {
            let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            m.tick += 1;
            let tick = m.tick;
            if let Some((rows, t)) = m.map.get_mut(key) {
                if rows.len() == len {
                    *t = tick;
                    self.memory_hits.fetch_add(1, Ordering::Relaxed);
                    return Some((Arc::clone(rows), Hit::Memory));
                }
            }
        }
        if let Some(dir) = &self.dir {
            match read_entry(&entry_path(dir, key), key, len) {
                Entry::Found(rows) => {
                    let rows = Arc::new(rows);
                    self.remember(key, Arc::clone(&rows));
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Some((rows, Hit::Disk));
                }
                Entry::Corrupt => {
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                Entry::Missing => {}
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Stores an embedding (in memory, and in the folder if any). A failed disk write is not
    /// an error: the cache is an optimisation, the embedding is still returned to the caller.
    pub fn put(&self, key: &EmbedKey, rows: Arc<Vec<f32>>) {
        self.remember(key, Arc::clone(&rows));
        if let Some(dir) = &self.dir {
            if write_entry(dir, key, &rows).is_ok() {
                self.disk_writes.fetch_add(1, Ordering::Relaxed);
                trim(dir, self.disk_cap);
            }
        }
    }

    fn remember(&self, key: &EmbedKey, rows: Arc<Vec<f32>>) {
        let size = rows.len() * 4;
        if size > self.memory_cap {
            return;
        }
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        m.tick += 1;
        let tick = m.tick;
        if let Some((old, _)) = m.map.insert(*key, (rows, tick)) {
            m.bytes -= old.len() * 4;
        }
        m.bytes += size;
        while m.bytes > self.memory_cap {
            let Some(oldest) = m.map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) else {
                break;
            };
            if let Some((old, _)) = m.map.remove(&oldest) {
                m.bytes -= old.len() * 4;
            }
        }
    }
}

/// The per-user default folder: `$XDG_CACHE_HOME/owlet/embeddings`, else
/// `~/.cache/owlet/embeddings`; `None` when neither variable is set.
pub fn default_dir() -> Option<PathBuf> {
    filecache::user_dir().map(|d| d.join("embeddings"))
}

/// The model's vision identity (see the module docs), computed once per model.
pub fn vision_identity(model: &Model) -> [u8; 32] {
    *model.vision_id.get_or_init(|| {
        const WHOLE: usize = 64 << 10;
        const SAMPLES: usize = 16;
        const SAMPLE: usize = 4 << 10;
        let mut h = Sha256::new();
        h.update(b"owlet-vision-id-v1\0");
        h.update(format!("{:?}\n{:?}\n", model.config.vision, model.config.abstractor).as_bytes());
        let g = model.gguf();
        let mut tensors: Vec<_> = g
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("v.") || t.name.starts_with("abstractor."))
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for t in tensors {
            h.update(format!("{} {} {:?}\n", t.name, t.typ.name(), t.dims).as_bytes());
            let data = g.tensor_bytes(t);
            if data.len() <= WHOLE {
                h.update(data);
            } else {
                let step = (data.len() - SAMPLE) / (SAMPLES - 1);
                for i in 0..SAMPLES {
                    h.update(&data[i * step..i * step + SAMPLE]);
                }
            }
        }
        h.finish()
    })
}

// ---------------------------------------------------------------------------------------------
// Entry files
// ---------------------------------------------------------------------------------------------

const MAGIC: &[u8; 8] = b"OWLETEMB";
const VERSION: u32 = 1;
/// magic, version, value count (u64), key.
const HEADER: usize = 8 + 4 + 8 + 32;

fn entry_path(dir: &Path, key: &EmbedKey) -> PathBuf {
    dir.join(format!("{}.emb", key.hex()))
}

enum Entry {
    Found(Vec<f32>),
    Missing,
    Corrupt,
}

fn read_entry(path: &Path, key: &EmbedKey, len: usize) -> Entry {
    let Ok(bytes) = fs::read(path) else {
        return Entry::Missing;
    };
    if bytes.len() != HEADER + len * 4 + 32
        || &bytes[..8] != MAGIC
        || bytes[8..12] != VERSION.to_le_bytes()
        || bytes[12..20] != (len as u64).to_le_bytes()
        || bytes[20..52] != key.0
    {
        return Entry::Corrupt;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if sha256(body) != sum {
        return Entry::Corrupt;
    }
    let rows = body[HEADER..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // Least recently used = oldest modification time: a hit makes the entry young again.
    if let Ok(f) = fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
    Entry::Found(rows)
}

/// Writes an entry under a name private to this process and call, then renames it into place
/// (atomic on POSIX and Windows): a concurrent reader or writer sees the old file or a whole
/// new one.
fn write_entry(dir: &Path, key: &EmbedKey, rows: &[f32]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut body = Vec::with_capacity(HEADER + rows.len() * 4 + 32);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&VERSION.to_le_bytes());
    body.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    body.extend_from_slice(&key.0);
    for v in rows {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let sum = sha256(&body);
    body.extend_from_slice(&sum);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        key.hex(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, entry_path(dir, key))
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Deletes the least recently used entries until the folder's entries fit `cap` bytes, and
/// temporary files older than an hour (left by a crashed writer).
fn trim(dir: &Path, cap: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    let mut entries = Vec::new();
    let mut total = 0u64;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = e.metadata() else { continue };
        let mtime = meta.modified().unwrap_or(now);
        if name.ends_with(".tmp") {
            if now.duration_since(mtime).unwrap_or_default() > Duration::from_secs(3600) {
                let _ = fs::remove_file(e.path());
            }
        } else if name.ends_with(".emb") {
            total += meta.len();
            entries.push((mtime, meta.len(), e.path()));
        }
    }
    entries.sort();
    for (_, len, path) in entries {
        if total <= cap {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_least_recently_used_within_its_cap() {
        let c = EmbedCache::memory(3 * 400);
        let key = |i: u8| EmbedKey([i; 32]);
        for i in 0..3 {
            c.put(&key(i), Arc::new(vec![f32::from(i); 100]));
        }
        assert!(c.get(&key(0), 100).is_some()); // 0 is now the most recent
        c.put(&key(3), Arc::new(vec![3.0; 100])); // evicts 1
        assert!(c.get(&key(1), 100).is_none());
        assert_eq!(c.get(&key(0), 100).unwrap().0[0], 0.0);
        assert!(c.get(&key(2), 100).is_some());
        assert!(c.get(&key(3), 100).is_some());
        assert!(c.get(&key(3), 99).is_none(), "a length mismatch is a miss");
    }
}
