//! GGUF (v2/v3) files: a zero-copy, validated reader over a memory map, and a streaming writer.
//!
//! File layout (all little-endian):
//! ```text
//! "GGUF" u32:version u64:n_tensors u64:n_kv
//! n_kv      × { string:key u32:value_type value }
//! n_tensors × { string:name u32:n_dims u64:ne[n_dims] u32:ggml_type u64:offset }
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_offset + offset, offsets aligned
//! ```
//! where `string` is `u64:len` followed by that many UTF-8 bytes, and an array value is
//! `u32:elem_type u64:count` followed by the items.
//!
//! [`Gguf`] checks everything at open time (bounds, overflow, types, alignment, overlaps), so
//! that later accessors cannot fail and hostile files give an error rather than a panic or an
//! oversized allocation.

mod reader;
mod value;
pub mod writer;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::quant::GgmlType;

pub use reader::MAX_METADATA_ARRAY_ITEMS;
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The GGUF version the writer produces.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment used when a file has no `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Why a GGUF file was refused or a lookup failed. Every message is one line and names the key,
/// tensor or byte offset at fault; [`GgufError::InFile`] adds the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening or mapping the file failed.
    Io { path: PathBuf, source: io::Error },
    /// The file does not start with `GGUF`.
    BadMagic { found: Vec<u8> },
    /// The file is a big-endian GGUF (its version reads byte-swapped).
    BigEndian { version: u32 },
    /// A version other than 2 or 3.
    UnsupportedVersion { version: u32 },
    /// The header or metadata is malformed at a byte offset (from the start of the file).
    Malformed { offset: u64, message: String },
    /// A tensor description is invalid or its data does not fit the file.
    BadTensor { name: String, message: String },
    /// A required metadata key is absent.
    MissingKey { key: String },
    /// A metadata key holds a value of the wrong type or range.
    BadValue {
        key: String,
        expected: String,
        found: String,
    },
    /// A required tensor is absent.
    MissingTensor { name: String },
    /// The path is a directory, or a file of a Hugging Face checkpoint folder that was never
    /// converted: the message says which, and how to convert it.
    NotGguf { path: PathBuf, message: String },
    /// The mapped file changed (length or modification time) since it was opened: reading it
    /// could fault (a shrunk file raises SIGBUS) or give other weights.
    Changed { path: PathBuf, message: String },
    /// Any of the above, in the named file.
    InFile {
        path: PathBuf,
        source: Box<GgufError>,
    },
}

impl GgufError {
    /// The error without its [`GgufError::InFile`] wrapping, for matching on the cause.
    pub fn root(&self) -> &GgufError {
        match self {
            GgufError::InFile { source, .. } => source.root(),
            e => e,
        }
    }

    /// Wraps the error with the file it came from.
    pub fn in_file(self, path: &Path) -> GgufError {
        match self {
            e @ (GgufError::Io { .. }
            | GgufError::NotGguf { .. }
            | GgufError::Changed { .. }
            | GgufError::InFile { .. }) => e,
            e => GgufError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }

    fn malformed(offset: usize, message: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            offset: offset as u64,
            message: message.into(),
        }
    }

    fn tensor(name: &str, message: impl Into<String>) -> GgufError {
        GgufError::BadTensor {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            GgufError::BadMagic { found } if found.len() < 4 => {
                write!(f, "not a GGUF file: only {} bytes long", found.len())
            }
            GgufError::BadMagic { found } => {
                write!(
                    f,
                    "not a GGUF file: starts with {found:02x?}, expected \"GGUF\""
                )
            }
            GgufError::BigEndian { version } => write!(
                f,
                "big-endian GGUF (version field reads 0x{version:08x}) is not supported; \
                 convert it to little-endian"
            ),
            GgufError::UnsupportedVersion { version: 1 } => write!(
                f,
                "GGUF version 1 is not supported (only 2 and 3); re-convert the model"
            ),
            GgufError::UnsupportedVersion { version } => {
                write!(f, "unsupported GGUF version {version} (only 2 and 3)")
            }
            GgufError::Malformed { offset, message } => {
                write!(f, "malformed GGUF at byte {offset}: {message}")
            }
            GgufError::BadTensor { name, message } => {
                write!(f, "tensor '{}': {message}", show(name))
            }
            GgufError::MissingKey { key } => write!(f, "missing metadata key '{}'", show(key)),
            GgufError::BadValue {
                key,
                expected,
                found,
            } => {
                write!(
                    f,
                    "metadata key '{}': expected {expected}, found {found}",
                    show(key)
                )
            }
            GgufError::MissingTensor { name } => write!(f, "missing tensor '{}'", show(name)),
            GgufError::NotGguf { path, message } | GgufError::Changed { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
            GgufError::InFile { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<GgufError> for crate::error::Error {
    fn from(e: GgufError) -> Self {
        let kind = match e.root() {
            GgufError::Io { .. } | GgufError::Changed { .. } => crate::error::ErrorKind::Io,
            _ => crate::error::ErrorKind::BadModel,
        };
        crate::error::Error::new(kind, e.to_string())
    }
}

/// One tensor's description from the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, unique in the file.
    pub name: String,
    /// Dimensions in ggml `ne` order: `dims[0]` is the innermost (contiguous) one, so a PyTorch
    /// `[rows, cols]` matrix has `dims == [cols, rows]`. 1 to 4 entries, each >= 1.
    pub dims: Vec<u64>,
    /// Element type.
    pub typ: GgmlType,
    /// Byte offset of the data, relative to the data section ([`Gguf::data_offset`]).
    pub offset: u64,
    /// Byte size of the data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (the product of `dims`; cannot overflow for a parsed tensor).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Number of rows: the product of all dims but the innermost.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Bytes of one row (`dims[0]` elements).
    pub fn row_bytes(&self) -> u64 {
        self.dims
            .first()
            .and_then(|&n| self.typ.row_bytes(n))
            .unwrap_or(0)
    }
}

/// The bytes a [`Gguf`] reads from: a read-only memory map or an owned buffer.
enum Bytes {
    Mmap(Mapped),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => &m.map,
            Bytes::Owned(v) => v,
        }
    }
}

/// A mapped file and what it looked like when it was mapped.
struct Mapped {
    map: memmap2::Mmap,
    /// The open file, kept to `fstat` the mapped inode itself: a file renamed over the path
    /// leaves this mapping intact and is no concern, while a truncation of this inode is.
    file: std::fs::File,
    path: PathBuf,
    modified: Option<SystemTime>,
}

/// A parsed, validated GGUF file. Owns its bytes; tensor data is borrowed from them.
pub struct Gguf {
    bytes: Bytes,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("len", &self.bytes.as_slice().len())
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl Gguf {
    /// Memory-maps and validates the file at `path`. Errors name the path.
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(e) = not_a_file(path) {
            return Err(e);
        }
        let file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            // The path became a directory since the check above.
            return Err(io_err(io::ErrorKind::IsADirectory.into()));
        }
        // SAFETY: the file is mapped read-only and only ever read through `&[u8]`; the map is
        // owned by the returned `Gguf`, so every slice handed out lives no longer than it. The
        // one risk memmap2 cannot rule out is another process truncating or rewriting the file
        // while it is mapped (reads past the new end fault with SIGBUS). Model files must not
        // change under a running process: `check_unchanged` (called before every computation
        // by the session) turns a change made between calls into an error; a truncation during
        // a call remains the accepted cost of zero-copy loading, documented for apps.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let mapped = Mapped {
            map,
            file,
            path: path.to_path_buf(),
            modified: meta.modified().ok(),
        };
        Gguf::from_storage(Bytes::Mmap(mapped)).map_err(|e| match e {
            GgufError::BadMagic { .. } => checkpoint_file(path).unwrap_or(e.in_file(path)),
            e => e.in_file(path),
        })
    }

    /// Checks that the mapped file still has the length and modification time it had when it
    /// was opened (an in-memory image always passes). A file shrunk under its mapping makes
    /// every read past the new end fault with SIGBUS, and one rewritten in place feeds other
    /// weights to a model validated against the old ones, so both are refused here, naming the
    /// file. This is one `fstat`, cheap enough to run before every prefill and token.
    pub fn check_unchanged(&self) -> Result<(), GgufError> {
        let Bytes::Mmap(m) = &self.bytes else {
            return Ok(());
        };
        let now = m.file.metadata().map_err(|source| GgufError::Io {
            path: m.path.clone(),
            source,
        })?;
        let (was, is) = (m.map.len() as u64, now.len());
        if is == was && now.modified().ok() == m.modified {
            return Ok(());
        }
        let what = if is != was {
            format!("{was} bytes when loaded, {is} now")
        } else {
            "modified since it was loaded".to_string()
        };
        Err(GgufError::Changed {
            path: m.path.clone(),
            message: format!(
                "the model file changed or was truncated while in use ({what}); reload the model"
            ),
        })
    }

    /// Validates an in-memory GGUF image.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        Gguf::from_storage(Bytes::Owned(bytes))
    }

    fn from_storage(bytes: Bytes) -> Result<Gguf, GgufError> {
        let p = reader::parse(bytes.as_slice())?;
        Ok(Gguf {
            bytes,
            version: p.version,
            alignment: p.alignment,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            data_offset: p.data_offset,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment in bytes (`general.alignment`, or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata key/value pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The value of a key that must be present.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// A required integer key that fits u32 (any integer type is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_u32()
            .ok_or_else(|| bad_value(key, "an integer fitting u32", v))
    }

    /// A required integer key that fits u64.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| bad_value(key, "a non-negative integer", v))
    }

    /// A required f32 (or f64) key.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| bad_value(key, "a float", v))
    }

    /// A required bool key.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| bad_value(key, "a bool", v))
    }

    /// A required string key.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| bad_value(key, "a string", v))
    }

    /// A required array key.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| bad_value(key, "an array", v))
    }

    /// All tensor descriptions, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The description of the named tensor.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The description of a tensor that must be present.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_string(),
        })
    }

    /// The data bytes of a tensor of this file (`t.size` bytes). Bounds were checked at parse
    /// time; for a `TensorInfo` that did not come from this file and does not fit it, the
    /// result is empty rather than a panic.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let range = || -> Option<std::ops::Range<usize>> {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.size).ok()?)?;
            Some(start..end)
        };
        range()
            .and_then(|r| self.bytes.as_slice().get(r))
            .unwrap_or(&[])
    }

    /// Tells the OS that this process will not read tensor `t`'s bytes again (the model
    /// keeps a repacked copy), so their pages leave the resident set instead of doubling it.
    /// Only whole pages inside the tensor are released; owned buffers and any failure are left
    /// alone (it is a hint: reading the bytes later still works, from the file).
    pub fn release(&self, t: &TensorInfo) {
        const PAGE: usize = 4096;
        let Bytes::Mmap(Mapped { map, .. }) = &self.bytes else {
            return;
        };
        let range = || -> Option<(usize, usize)> {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.size).ok()?)?;
            let (s, e) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
            // A tensor smaller than a page may have no whole page inside it.
            (e > s && e <= map.len()).then(|| (s, e - s))
        };
        if let Some((offset, len)) = range() {
            // SAFETY: the map is a private read-only file mapping; MADV_DONTNEED only drops its
            // resident pages, which a later read faults back in from the file unchanged, so no
            // reference into the map sees different bytes. The range lies inside the map.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }

    /// The data bytes of the named tensor.
    pub fn tensor_data(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_bytes(t))
    }

    /// Absolute byte offset of the data section (may equal or, for a file without tensors,
    /// exceed the file length when the final padding was not written).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The path the file was opened from (`None` for an in-memory image).
    pub fn path(&self) -> Option<&Path> {
        match &self.bytes {
            Bytes::Mmap(m) => Some(&m.path),
            _ => None,
        }
    }

    /// The mapped file's metadata now (`fstat` of the open file, so of the mapped inode even if
    /// the path was renamed over); `None` for an in-memory image or when `fstat` fails.
    pub fn file_metadata(&self) -> Option<std::fs::Metadata> {
        match &self.bytes {
            Bytes::Mmap(m) => m.file.metadata().ok(),
            _ => None,
        }
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// The command that converts the Hugging Face checkpoint folder `dir`.
fn convert_hint(dir: &Path) -> String {
    format!(
        "convert it first with `owlet-convert {} -o model.gguf --type q4_k_m`",
        dir.display()
    )
}

/// The error for a path that is a directory (a checkpoint folder or not), if it is one.
fn not_a_file(path: &Path) -> Option<GgufError> {
    if !path.is_dir() {
        return None;
    }
    let message = if path.join("config.json").is_file() {
        format!(
            "is a directory holding a Hugging Face checkpoint (config.json), not a GGUF model; {}",
            convert_hint(path)
        )
    } else {
        "is a directory, not a GGUF model file".to_string()
    };
    Some(GgufError::NotGguf {
        path: path.to_path_buf(),
        message,
    })
}

/// The error for a non-GGUF file that sits in a Hugging Face checkpoint folder (`config.json`,
/// a `.bin` or `.safetensors` shard, `tokenizer.model`, ...), if it is one.
fn checkpoint_file(path: &Path) -> Option<GgufError> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return None,
    };
    dir.join("config.json")
        .is_file()
        .then(|| GgufError::NotGguf {
            path: path.to_path_buf(),
            message: format!(
                "is part of a Hugging Face checkpoint, not a GGUF file; {}",
                convert_hint(dir)
            ),
        })
}

fn bad_value(key: &str, expected: &str, found: &Value) -> GgufError {
    GgufError::BadValue {
        key: key.to_string(),
        expected: expected.to_string(),
        found: format!("{} {}", found.type_name(), show(&found.to_string())),
    }
}

/// A key, tensor name or value from a file, made fit for a one-line message: control
/// characters escaped, cut after 96 characters.
pub(crate) fn show(s: &str) -> String {
    const MAX: usize = 96;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
