//! ggml's tensor element types and block formats, bit for bit.
//!
//! Every quantized type stores a row as consecutive blocks; a row's length must be a multiple of
//! the type's block size. Layouts and rounding follow ggml's reference (`*_ref`) quantizers so
//! that files written here are read by llama.cpp and the Python `gguf` package, and theirs by us.
//!
//! - [`quantize_row`] / [`dequantize_row`] dispatch on a [`GgmlType`]; the per-type functions
//!   (`quantize_row_q4_0`, ...) are re-exported here too.
//! - [`vec_dot_type`] names the activation type a weight type is multiplied with.
//! - Submodules: `float` (F32/F16/BF16), `legacy` (the 32-element formats Q4_0 ... Q8_1),
//!   `kquants` (Q4_K, Q5_K, Q6_K, Q8_K in 256-element super-blocks), `search` (ggml's rounding
//!   and scale-search helpers shared by the K-quants).
//!
//! Q2_K and Q3_K are known to the type table (sizes) but have no codec here.

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

impl GgmlType {
    /// The GGUF/ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
        }
    }

    /// The type for a GGUF type id; `None` for ids owlet does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 32,
            GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K => QK_K,
            GgmlType::Q6_K | GgmlType::Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
        }
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
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q2_K => "q2_k",
            GgmlType::Q3_K => "q3_k",
            GgmlType::Q4_K => "q4_k",
            GgmlType::Q5_K => "q5_k",
            GgmlType::Q6_K => "q6_k",
            GgmlType::Q8_K => "q8_k",
            GgmlType::BF16 => "bf16",
        }
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
    match typ {
        GgmlType::F32 => quantize_row_f32(src, dst),
        GgmlType::F16 => quantize_row_f16(src, dst),
        GgmlType::BF16 => quantize_row_bf16(src, dst),
        GgmlType::Q4_0 => quantize_row_q4_0(src, dst),
        GgmlType::Q4_1 => quantize_row_q4_1(src, dst),
        GgmlType::Q5_0 => quantize_row_q5_0(src, dst),
        GgmlType::Q5_1 => quantize_row_q5_1(src, dst),
        GgmlType::Q8_0 => quantize_row_q8_0(src, dst),
        GgmlType::Q8_1 => quantize_row_q8_1(src, dst),
        GgmlType::Q4_K => quantize_row_q4_k(src, dst),
        GgmlType::Q5_K => quantize_row_q5_k(src, dst),
        GgmlType::Q6_K => quantize_row_q6_k(src, dst),
        GgmlType::Q8_K => quantize_row_q8_k(src, dst),
        GgmlType::Q2_K | GgmlType::Q3_K => Err(QuantError::Unsupported {
            typ,
            op: "quantize",
        }),
    }
}

/// Dequantizes one row: `src` holds exactly the blocks of `dst.len()` values of type `typ`.
pub fn dequantize_row(typ: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match typ {
        GgmlType::F32 => dequantize_row_f32(src, dst),
        GgmlType::F16 => dequantize_row_f16(src, dst),
        GgmlType::BF16 => dequantize_row_bf16(src, dst),
        GgmlType::Q4_0 => dequantize_row_q4_0(src, dst),
        GgmlType::Q4_1 => dequantize_row_q4_1(src, dst),
        GgmlType::Q5_0 => dequantize_row_q5_0(src, dst),
        GgmlType::Q5_1 => dequantize_row_q5_1(src, dst),
        GgmlType::Q8_0 => dequantize_row_q8_0(src, dst),
        GgmlType::Q8_1 => dequantize_row_q8_1(src, dst),
        GgmlType::Q4_K => dequantize_row_q4_k(src, dst),
        GgmlType::Q5_K => dequantize_row_q5_k(src, dst),
        GgmlType::Q6_K => dequantize_row_q6_k(src, dst),
        GgmlType::Q8_K => dequantize_row_q8_k(src, dst),
        GgmlType::Q2_K | GgmlType::Q3_K => Err(QuantError::Unsupported {
            typ,
            op: "dequantize",
        }),
    }
}

/// The type activations are converted to before a dot product with weights of type `weight`
/// (ggml's `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1/Q8_1 (whose dot
/// products need the block sum `s` to apply the weight's min), Q8_K for the K-quants, and F32
/// (activations stay unquantized) for F32/F16/BF16.
///
/// ggml itself converts activations to F16 (BF16) for F16 (BF16) weights; owlet keeps them in
/// F32, which is more accurate and what [`crate::kernels::generic::vec_dot_f16_f32`] expects.
pub fn vec_dot_type(weight: GgmlType) -> GgmlType {
    match weight {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => GgmlType::F32,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K => GgmlType::Q8_K,
        GgmlType::Q6_K | GgmlType::Q8_K => GgmlType::Q8_K,
    }
}
