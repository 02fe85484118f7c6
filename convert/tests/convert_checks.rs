//! What the converter writes, checked against its sources and against other tools:
//! - the f16 `.bin` fixture and its f32 safetensors twin give byte-identical files;
//! - every f32 output tensor is the source tensor after the documented reordering (recomputed
//!   here from the checkpoint reader with numpy-style reshapes, not with `plan::apply`), every
//!   f16 tensor keeps the source's f16 bits;
//! - Q4_0 / Q8_0 blocks equal the Python `gguf` package's `gguf.quants.quantize`; Q4_K / Q6_K
//!   blocks equal owlet's ggml-exact quantizer, dequantize (in owlet and in Python) to the
//!   same values and stay within ggml's error bound;
//! - Python's `gguf.GGUFReader` sees the same keys and tensors as owlet's reader;
//! - the tokenizer arrays equal llama.cpp's `ggml-vocab-llama-spm.gguf`;
//! - `--text-only` writes a plain llama file;
//! - the `torch.save` files of `synth --format bin` load with a Python unpickler that rebuilds
//!   tensors the way `torch.load` does.
//!
//! The Python checks need `python3` with the `gguf` and `numpy` packages; without them they
//! print a note and pass, unless the environment variable `CI` is set (then they fail).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use owlet::gguf::{Gguf, TensorInfo};
use owlet::npy;
use owlet::quant::{self, GgmlType};
use owlet_convert::checkpoint::{Checkpoint, DType};
use owlet_convert::convert::convert_dir;
use owlet_convert::plan::{Options, Preset};
use owlet_convert::synth::{self, HfFormat};
use serde_json::Value as Json;

// ------------------------------------------------------------------ helpers

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

fn fixture(sub: &str) -> PathBuf {
    data("owl2-tiny-a").join(sub)
}

#[path = "../../tests/common/scratch.rs"]
mod scratch;
use scratch::TempDir;

/// A fresh folder for one test, deleted when dropped.
fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(env!("CARGO_TARGET_TMPDIR"), "owlet-checks", tag)
}

/// Converts `ckpt` into `dir/<tag>.gguf` with the library entry point the CLI uses.
fn convert(
    ckpt: &Path,
    dir: &Path,
    tag: &str,
    preset: Preset,
    vision: GgmlType,
    text_only: bool,
) -> PathBuf {
    let out = dir.join(format!("{tag}.gguf"));
    let opts = Options {
        preset,
        vision_type: vision,
        text_only,
        name: None,
    };
    convert_dir(ckpt, &out, &opts, true)
        .unwrap_or_else(|e| panic!("converting {}: {e:#}", ckpt.display()));
    out
}

fn open(path: &Path) -> Gguf {
    Gguf::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn table(g: &Gguf) -> Vec<(String, GgmlType, Vec<u64>)> {
    g.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.typ, t.dims.clone()))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

// ------------------------------------------------------------------ python

/// Whether `python3` with `gguf` and `numpy` is there. Without it: a note, or a failure when
/// `CI` is set (CI installs both, so a missing package there is a broken setup).
fn python_ok() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("python3")
            .args(["-c", "import gguf, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("python3 with the gguf and numpy packages is required when CI is set (pip install gguf numpy)");
            }
            eprintln!("note: python3 with gguf + numpy not found: skipping the Python cross-checks");
        }
        ok
    })
}

