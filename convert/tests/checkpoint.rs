//! Checkpoint reader tests: the owl2-tiny-a fixture in both formats, and
//! hostile or broken inputs generated here.

use owlet_convert::checkpoint::{Checkpoint, DType};
use owlet_convert::pickle;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixture(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/owl2-tiny-a")
        .join(sub)
}

#[path = "../../tests/common/scratch.rs"]
mod scratch;
use scratch::TempDir;

/// A fresh folder for one test, deleted when dropped.
fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(env!("CARGO_TARGET_TMPDIR"), "owlet-ckpt", tag)
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn assert_err_contains<T: std::fmt::Debug>(r: anyhow::Result<T>, wants: &[&str]) {
    let e = err_of(r);
    for w in wants {
        assert!(e.contains(w), "error {e:?} should contain {w:?}");
    }
}

// ---------------------------------------------------------------- fixture

#[test]
fn fixture_bin_and_safetensors_agree_with_manifest() {
    let bin = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let st = Checkpoint::open(&fixture("checkpoint-f32-safetensors")).unwrap();
    assert!(bin.warnings().is_empty(), "{:?}", bin.warnings());
    assert!(st.warnings().is_empty(), "{:?}", st.warnings());
    assert_eq!(bin.files().len(), 2);
    assert_eq!(st.files().len(), 1);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap();
    let weights = manifest["checkpoint"]["weights"].as_object().unwrap();
    assert_eq!(weights.len(), 128);
    assert_eq!(bin.tensors().len(), 128);
    assert_eq!(st.tensors().len(), 128);

    let names: Vec<&str> = bin.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tensors() must be sorted by name");

    for (name, w) in weights {
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let b = bin
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in .bin"));
        let s = st
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in safetensors"));
        assert_eq!(b.shape, shape, "{name}");
        assert_eq!(s.shape, shape, "{name}");
        assert_eq!(w["dtype"], "float16");
        assert_eq!(b.dtype, DType::F16, "{name}");
        assert_eq!(s.dtype, DType::F32, "{name}");
        let shard = w["shard"].as_str().unwrap();
        assert!(
            bin.files().iter().any(|f| f.ends_with(shard)),
            "{name}: shard {shard}"
        );

        let up = bin.read_f32(b).unwrap();
        let reference = st.read_f32(s).unwrap();
        assert_eq!(up.len(), shape.iter().product::<usize>(), "{name}");
        let same = up
            .iter()
            .zip(&reference)
            .all(|(a, r)| a.to_bits() == r.to_bits());
        assert!(
            same && up.len() == reference.len(),
            "{name}: f16 upcast differs from f32 safetensors"
        );
        // Raw f16 bytes match the element count; raw f32 bytes match read_f32.
        assert_eq!(bin.read_raw(b).unwrap().len(), up.len() * 2);
        let raw = st.read_raw(s).unwrap();
        let back: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back.len(), reference.len());
    }
}

#[test]
fn foreign_source_tensor_is_refused() {
    let bin = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let st = Checkpoint::open(&fixture("checkpoint-f32-safetensors")).unwrap();
    let t = st.get("lm_head.weight").unwrap();
    assert_err_contains(bin.read_raw(t), &["lm_head.weight", "does not belong"]);
}

// ------------------------------------------------------- pickle builders

/// One tensor for [`state_dict_pickle`].
struct PT<'a> {
    name: &'a str,
    class: &'a str,
    key: &'a str,
    storage_numel: u32,
    offset: u32,
    shape: Vec<u32>,
    stride: Vec<u32>,
}

impl<'a> PT<'a> {
    /// A C-contiguous f16 tensor filling its own storage.
    fn f16(name: &'a str, key: &'a str, shape: &[u32]) -> PT<'a> {
        let mut stride = vec![1u32; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        PT {
            name,
            class: "HalfStorage",
            key,
            storage_numel: shape.iter().product(),
            offset: 0,
            shape: shape.to_vec(),
            stride,
        }
    }
}

