//! Reading real GGUF files (llama.cpp's tiny LLaMA quantizations and the LLaMA-2 vocab file),
//! writer round trips, and a cross-check against the Python `gguf` package.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use owlet::gguf::{Array, Gguf, GgufError, GgufWriter, Value, ValueType};
use owlet::quant::GgmlType;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The per-file tensor type tables of `manifest.json` (`files.<label>.tensor_types`), read with
/// a small scanner because the crate has no JSON dependency: the manifest is machine-written
/// with one `"key": value` per line.
fn manifest_tensor_types() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(data("llamacpp-tiny/manifest.json")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut label = None::<String>;
    let mut in_types = false;
    for line in text.lines().map(str::trim) {
        if in_types {
            if line.starts_with('}') {
                in_types = false;
                continue;
            }
            let (k, v) = line.trim_end_matches(',').split_once(": ").unwrap();
            let l = label.clone().unwrap();
            out.entry(l)
                .or_default()
                .insert(k.trim_matches('"').into(), v.trim_matches('"').into());
        } else if line.starts_with("\"tensor_types\"") {
            in_types = true;
        } else if line.starts_with('"') && line.ends_with(": {") && !line.starts_with("\"files\"") {
            label = Some(line.trim_end_matches(": {").trim_matches('"').to_string());
        }
    }
    out
}

fn ggml_type_by_name(name: &str) -> GgmlType {
    (0..40)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("unknown type name {name}"))
}

/// ne of every tensor of the tiny LLaMA (width 256, FFN 768, vocab 512, 2 layers).
fn expected_dims(name: &str) -> Vec<u64> {
    let leaf = name
        .rsplit_once("blk.")
        .map_or(name, |(_, r)| r.split_once('.').unwrap().1);
    match leaf {
        "token_embd.weight" | "output.weight" => vec![256, 512],
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_output.weight" => {
            vec![256, 256]
        }
        "ffn_gate.weight" | "ffn_up.weight" => vec![256, 768],
        "ffn_down.weight" => vec![768, 256],
        "attn_norm.weight" | "ffn_norm.weight" | "output_norm.weight" => vec![256],
        other => panic!("unexpected tensor {other}"),
    }
}

#[test]
fn reads_every_llamacpp_tiny_file() {
    let manifest = manifest_tensor_types();
    assert_eq!(manifest.len(), 5, "manifest labels: {:?}", manifest.keys());
    let labels = ["f32", "Q8_0", "Q6_K", "Q4_0", "Q4_K_M", "Q4_K_S"];
    for label in labels {
        let path = data(&format!("llamacpp-tiny/tiny-{label}.gguf"));
        let g = Gguf::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.data_offset() % 32, 0);
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 256);
        assert_eq!(g.get_u32("llama.block_count").unwrap(), 2);
        assert_eq!(g.get_u32("llama.feed_forward_length").unwrap(), 768);
        assert_eq!(g.get_u32("llama.attention.head_count").unwrap(), 4);
        assert_eq!(g.get_u32("llama.rope.dimension_count").unwrap(), 64);
        let eps = g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap();
        assert_eq!(eps, 1e-5);
        assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
        let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.elem, ValueType::Str);
        assert_eq!(
            &tokens.as_strs().unwrap()[..4],
            ["<unk>", "<s>", "</s>", "<0x00>"]
        );
        assert_eq!(tokens.len(), 512);
        assert_eq!(
            g.get_array("tokenizer.ggml.scores").unwrap().elem,
            ValueType::F32
        );
        assert_eq!(g.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
        // Metadata keeps file order.
        assert_eq!(g.metadata()[0].0, "general.architecture");

        assert_eq!(g.tensors().len(), 21, "{label}");
        let types = manifest.get(label);
        for t in g.tensors() {
            assert_eq!(g.tensor(&t.name), Some(t));
            assert_eq!(t.dims, expected_dims(&t.name), "{label} {}", t.name);
            let want = types.map_or(GgmlType::F32, |m| ggml_type_by_name(&m[&t.name]));
            assert_eq!(t.typ, want, "{label} {}", t.name);
            assert_eq!(t.size, t.typ.row_bytes(t.dims[0]).unwrap() * t.n_rows());
            assert_eq!(t.n_elements(), t.dims.iter().product::<u64>());
            assert_eq!(g.tensor_bytes(t).len() as u64, t.size);
        }
        if let Some(m) = types {
            assert_eq!(m.len(), 21, "{label}");
        }
    }
}