/// Runs a Python snippet with arguments and returns its stdout; fails the test on an error.
fn python(script: &str, args: &[&OsStr]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Python's `gguf.GGUFReader` must open every file and see what owlet's reader sees: the same
/// metadata keys (in order), tensor names, types, ggml shapes, byte sizes and data offsets.
fn python_reader_agrees(files: &[&Path]) {
    if !python_ok() {
        return;
    }
    const SCRIPT: &str = r#"
import json, sys
from gguf import GGUFReader
out = []
for path in sys.argv[1:]:
    r = GGUFReader(path)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    tensors = [[t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.n_bytes), int(t.data_offset)]
               for t in r.tensors]
    out.append({"keys": keys, "tensors": tensors})
print(json.dumps(out))
"#;
    let args: Vec<&OsStr> = files.iter().map(|p| p.as_os_str()).collect();
    let seen: Vec<Json> = serde_json::from_str(&python(SCRIPT, &args)).unwrap();
    for (path, py) in files.iter().zip(&seen) {
        let g = open(path);
        let keys: Vec<&str> = g.metadata().iter().map(|(k, _)| k.as_str()).collect();
        let py_keys: Vec<&str> = py["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(py_keys, keys, "{}: metadata keys", path.display());
        let py_tensors = py["tensors"].as_array().unwrap();
        assert_eq!(
            py_tensors.len(),
            g.tensors().len(),
            "{}: tensor count",
            path.display()
        );
        for (t, p) in g.tensors().iter().zip(py_tensors) {
            let dims: Vec<u64> = p[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(p[0].as_str().unwrap(), t.name, "{}", path.display());
            assert_eq!(
                p[1].as_u64().unwrap() as u32,
                t.typ.id(),
                "{}: type of {}",
                path.display(),
                t.name
            );
            assert_eq!(dims, t.dims, "{}: shape of {}", path.display(), t.name);
            assert_eq!(
                p[3].as_u64().unwrap(),
                t.size,
                "{}: bytes of {}",
                path.display(),
                t.name
            );
            assert_eq!(
                p[4].as_u64().unwrap(),
                g.data_offset() + t.offset,
                "{}: offset of {}",
                path.display(),
                t.name
            );
        }
    }
}

// ------------------------------------------------------------------ the spec, recomputed

/// How a checkpoint tensor is reordered on its way into the file (DESIGN.md §3).
#[derive(Clone, Copy, Debug)]
enum Reorder {
    None,
    /// llama.cpp's `w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)`.
    QK(usize),
    /// Part `.0` (q, k, v) of the ViT's fused QKV: `w.reshape(n_head, 3, hd, cols)[:, part]`.
    Qkv(usize, usize),
}

/// `src` as a row-major array of `dims`, axes permuted: output axis `k` is input axis
/// `perm[k]` (numpy `transpose(perm)`).
fn transpose4<T: Copy>(src: &[T], dims: [usize; 4], perm: [usize; 4]) -> Vec<T> {
    assert_eq!(src.len(), dims.iter().product::<usize>());
    let in_strides = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1];
    let od = perm.map(|a| dims[a]);
    let mut out = Vec::with_capacity(src.len());
    for a in 0..od[0] {
        for b in 0..od[1] {
            for c in 0..od[2] {
                for d in 0..od[3] {
                    let idx = [a, b, c, d];
                    let mut off = 0;
                    for k in 0..4 {
                        off += idx[k] * in_strides[perm[k]];
                    }
                    out.push(src[off]);
                }
            }
        }
    }
    out
}

/// Applies `r` to a source tensor of PyTorch shape `shape`; returns the values and the output
/// PyTorch shape.
fn reorder<T: Copy>(src: &[T], shape: &[usize], r: Reorder) -> (Vec<T>, Vec<usize>) {
    let rows = shape[0];
    let cols = src.len() / rows;
    match r {
        Reorder::None => (src.to_vec(), shape.to_vec()),
        Reorder::QK(n_head) => {
            let hd = rows / n_head;
            (
                transpose4(src, [n_head, 2, hd / 2, cols], [0, 2, 1, 3]),
                shape.to_vec(),
            )
        }
        Reorder::Qkv(part, n_head) => {
            let hd = rows / 3 / n_head;
            let parts = transpose4(src, [n_head, 3, hd, cols], [1, 0, 2, 3]);
            let d = rows / 3;
            let mut out_shape = shape.to_vec();
            out_shape[0] = d;
            (
                parts[part * d * cols..(part + 1) * d * cols].to_vec(),
                out_shape,
            )
        }
    }
}

/// The model sizes the spec needs, read from config.json directly.
struct Sizes {
    layers: usize,
    heads: usize,
    kv_heads: usize,
    v_layers: usize,
    v_heads: usize,
    a_layers: usize,
}

fn sizes(ckpt: &Path) -> Sizes {
    let c: Json =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    let u = |v: &Json| v.as_u64().unwrap() as usize;
    let heads = u(&c["num_attention_heads"]);
    Sizes {
        layers: u(&c["num_hidden_layers"]),
        heads,
        kv_heads: c.get("num_key_value_heads").map(u).unwrap_or(heads),
        v_layers: u(&c["visual_config"]["visual_model"]["num_hidden_layers"]),
        v_heads: u(&c["visual_config"]["visual_model"]["num_attention_heads"]),
        a_layers: u(&c["visual_config"]["visual_abstractor"]["num_hidden_layers"]),
    }
}

/// Every output tensor as (GGUF name, checkpoint name, reordering), written out from the spec
/// (DESIGN.md §3, spec/mplug-owl2.md §2) independently of `plan.rs`.
fn spec_mapping(s: &Sizes, text_only: bool) -> Vec<(String, String, Reorder)> {
    let mut m: Vec<(String, String, Reorder)> = Vec::new();
    let mut add = |o: String, i: String, r: Reorder| m.push((o, i, r));
    add(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        Reorder::None,
    );
    add(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        Reorder::None,
    );
    add(
        "output.weight".into(),
        "lm_head.weight".into(),
        Reorder::None,
    );
    for i in 0..s.layers {
        let l = format!("model.layers.{i}");
        let b = format!("blk.{i}");
        add(
            format!("{b}.attn_q.weight"),
            format!("{l}.self_attn.q_proj.weight"),
            Reorder::QK(s.heads),
        );
        add(
            format!("{b}.attn_output.weight"),
            format!("{l}.self_attn.o_proj.weight"),
            Reorder::None,
        );
        for (o, src) in [
            ("ffn_gate", "gate_proj"),
            ("ffn_up", "up_proj"),
            ("ffn_down", "down_proj"),
        ] {
            add(
                format!("{b}.{o}.weight"),
                format!("{l}.mlp.{src}.weight"),
                Reorder::None,
            );
        }
        for (m, sfx) in [(0, ""), (1, "_vis")] {
            if text_only && m == 1 {
                continue;
            }
            add(
                format!("{b}.attn_norm{sfx}.weight"),
                format!("{l}.input_layernorm.multiway.{m}.weight"),
                Reorder::None,
            );
            add(
                format!("{b}.ffn_norm{sfx}.weight"),
                format!("{l}.post_attention_layernorm.multiway.{m}.weight"),
                Reorder::None,
            );
            add(
                format!("{b}.attn_k{sfx}.weight"),
                format!("{l}.self_attn.k_proj.multiway.{m}.weight"),
                Reorder::QK(s.kv_heads),
            );
            add(
                format!("{b}.attn_v{sfx}.weight"),
                format!("{l}.self_attn.v_proj.multiway.{m}.weight"),
                Reorder::None,
            );
        }
    }
    if text_only {
        return m;
    }
    let e = "model.vision_model.embeddings";
    add(
        "v.patch_embd.weight".into(),
        format!("{e}.patch_embed.weight"),
        Reorder::None,
    );
    add(
        "v.class_embd".into(),
        format!("{e}.cls_token"),
        Reorder::None,
    );
    add(
        "v.position_embd.weight".into(),
        format!("{e}.position_embedding"),
        Reorder::None,
    );
    for p in ["weight", "bias"] {
        add(
            format!("v.pre_ln.{p}"),
            format!("{e}.pre_layernorm.{p}"),
            Reorder::None,
        );
        add(
            format!("v.post_ln.{p}"),
            format!("model.vision_model.post_layernorm.{p}"),
            Reorder::None,
        );
    }
    for i in 0..s.v_layers {
        let l = format!("model.vision_model.encoder.layers.{i}");
        for p in ["weight", "bias"] {
            for (o, src) in [
                ("ln1", "input_layernorm"),
                ("ln2", "post_attention_layernorm"),
                ("attn_out", "self_attn.dense"),
                ("ffn_up", "mlp.fc1"),
                ("ffn_down", "mlp.fc2"),
            ] {
                add(
                    format!("v.blk.{i}.{o}.{p}"),
                    format!("{l}.{src}.{p}"),
                    Reorder::None,
                );
            }
            for (part, o) in ["attn_q", "attn_k", "attn_v"].into_iter().enumerate() {
                add(
                    format!("v.blk.{i}.{o}.{p}"),
                    format!("{l}.self_attn.query_key_value.{p}"),
                    Reorder::Qkv(part, s.v_heads),
                );
            }
        }
    }
    let a = "model.visual_abstractor";
    add(
        "abstractor.query_embd".into(),
        format!("{a}.query_embeds"),
        Reorder::None,
    );
    // The fixture stores the sin-cos tables per layer (identical copies): layer 0's is written.
    add(
        "abstractor.pos_embd_q".into(),
        format!("{a}.encoder.layers.0.crossattention.attention.q_pos_embed"),
        Reorder::None,
    );
    add(
        "abstractor.pos_embd_k".into(),
        format!("{a}.encoder.layers.0.crossattention.attention.k_pos_embed"),
        Reorder::None,
    );
    for i in 0..s.a_layers {
        let l = format!("{a}.encoder.layers.{i}.crossattention");
        for p in ["weight", "bias"] {
            for (o, src) in [
                ("ln_q", "norm1"),
                ("ln_kv", "normk"),
                ("ln2", "output.norm2"),
                ("ffn_norm", "output.mlp.ffn_ln"),
                ("attn_q", "attention.query"),
                ("attn_k", "attention.key"),
                ("attn_v", "attention.value"),
                ("attn_out", "output.out_proj"),
                ("ffn_gate", "output.mlp.w1"),
                ("ffn_up", "output.mlp.w3"),
                ("ffn_down", "output.mlp.w2"),
            ] {
                add(
                    format!("abstractor.blk.{i}.{o}.{p}"),
                    format!("{l}.{src}.{p}"),
                    Reorder::None,
                );
            }
        }
    }
    for p in ["weight", "bias"] {
        add(
            format!("abstractor.proj.{p}"),
            format!("{a}.visual_fc.{p}"),
            Reorder::None,
        );
    }
    add(
        "abstractor.eoi_embd".into(),
        format!("{a}.vit_eos"),
        Reorder::None,
    );
    m
}

/// One output tensor as the spec makes it from the checkpoint.
struct Expected {
    /// GGUF dims: the PyTorch shape without leading 1s, reversed.
    ne: Vec<u64>,
    values: Vec<f32>,
    /// The source's f16 bits, reordered the same way (f16 sources only).
    bits: Option<Vec<u16>>,
}

fn expected(ckpt: &Path, text_only: bool) -> BTreeMap<String, Expected> {
    let ck = Checkpoint::open(ckpt).unwrap();
    let mut out = BTreeMap::new();
    for (o, i, r) in spec_mapping(&sizes(ckpt), text_only) {
        if i.ends_with("_pos_embed") && ck.get(&i).is_none() {
            // Checkpoints without stored sin-cos tables (the 7B release, synth's) get computed
            // ones: not a copy of anything.
            continue;
        }
        let t = ck
            .get(&i)
            .unwrap_or_else(|| panic!("{i} is not in {}", ckpt.display()));
        let (values, shape) = reorder(&ck.read_f32(t).unwrap(), &t.shape, r);
        let bits = (t.dtype == DType::F16)
            .then(|| reorder(&u16s(&ck.read_raw(t).unwrap()), &t.shape, r).0);
        let first = shape
            .iter()
            .position(|&d| d != 1)
            .unwrap_or(shape.len() - 1);
        let ne = shape[first..].iter().rev().map(|&d| d as u64).collect();
        out.insert(o, Expected { ne, values, bits });
    }
    out
}

/// The expected tensor for `t`, with its shape checked.
fn expect_for<'a>(exp: &'a BTreeMap<String, Expected>, t: &TensorInfo) -> &'a Expected {
    let e = exp
        .get(&t.name)
        .unwrap_or_else(|| panic!("unexpected output tensor {}", t.name));
    assert_eq!(t.dims, e.ne, "shape of {}", t.name);
    e
}

