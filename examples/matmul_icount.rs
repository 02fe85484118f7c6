//! One quantized matrix product repeated, for instruction counts under qemu (see
//! `../shared/tools/icount.c`): `matmul_icount VARIANT TYPE ROWS COLS M REPS` multiplies a
//! random `ROWS × COLS` matrix of `TYPE` (`q4_0`, `q8_0`, `q4_k`, `q6_k`) by `M` activation rows
//! `REPS` times with kernel variant `VARIANT`, repacked at load where the variant has a
//! packing. The difference of two runs' counts over the difference of their `REPS` is the cost
//! of one product, setup excluded. Run it on one thread (`RAYON_NUM_THREADS=1`).

use owlet::kernels;
use owlet::ops::matmul::pack;
use owlet::ops::{matmul, MatRef};
use owlet::quant::{quantize_row, GgmlType};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: matmul_icount VARIANT TYPE ROWS COLS M REPS");
        std::process::exit(2);
    }
    let k = kernels::by_name(&args[1]).unwrap_or_else(|| {
        eprintln!("variant {} is not available on this CPU", args[1]);
        std::process::exit(2)
    });
    let typ = match args[2].as_str() {
        "q4_0" => GgmlType::Q4_0,
        "q8_0" => GgmlType::Q8_0,
        "q4_k" => GgmlType::Q4_K,
        "q6_k" => GgmlType::Q6_K,
        t => {
            eprintln!("unknown type {t}");
            std::process::exit(2)
        }
    };
    let num = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("not a number: {}", args[i]);
            std::process::exit(2)
        })
    };
    let (rows, cols, m, reps) = (num(3), num(4), num(5), num(6));
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut f = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let wf: Vec<f32> = (0..rows * cols).map(|_| f()).collect();
    let mut data = vec![0u8; rows * typ.row_bytes(cols as u64).unwrap() as usize];
    quantize_row(typ, &wf, &mut data).unwrap();
    let mut w = MatRef {
        typ,
        rows,
        cols,
        data: &data,
        packed: None,
    };
    let packed = k.packing(typ).and_then(|p| pack(p, w));
    w.packed = packed.as_deref();
    let x: Vec<f32> = (0..m * cols).map(|_| f()).collect();
    let mut y = vec![0f32; m * rows];
    let mut check = 0f32;
    for _ in 0..reps {
        matmul(k, w, &x, &mut y);
        check += y[0];
    }
    println!(
        "{} {typ} {rows}x{cols} m={m} reps={reps} packed={} y0 sum {check}",
        k.name,
        w.packed.is_some()
    );
}
