//! Kernel variants against their generic twins, and the check that the intended variant runs.
//!
//! - Every variant this CPU offers (`owlet::kernels::available()`) is compared with `GENERIC`
//!   on quantized random rows of several lengths, including extreme quants (-128) and
//!   unaligned weight bytes. The NEON quantized kernels are documented as bit-identical to a
//!   scalar twin, so on aarch64 they must match it exactly: the generic dot for Q4_0/Q8_0 (and
//!   the types without NEON code), `tiles::q4_k_q8_k_exact` / `q6_k_q8_k_exact` for the
//!   K-quants (one exact integer per super-block), which must also agree with the generic dots
//!   to 1e-6 of the sum of |terms|, as float kernels (different f64 summation order) and other
//!   architectures' variants must.
//! - Every variant's tiles (all shapes 1..=4 × 1..=4, random and extreme rows mixed in one tile)
//!   must equal that variant's own single dot bitwise (the `QuantTile` contract; for
//!   `neon-i8mm` this checks the `smmla` tiles against the `sdot` dots), and the generic dot as
//!   above.
//! - Every variant's packed tiles ([`owlet::kernels::Packing`]) over 16 rows mixing random,
//!   saturated, max-scale and zero-scale blocks, packed from unaligned bytes, for 1..4
//!   activation rows and several lengths, equal the variant's own dot bitwise (and its twin).
//! - No table but `generic` holds a scalar tile for the four weight types of the shipped files,
//!   and `neon-dotprod` repacks all four.
//! - `OWLET_EXPECT_KERNELS=name`: `select()` must pick that variant (the aarch64 CI script runs
//!   the tests under `qemu-aarch64 -cpu cortex-a72` = neon, `cortex-a76` = neon-dotprod,
//!   `max` = neon-i8mm).

use owlet::kernels::{self, tiles, Kernels, QuantDot, QuantTile, GENERIC, TILE, TILE_ROWS};
use owlet::quant::{dequantize_row, quantize_row, vec_dot_type, GgmlType};

/// Deterministic values with mixed magnitudes (xorshift, cubed for heavier tails).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            u * u * u * 3.0 + u * 0.5
        })
        .collect()
}

fn quantized(typ: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; typ.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(typ, x, &mut q).unwrap();
    q
}

const QUANT: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Whether `k`'s quantized kernels promise bit-identical results to the generic ones.
fn bit_exact(k: &Kernels) -> bool {
    k.name == "generic" || k.name.starts_with("neon")
}

/// Σ|w·a| of the dequantized rows: the scale of the rounding differences allowed.
fn magnitude(wt: GgmlType, qw: &[u8], at: GgmlType, qa: &[u8], n: usize) -> f64 {
    let (mut dw, mut da) = (vec![0.0f32; n], vec![0.0f32; n]);
    dequantize_row(wt, qw, &mut dw).unwrap();
    dequantize_row(at, qa, &mut da).unwrap();
    dw.iter()
        .zip(&da)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum()
}

/// The scalar formula `k`'s kernels for `wt` equal bitwise where it is not the generic dot:
/// the NEON K-quant kernels sum each super-block exactly, as the x86 SIMD ones.
fn exact_twin(k: &Kernels, wt: GgmlType) -> Option<QuantDot> {
    if !k.name.starts_with("neon") {
        return None;
    }
    match wt {
        GgmlType::Q4_K => Some(tiles::q4_k_q8_k_exact),
        GgmlType::Q6_K => Some(tiles::q6_k_q8_k_exact),
        _ => None,
    }
}

/// `got`, variant `k`'s value for weight row `qw` · activation row `qa`, against its twin:
/// bitwise where `k` promises it ([`exact_twin`], else the generic dot for [`bit_exact`]
/// variants), and within 1e-6 of Σ|terms| of the generic dot always.
fn check_value(k: &Kernels, wt: GgmlType, qw: &[u8], qa: &[u8], n: usize, got: f32, what: &str) {
    let at = vec_dot_type(wt);
    let generic = (GENERIC.quant_dot(wt).unwrap())(n, qw, qa);
    let twin = match exact_twin(k, wt) {
        Some(twin) => Some(twin(n, qw, qa)),
        None => bit_exact(k).then_some(generic),
    };
    if let Some(want) = twin {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{} {wt} {what} n={n}: {got} vs its twin {want}",
            k.name
        );
    }
    let tol = 1e-6 * magnitude(wt, qw, at, qa, n) + 1e-30;
    assert!(
        ((got - generic) as f64).abs() <= tol,
        "{} {wt} {what} n={n}: {got} vs generic {generic}",
        k.name
    );
}

fn check_quant(k: &Kernels, wt: GgmlType, qw: &[u8], qa: &[u8], n: usize, what: &str) {
    let got = (k.quant_dot(wt).unwrap())(n, qw, qa);
    check_value(k, wt, qw, qa, n, got, what);
}

