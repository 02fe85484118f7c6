//! Parsing and validation of a GGUF header. Every read is bounds-checked, every count is capped
//! by the bytes left before anything is allocated, and every size computation is
//! overflow-checked, so that arbitrary bytes give an error, never a panic or a huge allocation.

use std::collections::HashMap;

use super::{
    show, Array, GgufError, TensorInfo, Value, ValueType, ALIGNMENT_KEY, DEFAULT_ALIGNMENT,
    GGUF_MAGIC, MAX_DIMS,
};
use crate::quant::GgmlType;

/// How deeply arrays may nest: an array of arrays of scalars is accepted (depth 2), deeper
/// nesting is refused. Neither llama.cpp nor owlet writes nested arrays; the cap keeps
/// recursion bounded on hostile input.
const MAX_ARRAY_DEPTH: u32 = 2;

/// Most array items in all metadata together. Counts are already capped by the bytes left, but
/// a parsed [`Value`] takes ~32 bytes of memory for a one-byte item, so this bounds memory
/// absolutely (8M items, ~256 MiB at worst); real vocabularies use around a million.
pub const MAX_METADATA_ARRAY_ITEMS: u64 = 1 << 23;

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
    /// Array items still allowed (see [`MAX_METADATA_ARRAY_ITEMS`]).
    items_left: u64,
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
    let mut cur = Cursor {
        buf,
        pos: 0,
        items_left: MAX_METADATA_ARRAY_ITEMS,
    };
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
        // llama.cpp refuses empty keys (its lookup asserts on them); so do we, so that a file
        // accepted here is accepted there.
        if key.is_empty() {
            return Err(GgufError::malformed(
                at,
                format!("empty metadata key (entry {i})"),
            ));
        }
        if index.contains_key(&key) {
            return Err(GgufError::malformed(
                at,
                format!("duplicate metadata key '{}'", show(&key)),
            ));
        }
        let type_at = cur.pos;
        let type_id = cur.u32(&format!("value type of key '{}'", show(&key)))?;
        let typ = ValueType::from_id(type_id).ok_or_else(|| {
            GgufError::malformed(
                type_at,
                format!("key '{}': unknown value type id {type_id}", show(&key)),
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
            message: format!("key '{}': {message}", show(key)),
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
    cur.items_left = cur.items_left.checked_sub(count as u64).ok_or_else(|| {
        GgufError::malformed(
            count_at,
            format!("metadata arrays hold more than {MAX_METADATA_ARRAY_ITEMS} items in total"),
        )
    })?;
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
            found: format!("{} {}", v.type_name(), show(&v.to_string())),
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
    let n_dims = cur.u32(&format!("n_dims of tensor '{}'", show(&name)))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::tensor(
            &name,
            format!("n_dims {n_dims} is not in 1..={MAX_DIMS}"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&format!("dims of tensor '{}'", show(&name)))?);
    }
    let type_id = cur.u32(&format!("type of tensor '{}'", show(&name)))?;
    let offset = cur.u64(&format!("offset of tensor '{}'", show(&name)))?;
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
    let block = typ.block_size() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(GgufError::tensor(
            name,
            format!(
                "row length {} is not a multiple of the {typ} block size {block}",
                dims[0]
            ),
        ));
    }
    // The element count must fit too (callers multiply dims freely), not just the byte size.
    let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let row = typ.row_bytes(dims[0]);
    elements
        .and(row)
        .and_then(|row| dims[1..].iter().try_fold(row, |a, &d| a.checked_mul(d)))
        .ok_or_else(|| GgufError::tensor(name, format!("dims {dims:?} overflow")))
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
                    show(&a.name),
                    a.offset,
                    a.offset + a.size
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Malformed inputs, built field by field with [`Raw`] so each test breaks one thing.

    use super::super::{Gguf, GgufWriter};
    use super::*;

    /// A GGUF image under construction, little-endian.
    #[derive(Clone, Default)]
    struct Raw(Vec<u8>);

    impl Raw {
        /// Magic, version and counts.
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
            Raw::default()
                .bytes(b"GGUF")
                .u32(version)
                .u64(n_tensors)
                .u64(n_kv)
        }
        fn bytes(mut self, b: &[u8]) -> Raw {
            self.0.extend_from_slice(b);
            self
        }
        fn u32(self, v: u32) -> Raw {
            self.bytes(&v.to_le_bytes())
        }
        fn u64(self, v: u64) -> Raw {
            self.bytes(&v.to_le_bytes())
        }
        fn str(self, s: &str) -> Raw {
            self.u64(s.len() as u64).bytes(s.as_bytes())
        }
        fn kv_u32(self, key: &str, v: u32) -> Raw {
            self.str(key).u32(ValueType::U32.id()).u32(v)
        }
        fn tensor(self, name: &str, dims: &[u64], typ: u32, offset: u64) -> Raw {
            let mut r = self.str(name).u32(dims.len() as u32);
            for &d in dims {
                r = r.u64(d);
            }
            r.u32(typ).u64(offset)
        }
        /// Zero padding to a multiple of `align`, then `n` data bytes.
        fn data(mut self, align: usize, n: usize) -> Raw {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self.0.extend((0..n).map(|i| i as u8));
            self
        }
        fn parse(&self) -> Result<Gguf, GgufError> {
            Gguf::from_bytes(self.0.clone())
        }
    }

    const F32: u32 = 0;

    /// A file with one tensor `w` (dims, type id, offset as given) and `data` bytes of data.
    fn one_tensor(dims: &[u64], typ: u32, offset: u64, data: usize) -> Raw {
        Raw::header(3, 1, 0)
            .tensor("w", dims, typ, offset)
            .data(32, data)
    }

    #[track_caller]
    fn expect_err(r: &Raw, needle: &str) -> GgufError {
        match r.parse() {
            Ok(g) => panic!("expected an error containing {needle:?}, parsed {g:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "error {msg:?} lacks {needle:?}");
                assert!(!msg.contains('\n'), "multi-line message {msg:?}");
                e
            }
        }
    }

    /// A small valid file with metadata of several types and three tensors, whose last tensor
    /// ends exactly at the end of the file (no trailing padding), so that every strict prefix
    /// is invalid.
    fn small_valid_file() -> Vec<u8> {
        let meta = vec![
            ("general.architecture".to_string(), Value::from("llama")),
            ("a.u32".to_string(), Value::U32(7)),
            ("a.f32".to_string(), Value::F32(0.5)),
            ("a.bool".to_string(), Value::Bool(true)),
            (
                "a.arr".to_string(),
                Value::Array(Array {
                    elem: ValueType::Str,
                    items: vec!["x".into(), "yz".into()],
                }),
            ),
        ];
        let tensors = vec![
            ("t0".to_string(), vec![3u64], GgmlType::F32),
            ("t1".to_string(), vec![32u64, 2], GgmlType::Q8_0),
            ("t2".to_string(), vec![8u64], GgmlType::F32),
        ];
        let mut w = GgufWriter::new(Vec::new(), &meta, &tensors, 32).unwrap();
        w.write_tensor("t0", &[1; 12]).unwrap();
        w.write_tensor("t1", &[2; 68]).unwrap();
        w.write_tensor("t2", &[3; 32]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn small_valid_file_parses() {
        let g = Gguf::from_bytes(small_valid_file()).unwrap();
        assert_eq!(g.tensors().len(), 3);
        assert_eq!(g.tensor_data("t1").unwrap(), &[2; 68]);
        assert_eq!(g.tensor("t2").unwrap().offset, 128);
        assert_eq!(g.get("a.u32"), Some(&Value::U32(7)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let file = small_valid_file();
        for n in 0..file.len() {
            assert!(
                Gguf::from_bytes(file[..n].to_vec()).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Every byte replaced by a few values: each parse returns Ok or Err, never panics, and
        // an Ok file's tensors all lie inside it.
        let file = small_valid_file();
        for i in 0..file.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff, file[i] ^ 0x20] {
                let mut f = file.clone();
                f[i] = v;
                if let Ok(g) = Gguf::from_bytes(f) {
                    for t in g.tensors() {
                        assert_eq!(g.tensor_bytes(t).len() as u64, t.size);
                    }
                }
            }
        }
    }

    #[test]
    fn preamble_errors() {
        assert!(matches!(
            Raw::default().bytes(b"GGU").parse(),
            Err(GgufError::BadMagic { .. })
        ));
        assert!(matches!(
            Raw::default().bytes(b"GGML\x03\0\0\0").parse(),
            Err(GgufError::BadMagic { .. })
        ));
        expect_err(&Raw::header(1, 0, 0), "version 1");
        expect_err(&Raw::header(4, 0, 0), "version 4");
        expect_err(&Raw::header(3u32.swap_bytes(), 0, 0), "big-endian");
        expect_err(
            &Raw::default().bytes(b"GGUF\x03\0\0\0").u64(0),
            "metadata count",
        );
        // Version 2 has the same layout as 3.
        assert_eq!(Raw::header(2, 0, 0).parse().unwrap().version(), 2);
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        expect_err(&Raw::header(3, u64::MAX, 0), "cannot fit");
        expect_err(&Raw::header(3, 0, u64::MAX), "cannot fit");
        expect_err(&Raw::header(3, 1 << 40, 1 << 40), "cannot fit");
        // A string length past the end.
        expect_err(
            &Raw::header(3, 0, 1).u64(u64::MAX).bytes(&[b'k'; 16]),
            "string length",
        );
        expect_err(
            &Raw::header(3, 0, 1).u64(100).bytes(&[b'k'; 99]),
            "string length",
        );
        // An array length past the end.
        let arr = |elem: ValueType, n: u64| {
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ValueType::Array.id())
                .u32(elem.id())
                .u64(n)
        };
        expect_err(
            &arr(ValueType::U8, u64::MAX).bytes(&[0; 64]),
            "key 'k': array length",
        );
        expect_err(&arr(ValueType::U64, 9).bytes(&[0; 64]), "array length 9");
        // Strings take at least 8 bytes each: 9 of them cannot fit in 64 bytes.
        expect_err(&arr(ValueType::Str, 9).bytes(&[0; 64]), "array length 9");
        assert!(arr(ValueType::U64, 8).bytes(&[0; 64]).parse().is_ok());
    }

    #[test]
    fn metadata_errors() {
        let kv = |key: &str, typ: u32| Raw::header(3, 0, 1).str(key).u32(typ);
        expect_err(&kv("k", 13).u32(0), "key 'k': unknown value type id 13");
        expect_err(
            &kv("k", 9).u32(99).u64(0),
            "unknown array element type id 99",
        );
        expect_err(&kv("k", ValueType::Bool.id()).bytes(&[2]), "bool value 2");
        expect_err(
            &kv("k", ValueType::Str.id()).u64(2).bytes(&[0xc3, 0x28]),
            "invalid UTF-8",
        );
        expect_err(
            &Raw::header(3, 0, 1).u64(1).bytes(&[0xff]).u32(4).u32(0),
            "invalid UTF-8",
        );
        let dup = Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
        expect_err(&dup, "duplicate metadata key 'k'");
        // Names from the file are escaped so that messages stay on one line.
        let dup = Raw::header(3, 0, 2).kv_u32("a\nb", 1).kv_u32("a\nb", 2);
        expect_err(&dup, "duplicate metadata key 'a\\nb'");
        let r = Raw::header(3, 1, 0)
            .tensor("x\r\n", &[8], 77, 0)
            .data(32, 32);
        expect_err(&r, "tensor 'x\\r\\n': unknown ggml type id 77");
        // Arrays of arrays of scalars are fine, one level deeper is not.
        let arr = ValueType::Array.id();
        let nested2 = kv("k", arr)
            .u32(arr)
            .u64(1)
            .u32(ValueType::U8.id())
            .u64(1)
            .bytes(&[5]);
        let g = nested2.parse().unwrap();
        let inner = g.get("k").unwrap().as_array().unwrap().items[0]
            .as_array()
            .unwrap();
        assert_eq!(inner.items, vec![Value::U8(5)]);
        let nested3 = kv("k", arr).u32(arr).u64(1).u32(arr).u64(1).u32(0).u64(0);
        expect_err(&nested3, "nested");
        // An empty array keeps its element type.
        let empty = kv("k", arr)
            .u32(ValueType::F32.id())
            .u64(0)
            .parse()
            .unwrap();
        assert_eq!(empty.get("k").unwrap().type_name(), "array of f32");
    }

    #[test]
    fn alignment_key_is_checked_and_honoured() {
        let with = |v: Raw| v.parse();
        for bad in [0u32, 3, 48] {
            let e = with(Raw::header(3, 0, 1).kv_u32(ALIGNMENT_KEY, bad)).unwrap_err();
            assert!(e.to_string().contains(ALIGNMENT_KEY), "{e}");
        }
        let as_u64 = Raw::header(3, 0, 1)
            .str(ALIGNMENT_KEY)
            .u32(ValueType::U64.id())
            .u64(64);
        expect_err(&as_u64, "general.alignment");
        // With alignment 64 an offset of 32 is misaligned and the data starts at 64n.
        let r = Raw::header(3, 1, 1)
            .kv_u32(ALIGNMENT_KEY, 64)
            .tensor("w", &[8], F32, 32);
        expect_err(
            &r.clone().data(64, 64),
            "not a multiple of the alignment 64",
        );
        let ok = Raw::header(3, 1, 1)
            .kv_u32(ALIGNMENT_KEY, 64)
            .tensor("w", &[8], F32, 0);
        let g = ok.data(64, 32).parse().unwrap();
        assert_eq!(g.alignment(), 64);
        assert_eq!(g.data_offset() % 64, 0);
        assert_eq!(
            g.tensor_data("w").unwrap(),
            &(0..32).collect::<Vec<u8>>()[..]
        );
    }

    #[test]
    fn tensor_shape_errors_name_the_tensor() {
        assert!(one_tensor(&[8], F32, 0, 32).parse().is_ok());
        expect_err(&one_tensor(&[], F32, 0, 32), "tensor 'w': n_dims 0");
        expect_err(
            &one_tensor(&[1, 1, 1, 1, 8], F32, 0, 32),
            "tensor 'w': n_dims 5",
        );
        expect_err(
            &one_tensor(&[8, 0], F32, 0, 32),
            "tensor 'w': dimension 1 is 0",
        );
        expect_err(&one_tensor(&[1 << 32, 1 << 32], F32, 0, 32), "overflow");
        expect_err(&one_tensor(&[u64::MAX, 1, 1, 2], F32, 0, 32), "overflow");
        // Element count fits in u64, byte size does not.
        expect_err(&one_tensor(&[1 << 62, 2], F32, 0, 32), "overflow");
        expect_err(
            &one_tensor(&[8], 4, 0, 32),
            "tensor 'w': unknown ggml type id 4",
        );
        expect_err(&one_tensor(&[8], 1000, 0, 32), "unknown ggml type id 1000");
        expect_err(
            &one_tensor(&[31], GgmlType::Q8_0.id(), 0, 64),
            "not a multiple",
        );
        // A huge n_dims is refused before reading (or allocating for) the dims.
        let r = Raw::header(3, 1, 0).str("w").u32(u32::MAX).bytes(&[0; 64]);
        expect_err(&r, "n_dims 4294967295");
    }

    #[test]
    fn tensor_data_errors() {
        expect_err(
            &one_tensor(&[8], F32, 8, 64),
            "not a multiple of the alignment 32",
        );
        expect_err(&one_tensor(&[8], F32, 0, 31), "runs past the end");
        expect_err(&one_tensor(&[8], F32, 32, 32), "runs past the end");
        expect_err(
            &one_tensor(&[8], F32, u64::MAX - 31, 32),
            "runs past the end",
        );
        // No data section at all.
        expect_err(
            &Raw::header(3, 1, 0).tensor("w", &[8], F32, 0),
            "past the end",
        );
        let two = |o1: u64, o2: u64, n1: u64| {
            Raw::header(3, 2, 0)
                .tensor("a", &[n1], F32, o1)
                .tensor("b", &[8], F32, o2)
        };
        assert!(two(0, 32, 8).data(32, 64).parse().is_ok());
        // `b` listed before `a` in the data is fine too.
        assert!(two(32, 0, 8).data(32, 64).parse().is_ok());
        expect_err(&two(0, 32, 9).data(32, 96), "overlaps tensor 'a'");
        expect_err(&two(0, 0, 8).data(32, 64), "overlaps");
        let dup = Raw::header(3, 2, 0)
            .tensor("a", &[8], F32, 0)
            .tensor("a", &[8], F32, 32);
        expect_err(&dup.data(32, 64), "tensor 'a': duplicate tensor name");
    }

    #[test]
    fn array_item_budget_is_enforced() {
        // Two arrays whose items together exceed the budget, in a file just big enough for
        // their bytes: refused at the second array's count.
        let half = MAX_METADATA_ARRAY_ITEMS / 2 + 1;
        let mut r = Raw::header(3, 0, 2);
        for key in ["a", "b"] {
            r = r
                .str(key)
                .u32(ValueType::Array.id())
                .u32(ValueType::U8.id())
                .u64(half);
            r.0.resize(r.0.len() + half as usize, 0);
        }
        expect_err(&r, "items in total");
    }
}
