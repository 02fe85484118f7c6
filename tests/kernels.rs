//! Twins tests: every kernel variant this CPU can run against the scalar reference, on random
//! and edge-case inputs, plus the tile contract (a tile equals the single dot bitwise).

use owlet::kernels::{self, tiles, Kernels, FLOAT_TILE_ROWS, GENERIC, TILE, TILE_ROWS};
use owlet::quant::{quantize_row, vec_dot_type, GgmlType};

const QUANT_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[path = "common/rng.rs"]
mod rng;
// xorshift64* (`Rng::star`).
use rng::Rng;

/// The kinds of rows the kernels are tried on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Random,
    Heavy,
    AllEqual,
    Zeros,
    MaxMagnitude,
    Alternating,
}

const KINDS: [Kind; 6] = [
    Kind::Random,
    Kind::Heavy,
    Kind::AllEqual,
    Kind::Zeros,
    Kind::MaxMagnitude,
    Kind::Alternating,
];

fn values(kind: Kind, n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            Kind::Random => rng.f(),
            Kind::Heavy => {
                let u = rng.f();
                u * u * u * 30.0 + 0.1 * u
            }
            Kind::AllEqual => 0.75,
            Kind::Zeros => 0.0,
            Kind::MaxMagnitude => {
                // Every quant at its extreme level (±127, nibble 0/15); the float magnitude is
                // kept so that Q8_1's f16 block sum d·Σq stays finite.
                if rng.next() & 1 == 0 {
                    1.0e3
                } else {
                    -1.0e3
                }
            }
            Kind::Alternating => {
                if i % 2 == 0 {
                    1.0
                } else {
                    -1.0
                }
            }
        })
        .collect()
}

fn quantized(typ: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; typ.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(typ, x, &mut q).unwrap();
    q
}

/// Row lengths to try for a weight type: single blocks, odd block counts, a 7B row.
fn lengths(t: GgmlType) -> Vec<usize> {
    if t.block_size() == 256 {
        vec![256, 256 * 3, 256 * 7, 4096]
    } else {
        vec![32, 64, 32 * 7, 64 * 7, 256 * 3, 4096]
    }
}

fn variants() -> Vec<&'static Kernels> {
    kernels::available()
}

/// |got − want| ≤ 2e-6 · Σ|w·a| (the scale of the sum) + tiny absolute slack.
fn close(got: f32, want: f32, scale: f64) -> bool {
    got == want || ((got - want) as f64).abs() <= 2e-6 * scale + 1e-30
}

/// Σ |dequantized w · dequantized a|, the natural scale for a dot's rounding error.
fn abs_scale(wt: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let at = vec_dot_type(wt);
    let (mut dw, mut da) = (vec![0f32; n], vec![0f32; n]);
    owlet::quant::dequantize_row(wt, w, &mut dw).unwrap();
    owlet::quant::dequantize_row(at, a, &mut da).unwrap();
    dw.iter()
        .zip(&da)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum()
}

#[test]
fn quantized_dots_match_generic() {
    let mut rng = Rng::star(0x1234_5678_9abc_def1);
    for k in variants() {
        for wt in QUANT_TYPES {
            let at = vec_dot_type(wt);
            let (dot, reference) = (k.quant_dot(wt).unwrap(), GENERIC.quant_dot(wt).unwrap());
            for n in lengths(wt) {
                for wk in KINDS {
                    for ak in [
                        Kind::Random,
                        Kind::Heavy,
                        Kind::MaxMagnitude,
                        Kind::AllEqual,
                    ] {
                        let w = quantized(wt, &values(wk, n, &mut rng));
                        let a = quantized(at, &values(ak, n, &mut rng));
                        let (got, want) = (dot(n, &w, &a), reference(n, &w, &a));
                        let scale = abs_scale(wt, &w, &a, n);
                        assert!(
                            close(got, want, scale),
                            "{}: {wt} n={n} w={wk:?} a={ak:?}: {got} vs generic {want} (scale {scale:e})",
                            k.name
                        );
                    }
                }
            }
        }
    }
}

