//! ggml's tensor element types and block formats, bit for bit.
//!
//! Every quantized type stores a row as consecutive blocks; a row's length must be a multiple of
//! the type's block size. Layouts and rounding follow ggml's reference (`*_ref`) quantizers so
//! that files written here are read by llama.cpp and the Python `gguf` package, and theirs by us.
//!
//! - One row per type ([`TypeTraits`], [`GgmlType::traits`]): GGUF id, name, block size and
//!   bytes, the activation type it is multiplied with ([`vec_dot_type`]), whether owlet
//!   multiplies by it, and its codec. Everything per-type here reads that row; adding a type is
//!   a row, a layout and a codec.
//! - [`blocks`]: each block layout as a `#[repr(C)]` struct with compile-time checks against
//!   ggml's sizes, and the named sizes and offsets the codecs and kernels index bytes with.
//! - [`quantize_row`] / [`dequantize_row`] dispatch through the row's codec; the per-type
//!   functions (`quantize_row_q4_0`, ...) are re-exported here too.
//! - Submodules: `float` (F32/F16/BF16), `legacy` (the 32-element formats Q4_0 ... Q8_1),
//!   `kquants` (Q4_K, Q5_K, Q6_K, Q8_K in 256-element super-blocks), `search` (ggml's rounding
//!   and scale-search helpers shared by the K-quants).
//!
//! Q2_K and Q3_K are known to the type table (sizes) but have no codec here.

pub mod blocks;
mod float;
mod kquants;
mod legacy;
mod search;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use float::write_f16;
pub use float::{
    dequantize_row_bf16, dequantize_row_f16, dequantize_row_f32, quantize_row_bf16,
    quantize_row_f16, quantize_row_f32,
};
pub(crate) use float::{read_bf16, read_f16, read_f32};
pub(crate) use kquants::q6_k_quant;
pub use kquants::{
    dequantize_row_q4_k, dequantize_row_q5_k, dequantize_row_q6_k, dequantize_row_q8_k,
    quantize_row_q4_k, quantize_row_q5_k, quantize_row_q6_k, quantize_row_q8_k,
    unpack_scale_min_k4,
};
pub use legacy::{
    dequantize_row_q4_0, dequantize_row_q4_1, dequantize_row_q5_0, dequantize_row_q5_1,
    dequantize_row_q8_0, dequantize_row_q8_1, quantize_row_q4_0, quantize_row_q4_1,
    quantize_row_q5_0, quantize_row_q5_1, quantize_row_q8_0, quantize_row_q8_1,
};

/// A ggml tensor type, with the numeric ids used in GGUF files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

/// A row codec: one row of values into its blocks, or back.
pub type QuantizeRow = fn(&[f32], &mut [u8]) -> Result<(), QuantError>;
/// See [`QuantizeRow`].
pub type DequantizeRow = fn(&[u8], &mut [f32]) -> Result<(), QuantError>;

/// Everything owlet knows about one ggml type: one row of the type table ([`GgmlType::traits`]).
/// Adding a type is a row here, its block layout beside the others, and a row in the generic
/// kernel table ([`crate::kernels::GENERIC`]) when owlet multiplies by it.
pub struct TypeTraits {
    /// The type this row describes (rows are in [`GgmlType`] order, checked at compile time).
    pub typ: GgmlType,
    /// The GGUF/ggml type id.
    pub id: u32,
    /// The lower-case name used in ggml and on owlet's command lines.
    pub name: &'static str,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// The type activations are converted to before a dot product with weights of this type
    /// (ggml's `vec_dot_type`); F32 for the float types, whose activations stay unquantized.
    pub vec_dot_type: GgmlType,
    /// Whether owlet multiplies by weights of this type (the generic kernel table has a row for
    /// every such type, checked by a test).
    pub matmul: bool,
    /// The reference quantizer, where owlet has one.
    pub quantize: Option<QuantizeRow>,
    /// The dequantizer, where owlet has one.
    pub dequantize: Option<DequantizeRow>,
}

