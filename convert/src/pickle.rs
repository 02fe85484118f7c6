//! A non-executing pickle reader for PyTorch state dicts (`data.pkl` inside a
//! `torch.save` zip).
//!
//! Python's unpickler is a small stack machine that can import and call any
//! global, so loading an untrusted `.bin` with it runs arbitrary code. This VM
//! interprets only the opcodes a state dict needs and knows a short allowlist
//! of globals (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, the `torch.*Storage` classes). Calling a
//! global never runs anything: `_rebuild_tensor_v2(storage, offset, size,
//! stride, ...)` just records a [`TensorRef`], and persistent ids (`BINPERSID`)
//! become storage references that point at `data/<key>` entries of the zip.
//!
//! Everything is bounded: opcode count, stack size, mark depth, memo size,
//! container nesting, and total copying work. Every declared length is
//! checked against the bytes that remain before anything is allocated.
//!
//! Semantic simplification: containers have value (copy-on-write) semantics.
//! Python shares a memoized list or dict between the memo and the stack, so a
//! later `APPEND` is visible through a `BINGET` of the same memo slot; here the
//! memo keeps the value as it was when memoized. `torch.save` never relies on
//! that aliasing for state dicts (containers are filled right after creation
//! and never fetched back), and value semantics make reference cycles, and so
//! unbounded recursion when values are dropped, impossible.

use anyhow::{anyhow, bail, Result};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Element type of a PyTorch storage class such as `torch.HalfStorage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageDType {
    /// `torch.DoubleStorage`
    F64,
    /// `torch.FloatStorage`
    F32,
    /// `torch.HalfStorage`
    F16,
    /// `torch.BFloat16Storage`
    BF16,
    /// `torch.LongStorage`
    I64,
    /// `torch.IntStorage`
    I32,
    /// `torch.ShortStorage`
    I16,
    /// `torch.CharStorage`
    I8,
    /// `torch.ByteStorage`
    U8,
    /// `torch.BoolStorage`
    Bool,
}

impl StorageDType {
    /// Size of one element in bytes.
    pub fn elem_size(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }

    /// The PyTorch class name, e.g. `torch.HalfStorage`.
    pub fn torch_name(self) -> &'static str {
        match self {
            StorageDType::F64 => "torch.DoubleStorage",
            StorageDType::F32 => "torch.FloatStorage",
            StorageDType::F16 => "torch.HalfStorage",
            StorageDType::BF16 => "torch.BFloat16Storage",
            StorageDType::I64 => "torch.LongStorage",
            StorageDType::I32 => "torch.IntStorage",
            StorageDType::I16 => "torch.ShortStorage",
            StorageDType::I8 => "torch.CharStorage",
            StorageDType::U8 => "torch.ByteStorage",
            StorageDType::Bool => "torch.BoolStorage",
        }
    }

    /// Maps a class name in module `torch` to its dtype.
    fn from_storage_class(name: &str) -> Option<StorageDType> {
        Some(match name {
            "DoubleStorage" => StorageDType::F64,
            "FloatStorage" => StorageDType::F32,
            "HalfStorage" => StorageDType::F16,
            "BFloat16Storage" => StorageDType::BF16,
            "LongStorage" => StorageDType::I64,
            "IntStorage" => StorageDType::I32,
            "ShortStorage" => StorageDType::I16,
            "CharStorage" => StorageDType::I8,
            "ByteStorage" => StorageDType::U8,
            "BoolStorage" => StorageDType::Bool,
            _ => return None,
        })
    }
}

/// Where a tensor's elements live: a view into storage `data/<storage_key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// Element type of the storage (and of the tensor).
    pub dtype: StorageDType,
    /// Sizes in PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Strides in elements, same length as `shape`.
    pub stride: Vec<usize>,
    /// Name of the storage record in the zip (`<prefix>/data/<key>`).
    pub storage_key: String,
    /// First element of the view inside the storage, in elements.
    pub storage_offset: usize,
    /// Number of elements the pickle declares for the whole storage.
    pub storage_numel: usize,
}

impl TensorRef {
    /// Number of elements of the tensor (product of `shape`), `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// True when the strides describe a dense row-major (C order) layout.
    /// Dimensions of size 1 may carry any stride (PyTorch leaves them
    /// arbitrary), and an empty tensor is trivially contiguous.
    pub fn is_c_contiguous(&self) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = match expected.checked_mul(size) {
                Some(e) => e,
                None => return false,
            };
        }
        true
    }
}