// ------------------------------------------------------------------ tests

#[test]
fn bin_and_safetensors_checkpoints_give_byte_identical_files() {
    let dir = temp_dir("same");
    let mut files = Vec::new();
    for (preset, vision) in [
        (Preset::F32, GgmlType::F32),
        (Preset::F16, GgmlType::F16),
        (Preset::Q4_0, GgmlType::Q8_0),
    ] {
        let tag = preset.name();
        let a = convert(
            &fixture("checkpoint"),
            &dir,
            &format!("bin-{tag}"),
            preset,
            vision,
            false,
        );
        let b = convert(
            &fixture("checkpoint-f32-safetensors"),
            &dir,
            &format!("st-{tag}"),
            preset,
            vision,
            false,
        );
        let (ga, gb) = (open(&a), open(&b));
        assert_eq!(table(&ga), table(&gb), "{tag}: tensor tables differ");
        for t in ga.tensors() {
            assert!(
                ga.tensor_data(&t.name) == gb.tensor_data(&t.name),
                "{tag}: bytes of {} differ",
                t.name
            );
        }
        assert_eq!(ga.metadata(), gb.metadata(), "{tag}: metadata differs");
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{tag}: files differ"
        );
        files.push(a);
    }
    python_reader_agrees(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>());
}

#[test]
fn f32_tensors_equal_the_source_after_the_documented_reordering() {
    let dir = temp_dir("f32");
    let ckpt = fixture("checkpoint");
    let out = convert(&ckpt, &dir, "f32", Preset::F32, GgmlType::F32, false);
    let g = open(&out);
    let exp = expected(&ckpt, false);
    let names: BTreeSet<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        exp.keys().map(|k| k.as_str()).collect(),
        "output tensor names"
    );
    assert_eq!(g.tensors().len(), 131);
    for t in g.tensors() {
        assert_eq!(t.typ, GgmlType::F32, "{} in an f32 file", t.name);
        let e = expect_for(&exp, t);
        let got = f32s(g.tensor_data(&t.name).unwrap());
        // Bitwise: the f32 file is the exact upcast of the f16 source.
        assert!(
            got.iter()
                .map(|v| v.to_bits())
                .eq(e.values.iter().map(|v| v.to_bits())),
            "values of {} differ from the reordered source",
            t.name
        );
    }
    // Every checkpoint tensor is used, except the RoPE inv_freq buffers (computed at load) and
    // the per-layer copies of the abstractor's sin-cos tables, which must all be equal.
    let ck = Checkpoint::open(&ckpt).unwrap();
    let used: BTreeSet<String> = spec_mapping(&sizes(&ckpt), false)
        .into_iter()
        .map(|(_, i, _)| i)
        .collect();
    for t in ck.tensors() {
        if used.contains(&t.name) || t.name.ends_with(".rotary_emb.inv_freq") {
            continue;
        }
        let layer0 = t.name.replace(
            &t.name[..t
                .name
                .find(".crossattention")
                .expect("only pos tables are left")],
            "model.visual_abstractor.encoder.layers.0",
        );
        let first = ck.read_f32(ck.get(&layer0).unwrap()).unwrap();
        assert_eq!(
            ck.read_f32(t).unwrap(),
            first,
            "{} differs from {layer0}",
            t.name
        );
    }
}

