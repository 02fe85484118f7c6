//! Round trips, edge cases, layouts and bit-exactness against the Python `gguf` package.

use super::search::nearest_int;
use super::*;

/// Types with both a quantizer and a dequantizer.
const CODEC_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// ggml's synthetic test vector (test-quantize-fns): 0.1 + 2·cos(i + offset).
fn ggml_synthetic(n: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

fn round_trip(typ: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; typ.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(typ, x, &mut q).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    dequantize_row(typ, &q, &mut y).unwrap();
    y
}

/// ggml's `array_rmse`: sqrt(Σ(a − b)²) / n (not a true RMSE; its thresholds are for this).
fn ggml_total_error(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    sum.sqrt() / a.len() as f64
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (sum / a.len() as f64).sqrt()
}

/// True RMSE bounds on the synthetic vector (amplitude ~2.1): a little above what ggml's own
/// reference quantizers reach, so a worse scale choice fails.
fn rmse_bound(typ: GgmlType) -> f64 {
    match typ {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 3.2e-4,
        GgmlType::BF16 => 2.6e-3,
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K => 5.5e-3,
        GgmlType::Q6_K => 0.019,
        GgmlType::Q5_K => 0.038,
        GgmlType::Q5_0 | GgmlType::Q5_1 => 0.042,
        GgmlType::Q4_K => 0.07,
        GgmlType::Q4_0 | GgmlType::Q4_1 => 0.082,
        GgmlType::Q2_K | GgmlType::Q3_K => unreachable!(),
    }
}

#[test]
fn synthetic_round_trip_within_ggml_thresholds() {
    let x = ggml_synthetic(32 * 128, 0.0);
    for typ in CODEC_TYPES {
        let y = round_trip(typ, &x);
        let total = ggml_total_error(&x, &y);
        assert!(total < 0.002, "{typ}: ggml total error {total}");
        let r = rmse(&x, &y);
        assert!(
            r <= rmse_bound(typ),
            "{typ}: rmse {r} > {}",
            rmse_bound(typ)
        );
    }
}

#[test]
fn more_bits_give_smaller_error() {
    let x = ggml_synthetic(4096, 0.5);
    let e = |t| rmse(&x, &round_trip(t, &x));
    assert!(e(GgmlType::Q8_0) < e(GgmlType::Q6_K));
    assert!(e(GgmlType::Q6_K) < e(GgmlType::Q5_K));
    assert!(e(GgmlType::Q5_K) < e(GgmlType::Q4_K));
    assert!(e(GgmlType::Q5_0) < e(GgmlType::Q4_0));
    assert!(e(GgmlType::Q5_1) < e(GgmlType::Q4_1));
}

#[test]
fn all_zero_rows_stay_zero() {
    let x = vec![0.0f32; 512];
    for typ in CODEC_TYPES {
        let y = round_trip(typ, &x);
        assert!(y.iter().all(|&v| v == 0.0), "{typ}: {:?}", &y[..8]);
    }
}

/// Largest absolute error allowed for a block of values of magnitude up to `amax`, relative to
/// `amax`: one quantization step of the type (plus slack for f16 scales).
fn step_fraction(typ: GgmlType) -> f32 {
    match typ {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 1e-3,
        GgmlType::BF16 => 8e-3,
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K => 1.0 / 127.0,
        GgmlType::Q6_K => 2.0 / 63.0,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 2.0 / 31.0,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 2.0 / 15.0,
        GgmlType::Q2_K | GgmlType::Q3_K => unreachable!(),
    }
}

fn assert_close_rows(typ: GgmlType, x: &[f32], what: &str) {
    let y = round_trip(typ, x);
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = step_fraction(typ) * amax * 1.01;
    for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
        assert!(b.is_finite(), "{typ} {what}: value {i} became {b}");
        assert!(
            (a - b).abs() <= tol,
            "{typ} {what}: value {i}: {a} -> {b} (tol {tol})"
        );
    }
}

#[test]
fn constant_rows() {
    for c in [0.37f32, -3.25, 1.0, -1e-3] {
        let x = vec![c; 512];
        for typ in CODEC_TYPES {
            assert_close_rows(typ, &x, &format!("constant {c}"));
        }
    }
}

#[test]
fn largest_f16_magnitudes() {
    // Scales must stay finite in f16 for values up to f16::MAX.
    let x: Vec<f32> = (0..512)
        .map(|i| if i % 2 == 0 { 65504.0 } else { -65504.0 } * ((i % 7) as f32 / 6.0))
        .collect();
    for typ in CODEC_TYPES {
        assert_close_rows(typ, &x, "±65504");
    }
}

#[test]
fn tiny_values() {
    for scale in [1e-4f32, 1e-7, 1e-30] {
        let x: Vec<f32> = ggml_synthetic(512, 3.0).iter().map(|v| v * scale).collect();
        for typ in CODEC_TYPES {
            let y = round_trip(typ, &x);
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (&a, &b) in x.iter().zip(&y) {
                assert!(b.is_finite(), "{typ} scale {scale}: NaN/inf");
                // Scales below f16's range flush to zero: then everything may round to zero,
                // but never to something larger than the input's range.
                assert!(
                    (a - b).abs() <= 2.0 * amax,
                    "{typ} scale {scale}: {a} -> {b}"
                );
            }
        }
    }
}

