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
//! Blocks are indexed by the named sizes and offsets of [`crate::quant::blocks`], never by byte
//! literals.
//!
//! A [`Kernels`] table bundles one implementation of every kernel: the weight dots and tiles
//! as a [`WeightTable`], one [`WeightKernels`] row per weight type (so a new type is one row,
//! and a variant replaces only the rows it speeds up, starting from [`GENERIC_WEIGHTS`]), the
//! load-time repackings ([`Packing`]), the attention row primitives and activation quantizers
//! ([`rows::RowOps`], its `rows`) and the exp family ([`exp::ExpOps`], its `exp`). Which types
//! have rows follows the type table ([`crate::quant::TypeTraits::matmul`]; a test checks every
//! variant). The table is chosen once, when a
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

/// The most activation rows a [`QuantTile`] accepts, and the most weight rows unless the
/// type's row says [`TILE_ROWS`].
pub const TILE: usize = 4;

/// The most weight rows a wide [`QuantTile`] (one weight row per SIMD lane) accepts.
pub const TILE_ROWS: usize = 16;

/// One weight type's kernels in one variant: a row of a [`WeightTable`].
#[derive(Clone, Copy)]
pub enum WeightKernels {
    /// No kernels: owlet does not multiply by weights of this type.
    None,
    /// A quantized weight type, multiplied with activations quantized to its
    /// [`crate::quant::vec_dot_type`].
    Quant {
        dot: QuantDot,
        /// Equal to `dot` bitwise, element by element.
        tile: QuantTile,
        /// The most weight rows one `tile` call takes: [`TILE`], or [`TILE_ROWS`] for tiles
        /// with a weight row per SIMD lane.
        tile_rows: usize,
    },
    /// A float weight type (f32, f16, bf16), multiplied with f32 activations.
    Float {
        dot: FloatDot,
        /// What matrix products with float weights run, decode included.
        tile: FloatTile,
    },
}

/// A variant's kernels for every weight type, one row per [`GgmlType`] (indexed by it).
/// Built in `const` by listing rows: `WeightTable::EMPTY.quant(Q4_0, dot, tile)...`, or by
/// replacing some rows of another variant's table.
#[derive(Clone, Copy)]
pub struct WeightTable([WeightKernels; GgmlType::COUNT]);

impl WeightTable {
    /// No rows.
    pub const EMPTY: WeightTable = WeightTable([WeightKernels::None; GgmlType::COUNT]);

    /// With `w`'s row set to `row`.
    pub const fn with(mut self, w: GgmlType, row: WeightKernels) -> Self {
        self.0[w as usize] = row;
        self
    }

    /// With the row of quantized type `w` set to a `dot` and a [`TILE`]-row `tile`.
    pub const fn quant(self, w: GgmlType, dot: QuantDot, tile: QuantTile) -> Self {
        let tile_rows = TILE;
        self.with(
            w,
            WeightKernels::Quant {
                dot,
                tile,
                tile_rows,
            },
        )
    }

    /// With the row of quantized type `w` set to a `dot` and a [`TILE_ROWS`]-row `tile`.
    pub const fn quant_wide(self, w: GgmlType, dot: QuantDot, tile: QuantTile) -> Self {
        let tile_rows = TILE_ROWS;
        self.with(
            w,
            WeightKernels::Quant {
                dot,
                tile,
                tile_rows,
            },
        )
    }

    /// With the row of float type `w` set to a `dot` and a `tile`.
    pub const fn float(self, w: GgmlType, dot: FloatDot, tile: FloatTile) -> Self {
        self.with(w, WeightKernels::Float { dot, tile })
    }

    /// `w`'s row.
    pub const fn get(&self, w: GgmlType) -> WeightKernels {
        self.0[w as usize]
    }
}