#[test]
fn f32_tensor_data_is_where_python_gguf_says() {
    // Offsets from `gguf.GGUFReader` on this file: token_embd.weight at absolute byte 12672,
    // output.weight at 7357824.
    let g = Gguf::open(&data("llamacpp-tiny/tiny-f32.gguf")).unwrap();
    assert_eq!(g.data_offset(), 12672);
    let out = g.tensor("output.weight").unwrap();
    assert_eq!(g.data_offset() + out.offset, 7357824);
    let norm = g.tensor_data("output_norm.weight").unwrap();
    let first = f32::from_le_bytes(norm[..4].try_into().unwrap());
    assert!(first.is_finite());
    // Reading the same file from memory gives the same view.
    let h = Gguf::from_bytes(std::fs::read(data("llamacpp-tiny/tiny-f32.gguf")).unwrap()).unwrap();
    assert_eq!(h.tensor_data("output_norm.weight").unwrap(), norm);
    assert_eq!(h.metadata(), g.metadata());
}

#[test]
fn reads_llama_vocab_file() {
    let g = Gguf::open(&data("assets/ggml-vocab-llama-spm.gguf")).unwrap();
    assert_eq!(g.tensors().len(), 0);
    assert_eq!(g.metadata().len(), 22);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.vocab_size").unwrap(), 32000);
    let tokens = g
        .get_array("tokenizer.ggml.tokens")
        .unwrap()
        .as_strs()
        .unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(tokens[1000], "ied");
    assert_eq!(tokens[31999], "给");
    let scores = g
        .get_array("tokenizer.ggml.scores")
        .unwrap()
        .as_f32s()
        .unwrap();
    assert_eq!(scores.len(), 32000);
    let types = g
        .get_array("tokenizer.ggml.token_type")
        .unwrap()
        .as_i64s()
        .unwrap();
    assert_eq!(&types[..5], [2, 3, 3, 6, 6]);
    assert!(g.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert!(!g.get_bool("tokenizer.ggml.add_eos_token").unwrap());
    // The file ends right after the header, without the final padding.
    assert!(g.data_offset() >= g.as_bytes().len() as u64);
}

#[test]
fn errors_name_the_file() {
    let missing = data("llamacpp-tiny/no-such-file.gguf");
    let e = Gguf::open(&missing).unwrap_err();
    assert!(e.to_string().contains("no-such-file.gguf"), "{e}");
    let png = data("assets/coffee.png");
    let e = Gguf::open(&png).unwrap_err();
    assert!(e.to_string().contains("coffee.png"), "{e}");
    assert!(matches!(e.root(), GgufError::BadMagic { .. }), "{e}");
    // An empty file (which cannot be memory-mapped on every OS) and a directory.
    let dir = std::env::temp_dir().join(format!("owlet-gguf-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = Gguf::open(&empty).unwrap_err();
    assert!(e.to_string().contains("empty.gguf"), "{e}");
    let e = Gguf::open(&dir).unwrap_err();
    assert!(e.to_string().contains("owlet-gguf-empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = Gguf::from_bytes(b"GGUF\x01\0\0\0".to_vec()).unwrap_err();
    assert!(e.to_string().contains("version 1"), "{e}");
    let e = Gguf::from_bytes(b"GGUF\0\0\0\x03".to_vec()).unwrap_err();
    assert!(e.to_string().contains("big-endian"), "{e}");
    let g = Gguf::open(&data("assets/ggml-vocab-llama-spm.gguf")).unwrap();
    let e = g.get_u32("tokenizer.ggml.model").unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");
    let e = g.get_u32("no.such.key").unwrap_err();
    assert!(e.to_string().contains("no.such.key"), "{e}");
}

/// Metadata covering every value type, including empty and nested arrays.
fn every_value_type() -> Vec<(String, Value)> {
    let arr = |elem, items| Value::Array(Array::new(elem, items).unwrap());
    vec![
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(60000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.u64".into(), Value::U64(18_000_000_000_000_000_000)),
        ("t.i64".into(), Value::I64(-9_000_000_000_000_000_000)),
        ("t.f32".into(), Value::F32(1.5e-5)),
        ("t.f64".into(), Value::F64(-2.25e100)),
        ("t.bool_t".into(), Value::Bool(true)),
        ("t.bool_f".into(), Value::Bool(false)),
        ("t.str".into(), Value::from("héllo, 世界 \"quoted\"\n")),
        ("t.str_empty".into(), Value::from("")),
        (
            "t.arr_str".into(),
            arr(ValueType::Str, vec!["a".into(), "".into(), "▁the".into()]),
        ),
        (
            "t.arr_f32".into(),
            arr(ValueType::F32, vec![0.5f32.into(), (-1.0f32).into()]),
        ),
        (
            "t.arr_i32".into(),
            arr(ValueType::I32, vec![1i32.into(), (-2i32).into()]),
        ),
        (
            "t.arr_u8".into(),
            arr(ValueType::U8, vec![0u8.into(), 255u8.into()]),
        ),
        (
            "t.arr_bool".into(),
            arr(ValueType::Bool, vec![true.into(), false.into()]),
        ),
        (
            "t.arr_u64".into(),
            arr(ValueType::U64, vec![u64::MAX.into()]),
        ),
        ("t.arr_empty_f32".into(), arr(ValueType::F32, vec![])),
        (
            "t.arr_nested".into(),
            arr(
                ValueType::Array,
                vec![
                    arr(ValueType::U32, vec![1u32.into(), 2u32.into()]),
                    arr(ValueType::U32, vec![3u32.into()]),
                ],
            ),
        ),
    ]
}

/// Tensors of several types with recognisable bytes: (name, ne, type, data).
fn sample_tensors() -> Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> {
    let mk = |name: &str, dims: Vec<u64>, typ: GgmlType| {
        let n = typ.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        let seed = name.len() as u8;
        let bytes = (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        (name.to_string(), dims, typ, bytes)
    };
    vec![
        mk("a.f32", vec![3, 5], GgmlType::F32),
        mk("b.q8_0", vec![64, 3], GgmlType::Q8_0),
        mk("c.f16", vec![7], GgmlType::F16),
        mk("d.q4_k", vec![256, 2, 1, 2], GgmlType::Q4_K),
        mk("e.q6_k", vec![512, 1], GgmlType::Q6_K),
    ]
}

fn write_file(
    meta: &[(String, Value)],
    tensors: &[(String, Vec<u64>, GgmlType, Vec<u8>)],
    alignment: u64,
) -> Vec<u8> {
    let decl: Vec<_> = tensors
        .iter()
        .map(|(n, d, t, _)| (n.clone(), d.clone(), *t))
        .collect();
    let mut w = GgufWriter::new(Vec::new(), meta, &decl, alignment).unwrap();
    for (name, _, _, bytes) in tensors {
        w.write_tensor(name, bytes).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn writer_round_trip() {
    for alignment in [32u64, 64, 1] {
        let meta = every_value_type();
        let tensors = sample_tensors();
        let bytes = write_file(&meta, &tensors, alignment);
        assert_eq!(bytes.len() as u64 % alignment, 0);
        let g = Gguf::from_bytes(bytes).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), alignment);
        // The writer adds `general.alignment` only when it differs from the default.
        let got: Vec<_> = g
            .metadata()
            .iter()
            .filter(|(k, _)| k != "general.alignment")
            .collect();
        assert_eq!(got.len(), meta.len());
        for ((k, v), (k2, v2)) in got.into_iter().zip(&meta) {
            assert_eq!((k, v), (k2, v2));
        }
        assert_eq!(g.get("general.alignment").is_some(), alignment != 32);
        assert_eq!(g.tensors().len(), tensors.len());
        for ((name, dims, typ, data), t) in tensors.iter().zip(g.tensors()) {
            assert_eq!((&t.name, &t.dims, t.typ), (name, dims, *typ));
            assert_eq!(t.offset % alignment, 0);
            assert_eq!(g.tensor_bytes(t), &data[..]);
        }
    }
}

#[test]
fn llamacpp_file_rewritten_is_identical() {
    // Re-writing a llama.cpp file with its own metadata and tensors reproduces it byte for
    // byte: same header encoding, same offsets, same padding.
    let path = data("llamacpp-tiny/tiny-Q4_K_M.gguf");
    let original = std::fs::read(&path).unwrap();
    let g = Gguf::from_bytes(original.clone()).unwrap();
    let tensors: Vec<_> = g
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dims.clone(),
                t.typ,
                g.tensor_bytes(t).to_vec(),
            )
        })
        .collect();
    let rewritten = write_file(g.metadata(), &tensors, g.alignment());
    assert_eq!(rewritten.len(), original.len());
    assert!(rewritten == original, "rewritten file differs");
}

#[test]
fn writer_refuses_bad_use() {
    let decl = vec![("x".to_string(), vec![4u64], GgmlType::F32)];
    // Wrong order / unknown name / wrong size / missing tensor / extra tensor.
    let mut w = GgufWriter::new(Vec::new(), &[], &decl, 32).unwrap();
    assert!(w.write_tensor("y", &[0; 16]).is_err());
    assert!(w.write_tensor("x", &[0; 15]).is_err());
    let w2 = GgufWriter::new(Vec::new(), &[], &decl, 32).unwrap();
    let e = w2.finish().unwrap_err();
    assert!(e.to_string().contains("'x'"), "{e}");
    w.write_tensor("x", &[0; 16]).unwrap();
    assert!(w.write_tensor("x", &[0; 16]).is_err());
    w.finish().unwrap();
    // Bad declarations.
    let bad_decls: Vec<Vec<(String, Vec<u64>, GgmlType)>> = vec![
        vec![("q".into(), vec![31], GgmlType::Q8_0)],
        vec![("z".into(), vec![4, 0], GgmlType::F32)],
        vec![("d".into(), vec![1, 1, 1, 1, 1], GgmlType::F32)],
        vec![("d".into(), vec![], GgmlType::F32)],
        vec![("o".into(), vec![u64::MAX, 2], GgmlType::F32)],
        vec![
            ("a".into(), vec![1], GgmlType::F32),
            ("a".into(), vec![1], GgmlType::F32),
        ],
    ];
    for decl in bad_decls {
        assert!(
            GgufWriter::new(Vec::new(), &[], &decl, 32).is_err(),
            "{decl:?}"
        );
    }
    // Bad metadata and alignment.
    let dup = vec![
        ("k".to_string(), Value::U8(1)),
        ("k".to_string(), Value::U8(2)),
    ];
    assert!(GgufWriter::new(Vec::new(), &dup, &[], 32).is_err());
    let mixed = vec![(
        "k".to_string(),
        Value::Array(Array {
            elem: ValueType::U8,
            items: vec![Value::U16(1)],
        }),
    )];
    assert!(GgufWriter::new(Vec::new(), &mixed, &[], 32).is_err());
    let align = vec![("general.alignment".to_string(), Value::U32(64))];
    assert!(GgufWriter::new(Vec::new(), &align, &[], 32).is_err());
    assert!(GgufWriter::new(Vec::new(), &align, &[], 64).is_ok());
    assert!(GgufWriter::new(Vec::new(), &[], &[], 48).is_err());
    assert!(GgufWriter::new(Vec::new(), &[], &[], 0).is_err());
}

/// Runs `python3` with the `gguf` package on `script`; `None` (after a note) when python or
/// the package is unavailable outside CI. In CI (`CI` set) a missing package fails the test.
fn run_python_gguf(script: &str, args: &[&Path]) -> Option<String> {
    let probe = Command::new("python3").args(["-c", "import gguf"]).output();
    let available = matches!(&probe, Ok(o) if o.status.success());
    if !available {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with the `gguf` package is required in CI: {probe:?}");
        }
        eprintln!(
            "note: skipping the Python gguf cross-check: python3 or its `gguf` module is missing"
        );
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Prints each field as `key<TAB>type ids<TAB>repr(contents)` and each tensor as
/// `name<TAB>type<TAB>shape<TAB>absolute offset<TAB>data length<TAB>last 8 data bytes in hex`.
const PY_DUMP: &str = r#"
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
for k, f in r.fields.items():
    if k.startswith("GGUF."):
        continue
    print("F", k, ",".join(str(int(t)) for t in f.types), repr(f.contents()), sep="\t")
for t in r.tensors:
    print("T", t.name, int(t.tensor_type), ",".join(str(int(d)) for d in t.shape),
          int(t.data_offset), len(t.data.tobytes()), t.data.tobytes()[-8:].hex(), sep="\t")
"#;

/// Python's `repr` of a value as `GGUFReader.contents()` gives it (lists for arrays, floats
/// from float32 widened to double).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::F32(x) => py_float(f64::from(*x)),
        Value::F64(x) => py_float(*x),
        Value::Str(s) => py_str(s),
        Value::Array(a) => {
            let items: Vec<_> = a.items.iter().map(py_repr).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Python's shortest round-trip float repr (Rust's `{:?}` uses the same digits; the exponent
/// notation differs).
fn py_float(x: f64) -> String {
    let s = format!("{x:?}");
    if let Some((m, e)) = s.split_once('e') {
        let e: i32 = e.parse().unwrap();
        let m = m.trim_end_matches(".0");
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[test]
fn python_gguf_reads_what_we_write() {
    let meta = every_value_type();
    let tensors = sample_tensors();
    let dir = std::env::temp_dir().join(format!("owlet-gguf-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("every-type.gguf");
    std::fs::write(&path, write_file(&meta, &tensors, 64)).unwrap();
    let Some(out) = run_python_gguf(PY_DUMP, &[&path]) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);

    let mut fields = Vec::new();
    let mut py_tensors = Vec::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        match cols[0] {
            "F" => fields.push((
                cols[1].to_string(),
                cols[2].to_string(),
                cols[3].to_string(),
            )),
            "T" => py_tensors.push(cols[1..].join("\t")),
            _ => panic!("unexpected python output {line}"),
        }
    }
    let mut want = meta.clone();
    want.push(("general.alignment".into(), Value::U32(64)));
    assert_eq!(fields.len(), want.len(), "{out}");
    for ((k, v), (pk, ptypes, prepr)) in want.iter().zip(&fields) {
        assert_eq!(k, pk);
        let mut types = vec![v.value_type().id().to_string()];
        // gguf-py lists an array's element type only when it has items.
        let mut inner = v.as_array().filter(|a| !a.is_empty());
        while let Some(a) = inner {
            types.push(a.elem.id().to_string());
            inner = a.items.first().and_then(Value::as_array);
        }
        // gguf-py lists the element types of the first item of nested arrays only.
        assert_eq!(&types.join(","), ptypes, "{k}");
        if k == "t.arr_nested" {
            // gguf-py's contents() does not decode arrays of arrays; the type ids suffice.
            continue;
        }
        assert_eq!(&py_repr(v), prepr, "{k}");
    }
    // Tensors: Python reports the shape in ne order, and the data at the same absolute offset.
    assert_eq!(py_tensors.len(), tensors.len());
    for ((name, dims, typ, bytes), line) in tensors.iter().zip(&py_tensors) {
        let cols: Vec<&str> = line.split('\t').collect();
        let shape: Vec<String> = dims.iter().map(u64::to_string).collect();
        assert_eq!(cols[0], name);
        assert_eq!(cols[1], typ.id().to_string(), "{name}");
        assert_eq!(cols[2], shape.join(","), "{name}");
        assert_eq!(cols[4], bytes.len().to_string(), "{name}");
        assert_eq!(cols[5], hex(&bytes[bytes.len() - 8..]), "{name}");
    }
}

#[test]
fn python_gguf_agrees_on_llamacpp_files() {
    let paths: Vec<PathBuf> = ["tiny-Q4_K_M.gguf", "tiny-Q4_0.gguf"]
        .iter()
        .map(|f| data(&format!("llamacpp-tiny/{f}")))
        .chain([data("assets/ggml-vocab-llama-spm.gguf")])
        .collect();
    for path in paths {
        let Some(out) = run_python_gguf(PY_DUMP, &[&path]) else {
            return;
        };
        let g = Gguf::open(&path).unwrap();
        let mut n_fields = 0;
        let mut n_tensors = 0;
        for line in out.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols[0] == "F" {
                let v = g
                    .get(cols[1])
                    .unwrap_or_else(|| panic!("missing key {}", cols[1]));
                assert_eq!(
                    v.value_type().id().to_string(),
                    cols[2].split(',').next().unwrap()
                );
                // Token arrays are long; compare scalars and short arrays in full.
                if v.as_array().is_none_or(|a| a.len() <= 64) {
                    assert_eq!(py_repr(v), cols[3], "{}", cols[1]);
                } else {
                    assert!(cols[3].starts_with('['), "{}", cols[1]);
                    let a = v.as_array().unwrap();
                    let first = py_repr(&a.items[0]);
                    assert!(cols[3][1..].starts_with(&first), "{}: {first}", cols[1]);
                }
                n_fields += 1;
            } else {
                let t = g.tensor(cols[1]).unwrap();
                assert_eq!(t.typ.id().to_string(), cols[2]);
                let shape: Vec<String> = t.dims.iter().map(u64::to_string).collect();
                assert_eq!(shape.join(","), cols[3]);
                assert_eq!(
                    (g.data_offset() + t.offset).to_string(),
                    cols[4],
                    "{}",
                    t.name
                );
                let data = g.tensor_bytes(t);
                assert_eq!(data.len().to_string(), cols[5], "{}", t.name);
                assert_eq!(hex(&data[data.len() - 8..]), cols[6], "{}", t.name);
                n_tensors += 1;
            }
        }
        assert_eq!(n_fields, g.metadata().len());
        assert_eq!(n_tensors, g.tensors().len());
    }
}
