//! Parsing and validation of a GGUF header. Every read is bounds-checked, every count is capped
//! by the bytes left before anything is allocated, and every size computation is
//! overflow-checked, so that arbitrary bytes give an error, never a panic or a huge allocation.

use std::collections::HashMap;

use super::{
    Array, GgufError, TensorInfo, Value, ValueType, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    MAX_DIMS,
};
use crate::quant::GgmlType;

/// How deeply arrays may nest: an array of arrays of scalars is accepted (depth 2), deeper
/// nesting is refused. Neither llama.cpp nor owlet writes nested arrays; the cap keeps
/// recursion bounded on hostile input.
const MAX_ARRAY_DEPTH: u32 = 2;

/// Fewest bytes of one key/value pair: key length (8) + value type (4) + a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes of one tensor description: name length (8) + n_dims (4) + one dim (8) +
/// type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// The parsed header, with positions only (no borrows), so that [`super::Gguf`] can own the
/// bytes alongside it.
pub(super) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub data_offset: u64,
}

/// Key/value pairs in file order.
type Metadata = Vec<(String, Value)>;

/// A bounds-checked little-endian reader over the file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes; `what` names the field for the error message.
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::malformed(
                self.pos,
                format!(
                    "truncated {what}: needs {n} bytes, only {} left in the file",
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A `u64` length followed by that many UTF-8 bytes.
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| {
                GgufError::malformed(
                    at,
                    format!(
                        "{what}: string length {len} exceeds the {} bytes left in the file",
                        self.remaining()
                    ),
                )
            })?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| GgufError::malformed(at + 8, format!("{what}: invalid UTF-8 ({e})")))
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in the rest of the file,
    /// and returns `count` as usize, so that callers may allocate for it.
    fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        at: usize,
        what: &str,
    ) -> Result<usize, GgufError> {
        let fits = count
            .checked_mul(min_bytes)
            .is_some_and(|need| need <= self.remaining() as u64);
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(GgufError::malformed(
                at,
                format!(
                    "{what} {count} is implausible: cannot fit in the {} bytes left in the file",
                    self.remaining()
                ),
            )),
        }
    }
}

/// Parses and validates a whole GGUF image.
pub(super) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };
    let version = parse_preamble(&mut cur)?;

    let at = cur.pos;
    let n_tensors = cur.u64("tensor count")?;
    let n_kv = cur.u64("metadata count")?;
    // Cap both counts together by the bytes left before allocating for either.
    let need = n_kv.checked_mul(MIN_KV_BYTES).and_then(|a| {
        n_tensors
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .and_then(|b| a.checked_add(b))
    });
    if need.is_none_or(|need| need > cur.remaining() as u64) {
        return Err(GgufError::malformed(
            at,
            format!(
                "{n_tensors} tensors and {n_kv} metadata keys cannot fit in the {} bytes left \
                 in the file",
                cur.remaining()
            ),
        ));
    }
    let n_kv = cur.check_count(n_kv, MIN_KV_BYTES, at, "metadata count")?;
    let n_tensors = cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, at, "tensor count")?;

    let (metadata, key_index) = parse_metadata(&mut cur, n_kv)?;
    let alignment = alignment_of(&metadata, &key_index)?;
    let (tensors, tensor_index) = parse_tensor_infos(&mut cur, n_tensors, alignment)?;

    let header_end = cur.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::malformed(cur.pos, "data offset overflows"))?;
    check_tensor_data(&tensors, buf.len() as u64, data_offset)?;

    Ok(Parsed {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}

/// Magic and version. Refuses v1 (32-bit counts) and big-endian files, whose version field
/// reads byte-swapped (the magic is the same bytes in both byte orders).
fn parse_preamble(cur: &mut Cursor) -> Result<u32, GgufError> {
    let magic = cur.buf.get(..4).unwrap_or(cur.buf);
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    cur.pos = 4;
    let version = cur.u32("version")?;
    match version {
        2 | 3 => Ok(version),
        v if matches!(v.swap_bytes(), 1..=3) => Err(GgufError::BigEndian { version: v }),
        v => Err(GgufError::UnsupportedVersion { version: v }),
    }
}

/// `n_kv` key/value pairs; keys must be unique.
fn parse_metadata(
    cur: &mut Cursor,
    n_kv: usize,
) -> Result<(Metadata, HashMap<String, usize>), GgufError> {
    let mut metadata = Vec::with_capacity(n_kv);
    let mut index = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let at = cur.pos;
        let key = cur.string(&format!("key of metadata entry {i}"))?;
        if index.contains_key(&key) {
            return Err(GgufError::malformed(
                at,
                format!("duplicate metadata key '{key}'"),
            ));
        }
        let type_at = cur.pos;
        let type_id = cur.u32(&format!("value type of key '{key}'"))?;
        let typ = ValueType::from_id(type_id).ok_or_else(|| {
            GgufError::malformed(
                type_at,
                format!("key '{key}': unknown value type id {type_id}"),
            )
        })?;
        let value = parse_value(cur, typ, 1).map_err(|e| with_key(e, &key))?;
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

/// Adds the key to a value's error message.
fn with_key(e: GgufError, key: &str) -> GgufError {
    match e {
        GgufError::Malformed { offset, message } => GgufError::Malformed {
            offset,
            message: format!("key '{key}': {message}"),
        },
        e => e,
    }
}

/// One value of type `typ`; `depth` is 1 for a top-level value.
fn parse_value(cur: &mut Cursor, typ: ValueType, depth: u32) -> Result<Value, GgufError> {
    Ok(match typ {
        ValueType::U8 => Value::U8(cur.u8("u8 value")?),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array("i8 value")?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array("u16 value")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array("i16 value")?)),
        ValueType::U32 => Value::U32(cur.u32("u32 value")?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array("i32 value")?)),
        ValueType::U64 => Value::U64(cur.u64("u64 value")?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array("i64 value")?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array("f32 value")?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array("f64 value")?)),
        ValueType::Bool => {
            let at = cur.pos;
            match cur.u8("bool value")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::malformed(
                        at,
                        format!("bool value {b} is not 0 or 1"),
                    ))
                }
            }
        }
        ValueType::Str => Value::Str(cur.string("string value")?),
        ValueType::Array => Value::Array(parse_array(cur, depth)?),
    })
}