/// Resource caps for the VM. The defaults are far above what any real
/// state dict needs (a 7B LLaMA pickle is ~100 KB with nesting depth 4).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum number of opcodes executed.
    pub max_ops: usize,
    /// Maximum number of values on the stack.
    pub max_stack: usize,
    /// Maximum number of open MARKs.
    pub max_marks: usize,
    /// Maximum number of memo entries.
    pub max_memo: usize,
    /// Maximum container nesting depth (tuples/lists/dicts inside each other).
    pub max_depth: usize,
    /// Maximum total number of values copied into containers.
    pub max_work: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 64 << 20,
            max_stack: 1 << 20,
            max_marks: 1024,
            max_memo: 4 << 20,
            max_depth: 64,
            max_work: 256 << 20,
        }
    }
}

/// Maximum tensor rank accepted from a pickle.
const MAX_NDIM: usize = 16;

/// Parses a state-dict pickle with default [`Limits`]. `source` names the
/// file in error messages. Returns the entries in pickle order.
pub fn parse_state_dict(data: &[u8], source: &str) -> Result<Vec<(String, TensorRef)>> {
    parse_state_dict_with_limits(data, source, &Limits::default())
}

/// Parses a state-dict pickle: a dict (or `OrderedDict`) from string keys to
/// tensors. Returns `(name, tensor)` in pickle order; duplicate names and
/// non-tensor values are errors.
pub fn parse_state_dict_with_limits(
    data: &[u8],
    source: &str,
    limits: &Limits,
) -> Result<Vec<(String, TensorRef)>> {
    let mut vm = Vm {
        input: data,
        pos: 0,
        source,
        limits,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work: 0,
    };
    let top = vm.run()?;
    extract_state_dict(top, source)
}

/// Converts the unpickled top-level value into the list of tensors.
fn extract_state_dict(top: Value, source: &str) -> Result<Vec<(String, TensorRef)>> {
    let map = match top {
        Value::Dict(map) => map,
        other => bail!(
            "top-level object in {source} is a {}, not a state dict",
            other.kind()
        ),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(map.items.len());
    for (key, value) in &map.items {
        let name = match key {
            Value::Str(s) => s.to_string(),
            other => bail!(
                "state dict key in {source} is a {}, not a string",
                other.kind()
            ),
        };
        let tensor = match value {
            Value::Tensor(t) => (**t).clone(),
            other => bail!(
                "state dict entry {} in {source} is a {}, not a tensor",
                printable(&name),
                other.kind()
            ),
        };
        if !seen.insert(name.clone()) {
            bail!("duplicate tensor name {} in {source}", printable(&name));
        }
        out.push((name, tensor));
    }
    Ok(out)
}

/// Escapes control characters and truncates, so hostile names stay one short line.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(120).flat_map(char::escape_debug).collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

/// Globals the VM understands; anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageClass(StorageDType),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", cls) => StorageDType::from_storage_class(cls).map(Global::StorageClass),
        _ => None,
    }
}

/// A storage named by a persistent id `('storage', cls, key, location, numel)`.
#[derive(Debug)]
struct StorageRef {
    dtype: StorageDType,
    key: String,
    numel: usize,
}

/// A sequence (tuple or list) with its cached nesting depth.
#[derive(Clone, Debug)]
struct Seq {
    items: Vec<Value>,
    depth: usize,
}

/// A dict as insertion-ordered pairs with its cached nesting depth.
#[derive(Clone, Debug)]
struct Map {
    items: Vec<(Value, Value)>,
    depth: usize,
}

/// A pickle value. Containers are reference counted and copy-on-write, so
/// `BINGET`/`DUP` are O(1) and nothing can form a cycle.
// Scalar payloads are decoded faithfully even where no state-dict rule reads
// them (e.g. `requires_grad`), hence the allow.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Seq>),
    List(Rc<Seq>),
    Dict(Rc<Map>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// Nesting depth: 0 for scalars, 1 + deepest child for containers.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(m) => m.depth,
            _ => 0,
        }
    }
}

/// Pickle opcodes this VM implements (see Python's `pickletools`).
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BINFLOAT: u8 = b'G';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    source: &'a str,
    limits: &'a Limits,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Values copied so far (container construction and copy-on-write).
    work: usize,
}