#[test]
fn quantized_kernels_match_generic() {
    let variants = kernels::available();
    eprintln!(
        "variants: {:?}",
        variants.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    for k in variants {
        for (i, &wt) in QUANT.iter().enumerate() {
            let bs = wt.block_size();
            for blocks in [0usize, 1, 2, 3, 8, 17] {
                let n = blocks * bs.max(32);
                let n = n / bs * bs;
                let seed = (i * 100 + blocks) as u64;
                let qw = quantized(wt, &values(n, seed));
                let qa = quantized(vec_dot_type(wt), &values(n, seed + 7));
                check_quant(k, wt, &qw, &qa, n, "random");
                // Unaligned weight bytes, as in a memory-mapped file.
                let mut shifted = vec![0u8; qw.len() + 1];
                shifted[1..].copy_from_slice(&qw);
                check_quant(k, wt, &shifted[1..], &qa, n, "unaligned");
            }
        }
    }
}

/// Saturated quants: every q8 byte -128 (not produced by the quantizer, but valid bytes) and
/// every nibble 0 or 15: the widest integer products each kernel must hold.
const EXTREME_TYPES: [GgmlType; 4] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];
const EXTREME_FILLS: [u8; 4] = [0x00, 0x80, 0xFF, 0x7F];

/// A weight row of `n` values of type `wt` (one of [`EXTREME_TYPES`]) whose quant bytes are all
/// `fill` (scales kept sane).
fn extreme_weights(wt: GgmlType, n: usize, fill: u8) -> Vec<u8> {
    let mut qw = quantized(wt, &values(n, 3));
    for b in qw.chunks_exact_mut(wt.type_size()) {
        match wt {
            GgmlType::Q4_0 | GgmlType::Q8_0 => b[2..].fill(fill),
            GgmlType::Q4_K => b[16..].fill(fill),
            _ => b[..192].fill(fill),
        }
    }
    qw
}

/// An activation row for `wt` with the most negative quants its type can hold.
fn extreme_activations(wt: GgmlType, n: usize) -> Vec<u8> {
    let at = vec_dot_type(wt);
    let mut qa = quantized(at, &values(n, 4));
    for b in qa.chunks_exact_mut(at.type_size()) {
        match at {
            // Q8_0 activations are in [-127, 127] (d = amax/127): -128 never occurs,
            // and ggml's x86 sign trick (like owlet's AVX2 kernels) relies on it.
            // Q8_K can hold -128 (its scale is -128/max), so it gets 0x80.
            GgmlType::Q8_0 => b[2..].fill(0x81),
            _ => {
                // Q8_K: quants, then the 16 bsums (i16 sums of 16 quants) they imply,
                // which kernels may use instead of re-adding the quants.
                b[4..260].fill(0x80);
                for s in b[260..292].chunks_exact_mut(2) {
                    s.copy_from_slice(&(-128i16 * 16).to_le_bytes());
                }
            }
        }
    }
    qa
}

#[test]
fn extreme_quants_match_generic() {
    for k in kernels::available() {
        for wt in EXTREME_TYPES {
            let n = 4 * wt.block_size();
            for fill in EXTREME_FILLS {
                let qw = extreme_weights(wt, n, fill);
                let qa = extreme_activations(wt, n);
                check_quant(k, wt, &qw, &qa, n, &format!("fill {fill:#x}"));
            }
        }
    }
}

