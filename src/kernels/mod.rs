//! Dot products between a row of weight blocks and a row of activations.
//!
//! Each kernel takes the element count `n`, the weight row as raw block bytes (as stored in a
//! GGUF file, possibly unaligned) and the activation row in the weight type's
//! [`crate::quant::vec_dot_type`] (quantized blocks, or f32 for float weights), and returns one
//! f32. Kernels know no model names, spawn no threads and allocate nothing.
//!
//! - [`generic`]: portable scalar kernels that compute what ggml's scalar (`*_generic`) vec_dot
//!   functions compute — integer sums inside each block, then scaling and accumulation in f32
//!   in the same order — so that results match ggml closely. They are the reference ("scalar
//!   twins") that the SIMD variants are tested against.
//!
//! A [`Kernels`] table bundles one implementation of every kernel: the weight dots and tiles
//! above, the attention row primitives and activation quantizers ([`rows::RowOps`], its
//! `rows`) and the exp family ([`exp::ExpOps`], its `exp`). The table is chosen once, when a
//! model is loaded ([`select`]): the best variant the CPU supports (run-time detection on
//! Linux/Android, compile-time features where detection is unavailable), or the one named by
//! `OWLET_KERNELS` (`generic`, `avx2`, `avxvnni`, ...) for tests and bug reports. Every op takes
//! the model's table; there is no process-global kernel choice, and the forward pass never
//! branches on the instruction set.

use crate::quant::GgmlType;

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512vnni;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
pub mod exp;
#[cfg(target_arch = "aarch64")]
mod float_neon;
#[cfg(target_arch = "x86_64")]
mod float_x86;
pub mod generic;
#[doc(hidden)]
pub mod generic_packed;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neon_dotprod;
#[cfg(target_arch = "aarch64")]
pub mod neon_i8mm;
#[cfg(target_arch = "aarch64")]
mod neon_rows;
pub mod rows;
/// The kernel unit tests' generator, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/rng.rs"]
pub(crate) mod test_rng;
pub mod tile16;
pub mod tiles;

/// Quantized weight row · quantized activation row.
pub type QuantDot = fn(usize, &[u8], &[u8]) -> f32;
/// Float weight row (raw little-endian bytes) · f32 activation row.
pub type FloatDot = fn(usize, &[u8], &[f32]) -> f32;
/// A tile of dot products: `out[r * a.len() + c] = dot(n, w[r], a[c])` for up to
/// [`Kernels::tile_rows`] weight rows `w` and up to [`TILE`] activation rows `a` (quantized
/// blocks, as for [`QuantDot`]). One call runs the whole row length, so each loaded activation block is
/// reused across the weight rows and each unpacked weight block across the activation rows.
///
/// Contract shared by every variant: each output is bitwise the same number whatever the tile
/// shape it was computed in (the per-block integer sums are exact and the f32 scaling follows
/// one fixed formula per block, for the 32-blocks `acc = fma(s, d_w·d_a, acc)`), so matmul
/// results do not depend on how work is tiled or split over threads.
pub type QuantTile = fn(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]);

/// A tile of float products: `out[r * a.len() + c]` = weight row `w[r]` (f32, f16 or bf16
/// little-endian bytes) · activation row `a[c]` for up to [`FLOAT_TILE_ROWS`] weight rows and up
/// to [`TILE`] activation rows, the whole row length inside the call, so that each converted
/// weight vector feeds every activation row and each activation vector every weight row.
///
/// Contract shared by every variant: each output is one fixed summation sequence of its row
/// pair (for the SIMD tiles [`tiles::float_lanes8`]'s), so it is bitwise the same number
/// whatever tile shape, thread count or activation row count computed it.
pub type FloatTile = fn(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]);

/// The most weight rows a [`FloatTile`] accepts: a multiple of every register-tile height the
/// variants use (2, 3, 4, 6, 12), so full calls leave no odd rows.
pub const FLOAT_TILE_ROWS: usize = 12;

/// The most activation rows a [`QuantTile`] accepts, and the most weight rows unless the type
/// is one of the table's [`Kernels::wide`] ones.
pub const TILE: usize = 4;

/// The most weight rows a [`QuantTile`] of a [`Kernels::wide`] type accepts.
pub const TILE_ROWS: usize = 16;

