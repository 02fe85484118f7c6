//! Reader for `torch.save` zip files (`pytorch_model*.bin`).
//!
//! Layout written by PyTorch >= 1.6: every record sits under one top-level
//! folder `<prefix>/` (the file stem): `<prefix>/data.pkl` (the pickled state
//! dict, see [`crate::pickle`]), `<prefix>/data/<key>` (one raw little-endian
//! storage per key, normally stored uncompressed and 64-byte aligned),
//! `<prefix>/version` and, in newer versions, `<prefix>/byteorder`.
//!
//! [`TorchZip::open`] reads the central directory and the pickle only; the
//! storages are read one tensor at a time by [`TorchZip::read_tensor`].

use crate::pickle::{self, TensorRef};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use zip::CompressionMethod;

/// Largest `data.pkl` accepted (a 7B state dict pickle is about 100 KB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// How a storage record is encoded in the zip.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    Stored,
    Deflated,
}

/// Location of one zip record's data in the file.
#[derive(Clone, Debug)]
struct Record {
    /// Absolute file offset of the (possibly compressed) data.
    data_start: u64,
    /// Uncompressed size in bytes, as declared by the central directory.
    size: u64,
    encoding: Encoding,
}

/// An opened `torch.save` zip: its tensor list and where each storage lives.
#[derive(Debug)]
pub struct TorchZip {
    path: PathBuf,
    prefix: String,
    tensors: Vec<(String, TensorRef)>,
    /// Storage key -> record of `<prefix>/data/<key>`.
    storages: HashMap<String, Record>,
}

impl TorchZip {
    /// Opens `path`, parses `data.pkl`, and validates every tensor against
    /// its storage record (present, C-contiguous, long enough). Storage bytes
    /// are not read.
    pub fn open(path: &Path) -> Result<TorchZip> {
        let shown = path.display().to_string();
        let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("cannot stat {shown}"))?
            .len();
        let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            anyhow!("{shown} is not a readable zip (truncated or not a torch.save file?): {e}")
        })?;

        let mut records = HashMap::new();
        for i in 0..archive.len() {
            let entry = archive
                .by_index_raw(i)
                .map_err(|e| anyhow!("bad zip entry #{i} in {shown} (truncated?): {e}"))?;
            let name = entry.name().to_owned();
            // Nothing is ever extracted to disk, but a name that would escape a directory has
            // no place in a torch.save archive.
            if name.starts_with('/') || name.contains('\\') || name.split('/').any(|c| c == "..") {
                bail!("unsafe zip entry name {name:?} in {shown} (absolute or with ../)");
            }
            let record = entry_record(&entry, file_len)
                .with_context(|| format!("zip entry {name} in {shown}"))?;
            records.insert(name, record);
        }

        let prefix = find_prefix(records.keys(), &shown)?;
        let byteorder = format!("{prefix}/byteorder");
        if records.contains_key(&byteorder) {
            check_byteorder(&mut archive, &byteorder, &shown)?;
        }

        let pkl_name = format!("{prefix}/data.pkl");
        let pkl = read_small_record(&mut archive, &pkl_name, MAX_PICKLE_BYTES, &shown)?;
        let tensors = pickle::parse_state_dict(&pkl, &shown)?;

        let data_dir = format!("{prefix}/data/");
        let storages: HashMap<String, Record> = records
            .into_iter()
            .filter_map(|(name, rec)| Some((name.strip_prefix(&data_dir)?.to_owned(), rec)))
            .collect();
        let zip = TorchZip {
            path: path.to_owned(),
            prefix,
            tensors,
            storages,
        };
        for (name, t) in &zip.tensors {
            zip.byte_range(name, t)?;
        }
        Ok(zip)
    }

    /// The file this archive was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in pickle order.
    pub fn tensors(&self) -> &[(String, TensorRef)] {
        &self.tensors
    }

    /// Checks `t` against its storage record and returns the record with the
    /// tensor's byte range `[start, start + len)` inside the uncompressed
    /// storage.
    fn byte_range(&self, name: &str, t: &TensorRef) -> Result<(&Record, u64, usize)> {
        let shown = self.path.display();
        let key = &t.storage_key;
        let rec = self.storages.get(key).ok_or_else(|| {
            anyhow!(
                "storage {}/data/{key} of tensor {name} is missing from {shown}",
                self.prefix
            )
        })?;
        if !t.is_c_contiguous() {
            bail!(
                "tensor {name} in {shown} is not C-contiguous (size {:?}, stride {:?})",
                t.shape,
                t.stride
            );
        }
        let elem = t.dtype.elem_size() as u64;
        let numel = t
            .numel()
            .ok_or_else(|| anyhow!("tensor {name} in {shown}: element count overflows"))?;
        let start = (t.storage_offset as u64).checked_mul(elem);
        let len = (numel as u64).checked_mul(elem);
        let end = start.zip(len).and_then(|(s, l)| s.checked_add(l));
        match (start, len, end) {
            (Some(start), Some(len), Some(end)) if end <= rec.size => {
                let len = usize::try_from(len)
                    .map_err(|_| anyhow!("tensor {name} in {shown} is too large"))?;
                Ok((rec, start, len))
            }
            _ => bail!(
                "storage data/{key} of tensor {name} in {shown} is too short: {} bytes, \
                 tensor needs elements {}..{} of {} bytes each (truncated shard?)",
                rec.size,
                t.storage_offset,
                t.storage_offset.saturating_add(numel),
                elem
            ),
        }
    }

    /// Reads the little-endian bytes of tensor `t` (named `name` in errors):
    /// `numel * elem_size` bytes starting at element `storage_offset` of its
    /// storage. Stored records are read with one seek; deflated ones are
    /// decompressed up to the end of the tensor.
    pub fn read_tensor(&self, name: &str, t: &TensorRef) -> Result<Vec<u8>> {
        let shown = self.path.display();
        let (rec, start, len) = self.byte_range(name, t)?;
        let what = || format!("reading tensor {name} from {shown} (truncated shard?)");
        match rec.encoding {
            Encoding::Stored => {
                let mut file = File::open(&self.path).with_context(what)?;
                file.seek(SeekFrom::Start(rec.data_start + start))
                    .with_context(what)?;
                // `len` was checked at open against the record, which was
                // checked against the file length, so this allocation is
                // bounded by the file size.
                let mut buf = vec![0u8; len];
                file.read_exact(&mut buf).with_context(what)?;
                Ok(buf)
            }
            Encoding::Deflated => {
                let file = File::open(&self.path).with_context(what)?;
                let mut archive = zip::ZipArchive::new(BufReader::new(file))
                    .map_err(|e| anyhow!("{}: {e}", what()))?;
                let entry_name = format!("{}/data/{}", self.prefix, t.storage_key);
                let mut entry = archive
                    .by_name(&entry_name)
                    .map_err(|e| anyhow!("{}: {e}", what()))?;
                std::io::copy(&mut (&mut entry).take(start), &mut std::io::sink())
                    .with_context(what)?;
                // Grow with the data actually decompressed: a lying size
                // field cannot force a huge allocation.
                let mut buf = Vec::new();
                (&mut entry)
                    .take(len as u64)
                    .read_to_end(&mut buf)
                    .with_context(what)?;
                if buf.len() != len {
                    bail!(
                        "{}: storage ended after {} of {len} bytes",
                        what(),
                        buf.len()
                    );
                }
                Ok(buf)
            }
        }
    }
}