#[test]
fn f16_tensors_keep_the_source_bits() {
    let dir = temp_dir("f16");
    let ckpt = fixture("checkpoint");
    let out = convert(&ckpt, &dir, "f16", Preset::F16, GgmlType::F16, false);
    let g = open(&out);
    let exp = expected(&ckpt, false);
    let mut n_f16 = 0;
    for t in g.tensors() {
        let e = expect_for(&exp, t);
        let bytes = g.tensor_data(&t.name).unwrap();
        match t.typ {
            GgmlType::F16 => {
                n_f16 += 1;
                assert!(
                    &u16s(bytes) == e.bits.as_ref().unwrap(),
                    "f16 bits of {} differ from the source",
                    t.name
                );
            }
            GgmlType::F32 => assert_eq!(f32s(bytes), e.values, "{}", t.name),
            other => panic!("{} is {other} in an f16 file", t.name),
        }
    }
    // Every matrix of the LLM, the ViT (including the split QKV) and the abstractor.
    assert_eq!(
        n_f16,
        3 * 9 + 2 + 1 + 2 * 6 + 2 * 7 + 1,
        "number of f16 tensors"
    );
    for name in [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.2.attn_k_vis.weight",
        "v.blk.1.attn_v.weight",
    ] {
        assert_eq!(g.tensor(name).unwrap().typ, GgmlType::F16, "{name}");
    }
}