/// Arbitrary block bytes (every nibble/bit pattern, Q8_0 weights of −128, K-quant scales at
/// their 6-bit maxima) with sane f16 scales.
fn random_blocks(wt: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = wt.row_bytes(n as u64).unwrap() as usize;
    let mut w: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let ts = wt.type_size();
    // f16 fields: offsets of each block's scales (d, m/dmin) that must not be inf/NaN.
    let halves: &[usize] = match wt {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    for block in w.chunks_exact_mut(ts) {
        for &o in halves {
            let v = half::f16::from_f32(rng.f() * 0.01);
            block[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    w
}

#[test]
fn quantized_dots_match_generic_on_arbitrary_blocks() {
    let mut rng = Rng::star(77);
    for k in variants() {
        for wt in QUANT_TYPES {
            let at = vec_dot_type(wt);
            for n in lengths(wt) {
                let w = random_blocks(wt, n, &mut rng);
                let a = quantized(at, &values(Kind::Heavy, n, &mut rng));
                let got = k.quant_dot(wt).unwrap()(n, &w, &a);
                let want = GENERIC.quant_dot(wt).unwrap()(n, &w, &a);
                let scale = abs_scale(wt, &w, &a, n);
                assert!(
                    close(got, want, scale),
                    "{}: {wt} n={n}: {got} vs {want}",
                    k.name
                );
            }
        }
    }
}

/// A tile of any shape (up to the variant's tile height for the type: 16 rows for the
/// one-row-per-lane AVX-512 tiles) gives, element by element, exactly the single dot's number,
/// with every kind of weight row (all-equal, zeros, max-magnitude, ...) in the tile and
/// max-magnitude activations among the columns.
#[test]
fn tiles_equal_dots_bitwise() {
    let mut rng = Rng::star(99);
    for k in variants() {
        for wt in QUANT_TYPES {
            let at = vec_dot_type(wt);
            let n = if wt.block_size() == 256 { 768 } else { 224 };
            let ws: Vec<Vec<u8>> = (0..TILE_ROWS)
                .map(|i| quantized(wt, &values(KINDS[i % KINDS.len()], n, &mut rng)))
                .collect();
            let as_: Vec<Vec<u8>> = (0..TILE)
                .map(|i| {
                    let kind = [Kind::Random, Kind::MaxMagnitude, Kind::Heavy][i % 3];
                    quantized(at, &values(kind, n, &mut rng))
                })
                .collect();
            let (dot, tile) = (k.quant_dot(wt).unwrap(), k.quant_tile(wt).unwrap());
            let heights = [1, 2, 3, 4, 5, 7, 8, 13, 16];
            for nw in heights.into_iter().filter(|&h| h <= k.tile_rows(wt)) {
                for na in 1..=TILE {
                    let w: Vec<&[u8]> = ws[..nw].iter().map(|v| v.as_slice()).collect();
                    let a: Vec<&[u8]> = as_[..na].iter().map(|v| v.as_slice()).collect();
                    let mut out = vec![f32::NAN; nw * na];
                    tile(n, &w, &a, &mut out);
                    for r in 0..nw {
                        for c in 0..na {
                            let want = dot(n, w[r], a[c]);
                            assert_eq!(
                                out[r * na + c].to_bits(),
                                want.to_bits(),
                                "{}: {wt} tile {nw}x{na} at ({r},{c})",
                                k.name
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The x86 SIMD variants (`avx2`, `avxvnni`, ...) this CPU can run.
fn x86_simd_variants() -> Vec<&'static Kernels> {
    let v: Vec<&'static Kernels> = variants()
        .into_iter()
        .filter(|k| k.name.starts_with("avx"))
        .collect();
    if v.is_empty() {
        eprintln!("no x86 SIMD variant on this CPU: skipped");
    }
    v
}

/// The scalar twins of the x86 SIMD kernels: the generic dots for the 32-blocks, the exact-sum
/// K-quant formulas for Q4_K/Q6_K (which the generic K-quant dots equal bitwise, see
/// [`x86_k_quants_equal_generic_bitwise`]).
type Dot = fn(usize, &[u8], &[u8]) -> f32;
const TWINS: [(GgmlType, Dot); 4] = [
    (GgmlType::Q4_0, owlet::kernels::generic::vec_dot_q4_0_q8_0),
    (GgmlType::Q8_0, owlet::kernels::generic::vec_dot_q8_0_q8_0),
    (GgmlType::Q4_K, tiles::q4_k_q8_k_exact),
    (GgmlType::Q6_K, tiles::q6_k_q8_k_exact),
];

const K_QUANTS: [GgmlType; 3] = [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

/// Every output of variant `k` for K-quant `wt` over weight rows `ws` (16 of them, so that
/// packed groups fill) and activation rows `acts`: the single dot, every tile shape the variant
/// takes, and the packed tile where the variant repacks `wt`. Each comes with its name.
fn k_outputs(
    k: &Kernels,
    wt: GgmlType,
    n: usize,
    ws: &[Vec<u8>],
    acts: &[Vec<u8>],
) -> Vec<(String, usize, usize, f32)> {
    let mut out = Vec::new();
    let (dot, tile) = (k.quant_dot(wt).unwrap(), k.quant_tile(wt).unwrap());
    for (r, w) in ws.iter().enumerate() {
        for (c, a) in acts.iter().enumerate() {
            out.push(("dot".to_string(), r, c, dot(n, w, a)));
        }
    }
    let rows = k.tile_rows(wt);
    for na in 1..=TILE.min(acts.len()) {
        for start in (0..ws.len()).step_by(rows) {
            let w: Vec<&[u8]> = ws[start..(start + rows).min(ws.len())]
                .iter()
                .map(|v| v.as_slice())
                .collect();
            let a: Vec<&[u8]> = acts[..na].iter().map(|v| v.as_slice()).collect();
            let mut res = vec![f32::NAN; w.len() * na];
            tile(n, &w, &a, &mut res);
            for (i, v) in res.into_iter().enumerate() {
                out.push((format!("tile {}x{na}", w.len()), start + i / na, i % na, v));
            }
        }
    }
    if let Some(p) = k.packing(wt) {
        assert_eq!(ws.len(), TILE_ROWS);
        let rows: Vec<&[u8]> = ws.iter().map(|v| v.as_slice()).collect();
        let mut group = vec![0u8; p.group_bytes(n)];
        (p.pack)(n, &rows, &mut group);
        for na in 1..=TILE.min(acts.len()) {
            let a: Vec<&[u8]> = acts[..na].iter().map(|v| v.as_slice()).collect();
            let mut res = vec![f32::NAN; TILE_ROWS * na];
            (p.tile)(n, &group, &a, &mut res);
            for (i, v) in res.into_iter().enumerate() {
                out.push((format!("packed tile 16x{na}"), i / na, i % na, v));
            }
        }
    }
    out
}

/// K-quant weight rows for the generic comparisons: quantized rows of every kind and
/// arbitrary blocks (all 16 rows of a packed group), and activation rows: quantized heavy and
/// max-magnitude rows, arbitrary quants with −128.
fn k_rows(wt: GgmlType, n: usize, rng: &mut Rng) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let ws = (0..TILE_ROWS)
        .map(|i| match i % 8 {
            6 | 7 => random_blocks(wt, n, rng),
            j => quantized(wt, &values(KINDS[j], n, rng)),
        })
        .collect();
    let acts = vec![
        quantized(GgmlType::Q8_K, &values(Kind::Heavy, n, rng)),
        quantized(GgmlType::Q8_K, &values(Kind::MaxMagnitude, n, rng)),
        random_activations(GgmlType::Q8_K, n, rng),
        random_activations(GgmlType::Q8_K, n, rng),
    ];
    (ws, acts)
}

/// Every variant's K-quant kernels (single dots, tiles of every height, packed tiles) against
/// the generic dot: within f32 rounding of Σ|terms| on every CPU (the SIMD formulas and the
/// generic one may only differ in rounding), on quantized, arbitrary and saturated blocks.
#[test]
fn k_quants_match_generic_within_rounding() {
    let mut rng = Rng::star(0xC0FFEE);
    for k in variants() {
        for wt in K_QUANTS {
            for n in [256, 768, 4096] {
                let (ws, acts) = k_rows(wt, n, &mut rng);
                let generic = GENERIC.quant_dot(wt).unwrap();
                for (what, r, c, got) in k_outputs(k, wt, n, &ws, &acts) {
                    let want = generic(n, &ws[r], &acts[c]);
                    let scale = abs_scale(wt, &ws[r], &acts[c], n);
                    // Σ|terms| of the mins too: dequantized Q4_K/Q5_K values are a difference of
                    // a scaled level and a min, each rounded.
                    let tol =
                        16.0 * f64::powi(2.0, -24) * (scale + mins_scale(wt, &ws[r], &acts[c], n));
                    assert!(
                        ((got - want) as f64).abs() <= tol + 1e-30,
                        "{}: {wt} n={n} {what} ({r},{c}): {got} vs generic {want}",
                        k.name
                    );
                }
            }
        }
    }
}

/// Σ_i |dmin·m_j(i)·a_i| for Q4_K/Q5_K rows (0 for other types).
fn mins_scale(wt: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    if !matches!(wt, GgmlType::Q4_K | GgmlType::Q5_K) {
        return 0.0;
    }
    let mut da = vec![0f32; n];
    owlet::quant::dequantize_row(GgmlType::Q8_K, a, &mut da).unwrap();
    (0..n)
        .map(|i| {
            let x = &w[i / 256 * wt.type_size()..];
            let m = owlet::quant::unpack_scale_min_k4(i % 256 / 32, &x[4..16]).1;
            let dmin = half::f16::from_le_bytes([x[2], x[3]]).to_f64();
            (dmin * m as f64 * da[i] as f64).abs()
        })
        .sum()
}

/// On x86 every variant computes the generic K-quant formula (one exact integer per
/// super-block, scaled once) operation for operation, so each K-quant output, single dot,
/// tile or packed tile, equals the generic dot bitwise: the model's numbers do not depend on
/// the CPU.
#[test]
fn x86_k_quants_equal_generic_bitwise() {
    let mut rng = Rng::star(0xBEEF);
    for k in x86_simd_variants() {
        for wt in K_QUANTS {
            for n in [256, 768, 4096] {
                let (ws, acts) = k_rows(wt, n, &mut rng);
                let generic = GENERIC.quant_dot(wt).unwrap();
                for (what, r, c, got) in k_outputs(k, wt, n, &ws, &acts) {
                    let want = generic(n, &ws[r], &acts[c]);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{}: {wt} n={n} {what} ({r},{c}): {got} vs generic {want}",
                        k.name
                    );
                }
            }
        }
    }
}

/// The x86 SIMD kernels equal their scalar twins bitwise.
#[test]
fn x86_simd_equals_scalar_twins_bitwise() {
    for k in x86_simd_variants() {
        let mut rng = Rng::star(5);
        for (wt, twin) in TWINS {
            let at = vec_dot_type(wt);
            for n in lengths(wt) {
                for wk in KINDS {
                    let w = quantized(wt, &values(wk, n, &mut rng));
                    let a = quantized(at, &values(Kind::Heavy, n, &mut rng));
                    let (got, want) = (k.quant_dot(wt).unwrap()(n, &w, &a), twin(n, &w, &a));
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{}: {wt} n={n} {wk:?}: {got} vs {want}",
                        k.name
                    );
                }
                let w = random_blocks(wt, n, &mut rng);
                let a = quantized(at, &values(Kind::MaxMagnitude, n, &mut rng));
                let (got, want) = (k.quant_dot(wt).unwrap()(n, &w, &a), twin(n, &w, &a));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{}: {wt} n={n} arbitrary blocks",
                    k.name
                );
            }
        }
    }
}

/// Activation blocks with arbitrary quants: Q8_K quants anywhere in [−128, 127] (the Q8_K
/// quantizer maps a block's largest negative value to −128) with consistent bsums, Q8_0 quants
/// in [−127, 127] (the Q8_0 quantizer's range), sane scales.
fn random_activations(at: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut a = vec![0u8; at.row_bytes(n as u64).unwrap() as usize];
    for block in a.chunks_exact_mut(at.type_size()) {
        match at {
            GgmlType::Q8_K => {
                block[..4].copy_from_slice(&(rng.f() * 0.01).to_le_bytes());
                for q in &mut block[4..260] {
                    // Every fourth block-quant pushed to −128 so the extreme is common.
                    *q = if rng.next().is_multiple_of(4) {
                        0x80
                    } else {
                        rng.next() as u8
                    };
                }
                for g in 0..16 {
                    let s: i16 = block[4 + 16 * g..20 + 16 * g]
                        .iter()
                        .map(|&q| q as i8 as i16)
                        .sum();
                    block[260 + 2 * g..262 + 2 * g].copy_from_slice(&s.to_le_bytes());
                }
            }
            GgmlType::Q8_0 => {
                let d = half::f16::from_f32(rng.f() * 0.01);
                block[..2].copy_from_slice(&d.to_le_bytes());
                for q in &mut block[2..34] {
                    let v = match rng.next() % 4 {
                        0 => -127,
                        1 => 127,
                        _ => (rng.next() % 255) as i32 - 127,
                    };
                    *q = v as i8 as u8;
                }
            }
            _ => unreachable!("{at}"),
        }
    }
    a
}

/// Arbitrary weight blocks times arbitrary activation quants (Q8_K −128 included): the x86
/// SIMD kernels and tiles equal their scalar twins bitwise.
#[test]
fn x86_simd_equals_twins_on_extreme_activations() {
    for k in x86_simd_variants() {
        let mut rng = Rng::star(0xACE);
        for (wt, twin) in TWINS {
            let at = vec_dot_type(wt);
            for n in lengths(wt) {
                for _ in 0..3 {
                    let w = random_blocks(wt, n, &mut rng);
                    let a = random_activations(at, n, &mut rng);
                    let got = k.quant_dot(wt).unwrap()(n, &w, &a);
                    let want = twin(n, &w, &a);
                    assert_eq!(got.to_bits(), want.to_bits(), "{}: {wt} n={n}", k.name);
                    let mut out = [0f32; 4];
                    k.quant_tile(wt).unwrap()(n, &[&w, &w], &[&a, &a], &mut out);
                    for o in out {
                        assert_eq!(o.to_bits(), want.to_bits(), "{}: {wt} n={n} tile", k.name);
                    }
                }
            }
        }
    }
}

/// A float product `got` of weight row `w` (type `wt`) and `x` is within the f32 dot tolerance
/// of the generic dot `want`: 1e-6 of `Σ |w_i·x_i|`, summed in f64 over the dequantized row.
fn assert_float_dot_close(
    got: f32,
    want: f32,
    wt: GgmlType,
    w: &[u8],
    x: &[f32],
    what: std::fmt::Arguments,
) {
    let mut dw = vec![0f32; x.len()];
    owlet::quant::dequantize_row(wt, w, &mut dw).unwrap();
    let scale: f64 = dw
        .iter()
        .zip(x)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    assert!(
        ((got - want) as f64).abs() <= 1e-6 * scale + 1e-30,
        "{what}: {got} vs {want}"
    );
}

#[test]
fn float_dots_match_generic() {
    let mut rng = Rng::star(3);
    for k in variants() {
        for wt in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 999, 4096] {
                for kind in KINDS {
                    let w = quantized(wt, &values(kind, n, &mut rng));
                    let x = values(Kind::Heavy, n, &mut rng);
                    let (dot, reference) =
                        (k.float_dot(wt).unwrap(), GENERIC.float_dot(wt).unwrap());
                    let (got, want) = (dot(n, &w, &x), reference(n, &w, &x));
                    let what = format_args!("{}: {wt} n={n} {kind:?}", k.name);
                    assert_float_dot_close(got, want, wt, &w, &x, what);
                }
            }
        }
    }
}

/// Raw weight bits for the float tiles: random values, or (`special`) a mix with infinities,
/// NaNs, subnormals, zeros of both signs and the largest finite values of the type.
fn float_row(wt: GgmlType, n: usize, special: bool, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * wt.type_size());
    for _ in 0..n {
        let pick = if special { rng.next() % 8 } else { 7 };
        let v = rng.f() * 4.0;
        match wt {
            GgmlType::F16 => {
                let bits: u16 = match pick {
                    0 => 0x7C00 | ((rng.next() as u16 & 1) << 15), // ±inf
                    1 => 0x7E00 | (rng.next() as u16 & 0x1FF),     // NaN
                    2 => rng.next() as u16 & 0x83FF,               // ±subnormal (or ±0)
                    3 => 0x8000,                                   // −0
                    4 => 0x7BFF | ((rng.next() as u16 & 1) << 15), // ±65504
                    _ => half::f16::from_f32(v).to_bits(),
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            GgmlType::BF16 => {
                let bits: u16 = match pick {
                    0 => 0x7F80 | ((rng.next() as u16 & 1) << 15),
                    1 => 0x7FC0 | (rng.next() as u16 & 0x3F),
                    2 => rng.next() as u16 & 0x807F,
                    3 => 0x8000,
                    4 => 0x7F7F | ((rng.next() as u16 & 1) << 15),
                    _ => half::bf16::from_f32(v).to_bits(),
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            _ => {
                let x: f32 = match pick {
                    0 => f32::INFINITY,
                    1 => f32::NAN,
                    2 => f32::from_bits(rng.next() as u32 & 0x807F_FFFF),
                    3 => -0.0,
                    4 => f32::MAX,
                    _ => v,
                };
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

/// The number a float tile must give for one output: the scalar twin of the SIMD tiles (x86
/// and NEON, [`tiles::float_lanes8`]), the generic dot for the generic tables (made of dots).
fn float_twin(k: &Kernels, wt: GgmlType) -> fn(usize, &[u8], &[f32]) -> f32 {
    if k.name.starts_with("generic") {
        return k.float_dot(wt).unwrap();
    }
    match wt {
        GgmlType::F16 => tiles::f16_f32_lanes8,
        GgmlType::BF16 => tiles::bf16_f32_lanes8,
        _ => tiles::f32_f32_lanes8,
    }
}

/// Float tiles equal their scalar twin bitwise (NaN for NaN), for every tile shape (1 to
/// FLOAT_TILE_ROWS weight rows × 1 to TILE activation rows), lengths that are not a multiple
/// of the vector width, random rows and rows of infinities, NaNs and subnormals.
#[test]
fn float_tiles_equal_their_twins_bitwise() {
    let mut rng = Rng::star(17);
    for k in variants() {
        for wt in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let (tile, twin) = (k.float_tile(wt).unwrap(), float_twin(k, wt));
            for n in [0, 1, 7, 8, 9, 15, 17, 31, 33, 100, 257, 1030] {
                for special in [false, true] {
                    let w: Vec<Vec<u8>> = (0..FLOAT_TILE_ROWS)
                        .map(|_| float_row(wt, n, special, &mut rng))
                        .collect();
                    let a: Vec<Vec<f32>> = (0..TILE)
                        .map(|c| match c {
                            // A subnormal-heavy row, then ordinary ones.
                            0 if special => (0..n).map(|i| (i as f32 + 1.0) * 1e-40).collect(),
                            _ => values(Kind::Heavy, n, &mut rng),
                        })
                        .collect();
                    let wr: Vec<&[u8]> = w.iter().map(|r| &r[..]).collect();
                    let ar: Vec<&[f32]> = a.iter().map(|r| &r[..]).collect();
                    for nw in 1..=FLOAT_TILE_ROWS {
                        for na in 1..=TILE {
                            let mut out = vec![12345.0f32; nw * na];
                            tile(n, &wr[..nw], &ar[..na], &mut out);
                            for r in 0..nw {
                                for c in 0..na {
                                    let (got, want) = (out[r * na + c], twin(n, wr[r], ar[c]));
                                    assert!(
                                        got.to_bits() == want.to_bits()
                                            || (got.is_nan() && want.is_nan()),
                                        "{} {wt} n={n} special={special} tile {nw}x{na} \
                                         ({r},{c}): {got} vs {want}",
                                        k.name
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The float tiles' formula stays within the f32 dot tolerance of the generic (f64-summed)
/// dots, on every kind of row.
#[test]
fn float_tiles_match_generic_dots() {
    let mut rng = Rng::star(5);
    for k in variants() {
        for wt in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let tile = k.float_tile(wt).unwrap();
            for n in [1, 9, 63, 999, 4096] {
                for kind in KINDS {
                    let w = quantized(wt, &values(kind, n, &mut rng));
                    let x = values(Kind::Heavy, n, &mut rng);
                    let mut got = [0f32];
                    tile(n, &[&w], &[&x], &mut got);
                    let want = GENERIC.float_dot(wt).unwrap()(n, &w, &x);
                    let what = format_args!("{}: {wt} n={n} {kind:?}", k.name);
                    assert_float_dot_close(got[0], want, wt, &w, &x, what);
                }
            }
        }
    }
}

/// The x86 SIMD float tiles clamp too-short rows instead of reading past them: every output
/// of the call uses the length all its rows have. (The dot-made tiles of the other tables
/// assert full rows in debug builds, like the generic dots.)
#[test]
fn float_tiles_clamp_short_rows() {
    let mut rng = Rng::star(9);
    for k in x86_simd_variants() {
        for wt in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let tile = k.float_tile(wt).unwrap();
            let w = float_row(wt, 20, false, &mut rng);
            let x = values(Kind::Random, 20, &mut rng);
            let (short_w, short_x) = (&w[..13 * wt.type_size()], &x[..11]);
            let mut out = [0f32; 4];
            tile(20, &[&w, short_w], &[&x, short_x], &mut out);
            let twin = float_twin(k, wt);
            assert_eq!(
                out[0].to_bits(),
                twin(11, &w, &x).to_bits(),
                "{} {wt}",
                k.name
            );
            assert_eq!(
                out[3].to_bits(),
                twin(11, short_w, short_x).to_bits(),
                "{} {wt}",
                k.name
            );
        }
    }
}

/// Too-short rows never read out of bounds or panic: missing blocks are skipped.
#[test]
fn short_rows_are_skipped_not_read() {
    // (The generic kernels assert full rows in debug builds; the SIMD wrappers clamp.)
    for k in variants().into_iter().filter(|k| k.name != "generic") {
        for wt in QUANT_TYPES {
            let at = vec_dot_type(wt);
            // The types with SIMD bodies (the others forward to the generic kernels).
            if !matches!(
                wt,
                GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4_K | GgmlType::Q6_K
            ) {
                continue;
            }
            let n = 2 * wt.block_size();
            let w = quantized(wt, &vec![0.5; n]);
            let a = quantized(at, &vec![0.5; n]);
            let one_w = &w[..wt.type_size()];
            let got = k.quant_dot(wt).unwrap()(n, one_w, &a);
            let want = GENERIC.quant_dot(wt).unwrap()(n / 2, one_w, &a[..at.type_size()]);
            assert!(
                (got - want).abs() <= 1e-3 * want.abs(),
                "{}: {wt}: {got} vs {want}",
                k.name
            );
            let mut out = [0f32; 1];
            k.quant_tile(wt).unwrap()(n, &[one_w], &[&a], &mut out);
            assert_eq!(out[0].to_bits(), got.to_bits(), "{}: {wt}", k.name);
        }
        let got = k.float_dot(GgmlType::F32).unwrap()(8, &[0u8; 12], &[1.0; 8]);
        assert_eq!(got, 0.0);
    }
}

#[test]
fn available_lists_generic_last_and_names_resolve() {
    let v = kernels::available();
    assert_eq!(v.last().unwrap().name, "generic");
    for k in &v {
        assert_eq!(kernels::by_name(k.name).unwrap().name, k.name);
    }
    assert!(kernels::by_name("no-such-variant").is_none());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        let names: Vec<&str> = v.iter().map(|k| k.name).collect();
        let vnni = is_x86_feature_detected!("avxvnni");
        let avx512 = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl");
        let avx512vnni = avx512
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        let mut want: Vec<&str> = Vec::new();
        if vnni && avx512vnni {
            want.push("avx512vnni");
        }
        // AVX-512 VNNI without AVX-VNNI (Zen 4): the same 16-row tiles, AVX2's narrow ones.
        if !vnni && avx512vnni {
            want.push("avx512vnni-evex");
        }
        if vnni {
            want.push("avxvnni");
        }
        // AVX-512 float tiles on the AVX2 table (Zen 4 has AVX-512 but no AVX-VNNI).
        if avx512 {
            want.push("avx512");
        }
        want.extend(["avx2", "generic"]);
        let want = &want[..];
        assert!(names.ends_with(want), "{names:?}");
        // AMX (when the CPU has it and the OS grants the tile state) comes first, on top of
        // the AVX-512 VNNI table.
        let rest = match names[0] {
            "amx" => &names[1..],
            _ => &names[..],
        };
        assert_eq!(rest[0], want[0], "{names:?}");
        assert!(names[0] != "amx" || want[0] == "avx512vnni", "{names:?}");
    }
}

/// Every variant's attention row primitives agree with the scalar ones.
#[test]
fn row_ops_match_scalar() {
    for k in kernels::available() {
        row_ops_match_scalar_in(k);
    }
}

fn row_ops_match_scalar_in(k: &Kernels) {
    use owlet::kernels::rows::SCALAR;
    let ops = &k.rows;
    let mut rng = Rng::star(11);
    for n in [0, 1, 7, 8, 9, 64, 127, 128, 1000] {
        let a = values(Kind::Heavy, n, &mut rng);
        let b = values(Kind::Random, n, &mut rng);
        let bh: Vec<half::f16> = b.iter().map(|&v| half::f16::from_f32(v)).collect();
        let scale: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum();
        let tol = 1e-6 * scale + 1e-30;
        let (d32, r32) = ((ops.dot_f32)(&a, &b), (SCALAR.dot_f32)(&a, &b));
        assert!(
            ((d32 - r32) as f64).abs() <= tol,
            "{} dot_f32 n={n}: {d32} vs {r32}",
            k.name
        );
        let (d16, r16) = ((ops.dot_f16)(&a, &bh), (SCALAR.dot_f16)(&a, &bh));
        assert!(
            ((d16 - r16) as f64).abs() <= tol,
            "{} dot_f16 n={n}: {d16} vs {r16}",
            k.name
        );
        let (mut o1, mut o2) = (a.clone(), a.clone());
        (ops.axpy_f32)(0.3, &b, &mut o1);
        (SCALAR.axpy_f32)(0.3, &b, &mut o2);
        for (x, y) in o1.iter().zip(&o2) {
            assert!(
                (x - y).abs() <= 1e-6 * (x.abs() + 1.0),
                "{} axpy_f32",
                k.name
            );
        }
        let (mut o1, mut o2) = (a.clone(), a.clone());
        (ops.axpy_f16)(-1.7, &bh, &mut o1);
        (SCALAR.axpy_f16)(-1.7, &bh, &mut o2);
        for (x, y) in o1.iter().zip(&o2) {
            assert!(
                (x - y).abs() <= 1e-6 * (x.abs() + 1.0),
                "{} axpy_f16",
                k.name
            );
        }
    }
}

/// The f32 matrix product of the row primitives equals the scalar twin bitwise (each output is
/// one fma chain over the inner dimension in every variant), for row counts around the 4-row
/// blocks, column counts around the 16/8-lane steps, strided operands and edge values.
#[test]
fn gemm_f32_equals_scalar_twin_bitwise() {
    use owlet::kernels::rows::{Gemm, SCALAR};
    for kn in kernels::available() {
        let ops = &kn.rows;
        let mut rng = Rng::star(12);
        for (m, n, k) in [
            (1, 1, 1),
            (3, 7, 5),
            (4, 16, 64),
            (5, 33, 64),
            (9, 1025, 64),
            (32, 64, 1025),
            (2, 0, 3),
            (0, 5, 5),
            (3, 9, 0),
        ] {
            for kind in [Kind::Random, Kind::Heavy, Kind::MaxMagnitude, Kind::Zeros] {
                // Leading dimensions wider than the rows, as attention's head slices are.
                let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
                let a = values(kind, m.max(1) * lda, &mut rng);
                let b = values(Kind::Random, k.max(1) * ldb, &mut rng);
                let g = Gemm {
                    m,
                    n,
                    k,
                    a: &a,
                    lda,
                    b: &b,
                    ldb,
                    ldc,
                };
                let mut got = vec![f32::NAN; m.max(1) * ldc];
                let mut want = got.clone();
                (ops.gemm_f32)(&g, &mut got);
                (SCALAR.gemm_f32)(&g, &mut want);
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (got[i * ldc + j], want[i * ldc + j]);
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{} gemm {m}x{n}x{k} {kind:?} at ({i},{j}): {x} vs {y}",
                            kn.name
                        );
                    }
                }
            }
        }
    }
}

/// Every row-primitive variant quantizes activations to the reference's Q8_0 bytes: random
/// and heavy-tailed rows, all-equal and zero blocks, exact rounding ties (values at k + ½ of the
/// step), blocks with a NaN or an infinity, and lengths the reference rejects.
#[test]
fn q8_0_activation_quantizers_equal_reference_bytes() {
    use owlet::quant::quantize_row_q8_0;
    let mut rng = Rng::star(13);
    let mut rows: Vec<Vec<f32>> = KINDS.iter().map(|&k| values(k, 32 * 9, &mut rng)).collect();
    // Ties: amax 127 gives d = 1 (id = 1), so x = k + 0.5 lands exactly on a half step.
    rows.push(
        (0..64)
            .map(|i| {
                if i == 0 {
                    127.0
                } else {
                    (i as f32 - 32.0) + 0.5
                }
            })
            .collect(),
    );
    rows.push((0..64).map(|i| -(i as f32 % 127.0) - 0.5).collect());
    let mut special = values(Kind::Random, 96, &mut rng);
    special[3] = f32::NAN;
    special[40] = f32::INFINITY;
    special[70] = -0.0;
    rows.push(special);
    for k in kernels::available() {
        let ops = &k.rows;
        for x in &rows {
            let mut got = vec![0u8; x.len() / 32 * 34];
            let mut want = got.clone();
            (ops.quantize_q8_0)(x, &mut got).unwrap();
            quantize_row_q8_0(x, &mut want).unwrap();
            assert_eq!(got, want, "{}: row of {}", k.name, x.len());
        }
        let mut short = vec![0u8; 33];
        assert!((ops.quantize_q8_0)(&[0.0; 32], &mut short).is_err());
        assert!((ops.quantize_q8_0)(&[0.0; 31], &mut [0u8; 34]).is_err());
    }
}

/// Every row-primitive variant quantizes activations to the reference's Q8_K bytes: random and
/// heavy-tailed rows, ties, the largest magnitude at both signs (the first one sets the scale),
/// zero and tiny blocks, blocks with a NaN or an infinity, and lengths the reference rejects.
#[test]
fn q8_k_activation_quantizers_equal_reference_bytes() {
    use owlet::quant::quantize_row_q8_k;
    let mut rng = Rng::star(17);
    let mut rows: Vec<Vec<f32>> = KINDS
        .iter()
        .map(|&k| values(k, 256 * 3, &mut rng))
        .collect();
    // max −127 gives iscale 1: x = k + 0.5 are exact ties (half to even).
    rows.push(
        (0..256)
            .map(|i| {
                if i == 5 {
                    -127.0
                } else {
                    ((i % 250) as f32 - 125.0) + 0.5
                }
            })
            .collect(),
    );
    // +3 before −3 (and the reverse): the first one of largest magnitude sets the sign.
    rows.push((0..256).map(|i| [1.0, 3.0, -3.0, 2.0][i % 4]).collect());
    rows.push((0..256).map(|i| [1.0, -3.0, 3.0, 2.0][i % 4]).collect());
    rows.push(vec![0.0; 256]);
    rows.push((0..256).map(|i| (i as f32 - 100.0) * 1e-39).collect());
    let mut special = values(Kind::Random, 768, &mut rng);
    special[3] = f32::NAN;
    special[300] = f32::NEG_INFINITY;
    special[600] = -0.0;
    rows.push(special);
    for k in kernels::available() {
        let ops = &k.rows;
        for x in &rows {
            let mut got = vec![0u8; x.len() / 256 * 292];
            let mut want = got.clone();
            (ops.quantize_q8_k)(x, &mut got).unwrap();
            quantize_row_q8_k(x, &mut want).unwrap();
            assert_eq!(got, want, "{}: row of {}", k.name, x.len());
        }
        assert!((ops.quantize_q8_k)(&[0.0; 256], &mut [0u8; 291]).is_err());
        assert!((ops.quantize_q8_k)(&[0.0; 255], &mut [0u8; 292]).is_err());
    }
}

/// `dots_f16` (one query against many key rows) equals `dot_f16` row by row, bitwise, for head
/// widths around the 16/8-lane steps, row counts around the 16-row groups and strides wider
/// than the head, in every row variant; and `dot_f16` stays close to the scalar one.
#[test]
fn dots_f16_equals_dot_per_row_bitwise() {
    let mut rng = Rng::star(15);
    for kn in kernels::available() {
        let ops = &kn.rows;
        for (dim, rows, stride) in [
            (128, 40, 256),
            (128, 16, 128),
            (100, 17, 104),
            (7, 3, 9),
            (16, 1, 16),
        ] {
            let k: Vec<half::f16> = values(Kind::Heavy, (rows - 1) * stride + dim, &mut rng)
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect();
            let q = values(Kind::Random, dim, &mut rng);
            let mut got = vec![0f32; rows];
            (ops.dots_f16)(&q, &k, stride, &mut got);
            for (p, g) in got.iter().enumerate() {
                let row = &k[p * stride..p * stride + dim];
                let want = (ops.dot_f16)(&q, row);
                assert_eq!(g.to_bits(), want.to_bits(), "{} dim={dim} row {p}", kn.name);
                let exact: f64 = q.iter().zip(row).map(|(&a, b)| a as f64 * b.to_f64()).sum();
                let mag: f64 = q
                    .iter()
                    .zip(row)
                    .map(|(&a, b)| (a as f64 * b.to_f64()).abs())
                    .sum();
                assert!(
                    (want as f64 - exact).abs() <= 1e-6 * mag + 1e-30,
                    "{} dim={dim}",
                    kn.name
                );
            }
        }
    }
}

/// `wsum_f16` (rows summed with the sums kept in registers) equals `axpy_f16` called row after
/// row, bitwise, for head widths around the 32/8-lane steps and a row stride wider than the
/// head, in every row variant.
#[test]
fn wsum_f16_equals_repeated_axpy_bitwise() {
    let mut rng = Rng::star(14);
    for k in kernels::available() {
        let ops = &k.rows;
        for (dim, rows, stride) in [
            (64, 37, 96),
            (100, 5, 100),
            (7, 3, 9),
            (64, 1, 64),
            (128, 9, 160),
            (200, 4, 256),
        ] {
            let v: Vec<half::f16> = values(Kind::Heavy, (rows - 1) * stride + dim, &mut rng)
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect();
            let w = values(Kind::Random, rows, &mut rng);
            let start = values(Kind::Random, dim, &mut rng);
            let mut want = start.clone();
            for (p, &wp) in w.iter().enumerate() {
                (ops.axpy_f16)(wp, &v[p * stride..p * stride + dim], &mut want);
            }
            let mut got = start.clone();
            (ops.wsum_f16)(&w, &v, stride, &mut got);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} dim={dim} rows={rows}",
                k.name
            );
        }
    }
}
