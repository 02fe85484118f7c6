//! Reader for `.safetensors` files.
//!
//! Format: an 8-byte little-endian header length `n`, then `n` bytes of JSON
//! `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
//! {...}}`, then the data section. Offsets are relative to the start of the
//! data section (byte `8 + n`). Only the header is read at open; tensors are
//! read one at a time with a seek.

use crate::checkpoint::DType;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Largest JSON header accepted (the 7B model's header is about 40 KB).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug, PartialEq)]
pub struct SafeTensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape in PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Offset of the first byte relative to the data section.
    pub begin: u64,
    /// Length in bytes (`numel * elem_size`).
    pub len: usize,
}

/// An opened safetensors file: validated header, data not yet read.
#[derive(Debug)]
pub struct SafeTensorsFile {
    path: PathBuf,
    /// Absolute file offset of the data section.
    data_start: u64,
    /// Tensors sorted by data offset (file order).
    tensors: Vec<SafeTensorInfo>,
}

impl SafeTensorsFile {
    /// Opens `path` and validates its header: length within the file and
    /// under [`MAX_HEADER_BYTES`], JSON object, supported dtypes, sizes that
    /// match shapes, offsets inside the data section and not overlapping.
    pub fn open(path: &Path) -> Result<SafeTensorsFile> {
        let shown = path.display().to_string();
        let mut file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("cannot stat {shown}"))?
            .len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .with_context(|| format!("{shown} is too short for a safetensors header"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES {
            bail!("{shown}: safetensors header length {header_len} exceeds the limit {MAX_HEADER_BYTES}");
        }
        if header_len > file_len.saturating_sub(8) {
            bail!(
                "{shown}: safetensors header length {header_len} exceeds the file size {file_len} (truncated?)"
            );
        }
        // Bounded by both the cap and the file size checked above.
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("cannot read the header of {shown}"))?;
        let data_start = 8 + header_len;
        let tensors = parse_header(&header, file_len - data_start, &shown)?;
        Ok(SafeTensorsFile {
            path: path.to_owned(),
            data_start,
            tensors,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in data-offset order.
    pub fn tensors(&self) -> &[SafeTensorInfo] {
        &self.tensors
    }

    /// Reads the bytes of one tensor (little-endian, dtype `info.dtype`).
    pub fn read(&self, info: &SafeTensorInfo) -> Result<Vec<u8>> {
        let what = || {
            format!(
                "reading tensor {} from {} (truncated file?)",
                info.name,
                self.path.display()
            )
        };
        let mut file = File::open(&self.path).with_context(what)?;
        let pos = self
            .data_start
            .checked_add(info.begin)
            .ok_or_else(|| anyhow!("{}: offset overflows", what()))?;
        file.seek(SeekFrom::Start(pos)).with_context(what)?;
        // `len` was checked at open against the data section length.
        let mut buf = vec![0u8; info.len];
        file.read_exact(&mut buf).with_context(what)?;
        Ok(buf)
    }
}

/// Parses and validates the JSON header; `data_len` is the size of the data
/// section. Returns the tensors sorted by offset.
fn parse_header(header: &[u8], data_len: u64, shown: &str) -> Result<Vec<SafeTensorInfo>> {
    let text = std::str::from_utf8(header)
        .map_err(|e| anyhow!("{shown}: safetensors header is not UTF-8: {e}"))?;
    let json: Value = serde_json::from_str(text)
        .map_err(|e| anyhow!("{shown}: safetensors header is not valid JSON: {e}"))?;
    let Value::Object(map) = json else {
        bail!("{shown}: safetensors header is not a JSON object");
    };
    let mut tensors = Vec::with_capacity(map.len());
    for (name, entry) in &map {
        if name == "__metadata__" {
            let all_strings = entry
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !all_strings {
                bail!("{shown}: __metadata__ is not an object of strings");
            }
            continue;
        }
        tensors.push(parse_entry(name, entry, data_len, shown)?);
    }
    tensors.sort_by_key(|t| (t.begin, t.len));
    // As in the reference implementation, the tensors must tile the data section exactly: no
    // overlaps, no holes, nothing after the last one. Holes and trailing bytes could hide a
    // second payload (polyglot files); a tensor name given twice in the JSON (serde keeps the
    // last) also shows up here as a hole.
    let mut prev: Option<&SafeTensorInfo> = None;
    let mut covered = 0u64;
    for t in &tensors {
        if t.begin < covered {
            let p = prev.map_or(("?", 0), |p| (p.name.as_str(), p.begin));
            bail!(
                "{shown}: tensors {} [{}, {covered}) and {} [{}, {}) overlap",
                p.0,
                p.1,
                t.name,
                t.begin,
                t.begin + t.len as u64
            );
        }
        if t.begin > covered {
            bail!(
                "{shown}: no tensor covers bytes [{covered}, {}) of the data section (holes are \
                 not allowed; a tensor name given twice also leaves one)",
                t.begin
            );
        }
        if t.len > 0 {
            prev = Some(t);
            covered = t.begin + t.len as u64;
        }
    }
    if covered != data_len {
        bail!(
            "{shown}: bytes [{covered}, {data_len}) after the last tensor are not part of any tensor"
        );
    }
    Ok(tensors)
}

/// Validates one `{"dtype", "shape", "data_offsets"}` entry.
fn parse_entry(name: &str, entry: &Value, data_len: u64, shown: &str) -> Result<SafeTensorInfo> {
    let ctx = || format!("tensor {name} in {shown}");
    let dtype_str = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{}: missing or non-string dtype", ctx()))?;
    let dtype = match dtype_str {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        other => bail!(
            "{}: unsupported dtype {other:?} (only F32, F16, BF16)",
            ctx()
        ),
    };
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: missing shape", ctx()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| anyhow!("{}: shape must be non-negative integers", ctx()))?;
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: missing data_offsets", ctx()))?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => match (b.as_u64(), e.as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => bail!("{}: data_offsets must be non-negative integers", ctx()),
        },
        _ => bail!("{}: data_offsets must be [begin, end]", ctx()),
    };
    if begin > end || end > data_len {
        bail!(
            "{}: data_offsets [{begin}, {end}] outside the data section of {data_len} bytes",
            ctx()
        );
    }
    let nbytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| anyhow!("{}: shape {shape:?} overflows", ctx()))?;
    if end - begin != nbytes {
        bail!(
            "{}: data_offsets [{begin}, {end}] span {} bytes but shape {shape:?} of {dtype_str} needs {nbytes}",
            ctx(),
            end - begin
        );
    }
    Ok(SafeTensorInfo {
        name: name.to_owned(),
        dtype,
        shape,
        begin,
        // nbytes <= data_len <= file size, so it fits in usize on 64-bit and
        // is checked on 32-bit.
        len: usize::try_from(nbytes).map_err(|_| anyhow!("{}: too large", ctx()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_validation() {
        let ok = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[],"data_offsets":[12,16]}}"#;
        let t = parse_header(ok, 16, "f").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "a");
        assert_eq!(t[1].shape, Vec::<usize>::new());
        assert_eq!(t[1].len, 4);

        let cases: [(&[u8], &str); 6] = [
            (br#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, "unsupported dtype"),
            (br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, "needs 12"),
            (br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}"#, "outside"),
            (
                br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                "overlap",
            ),
            (
                br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
                "overflows",
            ),
            (b"[1,2]", "not a JSON object"),
        ];
        for (header, want) in cases {
            let e = parse_header(header, 16, "f").unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