/// Writes each tensor's expected f32 rows to an `.npy`, has Python's `gguf.quants.quantize`
/// quantize them, and compares with the file's blocks.
fn blocks_match_python_gguf(
    g: &Gguf,
    exp: &BTreeMap<String, Expected>,
    types: &[GgmlType],
    work: &Path,
) -> usize {
    let mut jobs = Vec::new();
    for (i, t) in g
        .tensors()
        .iter()
        .enumerate()
        .filter(|(_, t)| types.contains(&t.typ))
    {
        let e = expect_for(exp, t);
        let cols = t.dims[0] as usize;
        let npy_path = work.join(format!("{i}.npy"));
        npy::write_f32(&npy_path, &[e.values.len() / cols, cols], &e.values).unwrap();
        jobs.push((t, npy_path, work.join(format!("{i}.q"))));
    }
    if !python_ok() {
        return jobs.len();
    }
    const SCRIPT: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType, quants
args = sys.argv[1:]
for typ, src, dst in zip(args[0::3], args[1::3], args[2::3]):
    rows = np.load(src)
    quants.quantize(rows, GGMLQuantizationType[typ]).tofile(dst)
"#;
    let mut args: Vec<String> = Vec::new();
    for (t, src, dst) in &jobs {
        args.push(t.typ.name().to_uppercase());
        args.push(src.to_string_lossy().into_owned());
        args.push(dst.to_string_lossy().into_owned());
    }
    python(SCRIPT, &args.iter().map(OsStr::new).collect::<Vec<_>>());
    for (t, _, dst) in &jobs {
        let py = std::fs::read(dst).unwrap();
        let ours = g.tensor_data(&t.name).unwrap();
        assert_eq!(py.len(), ours.len(), "{}: byte count", t.name);
        if let Some(at) = py.iter().zip(ours).position(|(a, b)| a != b) {
            let bs = t.typ.type_size();
            panic!(
                "{} ({}): block {} differs from gguf.quants.quantize",
                t.name,
                t.typ,
                at / bs
            );
        }
    }
    jobs.len()
}

#[test]
fn q4_0_and_q8_0_blocks_equal_python_gguf_quantize() {
    let dir = temp_dir("q40");
    let ckpt = fixture("checkpoint");
    let exp = expected(&ckpt, false);
    let q4 = convert(&ckpt, &dir, "q4_0", Preset::Q4_0, GgmlType::Q8_0, false);
    let q8 = convert(&ckpt, &dir, "q8_0", Preset::Q8_0, GgmlType::Q8_0, false);
    let types = [GgmlType::Q4_0, GgmlType::Q8_0];
    let (g4, g8) = (open(&q4), open(&q8));
    let count = |g: &Gguf, t: GgmlType| g.tensors().iter().filter(|x| x.typ == t).count();
    // q4_0: the 33 LLM matrices are Q4_0 but `output` (Q6_K in llama.cpp, rows of 64 are not
    // 256-blocks so Q8_0); the ViT and abstractor matrices are Q8_0 but the patch embedding
    // (rows of 3·14·14 = 588 are not 32-blocks, so F16).
    assert_eq!(count(&g4, GgmlType::Q4_0), 3 * 9 + 1);
    assert_eq!(count(&g4, GgmlType::Q8_0), 1 + 2 * 6 + 2 * 7 + 1);
    assert_eq!(g4.tensor("v.patch_embd.weight").unwrap().typ, GgmlType::F16);
    assert_eq!(count(&g8, GgmlType::Q8_0), 3 * 9 + 2 + 2 * 6 + 2 * 7 + 1);
    let w4 = temp_dir("q40-npy");
    let w8 = temp_dir("q80-npy");
    assert_eq!(blocks_match_python_gguf(&g4, &exp, &types, &w4), 28 + 28);
    assert_eq!(blocks_match_python_gguf(&g8, &exp, &types, &w8), 56);
    python_reader_agrees(&[&q4, &q8]);
}