impl<'a> Vm<'a> {
    /// Runs until STOP and returns the top of the stack.
    fn run(&mut self) -> Result<Value> {
        let mut ops = 0usize;
        loop {
            ops += 1;
            if ops > self.limits.max_ops {
                bail!(
                    "pickle in {} exceeds {} opcodes",
                    self.source,
                    self.limits.max_ops
                );
            }
            let at = self.pos;
            let code = self.u8()?;
            let done = self
                .step(code)
                .map_err(|e| anyhow!("{e} (pickle opcode 0x{code:02x} at byte {at})"))?;
            if done {
                return self.pop();
            }
            if self.stack.len() > self.limits.max_stack {
                bail!(
                    "pickle stack in {} exceeds {} values",
                    self.source,
                    self.limits.max_stack
                );
            }
        }
    }

    /// Executes one opcode; returns true on STOP.
    fn step(&mut self, code: u8) -> Result<bool> {
        match code {
            op::PROTO => {
                let version = self.u8()?;
                if !(2..=5).contains(&version) {
                    bail!(
                        "unsupported pickle protocol {version} in {} (need 2..=5)",
                        self.source
                    );
                }
            }
            op::FRAME => {
                // Framing only groups opcodes for buffered I/O; the frame
                // length must still lie inside the input.
                let len = self.u64()?;
                self.check_len(len, "frame")?;
            }
            op::STOP => return Ok(true),
            op::MARK => {
                if self.marks.len() >= self.limits.max_marks {
                    bail!(
                        "more than {} nested MARKs in {}",
                        self.limits.max_marks,
                        self.source
                    );
                }
                self.marks.push(self.stack.len());
            }
            op::POP => {
                self.pop()?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?.clone();
                self.stack.push(top);
            }
            op::NONE => self.stack.push(Value::None),
            op::NEWTRUE => self.stack.push(Value::Bool(true)),
            op::NEWFALSE => self.stack.push(Value::Bool(false)),
            op::BININT => {
                let b = self.take(4)?;
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.stack.push(Value::Int(v.into()));
            }
            op::BININT1 => {
                let v = self.u8()?;
                self.stack.push(Value::Int(v.into()));
            }
            op::BININT2 => {
                let b = self.take(2)?;
                self.stack
                    .push(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()));
            }
            op::LONG1 => {
                let n = self.u8()?;
                self.long(n.into())?;
            }
            op::LONG4 => {
                let n = self.u32()?;
                self.long(n.into())?;
            }
            op::BINFLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                // BINFLOAT is the one big-endian number in the format.
                self.stack.push(Value::Float(f64::from_be_bytes(a)));
            }
            op::SHORT_BINUNICODE => {
                let n = self.u8()?;
                self.unicode(n.into())?;
            }
            op::BINUNICODE => {
                let n = self.u32()?;
                self.unicode(n.into())?;
            }
            op::BINUNICODE8 => {
                let n = self.u64()?;
                self.unicode(n)?;
            }
            op::SHORT_BINSTRING => {
                let n = self.u8()?;
                self.binstring(n.into())?;
            }
            op::BINSTRING => {
                let b = self.take(4)?;
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let n = u64::try_from(n)
                    .map_err(|_| anyhow!("negative BINSTRING length in {}", self.source))?;
                self.binstring(n)?;
            }
            op::SHORT_BINBYTES => {
                let n = self.u8()?;
                self.bytes(n.into())?;
            }
            op::BINBYTES => {
                let n = self.u32()?;
                self.bytes(n.into())?;
            }
            op::BINBYTES8 => {
                let n = self.u64()?;
                self.bytes(n)?;
            }
            op::EMPTY_TUPLE => self.push_tuple(Vec::new())?,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1 + 1);
                if self.stack.len() < self.floor() + n {
                    bail!("stack underflow in {}", self.source);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_tuple(items)?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push_tuple(items)?;
            }
            op::EMPTY_LIST => self.push_list(Vec::new())?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.push_list(items)?;
            }
            op::APPEND => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            op::EMPTY_DICT => self.push_dict(Vec::new())?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push_dict(pairs)?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![(key, value)])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.set_items(pairs)?;
            }
            op::BINPUT => {
                let i = self.u8()?;
                self.memo_put(i.into())?;
            }
            op::LONG_BINPUT => {
                let i = self.u32()?;
                self.memo_put(i)?;
            }
            op::MEMOIZE => {
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| anyhow!("memo overflow in {}", self.source))?;
                self.memo_put(i)?;
            }
            op::BINGET => {
                let i = self.u8()?;
                self.memo_get(i.into())?;
            }
            op::LONG_BINGET => {
                let i = self.u32()?;
                self.memo_get(i)?;
            }
            op::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                    _ => bail!("STACK_GLOBAL needs two strings in {}", self.source),
                }
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.stack.push(result);
            }
            op::BUILD => {
                let _state = self.pop()?;
                // The only BUILD a state dict produces sets the `_metadata`
                // attribute of an OrderedDict; it carries no tensor data.
                match self.top()? {
                    Value::Dict(_) => {}
                    other => bail!("BUILD on a {} in {}", other.kind(), self.source),
                }
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.stack.push(storage);
            }
            other => bail!(
                "unknown or unsupported pickle opcode 0x{other:02x} in {}",
                self.source
            ),
        }
        Ok(false)
    }

    // ---- input ----

    /// Checks a declared length against the remaining input, before any
    /// allocation, and converts it to usize.
    fn check_len(&self, len: u64, what: &str) -> Result<usize> {
        let remaining = self.input.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= remaining => Ok(n),
            _ => bail!(
                "{what} length {len} exceeds the {remaining} bytes left in {}",
                self.source
            ),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= input.len())
            .ok_or_else(|| anyhow!("truncated pickle in {} (no STOP before end)", self.source))?;
        let s = &input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A newline-terminated ASCII line (GLOBAL arguments).
    fn line(&mut self) -> Result<String> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("truncated GLOBAL in {}", self.source))?;
        let bytes = self.take(n + 1)?;
        let text = std::str::from_utf8(&bytes[..n])
            .map_err(|_| anyhow!("GLOBAL name is not UTF-8 in {}", self.source))?;
        Ok(text.to_owned())
    }

    fn long(&mut self, n: u64) -> Result<()> {
        let n = self.check_len(n, "LONG")?;
        let b = self.take(n)?;
        if n > 8 {
            bail!("integer of {n} bytes is too large in {}", self.source);
        }
        // Little-endian two's complement: sign-extend from the top byte.
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..n].copy_from_slice(b);
        self.stack.push(Value::Int(i64::from_le_bytes(a)));
        Ok(())
    }

    fn unicode(&mut self, n: u64) -> Result<()> {
        let n = self.check_len(n, "string")?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| anyhow!("string is not valid UTF-8 in {}", self.source))?;
        self.stack.push(Value::Str(Rc::from(s)));
        Ok(())
    }

    /// Python 2 `str`: decoded as text when it is UTF-8, otherwise kept as bytes.
    fn binstring(&mut self, n: u64) -> Result<()> {
        let n = self.check_len(n, "string")?;
        let b = self.take(n)?;
        let v = match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Bytes(Rc::from(b)),
        };
        self.stack.push(v);
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<()> {
        let n = self.check_len(n, "bytes")?;
        let b = self.take(n)?;
        self.stack.push(Value::Bytes(Rc::from(b)));
        Ok(())
    }

    // ---- stack ----

    /// Lowest stack index usable by the current MARK frame.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            bail!("stack underflow in {}", self.source);
        }
        self.stack
            .pop()
            .ok_or_else(|| anyhow!("stack underflow in {}", self.source))
    }

    fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            bail!("stack underflow in {}", self.source);
        }
        self.stack
            .last()
            .ok_or_else(|| anyhow!("stack underflow in {}", self.source))
    }

    /// Pops everything above the last MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self
            .marks
            .pop()
            .ok_or_else(|| anyhow!("no MARK on the stack in {}", self.source))?;
        Ok(self.stack.split_off(at))
    }

    fn charge(&mut self, n: usize) -> Result<()> {
        self.work = self.work.saturating_add(n);
        if self.work > self.limits.max_work {
            bail!(
                "pickle in {} copies more than {} values",
                self.source,
                self.limits.max_work
            );
        }
        Ok(())
    }

    fn nested_depth<'v>(&self, items: impl Iterator<Item = &'v Value>) -> Result<usize> {
        let depth = 1 + items.map(Value::depth).max().unwrap_or(0);
        if depth > self.limits.max_depth {
            bail!(
                "containers nested deeper than {} in {}",
                self.limits.max_depth,
                self.source
            );
        }
        Ok(depth)
    }

    fn push_tuple(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge(items.len())?;
        let depth = self.nested_depth(items.iter())?;
        self.stack.push(Value::Tuple(Rc::new(Seq { items, depth })));
        Ok(())
    }

    fn push_list(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge(items.len())?;
        let depth = self.nested_depth(items.iter())?;
        self.stack.push(Value::List(Rc::new(Seq { items, depth })));
        Ok(())
    }

    fn push_dict(&mut self, items: Vec<(Value, Value)>) -> Result<()> {
        self.charge(items.len())?;
        let depth = self.nested_depth(items.iter().flat_map(|(k, v)| [k, v]))?;
        self.stack.push(Value::Dict(Rc::new(Map { items, depth })));
        Ok(())
    }

    /// Groups `k1 v1 k2 v2 ...` into pairs.
    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            bail!("odd number of dict items in {}", self.source);
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let depth = self.nested_depth(items.iter())?;
        let floor = self.floor();
        let (source, max_work) = (self.source, self.limits.max_work);
        let Some(Value::List(list)) = self.stack.get_mut(floor..).and_then(|s| s.last_mut()) else {
            bail!("APPEND target is not a list in {source}");
        };
        // Copy-on-write: a list also held by the memo is copied first.
        let copied = if Rc::strong_count(list) > 1 {
            list.items.len()
        } else {
            0
        };
        let added = items.len() + copied;
        let seq = Rc::make_mut(list);
        seq.depth = seq.depth.max(depth);
        seq.items.extend(items);
        self.work = self.work.saturating_add(added);
        if self.work > max_work {
            bail!("pickle in {source} copies more than {max_work} values");
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Result<()> {
        let depth = self.nested_depth(pairs.iter().flat_map(|(k, v)| [k, v]))?;
        let floor = self.floor();
        let (source, max_work) = (self.source, self.limits.max_work);
        let Some(Value::Dict(map)) = self.stack.get_mut(floor..).and_then(|s| s.last_mut()) else {
            bail!("SETITEM target is not a dict in {source}");
        };
        let copied = if Rc::strong_count(map) > 1 {
            map.items.len()
        } else {
            0
        };
        let m = Rc::make_mut(map);
        m.depth = m.depth.max(depth);
        let added = pairs.len() + copied;
        m.items.extend(pairs);
        self.work = self.work.saturating_add(added);
        if self.work > max_work {
            bail!("pickle in {source} copies more than {max_work} values");
        }
        Ok(())
    }

    // ---- memo ----

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let value = self.top()?.clone();
        if !self.memo.contains_key(&index) && self.memo.len() >= self.limits.max_memo {
            bail!(
                "memo exceeds {} entries in {}",
                self.limits.max_memo,
                self.source
            );
        }
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let value = self
            .memo
            .get(&index)
            .ok_or_else(|| anyhow!("memo index {index} not defined in {}", self.source))?
            .clone();
        self.stack.push(value);
        Ok(())
    }

    // ---- globals and calls ----

    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        match resolve_global(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => bail!(
                "disallowed global {} in {}",
                printable(&format!("{module}.{name}")),
                self.source
            ),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else {
            bail!(
                "REDUCE arguments are a {}, not a tuple, in {}",
                args.kind(),
                self.source
            );
        };
        let args = &args.items;
        match callable {
            Value::Global(Global::OrderedDict) => {
                if !args.is_empty() {
                    bail!("OrderedDict called with arguments in {}", self.source);
                }
                Ok(Value::Dict(Rc::new(Map {
                    items: Vec::new(),
                    depth: 1,
                })))
            }
            Value::Global(Global::RebuildTensorV2) => self.rebuild_tensor(args),
            Value::Global(Global::RebuildParameter) => match args.first() {
                // _rebuild_parameter(data, requires_grad, backward_hooks)
                Some(Value::Tensor(t)) if args.len() == 3 => Ok(Value::Tensor(t.clone())),
                _ => bail!("bad _rebuild_parameter arguments in {}", self.source),
            },
            Value::Global(Global::StorageClass(d)) => {
                bail!(
                    "calling {} is not allowed in {}",
                    d.torch_name(),
                    self.source
                )
            }
            other => bail!(
                "REDUCE on a {}, which is not callable, in {}",
                other.kind(),
                self.source
            ),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride,
    /// requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value> {
        let src = self.source;
        if !(6..=7).contains(&args.len()) {
            bail!("_rebuild_tensor_v2 with {} arguments in {src}", args.len());
        }
        let Value::Storage(storage) = &args[0] else {
            bail!(
                "_rebuild_tensor_v2 storage is a {} in {src}",
                args[0].kind()
            );
        };
        let offset = as_usize(&args[1])
            .ok_or_else(|| anyhow!("bad storage offset in _rebuild_tensor_v2 in {src}"))?;
        let shape = usize_tuple(&args[2])
            .ok_or_else(|| anyhow!("bad size tuple in _rebuild_tensor_v2 in {src}"))?;
        let stride = usize_tuple(&args[3])
            .ok_or_else(|| anyhow!("bad stride tuple in _rebuild_tensor_v2 in {src}"))?;
        if shape.len() != stride.len() || shape.len() > MAX_NDIM {
            bail!(
                "tensor size {shape:?} and stride {stride:?} do not match (or rank > {MAX_NDIM}) in {src}"
            );
        }
        let t = TensorRef {
            dtype: storage.dtype,
            shape,
            stride,
            storage_key: storage.key.clone(),
            storage_offset: offset,
            storage_numel: storage.numel,
        };
        // Furthest element the view touches must lie inside the declared storage.
        let mut extent = Some(if t.shape.contains(&0) { 0 } else { 1usize });
        if extent == Some(1) {
            for (&size, &stride) in t.shape.iter().zip(&t.stride) {
                extent = extent.and_then(|e| e.checked_add((size - 1).checked_mul(stride)?));
            }
        }
        let end = extent.and_then(|e| {
            if e == 0 {
                Some(offset)
            } else {
                e.checked_add(offset)
            }
        });
        match end {
            Some(end) if end <= storage.numel => Ok(Value::Tensor(Rc::new(t))),
            _ => bail!(
                "tensor view (offset {offset}, size {:?}, stride {:?}) exceeds storage {} of {} elements in {src}",
                t.shape,
                t.stride,
                printable(&storage.key),
                storage.numel
            ),
        }
    }

    /// Persistent id `('storage', storage_class, key, location, numel)`.
    fn persistent_load(&self, pid: Value) -> Result<Value> {
        let src = self.source;
        let Value::Tuple(t) = pid else {
            bail!("persistent id is a {}, not a tuple, in {src}", pid.kind());
        };
        let items = &t.items;
        let ok_tag = matches!(items.first(), Some(Value::Str(s)) if &**s == "storage");
        if items.len() != 5 || !ok_tag {
            bail!("persistent id is not ('storage', class, key, location, numel) in {src}");
        }
        let Value::Global(Global::StorageClass(dtype)) = items[1] else {
            bail!(
                "persistent id names a {} instead of a storage class in {src}",
                items[1].kind()
            );
        };
        let key = match &items[2] {
            Value::Str(s) if is_storage_key(s) => s.to_string(),
            _ => bail!("bad storage key in persistent id in {src}"),
        };
        if !matches!(items[3], Value::Str(_)) {
            bail!("bad storage location for storage {key} in {src}");
        }
        let numel = as_usize(&items[4])
            .ok_or_else(|| anyhow!("bad element count for storage {key} in {src}"))?;
        Ok(Value::Storage(Rc::new(StorageRef { dtype, key, numel })))
    }
}

