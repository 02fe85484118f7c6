//! Writer for PyTorch `torch.save` zip checkpoints (`pytorch_model*.bin`), so that synthetic
//! checkpoints can take the same path through the converter as the real release.
//!
//! A file is a zip archive (every record stored uncompressed, storages 64-byte aligned) with
//! records under one folder `archive/`:
//! - `archive/data.pkl`: a protocol-2 pickle of an `OrderedDict` from tensor name to
//!   `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False,
//!   OrderedDict())`, where `storage` is a persistent id
//!   `('storage', torch.HalfStorage, key, 'cpu', numel)` that `torch.load` resolves to the
//!   record `archive/data/<key>`;
//! - `archive/byteorder`: `little`;
//! - `archive/data/<key>`: the raw little-endian elements of one storage (here one per tensor,
//!   key `0`, `1`, ...);
//! - `archive/version`: `3`.
//!
//! The pickle uses only opcodes Python's own protocol-2 pickler emits for these objects
//! (`PROTO`, `GLOBAL`, `EMPTY_TUPLE`, `REDUCE`, `MARK`, `TUPLE*`, `BINPERSID`, `BININT*`,
//! `LONG1`, `BINUNICODE`, `NEWFALSE`, `SETITEMS`, `STOP`), without memo entries (a pickle
//! needs none to be valid), so `torch.load(..., weights_only=True)` and
//! [`crate::pickle`] both read it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::checkpoint::DType;

/// The folder every record of the archive lives in.
pub const PREFIX: &str = "archive";

/// One state-dict entry: its name, element type and PyTorch shape (outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct TorchEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TorchEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the tensor's storage.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// PyTorch's storage class (in module `torch`) for a dtype.
fn storage_class(d: DType) -> &'static str {
    match d {
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
    }
}

/// Pickle opcodes used here (see Python's `pickletools`).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const BINPERSID: u8 = b'Q';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINUNICODE: u8 = b'X';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
}

/// Builds protocol-2 pickle bytes.
struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// An int with the smallest opcode Python's pickler picks for it.
    fn int(&mut self, v: usize) {
        if v <= 0xff {
            self.out.extend_from_slice(&[op::BININT1, v as u8]);
        } else if v <= 0xffff {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v < 1 << 31 {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, as short as possible while the sign bit
            // of the top byte stays clear (the value is positive).
            let mut bytes = (v as u64).to_le_bytes().to_vec();
            while bytes.len() > 1
                && bytes[bytes.len() - 1] == 0
                && bytes[bytes.len() - 2] & 0x80 == 0
            {
                bytes.pop();
            }
            self.out.extend_from_slice(&[op::LONG1, bytes.len() as u8]);
            self.out.extend_from_slice(&bytes);
        }
    }

    /// A tuple of ints (`size` / `stride`).
    fn int_tuple(&mut self, v: &[usize]) {
        match v.len() {
            0 => self.out.push(op::EMPTY_TUPLE),
            1..=3 => {
                for &x in v {
                    self.int(x);
                }
                self.out
                    .push([op::TUPLE1, op::TUPLE2, op::TUPLE3][v.len() - 1]);
            }
            _ => {
                self.out.push(op::MARK);
                for &x in v {
                    self.int(x);
                }
                self.out.push(op::TUPLE);
            }
        }
    }

    /// `collections.OrderedDict()`.
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(op::EMPTY_TUPLE);
        self.out.push(op::REDUCE);
    }

    /// `_rebuild_tensor_v2(storage <key>, 0, shape, C-order strides, False, OrderedDict())`.
    fn tensor(&mut self, e: &TorchEntry, key: &str) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(op::MARK);
        // The persistent id torch.save gives a storage.
        self.out.push(op::MARK);
        self.str("storage");
        self.global("torch", storage_class(e.dtype));
        self.str(key);
        self.str("cpu");
        self.int(e.numel());
        self.out.push(op::TUPLE);
        self.out.push(op::BINPERSID);
        self.int(0); // storage_offset
        self.int_tuple(&e.shape);
        self.int_tuple(&c_strides(&e.shape));
        self.out.push(op::NEWFALSE); // requires_grad
        self.empty_ordered_dict(); // backward hooks
        self.out.push(op::TUPLE);
        self.out.push(op::REDUCE);
    }
}