/// Tiles of every shape, over rows mixing random, saturated and unaligned ones: each output
/// equals the variant's own dot bitwise and the generic dot as [`check_quant`] demands.
#[test]
fn tiles_match_own_dots_and_generic() {
    for k in kernels::available() {
        for (i, &wt) in QUANT.iter().enumerate() {
            let at = vec_dot_type(wt);
            let n = 3 * wt.block_size().max(32);
            let seed = 1000 + 10 * i as u64;
            // Weight rows: random (one of them unaligned), then saturated ones where defined.
            let mut ws: Vec<Vec<u8>> = (0..3)
                .map(|j| quantized(wt, &values(n, seed + j)))
                .collect();
            let mut acts: Vec<Vec<u8>> = (0..3)
                .map(|j| quantized(at, &values(n, seed + 5 + j)))
                .collect();
            if EXTREME_TYPES.contains(&wt) {
                ws.extend(EXTREME_FILLS.iter().map(|&f| extreme_weights(wt, n, f)));
                acts.push(extreme_activations(wt, n));
            }
            let mut shifted = vec![0u8; ws[1].len() + 1];
            shifted[1..].copy_from_slice(&ws[1]);
            let mut wrows: Vec<&[u8]> = ws.iter().map(|v| v.as_slice()).collect();
            wrows[1] = &shifted[1..];
            let arows: Vec<&[u8]> = acts.iter().map(|v| v.as_slice()).collect();
            let (dot, tile) = (k.quant_dot(wt).unwrap(), k.quant_tile(wt).unwrap());
            for start in 0..wrows.len() {
                for nw in 1..=TILE {
                    for na in 1..=TILE {
                        let w: Vec<&[u8]> =
                            (0..nw).map(|r| wrows[(start + r) % wrows.len()]).collect();
                        let a: Vec<&[u8]> =
                            (0..na).map(|c| arows[(start + c) % arows.len()]).collect();
                        let mut out = vec![f32::NAN; nw * na];
                        tile(n, &w, &a, &mut out);
                        for r in 0..nw {
                            for c in 0..na {
                                let (got, own) = (out[r * na + c], dot(n, w[r], a[c]));
                                assert_eq!(
                                    got.to_bits(),
                                    own.to_bits(),
                                    "{} {wt} tile {nw}x{na} from row {start} at ({r},{c}): \
                                     {got} vs its dot {own}",
                                    k.name
                                );
                                let what = format!("tile {nw}x{na} at ({r},{c})");
                                check_value(k, wt, w[r], a[c], n, got, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn float_kernels_match_generic() {
    for k in kernels::available() {
        for (wt, get) in [
            (GgmlType::F32, k.float_dot(GgmlType::F32).unwrap()),
            (GgmlType::F16, k.float_dot(GgmlType::F16).unwrap()),
            (GgmlType::BF16, k.float_dot(GgmlType::BF16).unwrap()),
        ] {
            let generic = GENERIC.float_dot(wt).unwrap();
            for n in [0usize, 1, 3, 4, 7, 64, 999] {
                let w = values(n, 11);
                let x = values(n, 12);
                let qw = quantized(wt, &w);
                let mut shifted = vec![0u8; qw.len() + 1];
                shifted[1..].copy_from_slice(&qw);
                let want = generic(n, &qw, &x);
                let scale: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                for (what, bytes) in [("aligned", &qw[..]), ("unaligned", &shifted[1..])] {
                    let got = get(n, bytes, &x);
                    assert!(
                        ((got - want) as f64).abs() <= 1e-6 * scale + f32::MIN_POSITIVE as f64,
                        "{} {wt} {what} n={n}: {got} vs {want}",
                        k.name
                    );
                }
            }
        }
    }
}

/// The variant `select()` picks is the one CI expects for the emulated CPU.
#[test]
fn selected_variant_is_the_expected_one() {
    let chosen = kernels::select().unwrap().name;
    let names: Vec<&str> = kernels::available().iter().map(|k| k.name).collect();
    eprintln!("selected kernels: {chosen} (available: {names:?})");
    if let Ok(want) = std::env::var("OWLET_EXPECT_KERNELS") {
        assert_eq!(chosen, want, "available: {names:?}");
    }
    #[cfg(target_arch = "aarch64")]
    assert!(names.contains(&"neon"), "{names:?}");
    // The i8mm table's single dots are the dotprod ones: it needs both extensions.
    if names.contains(&"neon-i8mm") {
        assert!(names.contains(&"neon-dotprod"), "{names:?}");
    }
    assert_eq!(*names.last().unwrap(), "generic");
}

/// The scalar tiles (one scalar dot per output) of the four weight types of the shipped files.
fn scalar_tiles() -> [(GgmlType, QuantTile); 6] {
    [
        (GgmlType::Q4_0, tiles::q4_0_q8_0),
        (GgmlType::Q8_0, tiles::q8_0_q8_0),
        (GgmlType::Q4_K, tiles::q4_k_q8_k),
        (GgmlType::Q4_K, tiles::q4_k_q8_k_exact_tile),
        (GgmlType::Q6_K, tiles::q6_k_q8_k),
        (GgmlType::Q6_K, tiles::q6_k_q8_k_exact_tile),
    ]
}

/// Every table but `generic` multiplies Q4_0, Q8_0, Q4_K and Q6_K weights with SIMD tiles (so
/// a scalar fallback cannot return unnoticed), and `neon-dotprod` repacks all four at load.
#[test]
fn no_table_but_generic_holds_a_scalar_tile() {
    for k in kernels::available() {
        for (wt, scalar) in scalar_tiles() {
            let tile = k.quant_tile(wt).unwrap();
            if k.name == "generic" {
                continue;
            }
            assert_ne!(
                tile as usize, scalar as usize,
                "{}: the {wt} tile is a scalar one",
                k.name
            );
        }
        if k.name == "neon-dotprod" {
            for wt in EXTREME_TYPES {
                assert!(k.packing(wt).is_some(), "{}: no packing for {wt}", k.name);
            }
        }
    }
}

/// A K-quant weight row whose scales are all at their largest (`max`) or all zero, with the
/// block scales `d` (and `dmin`) at `d`: the extremes of the scale paths.
fn scale_extreme_weights(wt: GgmlType, n: usize, max: bool, d: f32) -> Vec<u8> {
    let mut qw = quantized(wt, &values(n, 5));
    let bits = half::f16::from_f32(d).to_le_bytes();
    for b in qw.chunks_exact_mut(wt.type_size()) {
        match wt {
            GgmlType::Q4_0 | GgmlType::Q8_0 => b[..2].copy_from_slice(&bits),
            GgmlType::Q4_K => {
                // Six-bit scales and mins: all 63, or all 0.
                b[4..16].fill(if max { 0xFF } else { 0 });
                b[..2].copy_from_slice(&bits);
                b[2..4].copy_from_slice(&bits);
            }
            _ => {
                // Signed scales: alternating -128 and 127, or all 0.
                for (j, s) in b[192..208].iter_mut().enumerate() {
                    *s = if !max {
                        0
                    } else if j % 2 == 0 {
                        0x80
                    } else {
                        0x7F
                    };
                }
                b[208..210].copy_from_slice(&bits);
            }
        }
    }
    qw
}

/// Packed tiles against the variant's own dots (bitwise) and twins, over 16 rows mixing random,
/// saturated, max-scale and zero-scale blocks, packed from unaligned bytes into an unaligned
/// group, for 1..4 activation rows (random and saturated) and lengths of 1..7 blocks.
#[test]
fn packed_tiles_match_own_dots_and_twins() {
    for k in kernels::available() {
        for p in k.packings {
            let wt = p.typ;
            let at = vec_dot_type(wt);
            let dot = k.quant_dot(wt).unwrap();
            let bs = wt.block_size();
            let lengths: &[usize] = if bs == 256 { &[1, 2, 3] } else { &[1, 2, 3, 7] };
            for &blocks in lengths {
                let n = blocks * bs;
                let seed = 5000 + blocks as u64;
                let rows: Vec<Vec<u8>> = (0..TILE_ROWS)
                    .map(|r| match r {
                        0..=3 => quantized(wt, &values(n, seed + r as u64)),
                        4..=7 if EXTREME_TYPES.contains(&wt) => {
                            extreme_weights(wt, n, EXTREME_FILLS[r - 4])
                        }
                        8..=9 => scale_extreme_weights(wt, n, true, 65504.0),
                        10 => scale_extreme_weights(wt, n, true, -1.0),
                        11 => scale_extreme_weights(wt, n, false, 65504.0),
                        12 => scale_extreme_weights(wt, n, true, 0.0),
                        _ => quantized(wt, &values(n, seed + 50 + r as u64)),
                    })
                    .collect();
                // Every row at an odd address.
                let shifted: Vec<Vec<u8>> = rows
                    .iter()
                    .map(|r| {
                        let mut v = vec![0u8; r.len() + 1];
                        v[1..].copy_from_slice(r);
                        v
                    })
                    .collect();
                let wrows: Vec<&[u8]> = shifted.iter().map(|v| &v[1..]).collect();
                let mut group = vec![0u8; 1 + p.group_bytes(n)];
                (p.pack)(n, &wrows, &mut group[1..]);
                let group = &group[1..];
                let mut acts: Vec<Vec<u8>> = (0..3)
                    .map(|j| quantized(at, &values(n, seed + 20 + j)))
                    .collect();
                if EXTREME_TYPES.contains(&wt) {
                    acts.insert(1, extreme_activations(wt, n));
                }
                for na in 1..=TILE {
                    for start in 0..acts.len() {
                        let a: Vec<&[u8]> = (0..na)
                            .map(|c| acts[(start + c) % acts.len()].as_slice())
                            .collect();
                        let mut out = vec![f32::NAN; TILE_ROWS * na];
                        (p.tile)(n, group, &a, &mut out);
                        for (r, w) in wrows.iter().enumerate() {
                            for (c, a) in a.iter().enumerate() {
                                let (got, own) = (out[r * na + c], dot(n, w, a));
                                assert_eq!(
                                    got.to_bits(),
                                    own.to_bits(),
                                    "{} {wt} packed n={n} 16x{na} at ({r},{c}): {got} vs \
                                     its dot {own}",
                                    k.name
                                );
                                if !(8..13).contains(&r) {
                                    // Rows of sane scales: the generic dot is near.
                                    check_value(k, wt, w, a, n, got, "packed");
                                } else if let Some(twin) = exact_twin(k, wt) {
                                    let want = twin(n, w, a);
                                    assert_eq!(got.to_bits(), want.to_bits(), "{} {wt}", k.name);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