/// One implementation of every kernel.
pub struct Kernels {
    /// The name `OWLET_KERNELS` selects it by.
    pub name: &'static str,
    pub q4_0_q8_0: QuantDot,
    pub q4_1_q8_1: QuantDot,
    pub q5_0_q8_0: QuantDot,
    pub q5_1_q8_1: QuantDot,
    pub q8_0_q8_0: QuantDot,
    pub q4_k_q8_k: QuantDot,
    pub q5_k_q8_k: QuantDot,
    pub q6_k_q8_k: QuantDot,
    pub f16_f32: FloatDot,
    pub bf16_f32: FloatDot,
    pub f32_f32: FloatDot,
    /// Tiled float products (see [`FloatTile`]): what matrix products with float weights run,
    /// decode included. The generic table makes them of one dot per output.
    pub f16_f32_tile: FloatTile,
    pub bf16_f32_tile: FloatTile,
    pub f32_f32_tile: FloatTile,
    /// Tiled forms of the quantized dots (see [`QuantTile`]); each equals its dot above
    /// bitwise, element by element.
    pub q4_0_q8_0_tile: QuantTile,
    pub q4_1_q8_1_tile: QuantTile,
    pub q5_0_q8_0_tile: QuantTile,
    pub q5_1_q8_1_tile: QuantTile,
    pub q8_0_q8_0_tile: QuantTile,
    pub q4_k_q8_k_tile: QuantTile,
    pub q5_k_q8_k_tile: QuantTile,
    pub q6_k_q8_k_tile: QuantTile,
    /// Weight types whose tiles take [`TILE_ROWS`] weight rows per call (one per SIMD lane)
    /// rather than [`TILE`].
    pub wide: &'static [GgmlType],
    /// Weight types this variant repacks at load (see [`Packing`]).
    pub packings: &'static [Packing],
    /// The attention row primitives and activation quantizers.
    pub rows: rows::RowOps,
    /// `exp`, SiLU, QuickGELU and softmax.
    pub exp: exp::ExpOps,
}

/// A load-time repacking of a weight type: groups of [`TILE_ROWS`] rows interleaved block by
/// block into one record per 32-value block, so that a tile streams one sequential run of
/// memory and loads each block's 16 rows with a few vector loads. The numbers are unchanged: a
/// packed tile equals the plain [`QuantTile`] on the same rows bitwise.
pub struct Packing {
    pub typ: GgmlType,
    /// Bytes of one record (16 rows × one block).
    pub record_bytes: usize,
    /// `pack(n, rows, out)`: [`TILE_ROWS`] rows of `n` values (stored bytes) into `out`
    /// (`n / 32` records); anything else leaves `out` untouched.
    pub pack: fn(usize, &[&[u8]], &mut [u8]),
    /// `tile(n, group, a, out)`: one packed group × up to [`TILE`] activation rows,
    /// `out[r·a.len() + c]` for the group's 16 rows.
    pub tile: PackedTile,
    /// 16 packed rows × 16 activation rows laid out by [`tile16::layout`], where the
    /// variant has such tiles (AMX): `tile16(n, group, acts, out)`, `out[r·16 + c]`, the same
    /// numbers as `tile`.
    pub tile16: Option<Tile16>,
}

impl Packing {
    /// Bytes of one packed group (16 rows) of `cols` values: one record per block.
    pub fn group_bytes(&self, cols: usize) -> usize {
        cols / self.typ.block_size() * self.record_bytes
    }
}

/// A 16×16 tile over one packed group and laid-out activations: `(n, group, acts, out)`, see
/// [`Packing::tile16`].
pub type Tile16 = fn(usize, &[u8], &[u8], &mut [f32]);

/// A tile over one packed group: `(n, group, a, out)`, see [`Packing::tile`].
pub type PackedTile = fn(usize, &[u8], &[&[u8]], &mut [f32]);

impl Kernels {
    /// The integer dot product for a quantized weight type.
    pub fn quant_dot(&self, w: GgmlType) -> Option<QuantDot> {
        Some(match w {
            GgmlType::Q4_0 => self.q4_0_q8_0,
            GgmlType::Q4_1 => self.q4_1_q8_1,
            GgmlType::Q5_0 => self.q5_0_q8_0,
            GgmlType::Q5_1 => self.q5_1_q8_1,
            GgmlType::Q8_0 => self.q8_0_q8_0,
            GgmlType::Q4_K => self.q4_k_q8_k,
            GgmlType::Q5_K => self.q5_k_q8_k,
            GgmlType::Q6_K => self.q6_k_q8_k,
            _ => return None,
        })
    }

    /// The most weight rows one [`QuantTile`] call for `w` takes.
    pub fn tile_rows(&self, w: GgmlType) -> usize {
        if self.wide.contains(&w) {
            TILE_ROWS
        } else {
            TILE
        }
    }

    /// The load-time repacking of weight type `w`, if this variant has one.
    pub fn packing(&self, w: GgmlType) -> Option<&'static Packing> {
        self.packings.iter().find(|p| p.typ == w)
    }

    /// The tiled integer dot product for a quantized weight type.
    pub fn quant_tile(&self, w: GgmlType) -> Option<QuantTile> {
        Some(match w {
            GgmlType::Q4_0 => self.q4_0_q8_0_tile,
            GgmlType::Q4_1 => self.q4_1_q8_1_tile,
            GgmlType::Q5_0 => self.q5_0_q8_0_tile,
            GgmlType::Q5_1 => self.q5_1_q8_1_tile,
            GgmlType::Q8_0 => self.q8_0_q8_0_tile,
            GgmlType::Q4_K => self.q4_k_q8_k_tile,
            GgmlType::Q5_K => self.q5_k_q8_k_tile,
            GgmlType::Q6_K => self.q6_k_q8_k_tile,
            _ => return None,
        })
    }

    /// The tiled float product for a float weight type.
    pub fn float_tile(&self, w: GgmlType) -> Option<FloatTile> {
        Some(match w {
            GgmlType::F32 => self.f32_f32_tile,
            GgmlType::F16 => self.f16_f32_tile,
            GgmlType::BF16 => self.bf16_f32_tile,
            _ => return None,
        })
    }

    /// The float dot product for a float weight type.
    pub fn float_dot(&self, w: GgmlType) -> Option<FloatDot> {
        Some(match w {
            GgmlType::F32 => self.f32_f32,
            GgmlType::F16 => self.f16_f32,
            GgmlType::BF16 => self.bf16_f32,
            _ => return None,
        })
    }
}

