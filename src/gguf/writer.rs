//! Streaming GGUF v3 writer: the header (all metadata and tensor descriptions) is written up
//! front, then each tensor's bytes in declared order, so a converter holds one tensor at a time.

use std::collections::HashSet;
use std::io::{self, Write};

use super::{Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS};
use crate::quant::GgmlType;

/// Writes a GGUF v3 file to `W` in one pass.
///
/// ```no_run
/// # use owlet::gguf::{GgufWriter, Value};
/// # use owlet::quant::GgmlType;
/// # fn main() -> std::io::Result<()> {
/// let file = std::io::BufWriter::new(std::fs::File::create("out.gguf")?);
/// let meta = vec![("general.architecture".to_string(), Value::from("llama"))];
/// let tensors = vec![("w".to_string(), vec![4u64, 2], GgmlType::F32)];
/// let mut w = GgufWriter::new(file, &meta, &tensors, 32)?;
/// w.write_tensor("w", &[0u8; 32])?;
/// w.finish()?;
/// # Ok(()) }
/// ```
pub struct GgufWriter<W: Write> {
    w: W,
    alignment: u64,
    /// Declared tensors: name and byte size, in file order.
    tensors: Vec<(String, u64)>,
    /// Index of the next tensor to write.
    next: usize,
    /// Bytes written so far.
    pos: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<W: Write> GgufWriter<W> {
    /// Validates the description and writes the header and the padding before the data.
    ///
    /// `tensors` are `(name, ne, type)` with `ne` in ggml order (innermost first). If
    /// `alignment` is not the default 32 and `metadata` lacks `general.alignment`, that key is
    /// added; if present it must be a u32 equal to `alignment`.
    pub fn new(
        mut w: W,
        metadata: &[(String, Value)],
        tensors: &[(String, Vec<u64>, GgmlType)],
        alignment: u64,
    ) -> io::Result<Self> {
        if !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "alignment {alignment} is not a u32 power of two"
            )));
        }
        let extra_alignment_key = check_metadata(metadata, alignment)?;

        let mut declared = Vec::with_capacity(tensors.len());
        let mut names = HashSet::new();
        for (name, dims, typ) in tensors {
            if !names.insert(name.as_str()) {
                return Err(invalid(format!("duplicate tensor name '{name}'")));
            }
            declared.push((name.clone(), tensor_size(name, dims, *typ)?));
        }

        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        let n_kv = metadata.len() + usize::from(extra_alignment_key);
        header.extend_from_slice(&(n_kv as u64).to_le_bytes());
        for (key, value) in metadata {
            put_kv(&mut header, key, value);
        }
        if extra_alignment_key {
            put_kv(&mut header, ALIGNMENT_KEY, &Value::U32(alignment as u32));
        }
        let mut offset = 0u64;
        for ((name, dims, typ), (_, size)) in tensors.iter().zip(&declared) {
            put_str(&mut header, name);
            header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&typ.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = offset
                .checked_add(*size)
                .and_then(|o| o.checked_next_multiple_of(alignment))
                .ok_or_else(|| invalid("total tensor data size overflows".to_string()))?;
        }
        w.write_all(&header)?;
        let mut me = GgufWriter {
            w,
            alignment,
            tensors: declared,
            next: 0,
            pos: header.len() as u64,
        };
        me.pad()?;
        Ok(me)
    }

    /// Writes the next tensor's data, which must be `name` (tensors come in declared order)
    /// with exactly its declared byte size, then pads to the alignment.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let Some((expected, size)) = self.tensors.get(self.next) else {
            return Err(invalid(format!(
                "tensor '{name}' written after all {} declared tensors",
                self.tensors.len()
            )));
        };
        if expected != name {
            return Err(invalid(format!(
                "expected tensor '{expected}' next, got '{name}'"
            )));
        }
        if bytes.len() as u64 != *size {
            return Err(invalid(format!(
                "tensor '{name}': {} bytes given, {size} declared",
                bytes.len()
            )));
        }
        self.w.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        self.next += 1;
        self.pad()
    }

    /// Checks that every declared tensor was written, flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some((name, _)) = self.tensors.get(self.next) {
            return Err(invalid(format!(
                "tensor '{name}' was declared but not written ({} of {} written)",
                self.next,
                self.tensors.len()
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }

    /// Zero bytes up to the next multiple of the alignment.
    fn pad(&mut self) -> io::Result<()> {
        let n = self.pos.next_multiple_of(self.alignment) - self.pos;
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.w.write_all(&ZEROS[..k])?;
            left -= k as u64;
        }
        self.pos += n;
        Ok(())
    }
}

/// Refuses duplicate keys, ill-typed arrays and a `general.alignment` that disagrees with
/// `alignment`. Returns whether `general.alignment` must be added.
fn check_metadata(metadata: &[(String, Value)], alignment: u64) -> io::Result<bool> {
    let mut keys = HashSet::new();
    let mut has_alignment = false;
    for (key, value) in metadata {
        if !keys.insert(key.as_str()) {
            return Err(invalid(format!("duplicate metadata key '{key}'")));
        }
        check_value(key, value, 1)?;
        if key == ALIGNMENT_KEY {
            if *value != Value::U32(alignment as u32) {
                return Err(invalid(format!(
                    "'{ALIGNMENT_KEY}' is {} {value}, but the writer's alignment is {alignment}",
                    value.type_name()
                )));
            }
            has_alignment = true;
        }
    }
    Ok(!has_alignment && alignment != DEFAULT_ALIGNMENT)
}

/// Array items must all have the declared element type; arrays nest at most two deep (what
/// the reader accepts).
fn check_value(key: &str, value: &Value, depth: u32) -> io::Result<()> {
    if let Value::Array(a) = value {
        if depth > 2 {
            return Err(invalid(format!(
                "key '{key}': arrays nested more than 2 deep"
            )));
        }
        for item in &a.items {
            if item.value_type() != a.elem {
                return Err(invalid(format!(
                    "key '{key}': array of {} holds a {}",
                    a.elem,
                    item.type_name()
                )));
            }
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

/// Byte size of a tensor, with the same rules as the reader.
fn tensor_size(name: &str, dims: &[u64], typ: GgmlType) -> io::Result<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(invalid(format!(
            "tensor '{name}': {} dims, not 1..={MAX_DIMS}",
            dims.len()
        )));
    }
    if dims.contains(&0) {
        return Err(invalid(format!(
            "tensor '{name}': zero dimension in {dims:?}"
        )));
    }
    let row = typ.row_bytes(dims[0]).ok_or_else(|| {
        invalid(format!(
            "tensor '{name}': row length {} is not a multiple of the {typ} block size {}",
            dims[0],
            typ.block_size()
        ))
    })?;
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|_| dims[1..].iter().try_fold(row, |a, &d| a.checked_mul(d)))
        .ok_or_else(|| invalid(format!("tensor '{name}': dims {dims:?} overflow")))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_kv(buf: &mut Vec<u8>, key: &str, value: &Value) {
    put_str(buf, key);
    buf.extend_from_slice(&value.value_type().id().to_le_bytes());
    put_value(buf, value);
}

/// A value's payload (without its type id, which arrays give once for all items).
fn put_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => buf.push(*v),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::Str(s) => put_str(buf, s),
        Value::Array(a) => {
            buf.extend_from_slice(&a.elem.id().to_le_bytes());
            buf.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for item in &a.items {
                put_value(buf, item);
            }
        }
    }
}