/// `u32:elem_type u64:count` and the items.
fn parse_array(cur: &mut Cursor, depth: u32) -> Result<Array, GgufError> {
    let at = cur.pos;
    let elem_id = cur.u32("array element type")?;
    let elem = ValueType::from_id(elem_id).ok_or_else(|| {
        GgufError::malformed(at, format!("unknown array element type id {elem_id}"))
    })?;
    if elem == ValueType::Array && depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::malformed(
            at,
            format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
        ));
    }
    let count_at = cur.pos;
    let count = cur.u64("array length")?;
    let count = cur.check_count(count, elem.min_encoded_len(), count_at, "array length")?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(parse_value(cur, elem, depth + 1)?);
    }
    Ok(Array { elem, items })
}

/// `general.alignment` if present: a u32, a nonzero power of two.
fn alignment_of(
    metadata: &[(String, Value)],
    index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some(&i) = index.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match &metadata[i].1 {
        Value::U32(a) if a.is_power_of_two() => Ok(u64::from(*a)),
        v => Err(GgufError::BadValue {
            key: ALIGNMENT_KEY.to_string(),
            expected: "a u32 power of two".to_string(),
            found: format!("{} {v}", v.type_name()),
        }),
    }
}

/// `n_tensors` tensor descriptions; names must be unique, shapes valid, offsets aligned.
fn parse_tensor_infos(
    cur: &mut Cursor,
    n_tensors: usize,
    alignment: u64,
) -> Result<(Vec<TensorInfo>, HashMap<String, usize>), GgufError> {
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = cur.string(&format!("name of tensor {i}"))?;
        let t = parse_tensor_info(cur, name, alignment)?;
        if index.contains_key(&t.name) {
            return Err(GgufError::tensor(&t.name, "duplicate tensor name"));
        }
        index.insert(t.name.clone(), tensors.len());
        tensors.push(t);
    }
    Ok((tensors, index))
}

/// The rest of one tensor description after its name.
fn parse_tensor_info(
    cur: &mut Cursor,
    name: String,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let n_dims = cur.u32(&format!("n_dims of tensor '{name}'"))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::tensor(
            &name,
            format!("n_dims {n_dims} is not in 1..={MAX_DIMS}"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&format!("dims of tensor '{name}'"))?);
    }
    let type_id = cur.u32(&format!("type of tensor '{name}'"))?;
    let offset = cur.u64(&format!("offset of tensor '{name}'"))?;
    let typ = GgmlType::from_id(type_id)
        .ok_or_else(|| GgufError::tensor(&name, format!("unknown ggml type id {type_id}")))?;
    let size = tensor_size(&name, &dims, typ)?;
    if offset % alignment != 0 {
        return Err(GgufError::tensor(
            &name,
            format!("data offset {offset} is not a multiple of the alignment {alignment}"),
        ));
    }
    Ok(TensorInfo {
        name,
        dims,
        typ,
        offset,
        size,
    })
}

/// Byte size of a tensor: whole blocks per row times rows, overflow-checked.
fn tensor_size(name: &str, dims: &[u64], typ: GgmlType) -> Result<u64, GgufError> {
    if let Some(d) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::tensor(
            name,
            format!("dimension {d} is 0 (dims {dims:?})"),
        ));
    }
    let overflow = || GgufError::tensor(name, format!("dims {dims:?} overflow"));
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let row = typ.row_bytes(dims[0]).ok_or_else(|| {
        GgufError::tensor(
            name,
            format!(
                "row length {} is not a multiple of the {typ} block size {}",
                dims[0],
                typ.block_size()
            ),
        )
    })?;
    dims[1..]
        .iter()
        .try_fold(row, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)
}

/// Every tensor's data must lie inside the file and no two may overlap.
fn check_tensor_data(
    tensors: &[TensorInfo],
    file_len: u64,
    data_offset: u64,
) -> Result<(), GgufError> {
    if tensors.is_empty() {
        return Ok(());
    }
    let data_len = file_len.checked_sub(data_offset).ok_or_else(|| {
        GgufError::malformed(
            file_len as usize,
            format!("data section would start at byte {data_offset}, past the end of the file"),
        )
    })?;
    for t in tensors.iter() {
        let end = t.offset.checked_add(t.size);
        if end.is_none_or(|end| end > data_len) {
            return Err(GgufError::tensor(
                &t.name,
                format!(
                    "data [{}, +{}) runs past the end of the {data_len}-byte data section",
                    t.offset, t.size
                ),
            ));
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.size > b.offset {
            return Err(GgufError::tensor(
                &b.name,
                format!(
                    "data at offset {} overlaps tensor '{}' ([{}, {}))",
                    b.offset,
                    a.name,
                    a.offset,
                    a.offset + a.size
                ),
            ));
        }
    }
    Ok(())
}