/// A tiny mPLUG-Owl2 whose LLM rows are multiples of 256 (so q4_k_m really uses Q4_K and
/// Q6_K): width 256, FFN 512, one layer; the vision side is the tiny preset's.
fn k_quant_checkpoint(dir: &Path) -> PathBuf {
    let mut c = synth::preset("tiny").unwrap();
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 1;
    let ckpt = dir.join("ckpt");
    synth::write_hf(&c, &ckpt, 20_000_000, HfFormat::Bin).unwrap();
    ckpt
}

#[test]
fn q4_k_and_q6_k_blocks_are_ggmls_and_stay_within_its_error_bound() {
    let dir = temp_dir("kq");
    let ckpt = k_quant_checkpoint(&dir);
    let out = convert(&ckpt, &dir, "q4_k_m", Preset::Q4KM, GgmlType::Q8_0, false);
    let g = open(&out);
    let exp = expected(&ckpt, false);
    // llama.cpp's q4_k_m with one layer: attn_v and ffn_down of layer 0 of 1 get 6 bits
    // (use_more_bits: i >= 7·n/8), `output` Q6_K, the rest Q4_K.
    let typ = |n: &str| g.tensor(n).unwrap().typ;
    for n in [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_k_vis.weight",
        "blk.0.ffn_up.weight",
    ] {
        assert_eq!(typ(n), GgmlType::Q4_K, "{n}");
    }
    for n in [
        "output.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_v_vis.weight",
        "blk.0.ffn_down.weight",
    ] {
        assert_eq!(typ(n), GgmlType::Q6_K, "{n}");
    }
    let mut dequant: Vec<(String, GgmlType, PathBuf, PathBuf, Vec<f32>)> = Vec::new();
    let work = temp_dir("kq-py");
    for (i, t) in g.tensors().iter().enumerate() {
        if !matches!(t.typ, GgmlType::Q4_K | GgmlType::Q6_K) {
            continue;
        }
        let e = expect_for(&exp, t);
        let cols = t.dims[0] as usize;
        let rb = t.typ.row_bytes(cols as u64).unwrap() as usize;
        let bytes = g.tensor_data(&t.name).unwrap();
        // The blocks are owlet's ggml-exact reference quantizer's, row by row.
        let mut row_q = vec![0u8; rb];
        let mut deq = vec![0f32; e.values.len()];
        for (r, (src, q)) in e.values.chunks(cols).zip(bytes.chunks(rb)).enumerate() {
            quant::quantize_row(t.typ, src, &mut row_q).unwrap();
            assert!(
                row_q == q,
                "{} ({}): row {r} differs from quant::quantize_row",
                t.name,
                t.typ
            );
            quant::dequantize_row(t.typ, q, &mut deq[r * cols..(r + 1) * cols]).unwrap();
        }
        // ggml's test-quantize-fns bound for ≥ 4-bit types: sqrt(Σ(x − x̂)²) / n ≤ 0.002 over
        // n = 4096 values of 0.1 + 2·cos(i), i.e. an RMS error ≤ 0.002·√4096 = 0.128 on data of
        // RMS ≈ 1.418: 9.0% of the data's RMS. Applied here per tensor, relative to its RMS.
        let rms = (e.values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
            / e.values.len() as f64)
            .sqrt();
        let err = (e
            .values
            .iter()
            .zip(&deq)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / e.values.len() as f64)
            .sqrt();
        let bound = 0.002 * 4096f64.sqrt() / (0.1f64.powi(2) + 2.0).sqrt();
        assert!(
            err / rms <= bound,
            "{} ({}): relative RMS error {:.4} > {bound:.4}",
            t.name,
            t.typ,
            err / rms
        );
        // And what 6 bits buy over 4 (uniform data: Q6_K ≈ 4× more accurate).
        if t.typ == GgmlType::Q6_K {
            assert!(
                err / rms < 0.03,
                "{}: Q6_K relative RMS error {:.4}",
                t.name,
                err / rms
            );
        }
        let q_path = work.join(format!("{i}.q"));
        std::fs::write(&q_path, bytes).unwrap();
        dequant.push((
            t.name.clone(),
            t.typ,
            q_path,
            work.join(format!("{i}.npy")),
            deq,
        ));
    }
    assert_eq!(dequant.len(), 7 + 4);
    if python_ok() {
        // The Python gguf package decodes the same blocks to the same values.
        const SCRIPT: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType, quants
args = sys.argv[1:]
for typ, cols, src, dst in zip(args[0::4], args[1::4], args[2::4], args[3::4]):
    t = GGMLQuantizationType[typ]
    q = np.fromfile(src, dtype=np.uint8)
    q = q.reshape(-1, int(cols) // 256 * quants.GGML_QUANT_SIZES[t][1])
    np.save(dst, quants.dequantize(q, t).astype(np.float32))
"#;
        let mut args = Vec::new();
        for (name, typ, q, npy_path, _) in &dequant {
            args.push(typ.name().to_uppercase());
            args.push(g.tensor(name).unwrap().dims[0].to_string());
            args.push(q.to_string_lossy().into_owned());
            args.push(npy_path.to_string_lossy().into_owned());
        }
        python(SCRIPT, &args.iter().map(OsStr::new).collect::<Vec<_>>());
        for (name, typ, _, npy_path, deq) in &dequant {
            let py = npy::read(npy_path).unwrap().to_f32();
            assert_eq!(py.len(), deq.len(), "{name}");
            let worst = py
                .iter()
                .zip(deq)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5,
                "{name} ({typ}): Python dequantizes {worst:e} (relative) away from owlet"
            );
        }
    }
    python_reader_agrees(&[&out]);
}

