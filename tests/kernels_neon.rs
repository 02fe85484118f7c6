//! Kernel variants against their generic twins, and the check that the intended variant runs.
//!
//! - Every variant this CPU offers (`owlet::kernels::available()`) is compared with `GENERIC`
//!   on quantized random rows of several lengths, including extreme quants (-128) and
//!   unaligned weight bytes. The NEON quantized kernels are documented as bit-identical, so on
//!   aarch64 they must match exactly; float kernels (different f64 summation order) and other
//!   architectures' variants must agree to 1e-6 of the sum of |terms|.
//! - `OWLET_EXPECT_KERNELS=name`: `select()` must pick that variant (the aarch64 CI script runs
//!   the tests under `qemu-aarch64 -cpu cortex-a72` = neon, `cortex-a76` = neon-dotprod, `max`).

use owlet::kernels::{self, Kernels, GENERIC};
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

fn check_quant(k: &Kernels, wt: GgmlType, qw: &[u8], qa: &[u8], n: usize, what: &str) {
    let at = vec_dot_type(wt);
    let want = (GENERIC.quant_dot(wt).unwrap())(n, qw, qa);
    let got = (k.quant_dot(wt).unwrap())(n, qw, qa);
    if bit_exact(k) {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{} {wt} {what} n={n}: {got} vs {want}",
            k.name
        );
    } else {
        let tol = 1e-6 * magnitude(wt, qw, at, qa, n) + 1e-30;
        assert!(
            ((got - want) as f64).abs() <= tol,
            "{} {wt} {what} n={n}: {got} vs {want}",
            k.name
        );
    }
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
#[test]
fn extreme_quants_match_generic() {
    for k in kernels::available() {
        for wt in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let n = 4 * wt.block_size();
            for fill in [0x00u8, 0x80, 0xFF, 0x7F] {
                let mut qw = quantized(wt, &values(n, 3));
                let mut qa = quantized(vec_dot_type(wt), &values(n, 4));
                // Overwrite the quant bytes and keep the scales sane.
                let (ts, ats) = (wt.type_size(), vec_dot_type(wt).type_size());
                for b in qw.chunks_exact_mut(ts) {
                    match wt {
                        GgmlType::Q4_0 | GgmlType::Q8_0 => b[2..].fill(fill),
                        GgmlType::Q4_K => b[16..].fill(fill),
                        _ => b[..192].fill(fill),
                    }
                }
                for b in qa.chunks_exact_mut(ats) {
                    match vec_dot_type(wt) {
                        GgmlType::Q8_0 => b[2..].fill(0x80),
                        _ => b[4..260].fill(0x80),
                    }
                }
                check_quant(k, wt, &qw, &qa, n, &format!("fill {fill:#x}"));
            }
        }
    }
}

#[test]
fn float_kernels_match_generic() {
    for k in kernels::available() {
        for (wt, get) in [
            (GgmlType::F32, k.f32_f32),
            (GgmlType::F16, k.f16_f32),
            (GgmlType::BF16, k.bf16_f32),
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
    assert_eq!(*names.last().unwrap(), "generic");
}