/// One row per [`GgmlType`], in declaration order.
///
/// Activation types: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1/Q8_1 (whose dot products
/// need the block sum `s` to apply the weight's min), Q8_K for the K-quants, and F32 for
/// F32/F16/BF16. ggml itself converts activations to F16 (BF16) for F16 (BF16) weights; owlet
/// keeps them in F32, which is more accurate and what
/// [`crate::kernels::generic::vec_dot_f16_f32`] expects.
#[rustfmt::skip]
const TYPES: [TypeTraits; GgmlType::COUNT] = {
    use blocks as B;
    use GgmlType::*;
    /// A row; `codec` is the (quantize, dequantize) pair, absent for Q2_K/Q3_K.
    #[allow(clippy::too_many_arguments)] // one argument per column of the table below
    const fn row(
        typ: GgmlType, id: u32, name: &'static str, block_size: usize, type_size: usize,
        vec_dot_type: GgmlType, matmul: bool, codec: Option<(QuantizeRow, DequantizeRow)>,
    ) -> TypeTraits {
        let (quantize, dequantize) = match codec {
            Some((q, d)) => (Some(q), Some(d)),
            None => (None, None),
        };
        TypeTraits { typ, id, name, block_size, type_size, vec_dot_type, matmul, quantize, dequantize }
    }
    [
        //  type  id  name    block bytes          act.  matmul codec
        row(F32,   0, "f32",  1,    4,             F32,  true,  Some((quantize_row_f32, dequantize_row_f32))),
        row(F16,   1, "f16",  1,    2,             F32,  true,  Some((quantize_row_f16, dequantize_row_f16))),
        row(Q4_0,  2, "q4_0", 32,   B::Q4_0_BYTES, Q8_0, true,  Some((quantize_row_q4_0, dequantize_row_q4_0))),
        row(Q4_1,  3, "q4_1", 32,   B::Q4_1_BYTES, Q8_1, true,  Some((quantize_row_q4_1, dequantize_row_q4_1))),
        row(Q5_0,  6, "q5_0", 32,   B::Q5_0_BYTES, Q8_0, true,  Some((quantize_row_q5_0, dequantize_row_q5_0))),
        row(Q5_1,  7, "q5_1", 32,   B::Q5_1_BYTES, Q8_1, true,  Some((quantize_row_q5_1, dequantize_row_q5_1))),
        row(Q8_0,  8, "q8_0", 32,   B::Q8_0_BYTES, Q8_0, true,  Some((quantize_row_q8_0, dequantize_row_q8_0))),
        row(Q8_1,  9, "q8_1", 32,   B::Q8_1_BYTES, Q8_1, false, Some((quantize_row_q8_1, dequantize_row_q8_1))),
        row(Q2_K, 10, "q2_k", QK_K, B::Q2_K_BYTES, Q8_K, false, None),
        row(Q3_K, 11, "q3_k", QK_K, B::Q3_K_BYTES, Q8_K, false, None),
        row(Q4_K, 12, "q4_k", QK_K, B::Q4_K_BYTES, Q8_K, true,  Some((quantize_row_q4_k, dequantize_row_q4_k))),
        row(Q5_K, 13, "q5_k", QK_K, B::Q5_K_BYTES, Q8_K, true,  Some((quantize_row_q5_k, dequantize_row_q5_k))),
        row(Q6_K, 14, "q6_k", QK_K, B::Q6_K_BYTES, Q8_K, true,  Some((quantize_row_q6_k, dequantize_row_q6_k))),
        row(Q8_K, 15, "q8_k", QK_K, B::Q8_K_BYTES, Q8_K, false, Some((quantize_row_q8_k, dequantize_row_q8_k))),
        row(BF16, 30, "bf16", 1,    2,             F32,  true,  Some((quantize_row_bf16, dequantize_row_bf16))),
    ]
};

// The table's rows are in enum order, so `TYPES[t as usize]` is `t`'s row.
const _: () = {
    let mut i = 0;
    while i < GgmlType::COUNT {
        assert!(TYPES[i].typ as usize == i);
        i += 1;
    }
};

impl GgmlType {
    /// How many types there are (the length of per-type tables).
    pub const COUNT: usize = 15;

    /// Every type, in declaration order.
    pub const ALL: [GgmlType; GgmlType::COUNT] = {
        let mut all = [GgmlType::F32; GgmlType::COUNT];
        let mut i = 0;
        while i < GgmlType::COUNT {
            all[i] = TYPES[i].typ;
            i += 1;
        }
        all
    };