/// One implementation of every kernel.
pub struct Kernels {
    /// The name `OWLET_KERNELS` selects it by.
    pub name: &'static str,
    /// The weight dots and tiles, one row per weight type.
    pub weights: WeightTable,
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
    /// variant has such tiles (AMX; Zen 4's Q8_0): `tile16(n, group, acts, out)`,
    /// `out[r·16 + c]`, the same numbers as `tile`.
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
        match self.weights.get(w) {
            WeightKernels::Quant { dot, .. } => Some(dot),
            _ => None,
        }
    }

    /// The tiled integer dot product for a quantized weight type.
    pub fn quant_tile(&self, w: GgmlType) -> Option<QuantTile> {
        match self.weights.get(w) {
            WeightKernels::Quant { tile, .. } => Some(tile),
            _ => None,
        }
    }

    /// The most weight rows one [`QuantTile`] call for `w` takes.
    pub fn tile_rows(&self, w: GgmlType) -> usize {
        match self.weights.get(w) {
            WeightKernels::Quant { tile_rows, .. } => tile_rows,
            _ => TILE,
        }
    }

    /// The float dot product for a float weight type.
    pub fn float_dot(&self, w: GgmlType) -> Option<FloatDot> {
        match self.weights.get(w) {
            WeightKernels::Float { dot, .. } => Some(dot),
            _ => None,
        }
    }

    /// The tiled float product for a float weight type.
    pub fn float_tile(&self, w: GgmlType) -> Option<FloatTile> {
        match self.weights.get(w) {
            WeightKernels::Float { tile, .. } => Some(tile),
            _ => None,
        }
    }

    /// The load-time repacking of weight type `w`, if this variant has one.
    pub fn packing(&self, w: GgmlType) -> Option<&'static Packing> {
        self.packings.iter().find(|p| p.typ == w)
    }
}

/// The portable scalar kernels: one row per weight type owlet multiplies by (the types whose
/// [`crate::quant::TypeTraits::matmul`] is set). Float tiles make one dot per output.
pub static GENERIC: Kernels = Kernels {
    name: "generic",
    weights: GENERIC_WEIGHTS,
    packings: &[],
    rows: rows::SCALAR,
    exp: exp::SCALAR,
};

/// [`GENERIC`]'s rows, which the SIMD variants start from.
#[rustfmt::skip]
pub const GENERIC_WEIGHTS: WeightTable = {
    use GgmlType::*;
    WeightTable::EMPTY
        .float(F32, generic::vec_dot_f32, tiles::f32_f32)
        .float(F16, generic::vec_dot_f16_f32, tiles::f16_f32)
        .float(BF16, generic::vec_dot_bf16_f32, tiles::bf16_f32)
        .quant(Q4_0, generic::vec_dot_q4_0_q8_0, tiles::q4_0_q8_0)
        .quant(Q4_1, generic::vec_dot_q4_1_q8_1, tiles::q4_1_q8_1)
        .quant(Q5_0, generic::vec_dot_q5_0_q8_0, tiles::q5_0_q8_0)
        .quant(Q5_1, generic::vec_dot_q5_1_q8_1, tiles::q5_1_q8_1)
        .quant(Q8_0, generic::vec_dot_q8_0_q8_0, tiles::q8_0_q8_0)
        .quant(Q4_K, generic::vec_dot_q4_k_q8_k, tiles::q4_k_q8_k)
        .quant(Q5_K, generic::vec_dot_q5_k_q8_k, tiles::q5_k_q8_k)
        .quant(Q6_K, generic::vec_dot_q6_k_q8_k, tiles::q6_k_q8_k)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant has a row for exactly the types the type table says owlet multiplies by,
    /// of the kind (quantized or float) its activation type says.
    #[test]
    fn rows_cover_the_multiplied_types() {
        for k in available()
            .into_iter()
            .chain([&generic_packed::GENERIC_PACKED])
        {
            for w in GgmlType::ALL {
                let float = crate::quant::vec_dot_type(w) == GgmlType::F32;
                let (quant, flt) = (k.quant_dot(w).is_some(), k.float_dot(w).is_some());
                assert_eq!(quant, w.traits().matmul && !float, "{} {w}", k.name);
                assert_eq!(flt, w.traits().matmul && float, "{} {w}", k.name);
            }
        }
    }
}
