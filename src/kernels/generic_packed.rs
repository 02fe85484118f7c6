//! A portable packed layout for tests: the [`GENERIC`](super::GENERIC) kernels plus a
//! [`Packing`] for the common quantized types whose "packed" group is simply the group's 16
//! rows stored one after another.
//!
//! On x86-64 with AVX2 (and on any CPU without a SIMD packing) no variant repacks weights, so
//! the packed-weight cache would never run there. This variant, selectable only by name
//! (`OWLET_KERNELS=generic-packed` or [`super::by_name`]; never picked by [`super::select`]'s
//! default), lets tests and the CLI exercise every load-time packing path — packing, the cache
//! file, mapping it back — on any machine. Its packed tile runs the generic tile on row slices
//! of the group, so its products equal [`GENERIC`](super::GENERIC)'s bitwise.

use super::{tiles, Kernels, Packing, QuantTile, GENERIC, TILE, TILE_ROWS};
use crate::quant::blocks::{Q4_0_BYTES, Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES};
use crate::quant::GgmlType;

/// Copies the 16 rows one after another into `out` (`rows × row_bytes`); anything else leaves
/// `out` untouched.
fn pack_rows(typ: GgmlType, n: usize, rows: &[&[u8]], out: &mut [u8]) {
    let Some(rb) = typ.row_bytes(n as u64).map(|b| b as usize) else {
        return;
    };
    if rows.len() != TILE_ROWS || out.len() != TILE_ROWS * rb || rows.iter().any(|r| r.len() != rb)
    {
        return;
    }
    for (o, r) in out.chunks_exact_mut(rb).zip(rows) {
        o.copy_from_slice(r);
    }
}

/// One group × up to [`TILE`] activation rows through the plain tile, [`TILE`] weight rows per
/// call: `out[r·a.len() + c]` for the group's 16 rows.
fn tile_rows(
    typ: GgmlType,
    plain: QuantTile,
    n: usize,
    group: &[u8],
    a: &[&[u8]],
    out: &mut [f32],
) {
    let Some(rb) = typ.row_bytes(n as u64).map(|b| b as usize) else {
        return;
    };
    if group.len() != TILE_ROWS * rb || out.len() < TILE_ROWS * a.len() {
        return;
    }
    for (chunk, res) in group
        .chunks_exact(TILE * rb)
        .zip(out.chunks_exact_mut(TILE * a.len()))
    {
        let w: [&[u8]; TILE] = std::array::from_fn(|r| &chunk[r * rb..(r + 1) * rb]);
        plain(n, &w, a, res);
    }
}

macro_rules! packing {
    ($name:ident, $typ:expr, $block:expr, $plain:path, $pack:ident, $tile:ident) => {
        fn $pack(n: usize, rows: &[&[u8]], out: &mut [u8]) {
            pack_rows($typ, n, rows, out)
        }
        fn $tile(n: usize, group: &[u8], a: &[&[u8]], out: &mut [f32]) {
            tile_rows($typ, $plain, n, group, a, out)
        }
        const $name: Packing = Packing {
            typ: $typ,
            record_bytes: TILE_ROWS * $block,
            pack: $pack,
            tile: $tile,
            tile16: None,
        };
    };
}

packing!(
    Q4_0,
    GgmlType::Q4_0,
    Q4_0_BYTES,
    tiles::q4_0_q8_0,
    pack_q4_0,
    tile_q4_0
);
packing!(
    Q8_0,
    GgmlType::Q8_0,
    Q8_0_BYTES,
    tiles::q8_0_q8_0,
    pack_q8_0,
    tile_q8_0
);
packing!(
    Q4_K,
    GgmlType::Q4_K,
    Q4_K_BYTES,
    tiles::q4_k_q8_k,
    pack_q4_k,
    tile_q4_k
);
packing!(
    Q6_K,
    GgmlType::Q6_K,
    Q6_K_BYTES,
    tiles::q6_k_q8_k,
    pack_q6_k,
    tile_q6_k
);

/// The generic kernels with the portable packing above (name `generic-packed`).
pub static GENERIC_PACKED: Kernels = Kernels {
    name: "generic-packed",
    packings: &[Q4_0, Q8_0, Q4_K, Q6_K],
    rows: super::rows::SCALAR,
    exp: super::exp::SCALAR,
    ..GENERIC
};
