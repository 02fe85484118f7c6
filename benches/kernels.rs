//! `cargo bench --bench kernels`: matmul speed per kernel variant at the 7B shapes.
//!
//! For each weight type and each variant this CPU can run (best first, generic last), on one
//! thread (set `OWLET_BENCH_THREADS` for more): GEMV (one activation row, as in decode) in GB/s
//! of weights streamed and GFLOP/s, and GEMM with `OWLET_BENCH_M` activation rows (default 64,
//! as in prefill) in GFLOP/s. Shapes are `rows × cols` of the weight matrix (outputs × inputs).
//! Weights are random block bytes with sane scales: speed depends on shapes and types only.
//! `OWLET_BENCH_VARIANTS=a,b` restricts the variants; a first non-flag argument (`q4_0`) the type.
//!
//! `OWLET_BENCH_CALLS=N` instead makes exactly `N` products of the first shape (4096×4096) with
//! `OWLET_BENCH_M` activation rows (1: decode) per selected type and variant, over the
//! variant's packing where it has one (`OWLET_BENCH_PACKED=0`: never), and prints nothing: run
//! it under an instruction counter (`qemu-aarch64 -plugin libicount.so`) with two values of `N`
//! and take the difference, so that setup cancels.

use std::time::Instant;

use owlet::kernels::{self, Kernels};
use owlet::ops::matmul::pack;
use owlet::ops::{matmul, MatRef};
use owlet::quant::GgmlType;

const SHAPES: [(usize, usize); 5] = [
    (4096, 4096),
    (11008, 4096),
    (4096, 11008),
    (1024, 1024),
    (4096, 1024),
];
const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

fn random_weights(t: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let bytes = rows * t.row_bytes(cols as u64).unwrap() as usize;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut w: Vec<u8> = (0..bytes)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    let halves: &[usize] = match t {
        GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    let d = half::f16::from_f32(0.01).to_le_bytes();
    // Small finite floats: the top byte of each little-endian value keeps its exponent low.
    let float_bytes = match t {
        GgmlType::F16 | GgmlType::BF16 => 2,
        GgmlType::F32 => 4,
        _ => 0,
    };
    if float_bytes > 0 {
        for v in w.chunks_exact_mut(float_bytes) {
            v[float_bytes - 1] &= 0x3B;
        }
    }
    for block in w.chunks_exact_mut(t.type_size()) {
        for &o in halves {
            block[o..o + 2].copy_from_slice(&d);
        }
    }
    w
}

/// Seconds per call: the best of `reps` after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn bench(
    k: &Kernels,
    t: GgmlType,
    rows: usize,
    cols: usize,
    w: &[u8],
    packed: Option<&[u8]>,
    m: usize,
) -> (f64, f64, f64) {
    let mat = MatRef {
        typ: t,
        rows,
        cols,
        data: w,
        packed,
    };
    let x1: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut y1 = vec![0f32; rows];
    let generic = k.name == "generic";
    let gemv = time(if generic { 1 } else { 5 }, || matmul(k, mat, &x1, &mut y1));
    let xm: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.003).cos()).collect();
    let mut ym = vec![0f32; m * rows];
    let gemm = time(if generic { 1 } else { 2 }, || matmul(k, mat, &xm, &mut ym));
    let flop = 2.0 * rows as f64 * cols as f64;
    (
        w.len() as f64 / gemv / 1e9,
        flop / gemv / 1e9,
        m as f64 * flop / gemm / 1e9,
    )
}

fn main() {
    let threads: usize = std::env::var("OWLET_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let m: usize = std::env::var("OWLET_BENCH_M")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // `OWLET_BENCH_VARIANTS=avx512vnni,avx2`: only these variants (default: all available).
    let wanted: Option<Vec<String>> = std::env::var("OWLET_BENCH_VARIANTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    if let Some(calls) = std::env::var("OWLET_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let packed = std::env::var("OWLET_BENCH_PACKED").map_or(true, |v| v != "0");
        let (rows, cols) = SHAPES[0];
        for t in TYPES {
            if only.as_deref().is_some_and(|o| o != t.name()) {
                continue;
            }
            let w = random_weights(t, rows, cols);
            for k in kernels::available() {
                if wanted
                    .as_ref()
                    .is_some_and(|w| !w.iter().any(|n| n == k.name))
                {
                    continue;
                }
                let mut mat = MatRef {
                    typ: t,
                    rows,
                    cols,
                    data: &w,
                    packed: None,
                };
                let bytes = k
                    .packing(t)
                    .filter(|_| packed)
                    .and_then(|p| pool.install(|| pack(p, mat)));
                mat.packed = bytes.as_deref();
                let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.003).cos()).collect();
                let mut y = vec![0f32; m * rows];
                for _ in 0..calls {
                    pool.install(|| matmul(k, mat, &x, &mut y));
                }
                std::hint::black_box(&y);
            }
        }
        return;
    }
    println!("threads {threads}, GEMM rows {m}; GEMV: GB/s of weights, GFLOP/s; GEMM: GFLOP/s");
    println!("| type | shape | variant | GEMV GB/s | GEMV GFLOP/s | GEMM GFLOP/s |");
    println!("|---|---|---|---|---|---|");
    for t in TYPES {
        if only.as_deref().is_some_and(|o| o != t.name()) {
            continue;
        }
        for (rows, cols) in SHAPES {
            let w = random_weights(t, rows, cols);
            for k in kernels::available() {
                if wanted
                    .as_ref()
                    .is_some_and(|w| !w.iter().any(|n| n == k.name))
                {
                    continue;
                }
                let (gbs, gf1, gfm) = pool.install(|| bench(k, t, rows, cols, &w, None, m));
                println!(
                    "| {} | {rows}x{cols} | {} | {gbs:.1} | {gf1:.1} | {gfm:.1} |",
                    t.name(),
                    k.name
                );
                // The variant's load-time repacking of this type, as the model loader does.
                let plain = MatRef {
                    typ: t,
                    rows,
                    cols,
                    data: &w,
                    packed: None,
                };
                if let Some(bytes) = k.packing(t).and_then(|p| pool.install(|| pack(p, plain))) {
                    let (gbs, gf1, gfm) =
                        pool.install(|| bench(k, t, rows, cols, &w, Some(&bytes), m));
                    println!(
                        "| {} | {rows}x{cols} | {} packed | {gbs:.1} | {gf1:.1} | {gfm:.1} |",
                        t.name(),
                        k.name
                    );
                }
            }
        }
    }
}
