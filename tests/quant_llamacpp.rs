//! owlet's quantizers against llama.cpp's: quantizing every F32 tensor of
//! `tests/data/llamacpp-tiny/tiny-f32.gguf` to the type `llama-quantize` chose for it must give
//! exactly the bytes stored in llama.cpp's quantized file (no importance matrix, so llama.cpp
//! used ggml's reference quantizers). See `tests/data/llamacpp-tiny/README.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use owlet::gguf::{Gguf, TensorInfo};
use owlet::quant::{quantize_row, GgmlType};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp-tiny")
}

fn open(name: &str) -> Gguf {
    let path = data_dir().join(name);
    Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The little-endian f32 values of an F32 tensor.
fn f32_values(file: &Gguf, t: &TensorInfo) -> Vec<f32> {
    assert_eq!(t.typ, GgmlType::F32, "{}: source tensor is not F32", t.name);
    let bytes = file.tensor_bytes(t);
    assert_eq!(
        bytes.len() as u64,
        4 * t.dims.iter().product::<u64>(),
        "{}",
        t.name
    );
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Quantizes `values` row by row (rows of `dims[0]` values) to `typ`; on a mismatch with `want`
/// names the first differing row and block.
fn assert_quantizes_to(name: &str, typ: GgmlType, row_len: usize, values: &[f32], want: &[u8]) {
    let row_bytes = typ
        .row_bytes(row_len as u64)
        .expect("row length is whole blocks") as usize;
    assert_eq!(
        values.len() / row_len * row_bytes,
        want.len(),
        "{name}: {typ} data size"
    );
    let mut got = vec![0u8; row_bytes];
    let rows = values
        .chunks_exact(row_len)
        .zip(want.chunks_exact(row_bytes));
    for (r, (x, want_row)) in rows.enumerate() {
        quantize_row(typ, x, &mut got).unwrap_or_else(|e| panic!("{name} row {r}: {e}"));
        if got != want_row {
            let bs = typ.type_size();
            let b = (0..row_bytes / bs)
                .find(|&b| got[b * bs..(b + 1) * bs] != want_row[b * bs..(b + 1) * bs])
                .unwrap_or(0);
            panic!(
                "{name} ({typ}): row {r} block {b} differs from llama.cpp\n  got  {:?}\n  want {:?}",
                &got[b * bs..(b + 1) * bs],
                &want_row[b * bs..(b + 1) * bs]
            );
        }
    }
}

/// Checks every tensor of `tiny-<variant>.gguf` against the F32 source; `expected_types` are
/// the quantized types llama.cpp used in that file (from manifest.json).
fn check_variant(variant: &str, expected_types: &[GgmlType]) {
    let src = open("tiny-f32.gguf");
    let quant = open(&format!("tiny-{variant}.gguf"));
    assert_eq!(
        quant.tensors().len(),
        src.tensors().len(),
        "{variant}: tensor count"
    );
    let mut seen = BTreeSet::new();
    for t in quant.tensors() {
        let s = src
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{}: not in tiny-f32", t.name));
        assert_eq!(s.dims, t.dims, "{}: dims", t.name);
        let values = f32_values(&src, s);
        if t.typ == GgmlType::F32 {
            // Norm weights are copied unchanged.
            assert!(
                quant.tensor_bytes(t) == src.tensor_bytes(s),
                "{}: F32 copy differs",
                t.name
            );
            continue;
        }
        seen.insert(t.typ.name());
        assert_quantizes_to(
            &t.name,
            t.typ,
            t.dims[0] as usize,
            &values,
            quant.tensor_bytes(t),
        );
    }
    let expected: BTreeSet<_> = expected_types.iter().map(|t| t.name()).collect();
    assert_eq!(seen, expected, "{variant}: quantized types in the file");
}

#[test]
fn q4_0_matches_llama_cpp() {
    // llama.cpp keeps output.weight at Q6_K in a Q4_0 file.
    check_variant("Q4_0", &[GgmlType::Q4_0, GgmlType::Q6_K]);
}

#[test]
fn q8_0_matches_llama_cpp() {
    check_variant("Q8_0", &[GgmlType::Q8_0]);
}

#[test]
fn q4_k_m_matches_llama_cpp() {
    check_variant("Q4_K_M", &[GgmlType::Q4_K, GgmlType::Q6_K]);
}

#[test]
fn q4_k_s_matches_llama_cpp() {
    check_variant("Q4_K_S", &[GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K]);
}

#[test]
fn q6_k_matches_llama_cpp() {
    check_variant("Q6_K", &[GgmlType::Q6_K]);
}