/// Row-major strides in elements: `stride[i] = shape[i+1] · … · shape[n-1]`.
pub fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The `data.pkl` of a state dict whose entry `i` lives in storage record `data/<i>`.
pub fn pickle_state_dict(entries: &[TorchEntry]) -> Vec<u8> {
    let mut p = Pickler {
        out: vec![op::PROTO, 2],
    };
    p.empty_ordered_dict();
    // Python's pickler sets dict items in batches of 1000 (MARK k v k v ... SETITEMS).
    for (batch_no, batch) in entries.chunks(1000).enumerate() {
        p.out.push(op::MARK);
        for (j, e) in batch.iter().enumerate() {
            p.str(&e.name);
            p.tensor(e, &(batch_no * 1000 + j).to_string());
        }
        p.out.push(op::SETITEMS);
    }
    p.out.push(op::STOP);
    p.out
}

/// Writes `entries` as a `torch.save` zip at `path`. `data(i)` returns entry `i`'s bytes
/// (little-endian, C order, exactly `entries[i].nbytes()` long); it is called once per entry,
/// in order, so only one tensor is in memory at a time.
pub fn write(
    path: &Path,
    entries: &[TorchEntry],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let shown = path.display();
    let file = File::create(path).with_context(|| format!("cannot create {shown}"))?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(8 << 20, file));
    // Uncompressed records; storages aligned to 64 bytes as torch.save does, so that readers
    // can map them. Large-file (zip64) headers only where a record needs them.
    let opts = |len: usize| {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(len as u64 >= u32::MAX as u64)
            .with_alignment(64)
    };
    let record = |zip: &mut ZipWriter<_>, name: String, bytes: &[u8]| -> Result<()> {
        zip.start_file(name.as_str(), opts(bytes.len()))
            .with_context(|| format!("{shown}: starting {name}"))?;
        zip.write_all(bytes)
            .with_context(|| format!("{shown}: writing {name}"))?;
        Ok(())
    };
    record(
        &mut zip,
        format!("{PREFIX}/data.pkl"),
        &pickle_state_dict(entries),
    )?;
    record(&mut zip, format!("{PREFIX}/byteorder"), b"little")?;
    for (i, e) in entries.iter().enumerate() {
        let bytes = data(i)?;
        if bytes.len() != e.nbytes() {
            bail!(
                "tensor {}: {} bytes given, {:?} {} needs {}",
                e.name,
                bytes.len(),
                e.shape,
                e.dtype.name(),
                e.nbytes()
            );
        }
        record(&mut zip, format!("{PREFIX}/data/{i}"), &bytes)?;
    }
    record(&mut zip, format!("{PREFIX}/version"), b"3\n")?;
    let buf = zip.finish().with_context(|| format!("finishing {shown}"))?;
    let file = buf
        .into_inner()
        .map_err(|e| anyhow::anyhow!("flushing {shown}: {}", e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    #[test]
    fn ints_use_pythons_opcodes() {
        let enc = |v: usize| {
            let mut p = Pickler { out: Vec::new() };
            p.int(v);
            p.out
        };
        assert_eq!(enc(7), vec![b'K', 7]);
        assert_eq!(enc(32000), vec![b'M', 0x00, 0x7d]);
        assert_eq!(enc(131_072_000), vec![b'J', 0x00, 0x00, 0xd0, 0x07]);
        // 2^31 needs five bytes so that the top bit stays a clear sign bit.
        assert_eq!(enc(1 << 31), vec![0x8a, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(enc(1 << 32), vec![0x8a, 5, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(c_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(c_strides(&[5]), vec![1]);
        assert_eq!(c_strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn written_file_reads_back_through_the_checkpoint_reader() {
        let dir = std::env::temp_dir().join(format!("owlet-torch-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let entries = vec![
            TorchEntry {
                name: "a.weight".into(),
                dtype: DType::F16,
                shape: vec![3, 5],
            },
            TorchEntry {
                name: "b".into(),
                dtype: DType::F32,
                shape: vec![1, 1, 4],
            },
            TorchEntry {
                name: "c.bias".into(),
                dtype: DType::BF16,
                shape: vec![2, 2, 2, 2, 3],
            },
        ];
        let bytes_of = |i: usize| -> Vec<u8> {
            (0..entries[i].nbytes())
                .map(|b| (b * 7 + i) as u8)
                .collect()
        };
        write(&dir.join("pytorch_model.bin"), &entries, |i| {
            Ok(bytes_of(i))
        })
        .unwrap();
        let ck = Checkpoint::open(&dir).unwrap();
        assert_eq!(ck.tensors().len(), 3);
        for (i, e) in entries.iter().enumerate() {
            let t = ck.get(&e.name).unwrap();
            assert_eq!((t.dtype, &t.shape), (e.dtype, &e.shape));
            assert_eq!(ck.read_raw(t).unwrap(), bytes_of(i));
        }
        // A wrong byte count is refused, naming the tensor.
        let e = write(&dir.join("bad.bin"), &entries, |_| Ok(vec![0u8; 3])).unwrap_err();
        assert!(format!("{e:#}").contains("a.weight"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