fn push_str(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn push_int(p: &mut Vec<u8>, v: u32) {
    p.push(b'J');
    p.extend(v.to_le_bytes());
}

/// A protocol-2 state dict pickle as `torch.save` writes it (without memo).
fn state_dict_pickle(tensors: &[PT]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    for t in tensors {
        push_str(&mut p, t.name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        push_str(&mut p, "storage");
        p.extend(format!("ctorch\n{}\n", t.class).as_bytes());
        push_str(&mut p, t.key);
        push_str(&mut p, "cpu");
        push_int(&mut p, t.storage_numel);
        p.extend(b"tQ");
        push_int(&mut p, t.offset);
        p.push(b'(');
        for &d in &t.shape {
            push_int(&mut p, d);
        }
        p.extend(b"t(");
        for &d in &t.stride {
            push_int(&mut p, d);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

/// Writes a torch.save-style zip: `<prefix>/data.pkl`, `<prefix>/data/<key>`
/// for each storage, `<prefix>/version`, plus `extra` records.
fn write_torch_zip(
    path: &Path,
    pkl: &[u8],
    storages: &[(&str, Vec<u8>)],
    extra: &[(&str, &[u8])],
    method: zip::CompressionMethod,
) {
    let prefix = path.file_stem().unwrap().to_str().unwrap().to_owned();
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file(format!("{prefix}/data.pkl"), stored).unwrap();
    w.write_all(pkl).unwrap();
    for (key, bytes) in storages {
        w.start_file(format!("{prefix}/data/{key}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    for (name, bytes) in extra {
        w.start_file(format!("{prefix}/{name}"), stored).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.start_file(format!("{prefix}/version"), stored).unwrap();
    w.write_all(b"3\n").unwrap();
    w.finish().unwrap();
}

fn f16_bytes(vals: &[f32]) -> Vec<u8> {
    vals.iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// A directory with a single `pytorch_model.bin` holding `tensors`.
fn single_bin_dir(tag: &str, pkl: &[u8], storages: &[(&str, Vec<u8>)]) -> TempDir {
    let dir = temp_dir(tag);
    write_torch_zip(
        &dir.join("pytorch_model.bin"),
        pkl,
        storages,
        &[],
        zip::CompressionMethod::Stored,
    );
    dir
}

// ------------------------------------------------------ generated good data

#[test]
fn generated_bin_offsets_views_and_deflate() {
    // Two tensors sharing storage "0" (the second at element offset 6), one
    // bf16 tensor, and a deflated copy of the same archive.
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let mut a = PT::f16("a", "0", &[2, 3]);
    a.storage_numel = 12;
    let mut b = PT::f16("b", "0", &[6]);
    b.storage_numel = 12;
    b.offset = 6;
    let mut c = PT::f16("c", "1", &[2]);
    c.class = "BFloat16Storage";
    let pkl = state_dict_pickle(&[a, b, c]);
    let bf: Vec<u8> = [1.5f32, -3.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    for method in [
        zip::CompressionMethod::Stored,
        zip::CompressionMethod::Deflated,
    ] {
        let dir = temp_dir("good");
        write_torch_zip(
            &dir.join("pytorch_model.bin"),
            &pkl,
            &[("0", f16_bytes(&vals)), ("1", bf.clone())],
            &[("byteorder", b"little")],
            method,
        );
        let ck = Checkpoint::open(&dir).unwrap();
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let a = ck.get("a").unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(ck.read_f32(a).unwrap(), &vals[..6]);
        assert_eq!(ck.read_f32(ck.get("b").unwrap()).unwrap(), &vals[6..]);
        let c = ck.get("c").unwrap();
        assert_eq!(c.dtype, DType::BF16);
        assert_eq!(ck.read_f32(c).unwrap(), [1.5, -3.0]);
        assert_eq!(ck.read_raw(c).unwrap(), bf);
    }
}

// ------------------------------------------------------------ hostile pickles

#[test]
fn os_system_global_is_refused_without_executing() {
    let dir = temp_dir("evil");
    let canary = dir.join("canary");
    let cmd = format!("touch {}", canary.display());
    let mut p = vec![0x80, 2];
    p.extend(b"cos\nsystem\n");
    push_str(&mut p, &cmd);
    p.extend(b"\x85R.");
    assert_err_contains(
        pickle::parse_state_dict(&p, "evil.pkl"),
        &["disallowed global os.system in evil.pkl"],
    );
    // The same pickle inside a checkpoint: the error names the file.
    write_torch_zip(
        &dir.join("pytorch_model.bin"),
        &p,
        &[],
        &[],
        zip::CompressionMethod::Stored,
    );
    assert_err_contains(
        Checkpoint::open(&dir),
        &["disallowed global os.system", "pytorch_model.bin"],
    );
    // STACK_GLOBAL spelling of the same thing.
    let mut p = vec![0x80, 4, 0x8c, 2];
    p.extend(b"os");
    p.extend([0x8c, 6]);
    p.extend(b"system");
    p.push(0x93);
    push_str(&mut p, &cmd);
    p.extend(b"\x85R.");
    assert_err_contains(
        pickle::parse_state_dict(&p, "evil.pkl"),
        &["disallowed global os.system"],
    );
    assert!(!canary.exists(), "the pickle must not execute anything");
}

#[test]
fn malformed_pickles_are_refused() {
    let good = state_dict_pickle(&[PT::f16("w", "0", &[2, 2])]);
    assert!(pickle::parse_state_dict(&good, "good").is_ok());

    let mut deep_marks = vec![0x80, 2];
    deep_marks.extend(std::iter::repeat_n(b'(', 1_000_000));
    deep_marks.push(b'.');

    let mut deep_lists = vec![0x80, 2];
    deep_lists.extend(std::iter::repeat_n(b']', 200_000));
    deep_lists.extend(std::iter::repeat_n(b'a', 199_999));
    deep_lists.push(b'.');

    let mut huge_len8 = vec![0x80, 2, 0x8d];
    huge_len8.extend(u64::MAX.to_le_bytes());
    huge_len8.extend(b"ab.");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown opcode",
            b"\x80\x02\xff.".to_vec(),
            "unknown or unsupported pickle opcode 0xff",
        ),
        (
            "INST opcode",
            b"\x80\x02ios\nsystem\n.".to_vec(),
            "unsupported pickle opcode 0x69",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "truncated pickle",
        ),
        (
            "no STOP",
            good[..good.len() - 1].to_vec(),
            "truncated pickle",
        ),
        ("empty", Vec::new(), "truncated pickle"),
        (
            "huge BINUNICODE",
            b"\x80\x02X\xff\xff\xff\x7fab.".to_vec(),
            "exceeds the",
        ),
        ("huge BINUNICODE8", huge_len8, "exceeds the"),
        (
            "memo index",
            b"\x80\x02h\x05.".to_vec(),
            "memo index 5 not defined",
        ),
        (
            "long memo index",
            b"\x80\x02N\x94j\xff\xff\xff\xff.".to_vec(),
            "memo index 4294967295",
        ),
        ("deep MARKs", deep_marks, "nested MARKs"),
        ("deep lists", deep_lists, "nested deeper"),
        (
            "stack underflow",
            b"\x80\x02(0.".to_vec(),
            "stack underflow",
        ),
        (
            "REDUCE non-callable",
            b"\x80\x02N)R.".to_vec(),
            "not callable",
        ),
        (
            "protocol 0",
            b"\x80\x00}.".to_vec(),
            "unsupported pickle protocol",
        ),
        ("not a dict", b"\x80\x02N.".to_vec(), "not a state dict"),
        (
            "non-tensor value",
            b"\x80\x02}X\x01\x00\x00\x00aNs.".to_vec(),
            "entry a",
        ),
        (
            "bad utf8",
            b"\x80\x02X\x01\x00\x00\x00\xff.".to_vec(),
            "UTF-8",
        ),
        (
            "builtins.eval",
            b"\x80\x02c__builtin__\neval\n.".to_vec(),
            "disallowed global __builtin__.eval",
        ),
    ];
    for (what, bytes, want) in cases {
        let e = err_of(pickle::parse_state_dict(&bytes, "case.pkl"));
        assert!(e.contains(want), "{what}: {e:?} should contain {want:?}");
        assert!(e.contains("case.pkl"), "{what}: {e:?} should name the file");
    }
}

#[test]
fn non_contiguous_and_big_endian_are_refused() {
    let mut t = PT::f16("t", "0", &[2, 3]);
    t.stride = vec![1, 2];
    let dir = single_bin_dir("strided", &state_dict_pickle(&[t]), &[("0", vec![0; 12])]);
    assert_err_contains(Checkpoint::open(&dir), &["tensor t", "not C-contiguous"]);

    let dir = temp_dir("bigendian");
    write_torch_zip(
        &dir.join("pytorch_model.bin"),
        &state_dict_pickle(&[PT::f16("t", "0", &[2])]),
        &[("0", vec![0; 4])],
        &[("byteorder", b"big")],
        zip::CompressionMethod::Stored,
    );
    assert_err_contains(Checkpoint::open(&dir), &["big-endian", "pytorch_model.bin"]);

    let mut t = PT::f16("ints", "0", &[2]);
    t.class = "LongStorage";
    let dir = single_bin_dir("long", &state_dict_pickle(&[t]), &[("0", vec![0; 16])]);
    assert_err_contains(
        Checkpoint::open(&dir),
        &["tensor ints", "unsupported dtype torch.LongStorage"],
    );
}

#[test]
fn storage_missing_or_short_is_refused() {
    let pkl = state_dict_pickle(&[PT::f16("w", "0", &[3, 4])]);
    let dir = single_bin_dir("nokey", &pkl, &[("7", vec![0; 24])]);
    assert_err_contains(
        Checkpoint::open(&dir),
        &["data/0", "tensor w", "missing", "pytorch_model.bin"],
    );

    let dir = single_bin_dir("short", &pkl, &[("0", vec![0; 10])]);
    assert_err_contains(
        Checkpoint::open(&dir),
        &["tensor w", "too short", "pytorch_model.bin"],
    );
}

// ------------------------------------------------------------- safetensors

/// Writes a safetensors file from a header string and a data section.
fn write_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn malformed_safetensors_are_refused() {
    let cases: [(&str, &str, usize, &[&str]); 6] = [
        (
            "overlap",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            &["overlap", "a", "b"],
        ),
        (
            "bad dtype",
            r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            8,
            &["tensor ids", "unsupported dtype \"I64\""],
        ),
        (
            "size mismatch",
            r#"{"w":{"dtype":"F16","shape":[3,3],"data_offsets":[0,16]}}"#,
            16,
            &["tensor w", "needs 18"],
        ),
        (
            "past data end",
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
            &["tensor w", "outside the data section"],
        ),
        ("not json", "{this is not json", 0, &["not valid JSON"]),
        (
            "bad shape",
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
            0,
            &["tensor w", "shape"],
        ),
    ];
    for (what, header, data_len, wants) in cases {
        let dir = temp_dir("st");
        write_safetensors(&dir.join("model.safetensors"), header, &vec![0u8; data_len]);
        let e = err_of(Checkpoint::open(&dir));
        for w in wants.iter().chain(&["model.safetensors"]) {
            assert!(e.contains(w), "{what}: {e:?} should contain {w:?}");
        }
    }

    // Header length larger than the file.
    let dir = temp_dir("sthdr");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend(b"{}");
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    assert_err_contains(
        Checkpoint::open(&dir),
        &["header length 1000 exceeds the file size"],
    );
    // Header length beyond the cap (and u64::MAX, which must not overflow).
    for len in [200u64 << 20, u64::MAX] {
        std::fs::write(dir.join("model.safetensors"), len.to_le_bytes()).unwrap();
        assert_err_contains(Checkpoint::open(&dir), &["exceeds"]);
    }
    // Shorter than the length prefix.
    std::fs::write(dir.join("model.safetensors"), b"abc").unwrap();
    assert_err_contains(Checkpoint::open(&dir), &["too short", "model.safetensors"]);
}

#[test]
fn sharded_safetensors_f16_bf16_upcast_exactly() {
    let dir = temp_dir("stshards");
    // f16 values including a subnormal, the largest finite, -0 and infinity.
    let h: Vec<f32> = vec![6.0e-8, 65504.0, -0.0, f32::INFINITY, 0.1];
    let hb = f16_bytes(&h);
    let b: Vec<f32> = vec![1.0e-38, -3.0e38, 0.5];
    let bb: Vec<u8> = b
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        r#"{"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]}}"#,
        &hb,
    );
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        r#"{"b":{"dtype":"BF16","shape":[1,3],"data_offsets":[0,6]}}"#,
        &bb,
    );
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata":{"total_size":16},"weight_map":{"h":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!(ck.files().len(), 2);
    let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["b", "h"]);
    let got_h = ck.read_f32(ck.get("h").unwrap()).unwrap();
    let want_h: Vec<f32> = h.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_eq!(
        got_h.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_h.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(got_h[0] > 0.0 && got_h[0] < 1.0e-7, "subnormal kept");
    let bt = ck.get("b").unwrap();
    assert_eq!(
        (bt.dtype, bt.shape.as_slice()),
        (DType::BF16, &[1usize, 3][..])
    );
    let got_b = ck.read_f32(bt).unwrap();
    for (g, w) in got_b.iter().zip(&b) {
        assert_eq!(g.to_bits(), half::bf16::from_f32(*w).to_f32().to_bits());
    }
    assert_eq!(ck.read_raw(bt).unwrap(), bb);
}

// ------------------------------------------------------ sharded checkpoints

/// Copies the fixture's .bin shards and index into a temp dir.
fn copy_bin_fixture(tag: &str) -> TempDir {
    let dir = temp_dir(tag);
    for f in [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ] {
        std::fs::copy(fixture("checkpoint").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("pytorch_model.bin.index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json["weight_map"].as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
}

#[test]
fn truncated_shard_is_refused() {
    let dir = copy_bin_fixture("trunc");
    let shard = dir.join("pytorch_model-00002-of-00002.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    assert_err_contains(
        Checkpoint::open(&dir),
        &["pytorch_model-00002-of-00002.bin", "truncated"],
    );

    // Truncated safetensors: the last tensor's data is cut off.
    let dir = temp_dir("sttrunc");
    let src = fixture("checkpoint-f32-safetensors/model.safetensors");
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    assert_err_contains(
        Checkpoint::open(&dir),
        &["model.safetensors", "outside the data section"],
    );
}

#[test]
fn index_problems_are_reported() {
    // Index names a shard file that does not exist.
    let dir = copy_bin_fixture("missingshard");
    std::fs::remove_file(dir.join("pytorch_model-00002-of-00002.bin")).unwrap();
    assert_err_contains(
        Checkpoint::open(&dir),
        &[
            "pytorch_model-00002-of-00002.bin",
            "is missing",
            "index.json",
        ],
    );

    // Index names a tensor its shard does not hold.
    let dir = copy_bin_fixture("absent");
    edit_index(&dir, |m| {
        m.insert(
            "model.extra.weight".into(),
            "pytorch_model-00001-of-00002.bin".into(),
        );
    });
    assert_err_contains(
        Checkpoint::open(&dir),
        &[
            "model.extra.weight",
            "absent from its shard",
            "pytorch_model-00001-of-00002.bin",
        ],
    );

    // Index puts a tensor in the wrong shard.
    let dir = copy_bin_fixture("wrongshard");
    edit_index(&dir, |m| {
        m.insert(
            "model.embed_tokens.weight".into(),
            "pytorch_model-00002-of-00002.bin".into(),
        );
    });
    assert_err_contains(
        Checkpoint::open(&dir),
        &[
            "model.embed_tokens.weight",
            "absent from its shard",
            "pytorch_model-00002-of-00002.bin",
            "found in",
        ],
    );

    // Tensor present in a shard but not in the index: kept, with a warning.
    let dir = copy_bin_fixture("unlisted");
    edit_index(&dir, |m| {
        m.remove("model.embed_tokens.weight");
    });
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!(ck.tensors().len(), 128);
    assert!(ck.get("model.embed_tokens.weight").is_some());
    assert_eq!(ck.warnings().len(), 1, "{:?}", ck.warnings());
    assert!(ck.warnings()[0].contains("model.embed_tokens.weight"));

    // Path traversal in a shard name.
    let dir = copy_bin_fixture("traversal");
    edit_index(&dir, |m| {
        m.insert("lm_head.weight".into(), "../../etc/passwd".into());
    });
    assert_err_contains(Checkpoint::open(&dir), &["not a plain file name"]);

    // No checkpoint at all.
    let dir = temp_dir("empty");
    assert_err_contains(Checkpoint::open(&dir), &["no checkpoint in"]);
}