    /// This type's row of the type table.
    pub const fn traits(self) -> &'static TypeTraits {
        &TYPES[self as usize]
    }

    /// The GGUF/ggml type id.
    pub const fn id(self) -> u32 {
        self.traits().id
    }

    /// The type for a GGUF type id; `None` for ids owlet does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.id == id).map(|t| t.typ)
    }

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        self.traits().block_size
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        self.traits().type_size
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks or
    /// the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// The lower-case name used in ggml and on owlet's command lines (`q4_0`, `q4_k`, `f16`).
    pub const fn name(self) -> &'static str {
        self.traits().name
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Super-block size of the K-quants.
pub const QK_K: usize = 256;

/// Why a row could not be quantized or dequantized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The row's element count is not a whole number of blocks.
    #[error("{typ}: a row of {n} elements is not a whole number of {block}-element blocks")]
    PartialBlock {
        /// The block format.
        typ: GgmlType,
        /// Elements in the row.
        n: usize,
        /// Elements per block of `typ`.
        block: usize,
    },
    /// The byte buffer does not match the row's element count.
    #[error("{typ}: a row of {n} elements takes {expected} bytes, but the buffer has {got}")]
    ByteLength {
        /// The block format.
        typ: GgmlType,
        /// Elements in the row.
        n: usize,
        /// Bytes a row of `n` elements takes.
        expected: usize,
        /// Bytes in the buffer given.
        got: usize,
    },
    /// owlet has no codec for this type (Q2_K, Q3_K).
    #[error("{typ}: owlet cannot {op} this type")]
    Unsupported {
        /// The block format.
        typ: GgmlType,
        /// "quantize" or "dequantize".
        op: &'static str,
    },
}

/// Checks that `n` elements of `typ` occupy exactly `bytes` bytes.
fn check_row(typ: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let block = typ.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { typ, n, block });
    }
    let expected = n / block * typ.type_size();
    if expected != bytes {
        return Err(QuantError::ByteLength {
            typ,
            n,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Runs `f` on each (block of values, block of bytes) pair after checking the lengths.
fn for_each_block(
    typ: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    mut f: impl FnMut(&[f32], &mut [u8]),
) -> Result<(), QuantError> {
    check_row(typ, src.len(), dst.len())?;
    let blocks = src
        .chunks_exact(typ.block_size())
        .zip(dst.chunks_exact_mut(typ.type_size()));
    for (x, y) in blocks {
        f(x, y);
    }
    Ok(())
}

/// Runs `f` on each (block of bytes, block of values) pair after checking the lengths.
fn for_each_block_mut(
    typ: GgmlType,
    src: &[u8],
    dst: &mut [f32],
    mut f: impl FnMut(&[u8], &mut [f32]),
) -> Result<(), QuantError> {
    check_row(typ, dst.len(), src.len())?;
    let blocks = src
        .chunks_exact(typ.type_size())
        .zip(dst.chunks_exact_mut(typ.block_size()));
    for (x, y) in blocks {
        f(x, y);
    }
    Ok(())
}

/// Quantizes one row of `src.len()` values into `dst` (exactly `typ.row_bytes(src.len())`
/// bytes), bit-exact with ggml's reference quantizer for `typ` (what `llama-quantize` writes
/// without an importance matrix).
pub fn quantize_row(typ: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match typ.traits().quantize {
        Some(quantize) => quantize(src, dst),
        None => Err(QuantError::Unsupported {
            typ,
            op: "quantize",
        }),
    }
}

/// Dequantizes one row: `src` holds exactly the blocks of `dst.len()` values of type `typ`.
pub fn dequantize_row(typ: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match typ.traits().dequantize {
        Some(dequantize) => dequantize(src, dst),
        None => Err(QuantError::Unsupported {
            typ,
            op: "dequantize",
        }),
    }
}

/// The type activations are converted to before a dot product with weights of type `weight`
/// (ggml's `vec_dot_type`; see [`TypeTraits::vec_dot_type`]).
pub const fn vec_dot_type(weight: GgmlType) -> GgmlType {
    weight.traits().vec_dot_type
}
