//! ggml's block layouts, one `#[repr(C)]` struct per quantized type, and the byte sizes and
//! field offsets the kernels index raw block bytes with.
//!
//! Every field is a byte array (f16/f32 scales as their little-endian bytes, i16 sums as byte
//! pairs), so the structs have alignment 1 and no padding: each is exactly ggml's block, which
//! the assertions below pin. Nothing reads blocks through these structs (GGUF rows may be
//! unaligned); they exist so that sizes and offsets are named once, computed by the compiler.

use std::mem::{offset_of, size_of};

/// Q4_0: 32 values, `d·(q − 8)`; `qs[l]` holds value `l` in its low nibble, `l + 16` in its high.
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

/// Q4_1: 32 values, `d·q + m`, nibbles as Q4_0.
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}

/// Q5_0: 32 values, `d·(q − 16)`; bit `i` of `qh` is the fifth bit of value `i`.
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q5_1: 32 values, `d·q + m`, bits as Q5_0.
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q8_0: 32 values, `d·q`.
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; 32],
}

/// Q8_1: 32 values, `d·q`, with `s = d·Σq` (f16) for the dots with Q4_1/Q5_1.
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; 32],
}

/// Q2_K: 256 values in sixteen 16-value sub-blocks (no codec in owlet; sizes only).
#[repr(C)]
pub struct BlockQ2_K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

/// Q3_K: 256 values in sixteen 16-value sub-blocks (no codec in owlet; sizes only).
#[repr(C)]
pub struct BlockQ3_K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

/// Q4_K: 256 values in eight 32-value sub-blocks with 6-bit scales and mins packed in `scales`.
#[repr(C)]
pub struct BlockQ4_K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// Q5_K: as Q4_K with a fifth bit per value in `qh`.
#[repr(C)]
pub struct BlockQ5_K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// Q6_K: 256 values in sixteen 16-value sub-blocks with i8 scales; low 4 bits in `ql`, high 2
/// in `qh`.
#[repr(C)]
pub struct BlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}

/// Q8_K (activations of the K-quants): f32 `d`, 256 i8 quants, and the i16 sum of each 16.
#[repr(C)]
pub struct BlockQ8_K {
    pub d: [u8; 4],
    pub qs: [i8; 256],
    pub bsums: [[u8; 2]; 16],
}

/// Bytes of a Q4_0 block.
pub const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
/// Offset of a Q4_0 block's nibbles.
pub const Q4_0_QS: usize = offset_of!(BlockQ4_0, qs);
/// Bytes of a Q4_1 block.
pub const Q4_1_BYTES: usize = size_of::<BlockQ4_1>();
/// Offset of a Q4_1 block's nibbles.
pub const Q4_1_QS: usize = offset_of!(BlockQ4_1, qs);
/// Bytes of a Q5_0 block.
pub const Q5_0_BYTES: usize = size_of::<BlockQ5_0>();
/// Offset of a Q5_0 block's fifth bits.
pub const Q5_0_QH: usize = offset_of!(BlockQ5_0, qh);
/// Offset of a Q5_0 block's nibbles.
pub const Q5_0_QS: usize = offset_of!(BlockQ5_0, qs);
/// Bytes of a Q5_1 block.
pub const Q5_1_BYTES: usize = size_of::<BlockQ5_1>();
/// Offset of a Q5_1 block's fifth bits.
pub const Q5_1_QH: usize = offset_of!(BlockQ5_1, qh);
/// Offset of a Q5_1 block's nibbles.
pub const Q5_1_QS: usize = offset_of!(BlockQ5_1, qs);
/// Bytes of a Q8_0 block.
pub const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
/// Offset of a Q8_0 block's quants.
pub const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
/// Bytes of a Q8_1 block.
pub const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();
/// Offset of a Q8_1 block's quants.
pub const Q8_1_QS: usize = offset_of!(BlockQ8_1, qs);
/// Bytes of a Q2_K block.
pub const Q2_K_BYTES: usize = size_of::<BlockQ2_K>();
/// Bytes of a Q3_K block.
pub const Q3_K_BYTES: usize = size_of::<BlockQ3_K>();
/// Bytes of a Q4_K block.
pub const Q4_K_BYTES: usize = size_of::<BlockQ4_K>();
/// Offset of a Q4_K block's f16 `dmin`.
pub const Q4_K_DMIN: usize = offset_of!(BlockQ4_K, dmin);
/// Offset of a Q4_K block's packed scales and mins.
pub const Q4_K_SCALES: usize = offset_of!(BlockQ4_K, scales);
/// Offset of a Q4_K block's nibbles.
pub const Q4_K_QS: usize = offset_of!(BlockQ4_K, qs);
/// Bytes of a Q5_K block.
pub const Q5_K_BYTES: usize = size_of::<BlockQ5_K>();
/// Offset of a Q5_K block's fifth bits.
pub const Q5_K_QH: usize = offset_of!(BlockQ5_K, qh);
/// Offset of a Q5_K block's nibbles.
pub const Q5_K_QS: usize = offset_of!(BlockQ5_K, qs);
/// Bytes of a Q6_K block.
pub const Q6_K_BYTES: usize = size_of::<BlockQ6_K>();
/// Offset of a Q6_K block's high bits.
pub const Q6_K_QH: usize = offset_of!(BlockQ6_K, qh);
/// Offset of a Q6_K block's i8 scales.
pub const Q6_K_SCALES: usize = offset_of!(BlockQ6_K, scales);
/// Offset of a Q6_K block's f16 `d`.
pub const Q6_K_D: usize = offset_of!(BlockQ6_K, d);
/// Bytes of a Q8_K block.
pub const Q8_K_BYTES: usize = size_of::<BlockQ8_K>();
/// Offset of a Q8_K block's quants.
pub const Q8_K_QS: usize = offset_of!(BlockQ8_K, qs);
/// Offset of a Q8_K block's sixteen i16 sums.
pub const Q8_K_BSUMS: usize = offset_of!(BlockQ8_K, bsums);

// ggml's sizes (`static_assert`s in ggml-common.h) and the offsets the kernels rely on.
const _: () = assert!(Q4_0_BYTES == 18 && Q4_0_QS == 2);
const _: () = assert!(Q4_1_BYTES == 20 && Q4_1_QS == 4);
const _: () = assert!(Q5_0_BYTES == 22 && Q5_0_QH == 2 && Q5_0_QS == 6);
const _: () = assert!(Q5_1_BYTES == 24 && Q5_1_QH == 4 && Q5_1_QS == 8);
const _: () = assert!(Q8_0_BYTES == 34 && Q8_0_QS == 2);
const _: () = assert!(Q8_1_BYTES == 36 && Q8_1_QS == 4);
const _: () = assert!(Q2_K_BYTES == 84);
const _: () = assert!(Q3_K_BYTES == 110);
const _: () = assert!(Q4_K_BYTES == 144 && Q4_K_DMIN == 2 && Q4_K_SCALES == 4 && Q4_K_QS == 16);
const _: () = assert!(Q5_K_BYTES == 176 && Q5_K_QH == 16 && Q5_K_QS == 48);
const _: () = assert!(Q6_K_BYTES == 210 && Q6_K_QH == 128 && Q6_K_SCALES == 192 && Q6_K_D == 208);
const _: () = assert!(Q8_K_BYTES == 292 && Q8_K_QS == 4 && Q8_K_BSUMS == 260);