#[test]
fn tokenizer_arrays_reproduce_llama_cpp_vocab() {
    let dir = temp_dir("tok");
    let out = convert(
        &fixture("checkpoint"),
        &dir,
        "tok",
        Preset::Q4_0,
        GgmlType::Q8_0,
        false,
    );
    let ours = open(&out);
    let vocab = open(&data("assets/ggml-vocab-llama-spm.gguf"));
    let arr = |g: &Gguf, k: &str| {
        g.get_array(k)
            .unwrap_or_else(|e| panic!("{k}: {e}"))
            .clone()
    };
    let (t_ours, t_ref) = (
        arr(&ours, "tokenizer.ggml.tokens"),
        arr(&vocab, "tokenizer.ggml.tokens"),
    );
    let (ours_s, ref_s) = (t_ours.as_strs().unwrap(), t_ref.as_strs().unwrap());
    assert_eq!(ours_s.len(), 32000);
    assert_eq!(ours_s.len(), ref_s.len());
    for (i, (a, b)) in ours_s.iter().zip(&ref_s).enumerate() {
        assert_eq!(a, b, "token {i}");
    }
    let scores = |g: &Gguf| arr(g, "tokenizer.ggml.scores").as_f32s().unwrap();
    assert!(
        scores(&ours)
            .iter()
            .map(|s| s.to_bits())
            .eq(scores(&vocab).iter().map(|s| s.to_bits())),
        "scores differ"
    );
    let types = |g: &Gguf| arr(g, "tokenizer.ggml.token_type").as_i64s().unwrap();
    assert_eq!(types(&ours), types(&vocab), "token types differ");
    for k in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        assert_eq!(ours.get(k), vocab.get(k), "{k}");
    }
}

#[test]
fn text_only_output_is_a_plain_llama_file() {
    let dir = temp_dir("text");
    let ckpt = fixture("checkpoint");
    let text = convert(&ckpt, &dir, "text", Preset::F16, GgmlType::F16, true);
    let full = convert(&ckpt, &dir, "full", Preset::F16, GgmlType::F16, false);
    let (g, gf) = (open(&text), open(&full));
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    for (k, _) in g.metadata() {
        assert!(!k.starts_with("mplug-owl2."), "text-only file has key {k}");
    }
    for k in [
        "llama.block_count",
        "llama.embedding_length",
        "llama.attention.head_count",
        "llama.rope.dimension_count",
    ] {
        assert!(g.get(k).is_some(), "text-only file lacks {k}");
    }
    assert_eq!(g.tensors().len(), 3 + 3 * 9);
    for t in g.tensors() {
        let n = &t.name;
        assert!(
            !n.contains("_vis") && !n.starts_with("v.") && !n.starts_with("abstractor."),
            "text-only file has {n}"
        );
        // The text weights are the multimodal file's, byte for byte (Q/K permuted alike).
        assert_eq!(g.tensor_data(n), gf.tensor_data(n), "{n}");
    }
    let exp = expected(&ckpt, true);
    assert_eq!(exp.len(), g.tensors().len());
    for t in g.tensors() {
        expect_for(&exp, t);
    }
    python_reader_agrees(&[&text, &full]);
}