/// Storage keys are short names (torch uses decimal numbers); anything that
/// could form a path is rejected.
fn is_storage_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn usize_tuple(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Tuple(t) => t.items.iter().map(as_usize).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal protocol-2 state dict `{name: tensor}` with one f16
    /// tensor of `shape` (C-contiguous) over storage "0" of `numel` elements.
    fn one_tensor_pickle(name: &str, shape: &[u16], numel: u32) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        p.push(b'X');
        p.extend((name.len() as u32).to_le_bytes());
        p.extend(name.as_bytes());
        p.extend(tensor_expr(shape, numel));
        p.extend(b"u.");
        p
    }

    /// Opcodes that leave one `_rebuild_tensor_v2(...)` f16 tensor on the stack.
    fn tensor_expr(shape: &[u16], numel: u32) -> Vec<u8> {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec();
        p.extend(b"((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ");
        p.extend(numel.to_le_bytes());
        p.extend(b"tQK\x00(");
        for &d in shape {
            p.push(b'M');
            p.extend(d.to_le_bytes());
        }
        p.extend(b"t(");
        let mut stride = 1u16;
        let mut strides = Vec::new();
        for &d in shape.iter().rev() {
            strides.push(stride);
            stride *= d;
        }
        for s in strides.iter().rev() {
            p.push(b'M');
            p.extend(s.to_le_bytes());
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
        p
    }

    #[test]
    fn rebuild_parameter_and_ordered_dict_build() {
        // OrderedDict() with a `_metadata` BUILD, holding a Parameter.
        let mut p = b"\x80\x02ccollections\nOrderedDict\n)RX\x01\x00\x00\x00p".to_vec();
        p.extend(b"ctorch._utils\n_rebuild_parameter\n(");
        p.extend(tensor_expr(&[5], 5));
        p.extend(b"\x88ccollections\nOrderedDict\n)RtRs}b.");
        let sd = parse_state_dict(&p, "param").unwrap();
        assert_eq!(sd.len(), 1);
        assert_eq!(sd[0].0, "p");
        assert_eq!(sd[0].1.shape, vec![5]);
        // Wrong arity is refused.
        let mut p = b"\x80\x02}X\x01\x00\x00\x00pctorch._utils\n_rebuild_parameter\n(".to_vec();
        p.extend(tensor_expr(&[5], 5));
        p.extend(b"tRs.");
        let e = parse_state_dict(&p, "param").unwrap_err().to_string();
        assert!(e.contains("_rebuild_parameter"), "{e}");
    }

    #[test]
    fn parses_minimal_state_dict() {
        let p = one_tensor_pickle("w", &[3, 4], 12);
        let sd = parse_state_dict(&p, "test").unwrap();
        assert_eq!(sd.len(), 1);
        let (name, t) = &sd[0];
        assert_eq!(name, "w");
        assert_eq!(t.dtype, StorageDType::F16);
        assert_eq!(t.shape, vec![3, 4]);
        assert_eq!(t.stride, vec![4, 1]);
        assert_eq!(t.storage_key, "0");
        assert!(t.is_c_contiguous());
    }

    #[test]
    fn view_larger_than_storage_is_refused() {
        let p = one_tensor_pickle("w", &[3, 4], 11);
        let e = parse_state_dict(&p, "test").unwrap_err().to_string();
        assert!(e.contains("exceeds storage"), "{e}");
    }

    #[test]
    fn disallowed_global_named() {
        let p = b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.";
        let e = parse_state_dict(p, "x.pkl").unwrap_err().to_string();
        assert!(
            e.contains("disallowed global builtins.eval in x.pkl"),
            "{e}"
        );
    }

    #[test]
    fn stack_global_and_memoize() {
        // STACK_GLOBAL of a storage class, MEMOIZE, BINGET back, then REDUCE
        // on it must be refused (storage classes are not callable here).
        let p = b"\x80\x04\x8c\x05torch\x8c\x0bHalfStorage\x93\x94h\x00)R.";
        let e = parse_state_dict(p, "s").unwrap_err().to_string();
        assert!(e.contains("calling torch.HalfStorage"), "{e}");
    }

    #[test]
    fn long1_sign_extension() {
        let mut vm_input = b"\x80\x02\x8a\x02\xff\xff.".to_vec();
        let limits = Limits::default();
        let mut vm = Vm {
            input: &vm_input,
            pos: 0,
            source: "t",
            limits: &limits,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            work: 0,
        };
        assert!(matches!(vm.run().unwrap(), Value::Int(-1)));
        vm_input[5] = 0x7f;
        let mut vm = Vm {
            input: &vm_input,
            pos: 0,
            source: "t",
            limits: &limits,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            work: 0,
        };
        assert!(matches!(vm.run().unwrap(), Value::Int(0x7fff)));
    }

    #[test]
    fn deep_tuple_nesting_refused() {
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85u8, 100_000));
        p.push(b'.');
        let e = parse_state_dict(&p, "t").unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn memo_copy_blowup_refused() {
        // A list of 4096 items memoized, then appended to repeatedly: each
        // APPEND must copy the list (the memo still holds it), which is
        // charged to the work budget.
        let mut p = vec![0x80, 2, b']', b'('];
        p.extend(std::iter::repeat_n(b'N', 4096));
        p.extend(b"eq\x00");
        for _ in 0..100_000 {
            p.extend(b"h\x00Na0");
        }
        p.push(b'.');
        let limits = Limits {
            max_work: 10_000_000,
            ..Limits::default()
        };
        let e = parse_state_dict_with_limits(&p, "t", &limits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("copies more than"), "{e}");
    }
}