#[test]
fn rejects_bad_lengths() {
    let x = vec![1.0f32; 48];
    let mut q = vec![0u8; 100];
    assert_eq!(
        quantize_row(GgmlType::Q4_0, &x, &mut q),
        Err(QuantError::PartialBlock {
            typ: GgmlType::Q4_0,
            n: 48,
            block: 32
        })
    );
    assert_eq!(
        quantize_row(GgmlType::Q4_0, &x[..32], &mut q),
        Err(QuantError::ByteLength {
            typ: GgmlType::Q4_0,
            n: 32,
            expected: 18,
            got: 100
        })
    );
    let mut y = vec![0.0f32; 256];
    assert!(matches!(
        dequantize_row(GgmlType::Q6_K, &q, &mut y),
        Err(QuantError::ByteLength {
            expected: 210,
            got: 100,
            ..
        })
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q3_K, &y, &mut q),
        Err(QuantError::Unsupported {
            typ: GgmlType::Q3_K,
            ..
        })
    ));
    let msg = quantize_row(GgmlType::Q4_0, &x, &mut q)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("q4_0") && msg.contains("48"), "{msg}");
    // Empty rows are fine.
    assert_eq!(quantize_row(GgmlType::Q4_K, &[], &mut []), Ok(()));
}

#[test]
fn nearest_int_rounds_half_to_even() {
    let cases = [
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (-0.5, 0),
        (-1.5, -2),
        (-2.4, -2),
        (7.49, 7),
        (126.6, 127),
    ];
    for (v, want) in cases {
        assert_eq!(nearest_int(v), want, "{v}");
    }
    // Never panics on garbage.
    let _ = nearest_int(f32::NAN);
    let _ = nearest_int(f32::INFINITY);
}

#[test]
fn k4_scale_packing_round_trips() {
    for ls in 0..64u8 {
        for lm in (0..64u8).rev() {
            let mut packed = [0u8; 12];
            // Distinct values per sub-block exercise the shared bytes.
            for j in 0..8 {
                kquants::pack_scale_min_k4(j, ls ^ j as u8, lm ^ (7 - j) as u8, &mut packed);
            }
            for j in 0..8 {
                assert_eq!(
                    unpack_scale_min_k4(j, &packed),
                    (ls ^ j as u8, lm ^ (7 - j) as u8)
                );
            }
        }
    }
}

#[test]
fn q4_0_block_layout() {
    // Block max is -8 → d = 1, levels x + 8; value i in low nibble of byte i, value i+16 high.
    let mut x = [0.0f32; 32];
    for (i, v) in x.iter_mut().enumerate() {
        *v = (i % 16) as f32 - 8.0;
    }
    let mut q = [0u8; 18];
    quantize_row_q4_0(&x, &mut q).unwrap();
    assert_eq!(&q[..2], &half::f16::from_f32(1.0).to_bits().to_le_bytes());
    for (j, &b) in q[2..].iter().enumerate() {
        assert_eq!(b, (j as u8) | ((j as u8) << 4), "byte {j}");
    }
}

#[test]
fn q8_k_block_fields() {
    let x = ggml_synthetic(256, 2.0);
    let mut q = vec![0u8; 292];
    quantize_row_q8_k(&x, &mut q).unwrap();
    let (imax, &max) = x
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    let d = f32::from_le_bytes(q[..4].try_into().unwrap());
    assert_eq!(d, 1.0 / (-127.0 / max));
    assert_eq!(q[4 + imax] as i8, if max > 0.0 { -127 } else { 127 });
    for g in 0..16 {
        let want: i32 = q[4 + 16 * g..4 + 16 * g + 16]
            .iter()
            .map(|&v| v as i8 as i32)
            .sum();
        let got = i16::from_le_bytes([q[260 + 2 * g], q[261 + 2 * g]]) as i32;
        assert_eq!(got, want, "bsum {g}");
    }
}

#[test]
fn q8_1_sum_field() {
    let x = ggml_synthetic(64, 1.0);
    let mut q = vec![0u8; 72];
    quantize_row_q8_1(&x, &mut q).unwrap();
    for (b, xs) in q.chunks_exact(36).zip(x.chunks_exact(32)) {
        // s uses the f32 scale, before d itself is rounded to f16.
        let d = xs.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        assert_eq!(read_f16(b, 0), half::f16::from_f32(d).to_f32());
        let sum: i32 = b[4..].iter().map(|&v| v as i8 as i32).sum();
        assert_eq!(read_f16(b, 2), half::f16::from_f32(sum as f32 * d).to_f32());
    }
}

#[test]
fn vec_dot_types() {
    use GgmlType::*;
    for (w, a) in [
        (F32, F32),
        (F16, F32),
        (BF16, F32),
        (Q4_0, Q8_0),
        (Q5_0, Q8_0),
        (Q8_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_1, Q8_1),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (Q8_1, Q8_1),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q8_K, Q8_K),
    ] {
        assert_eq!(vec_dot_type(w), a, "{w}");
    }
}

/// Bit-exactness against `gguf.quants.quantize` (Python), see scripts/make_quant_refs.py.
#[test]
fn matches_gguf_py_reference_bytes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant_ref");
    let raw = std::fs::read(dir.join("input.f32.bin")).unwrap();
    let x: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(x.len() % 256, 0);
    let types = [
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
        ("q8_0", GgmlType::Q8_0),
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::BF16),
    ];
    for (name, typ) in types {
        let want = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let mut got = vec![0u8; typ.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_row(typ, &x, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let rb = got.len() / (x.len() / 256);
        for (r, (g, w)) in got.chunks(rb).zip(want.chunks(rb)).enumerate() {
            assert!(g == w, "{name}: row {r} differs from gguf-py");
        }
    }
}