#[test]
fn synth_bin_checkpoints_unpickle_like_torch_load_and_match_safetensors() {
    let dir = temp_dir("synth");
    let mut c = synth::preset("tiny").unwrap();
    c.num_hidden_layers = 1;
    let (bin, st) = (dir.join("bin"), dir.join("st"));
    synth::write_hf(&c, &bin, 3_000_000, HfFormat::Bin).unwrap();
    synth::write_hf(&c, &st, 3_000_000, HfFormat::Safetensors).unwrap();
    assert!(bin.join("pytorch_model.bin.index.json").is_file());
    assert!(st.join("model.safetensors.index.json").is_file());
    let (cb, cs) = (
        Checkpoint::open(&bin).unwrap(),
        Checkpoint::open(&st).unwrap(),
    );
    assert!(cb.warnings().is_empty(), "{:?}", cb.warnings());
    // Release-style shard names: pytorch_model-0000N-of-0000M.bin, N = 1..M.
    let m = cb.files().len();
    assert!(m >= 2, "{m} shards");
    for (i, f) in cb.files().iter().enumerate() {
        let want = format!("pytorch_model-{:05}-of-{m:05}.bin", i + 1);
        assert_eq!(f.file_name().unwrap().to_str().unwrap(), want);
    }
    assert_eq!(cb.tensors().len(), cs.tensors().len());
    for (a, b) in cb.tensors().iter().zip(cs.tensors()) {
        assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
        assert_eq!(
            cb.read_raw(a).unwrap(),
            cs.read_raw(b).unwrap(),
            "{}",
            a.name
        );
    }
    // Both layouts convert to the same file.
    let a = convert(&bin, &dir, "bin", Preset::Q4_0, GgmlType::Q8_0, false);
    let b = convert(&st, &dir, "st", Preset::Q4_0, GgmlType::Q8_0, false);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "bin and safetensors outputs differ"
    );
    python_reader_agrees(&[&a]);
    if !python_ok() {
        return;
    }
    // Python: every record stored, storages 64-byte aligned, pickletools can disassemble
    // data.pkl, it uses only the protocol-2 opcodes listed below, and an Unpickler that
    // resolves globals and persistent ids the way torch.load does rebuilds every tensor.
    const SCRIPT: &str = r#"
import collections, io, json, pickle, pickletools, struct, sys, zipfile
import numpy as np
ALLOWED = {"PROTO", "GLOBAL", "EMPTY_TUPLE", "REDUCE", "MARK", "TUPLE", "TUPLE1", "TUPLE2",
           "TUPLE3", "BINPERSID", "BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE",
           "NEWFALSE", "SETITEMS", "STOP"}
out = {}
for path in sys.argv[1:]:
    z = zipfile.ZipFile(path)
    raw = open(path, "rb").read()
    for info in z.infolist():
        assert info.compress_type == zipfile.ZIP_STORED, info.filename
        if "/data/" in info.filename:
            n, e = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + n + e) % 64 == 0, info.filename
    assert z.read("archive/version").strip() == b"3"
    assert z.read("archive/byteorder") == b"little"
    pkl = z.read("archive/data.pkl")
    pickletools.dis(pkl, out=io.StringIO())
    ops = {op.name for op, _, _ in pickletools.genops(pkl)}
    assert ops <= ALLOWED, ops - ALLOWED
    dtypes = {"HalfStorage": np.float16, "FloatStorage": np.float32}
    def rebuild(storage, offset, size, stride, requires_grad, hooks):
        n = int(np.prod(size)) if size else 1
        assert tuple(stride) == tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        return storage[offset:offset + n].reshape(size)
    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name in dtypes:
                return dtypes[name]
            raise pickle.UnpicklingError(f"global {module}.{name}")
        def persistent_load(self, pid):
            kind, dtype, key, location, numel = pid
            assert kind == "storage" and location == "cpu"
            data = np.frombuffer(z.read(f"archive/data/{key}"), dtype=dtype)
            assert data.size == numel
            return data
    sd = Unpickler(io.BytesIO(pkl)).load()
    assert type(sd) is collections.OrderedDict
    for name, t in sd.items():
        v = t.astype(np.float64)
        out[name] = [list(t.shape), str(t.dtype), float(v.sum()), float((v * v).sum())]
print(json.dumps(out))
"#;
    let shard_paths = cb.files();
    let args: Vec<&OsStr> = shard_paths.iter().map(|p| p.as_os_str()).collect();
    let seen: BTreeMap<String, Json> = serde_json::from_str(&python(SCRIPT, &args)).unwrap();
    assert_eq!(seen.len(), cb.tensors().len());
    for t in cb.tensors() {
        let p = &seen[&t.name];
        let shape: Vec<usize> = p[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        assert_eq!(p[1].as_str().unwrap(), "float16", "{}", t.name);
        let v = cb.read_f32(t).unwrap();
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let sq: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(p[2].as_f64().unwrap(), sum) && close(p[3].as_f64().unwrap(), sq),
            "{}: values differ",
            t.name
        );
    }
}