/// Validates one central-directory entry and records where its data lives.
fn entry_record<R: Read>(entry: &zip::read::ZipFile<'_, R>, file_len: u64) -> Result<Record> {
    if entry.encrypted() {
        bail!("encrypted entries are not supported");
    }
    let encoding = match entry.compression() {
        CompressionMethod::Stored => {
            if entry.compressed_size() != entry.size() {
                bail!(
                    "stored entry has compressed size {} != size {}",
                    entry.compressed_size(),
                    entry.size()
                );
            }
            Encoding::Stored
        }
        CompressionMethod::Deflated => Encoding::Deflated,
        other => bail!("unsupported compression {other:?} (only stored or deflated)"),
    };
    let end = entry.data_start().checked_add(entry.compressed_size());
    if end.is_none_or(|end| end > file_len) {
        bail!(
            "data ends past the end of the file ({} bytes; truncated?)",
            file_len
        );
    }
    Ok(Record {
        data_start: entry.data_start(),
        size: entry.size(),
        encoding,
    })
}

/// Finds the single `<prefix>/data.pkl` record and returns `<prefix>`.
fn find_prefix<'a>(names: impl Iterator<Item = &'a String>, shown: &str) -> Result<String> {
    let mut prefixes: Vec<&str> = names
        .filter_map(|n| n.strip_suffix("/data.pkl"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .collect();
    prefixes.sort_unstable();
    match prefixes.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("{shown} has no <prefix>/data.pkl record (not a torch.save zip)"),
        many => bail!(
            "{shown} has {} data.pkl records ({}); expected one",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Reads a whole record of at most `cap` bytes into memory.
fn read_small_record<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    cap: u64,
    shown: &str,
) -> Result<Vec<u8>> {
    let entry = archive
        .by_name(name)
        .map_err(|e| anyhow!("cannot read {name} in {shown}: {e}"))?;
    if entry.size() > cap {
        bail!("{name} in {shown} is {} bytes (limit {cap})", entry.size());
    }
    let mut buf = Vec::new();
    entry
        .take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow!("cannot read {name} in {shown} (truncated?): {e}"))?;
    if buf.len() as u64 > cap {
        bail!("{name} in {shown} exceeds {cap} bytes");
    }
    Ok(buf)
}

/// Refuses big-endian checkpoints: storages are copied byte for byte.
fn check_byteorder<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    shown: &str,
) -> Result<()> {
    let text = read_small_record(archive, name, 16, shown)?;
    match text.trim_ascii() {
        b"little" => Ok(()),
        b"big" => bail!(
            "{shown} is a big-endian checkpoint ({name} = big); only little-endian is supported"
        ),
        other => bail!(
            "{name} in {shown} says {:?}; expected little",
            String::from_utf8_lossy(other)
        ),
    }
}