/// The portable scalar kernels.
pub static GENERIC: Kernels = Kernels {
    name: "generic",
    q4_0_q8_0: generic::vec_dot_q4_0_q8_0,
    q4_1_q8_1: generic::vec_dot_q4_1_q8_1,
    q5_0_q8_0: generic::vec_dot_q5_0_q8_0,
    q5_1_q8_1: generic::vec_dot_q5_1_q8_1,
    q8_0_q8_0: generic::vec_dot_q8_0_q8_0,
    q4_k_q8_k: generic::vec_dot_q4_k_q8_k,
    q5_k_q8_k: generic::vec_dot_q5_k_q8_k,
    q6_k_q8_k: generic::vec_dot_q6_k_q8_k,
    f16_f32: generic::vec_dot_f16_f32,
    bf16_f32: generic::vec_dot_bf16_f32,
    f32_f32: generic::vec_dot_f32,
    f16_f32_tile: tiles::f16_f32,
    bf16_f32_tile: tiles::bf16_f32,
    f32_f32_tile: tiles::f32_f32,
    q4_0_q8_0_tile: tiles::q4_0_q8_0,
    q4_1_q8_1_tile: tiles::q4_1_q8_1,
    q5_0_q8_0_tile: tiles::q5_0_q8_0,
    q5_1_q8_1_tile: tiles::q5_1_q8_1,
    q8_0_q8_0_tile: tiles::q8_0_q8_0,
    q4_k_q8_k_tile: tiles::q4_k_q8_k,
    q5_k_q8_k_tile: tiles::q5_k_q8_k,
    q6_k_q8_k_tile: tiles::q6_k_q8_k,
    wide: &[],
    packings: &[],
    rows: rows::SCALAR,
    exp: exp::SCALAR,
};

/// Every variant this CPU can run, best first (the generic one last).
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v: Vec<&'static Kernels> = Vec::new();
    // x86-64: AMX, AVX-512 VNNI, AVX-VNNI, AVX2 (each needs everything the next one needs);
    // AVX-512 VNNI without AVX-VNNI (Zen 4) gets the AVX-512 VNNI tiles with AVX2's narrow
    // ones; AVX-512 without VNNI gets AVX2's table with AVX-512 float tiles.
    #[cfg(target_arch = "x86_64")]
    v.extend(amx::detect());
    #[cfg(target_arch = "x86_64")]
    v.extend(avx512vnni::detect());
    #[cfg(target_arch = "x86_64")]
    if avxvnni::detect().is_none() {
        v.extend(avx512vnni::detect_evex());
    }
    #[cfg(target_arch = "x86_64")]
    v.extend(avxvnni::detect());
    #[cfg(target_arch = "x86_64")]
    v.extend(avx512::detect());
    #[cfg(target_arch = "x86_64")]
    v.extend(avx2::detect());
    // aarch64: NEON is baseline; the i8mm and dot-product variants only when detected.
    #[cfg(target_arch = "aarch64")]
    v.extend(neon_i8mm::detected());
    #[cfg(target_arch = "aarch64")]
    v.extend(neon_dotprod::detected());
    #[cfg(target_arch = "aarch64")]
    v.push(&neon::NEON);
    v.push(&GENERIC);
    v
}

/// The variant named `name`, if this CPU can run it. Besides [`available`]'s, the hidden
/// test variant `generic-packed` ([`generic_packed::GENERIC_PACKED`]) is found by name.
pub fn by_name(name: &str) -> Option<&'static Kernels> {
    if name == generic_packed::GENERIC_PACKED.name {
        return Some(&generic_packed::GENERIC_PACKED);
    }
    available().into_iter().find(|k| k.name == name)
}

/// The kernels to use: `OWLET_KERNELS` if set (an error names the variants this CPU has when
/// it cannot run the one asked for), else the best available.
pub fn select() -> Result<&'static Kernels, String> {
    match std::env::var("OWLET_KERNELS") {
        Ok(name) if !name.is_empty() => by_name(&name).ok_or_else(|| {
            let names: Vec<&str> = available().iter().map(|k| k.name).collect();
            format!(
                "OWLET_KERNELS={name} is not available on this CPU (available: {})",
                names.join(", ")
            )
        }),
        _ => Ok(available()[0]),
    }
}
