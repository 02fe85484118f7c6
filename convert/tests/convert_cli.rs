//! The `owlet-convert` binary on broken inputs and hostile conditions: every failure is a
//! non-zero exit with ONE line on stderr naming the file and the tensor or key, never a panic,
//! and never an output file (a previous output stays byte for byte). Also: interrupted runs
//! (SIGKILL) leave nothing half-written at the output path, their temporaries are removed by
//! the next run, and `inspect` works, refuses non-GGUF files and survives a closed pipe.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use owlet_convert::synth::{self, HfFormat};
use zip::write::SimpleFileOptions;

const BIN: &str = env!("CARGO_BIN_EXE_owlet-convert");

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
    TempDir::new(env!("CARGO_TARGET_TMPDIR"), "owlet-cli", tag)
}

/// Copies the files of `src` (flat) into a new directory `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A copy of fixture checkpoint `which` in `dir/ckpt`.
fn copy_fixture(dir: &Path, which: &str) -> PathBuf {
    let ckpt = dir.join("ckpt");
    copy_dir(&fixture(which), &ckpt);
    ckpt
}

fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running owlet-convert")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: exit code 1 (not a panic's 101 or a signal), exactly one line on
/// stderr, containing every string of `wants`.
fn assert_one_line_failure(o: &Output, wants: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit status {:?}, stderr: {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "stderr is not one line: {err:?}"
    );
    assert!(err.starts_with("owlet-convert: "), "{err}");
    for w in wants {
        assert!(err.contains(w), "stderr {err:?} should name {w:?}");
    }
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Converting `ckpt` fails with one line naming `wants`, and leaves the output directory as it
/// was: empty when it was empty, the previous output byte for byte when there was one.
fn assert_conversion_fails(ckpt: &Path, wants: &[&str]) {
    let out_dir = temp_dir("out");
    let out = out_dir.join("out.gguf");
    let args = [
        ckpt.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("--type"),
        OsStr::new("q4_0"),
    ];
    let o = run(&args);
    assert_one_line_failure(&o, wants);
    assert!(
        listing(&out_dir).is_empty(),
        "left behind: {:?}",
        listing(&out_dir)
    );
    let previous = b"a previous output".to_vec();
    std::fs::write(&out, &previous).unwrap();
    let o = run(&args);
    assert_one_line_failure(&o, wants);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        previous,
        "the previous output was touched"
    );
    assert_eq!(listing(&out_dir), vec!["out.gguf"]);
}

// ------------------------------------------------------------------ safetensors surgery

/// One safetensors entry: name, dtype string, shape, bytes.
type StEntry = (String, String, Vec<usize>, Vec<u8>);

fn read_safetensors(path: &Path) -> Vec<StEntry> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out: Vec<(u64, StEntry)> = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let off: Vec<u64> = v["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let dtype = v["dtype"].as_str().unwrap().to_string();
        out.push((
            off[0],
            (
                name,
                dtype,
                shape,
                data[off[0] as usize..off[1] as usize].to_vec(),
            ),
        ));
    }
    out.sort_by_key(|(o, _)| *o);
    out.into_iter().map(|(_, e)| e).collect()
}

fn write_safetensors(path: &Path, entries: &[StEntry]) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in entries {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    for (_, _, _, bytes) in entries {
        f.write_all(bytes).unwrap();
    }
    f.flush().unwrap();
}

/// A copy of the f32 safetensors fixture with its tensor list edited by `edit`.
fn edited_safetensors(dir: &Path, edit: impl FnOnce(&mut Vec<StEntry>)) -> PathBuf {
    let ckpt = copy_fixture(dir, "checkpoint-f32-safetensors");
    let path = ckpt.join("model.safetensors");
    let mut entries = read_safetensors(&path);
    edit(&mut entries);
    write_safetensors(&path, &entries);
    ckpt
}

/// A `torch.save`-style zip whose `archive/data.pkl` is `pickle`.
fn write_pickle_zip(path: &Path, pickle: &[u8]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

// ------------------------------------------------------------------ broken checkpoints

#[test]
fn missing_shard() {
    let dir = temp_dir("missing-shard");
    let ckpt = copy_fixture(&dir, "checkpoint");
    std::fs::remove_file(ckpt.join("pytorch_model-00002-of-00002.bin")).unwrap();
    assert_conversion_fails(&ckpt, &["pytorch_model-00002-of-00002.bin", "missing"]);
}

#[test]
fn truncated_shards() {
    // A .bin cut anywhere loses its zip directory.
    let dir = temp_dir("truncated-bin");
    let ckpt = copy_fixture(&dir, "checkpoint");
    let shard = ckpt.join("pytorch_model-00001-of-00002.bin");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_conversion_fails(&ckpt, &["pytorch_model-00001-of-00002.bin", "truncated"]);
    // A cut safetensors file keeps its header: the tensors past the end are named.
    let dir = temp_dir("truncated-st");
    let ckpt = copy_fixture(&dir, "checkpoint-f32-safetensors");
    let shard = ckpt.join("model.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    assert_conversion_fails(&ckpt, &["model.safetensors", "tensor model."]);
}

#[test]
fn tensor_listed_in_the_index_but_absent() {
    let dir = temp_dir("index");
    let ckpt = copy_fixture(&dir, "checkpoint");
    let index = ckpt.join("pytorch_model.bin.index.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    j["weight_map"]["model.layers.0.mlp.extra_proj.weight"] =
        "pytorch_model-00001-of-00002.bin".into();
    std::fs::write(&index, serde_json::to_vec(&j).unwrap()).unwrap();
    assert_conversion_fails(
        &ckpt,
        &[
            "model.layers.0.mlp.extra_proj.weight",
            "pytorch_model.bin.index.json",
            "pytorch_model-00001-of-00002.bin",
        ],
    );
}

#[test]
fn shape_disagreeing_with_config_json() {
    let dir = temp_dir("shape");
    let ckpt = copy_fixture(&dir, "checkpoint");
    let cfg = ckpt.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"intermediate_size\": 160", "\"intermediate_size\": 128");
    std::fs::write(&cfg, text).unwrap();
    assert_conversion_fails(
        &ckpt,
        &[
            "model.layers.0.mlp.gate_proj.weight",
            "config.json",
            "[160, 64]",
            "ckpt",
        ],
    );
}

#[test]
fn unknown_dtype() {
    let dir = temp_dir("dtype");
    let ckpt = edited_safetensors(&dir, |e| {
        let t = e.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
        t.1 = "I32".into();
    });
    assert_conversion_fails(&ckpt, &["model.safetensors", "model.norm.weight", "I32"]);
}

#[test]
fn missing_required_tensor() {
    let dir = temp_dir("required");
    let ckpt = edited_safetensors(&dir, |e| {
        e.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight")
    });
    assert_conversion_fails(
        &ckpt,
        &["model.layers.1.mlp.up_proj.weight", "missing", "ckpt"],
    );
}

#[test]
fn unexpected_extra_tensor_is_a_warning() {
    let dir = temp_dir("extra");
    let ckpt = edited_safetensors(&dir, |e| {
        e.push((
            "model.layers.0.mlp.extra.weight".into(),
            "F32".into(),
            vec![4],
            vec![0; 16],
        ))
    });
    let out = dir.join("out.gguf");
    let o = run(&[
        ckpt.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-q"),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warning: ") && err.contains("model.layers.0.mlp.extra.weight"),
        "{err}"
    );
    assert!(out.is_file());
}

#[test]
fn pickle_calling_os_system_is_refused() {
    let dir = temp_dir("pickle");
    let ckpt = copy_fixture(&dir, "checkpoint");
    let marker = dir.join("pwned");
    // PROTO 2; GLOBAL 'os system'; BINUNICODE 'touch <marker>'; TUPLE1; REDUCE; STOP
    let cmd = format!("touch {}", marker.display());
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"cos\nsystem\n");
    p.push(b'X');
    p.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    p.extend_from_slice(cmd.as_bytes());
    p.extend_from_slice(&[0x85, b'R', b'.']);
    write_pickle_zip(&ckpt.join("pytorch_model-00002-of-00002.bin"), &p);
    assert_conversion_fails(&ckpt, &["pytorch_model-00002-of-00002.bin", "os.system"]);
    assert!(!marker.exists());
    // An opcode a state dict never needs (INST imports and calls in one go).
    let mut p = vec![0x80, 2, b'('];
    p.extend_from_slice(b"ios\nsystem\n.");
    write_pickle_zip(&ckpt.join("pytorch_model-00002-of-00002.bin"), &p);
    assert_conversion_fails(&ckpt, &["pytorch_model-00002-of-00002.bin", "opcode"]);
}

// ------------------------------------------------------------------ output side

/// Every file of `dir` with its bytes, sorted by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn output_that_is_an_input_file_is_refused_first() {
    let dir = temp_dir("self");
    let ckpt = copy_fixture(&dir, "checkpoint");
    // A broken tokenizer.model: the refusal must come before anything is read.
    std::fs::write(ckpt.join("tokenizer.model"), b"not a sentencepiece model").unwrap();
    let shard = "pytorch_model-00001-of-00002.bin";
    std::fs::hard_link(
        ckpt.join("pytorch_model-00002-of-00002.bin"),
        dir.join("linked.gguf"),
    )
    .unwrap();
    std::os::unix::fs::symlink(ckpt.join("config.json"), dir.join("symlinked.gguf")).unwrap();
    let before = contents(&ckpt);
    let cases = [
        (ckpt.join("config.json"), "config.json"),
        (ckpt.join(shard), shard),
        (
            ckpt.join("pytorch_model.bin.index.json"),
            "pytorch_model.bin.index.json",
        ),
        (ckpt.join("tokenizer.model"), "tokenizer.model"),
        (dir.join("linked.gguf"), "pytorch_model-00002-of-00002.bin"),
        (dir.join("symlinked.gguf"), "config.json"),
    ];
    for (out, input) in &cases {
        let o = run(&[
            ckpt.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("--type"),
            OsStr::new("f16"),
        ]);
        let out_name = out.file_name().unwrap().to_str().unwrap();
        assert_one_line_failure(&o, &[out_name, input, "same file as the input"]);
    }
    assert!(contents(&ckpt) == before, "the checkpoint changed");
    // A new file inside the checkpoint directory is fine.
    std::fs::copy(
        fixture("checkpoint/tokenizer.model"),
        ckpt.join("tokenizer.model"),
    )
    .unwrap();
    let out = ckpt.join("model.gguf");
    let o = run(&[
        ckpt.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-q"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn output_in_a_missing_directory() {
    let dir = temp_dir("nodir");
    let out = dir.join("no/such/dir/out.gguf");
    let o = run(&[
        fixture("checkpoint").as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    assert_one_line_failure(&o, &["no/such/dir", "does not exist"]);
    assert!(listing(&dir).is_empty());
}

#[test]
fn disk_full_while_writing() {
    // `ulimit -f` makes writes past 2 MB fail with EFBIG (SIGXFSZ ignored), as a full disk
    // fails them with ENOSPC; the f32 output is 19 MB.
    let dir = temp_dir("full");
    let out = dir.join("out.gguf");
    let script = r#"trap '' XFSZ; ulimit -f 2048; exec "$0" "$@""#;
    let conv = |out: &Path| {
        Command::new("bash")
            .args(["-c", script, BIN])
            .arg(fixture("checkpoint"))
            .args(["--type", "f32", "--vision-type", "f32", "-q", "-o"])
            .arg(out)
            .output()
            .unwrap()
    };
    let o = conv(&out);
    assert_one_line_failure(&o, &["out.gguf", "File too large"]);
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
    std::fs::write(&out, b"previous").unwrap();
    let o = conv(&out);
    assert_one_line_failure(&o, &["out.gguf"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert_eq!(listing(&dir), vec!["out.gguf"]);
}

#[test]
fn output_that_is_a_directory_is_refused_first() {
    let dir = temp_dir("outdir");
    let ckpt = copy_fixture(&dir, "checkpoint");
    // A broken tokenizer.model: the refusal must come before anything is read.
    std::fs::write(ckpt.join("tokenizer.model"), b"not a sentencepiece model").unwrap();
    let out = dir.join("models");
    std::fs::create_dir(&out).unwrap();
    let o = run(&[ckpt.as_os_str(), OsStr::new("-o"), out.as_os_str()]);
    assert_one_line_failure(&o, &["models", "is a directory", "model.gguf"]);
    let o = run(&[
        OsStr::new("synth"),
        OsStr::new("--preset"),
        OsStr::new("tiny"),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    assert_one_line_failure(&o, &["models", "is a directory"]);
    assert!(listing(&out).is_empty());
}

#[test]
fn summary_gives_the_size_of_the_written_file() {
    let dir = temp_dir("summary");
    let out = dir.join("m.gguf");
    let o = run(&[
        fixture("checkpoint").as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let len = std::fs::metadata(&out).unwrap().len();
    let want = format!(
        "wrote {}: 131 tensors, {:.2} MB in ",
        out.display(),
        len as f64 / 1e6
    );
    assert!(
        stderr(&o).contains(&want),
        "{:?} lacks {want:?}",
        stderr(&o)
    );
}

/// Temporaries of `out` in its directory.
fn temporaries(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|f| f.contains(".tmp-"))
        .collect()
}

#[test]
fn sigkill_leaves_no_partial_output_and_the_next_run_cleans_up() {
    // A checkpoint whose q4_k_m conversion takes a while: LLM width 256, two layers.
    let dir = temp_dir("kill");
    let mut c = synth::preset("tiny").unwrap();
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 2;
    let ckpt = dir.join("ckpt");
    synth::write_hf(&c, &ckpt, 20_000_000, HfFormat::Bin).unwrap();
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    let spawn = || {
        Command::new(BIN)
            .arg(&ckpt)
            .args(["--type", "q4_k_m", "-q", "-o"])
            .arg(&out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // A complete run: the reference bytes and the duration to aim the kills with.
    let t0 = Instant::now();
    assert!(spawn().wait().unwrap().success());
    let full = t0.elapsed();
    let good = std::fs::read(&out).unwrap();
    assert!(temporaries(&out_dir).is_empty());

    let mut killed_mid_run = 0;
    for (i, frac) in [0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.3]
        .into_iter()
        .enumerate()
    {
        // The last round starts without a previous output.
        let fresh = i == 6;
        if fresh {
            std::fs::remove_file(&out).unwrap();
        }
        let mut child = spawn();
        std::thread::sleep(full.mul_f64(frac));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if !finished && !status.success() {
            killed_mid_run += 1;
        }
        match std::fs::read(&out) {
            // Untouched, or replaced by a complete run (same bytes).
            Ok(bytes) => assert!(
                bytes == good,
                "kill at {frac}: {} holds other bytes",
                out.display()
            ),
            Err(_) => assert!(
                fresh && !status.success(),
                "kill at {frac}: the output disappeared"
            ),
        }
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed during a run"
    );
    // Killed runs leave their temporaries; the next run removes them.
    assert!(
        !temporaries(&out_dir).is_empty(),
        "no temporary left by the killed runs?"
    );
    assert!(spawn().wait().unwrap().success());
    assert!(
        temporaries(&out_dir).is_empty(),
        "stale temporaries: {:?}",
        temporaries(&out_dir)
    );
    assert!(std::fs::read(&out).unwrap() == good);
}

/// A synthetic 7B conversion (far too slow to finish within this test) interrupted with `sig`
/// once its temporary file has appeared: the temporary is removed, the process dies of the
/// signal, and nothing else is left in the directory.
fn interrupted_conversion_removes_its_temporary(sig: &str, signo: i32) {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp_dir(sig);
    let out = dir.join("big.gguf");
    let mut child = Command::new(BIN)
        .args(["synth", "--preset", "7b", "--type", "q4_0", "-q", "-o"])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while temporaries(&dir).is_empty() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the conversion ended ({st:?}) before writing");
        }
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("no temporary after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Into the tensors.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(signo), "{status:?}");
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn sigint_removes_the_temporary() {
    interrupted_conversion_removes_its_temporary("INT", 2);
}

#[test]
fn sigterm_removes_the_temporary() {
    interrupted_conversion_removes_its_temporary("TERM", 15);
}

#[test]
fn stale_temporaries_are_told_from_live_ones_by_their_lock() {
    let dir = temp_dir("locks");
    let out = dir.join("m.gguf");
    // A live writer's: its lock is held (by this process), whatever its name says (a pid
    // above any pid_max, so never running).
    let live = dir.join(".m.gguf.tmp-4194999");
    let held = std::fs::File::create(&live).unwrap();
    held.lock().unwrap();
    // A dead writer's: no lock, although its name gives a running pid (this process).
    let dead = dir.join(format!(".m.gguf.tmp-{}", std::process::id()));
    std::fs::write(&dead, b"partial").unwrap();
    let convert = || {
        let o = run(&[
            fixture("checkpoint").as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("-q"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    convert();
    assert!(live.exists(), "a live writer's temporary was removed");
    assert!(!dead.exists(), "a dead writer's temporary was kept");
    // Once its writer is gone (the lock released), it is swept too.
    drop(held);
    convert();
    assert_eq!(listing(&dir), vec!["m.gguf"]);
}

// ------------------------------------------------------------------ synth

#[test]
fn synth_layers_sets_the_layer_counts_and_refuses_zero() {
    let dir = temp_dir("synth-layers");
    let out = dir.join("m.gguf");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["synth", "--preset", "tiny", "--type", "f16", "-q", "-o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(out.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let o = run(&args(&["--layers", "1", "--vision-layers", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = owlet::model::Model::load(&out).unwrap();
    assert_eq!(m.config.text.n_layer, 1);
    assert_eq!(m.config.vision.as_ref().unwrap().n_layer, 1);
    // The widths stay the preset's.
    assert_eq!(m.config.text.n_embd, 64);
    let o = run(&args(&["--layers", "2", "--text-only"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = owlet::model::Model::load(&out).unwrap();
    assert_eq!(m.config.text.n_layer, 2);
    assert!(m.config.vision.is_none());

    let before = std::fs::read(&out).unwrap();
    for flag in ["--layers", "--vision-layers"] {
        let o = run(&args(&[flag, "0"]));
        assert_one_line_failure(&o, &[flag, "at least 1"]);
    }
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a refused synth touched the output"
    );
}

// ------------------------------------------------------------------ inspect

#[test]
fn inspect_prints_the_tensor_table_and_refuses_other_files() {
    let dir = temp_dir("inspect");
    let out = dir.join("m.gguf");
    let o = run(&[
        fixture("checkpoint").as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-q"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[OsStr::new("inspect"), out.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("GGUF v3") && text.contains("131 tensors"),
        "{text}"
    );
    assert!(text.contains("general.architecture = \"mplug-owl2\""));
    let row = text
        .lines()
        .find(|l| l.starts_with("token_embd.weight "))
        .expect("token_embd row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    // name, type, shape (ggml order), bytes: 32000 rows of 64 in Q4_K_M's Q5_0 fallback.
    assert_eq!(cols[1], "q5_0", "{row}");
    assert_eq!(cols.last().unwrap(), &(32000 * 2 * 22).to_string(), "{row}");
    assert!(row.contains("[64, 32000]"), "{row}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("v.blk.1.attn_q.weight ")));
    assert!(text.contains("total tensor bytes"));

    let cfg = fixture("checkpoint/config.json");
    let o = run(&[OsStr::new("inspect"), cfg.as_os_str()]);
    assert_one_line_failure(&o, &["config.json", "not a GGUF file"]);
    let o = run(&[OsStr::new("inspect"), dir.join("absent.gguf").as_os_str()]);
    assert_one_line_failure(&o, &["absent.gguf"]);

    // Piped into `head`: the closed pipe is not an error.
    let err_file = dir.join("stderr");
    let o = Command::new("bash")
        .args([
            "-c",
            r#"set -o pipefail; "$0" inspect --full "$1" 2>"$2" | head -n 2"#,
            BIN,
        ])
        .arg(&out)
        .arg(&err_file)
        .output()
        .unwrap();
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(o.status.success(), "status {:?}, stderr {err:?}", o.status);
    assert_eq!(err, "", "inspect | head printed errors");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
}

#[test]
fn inspect_a_directory_says_so_and_how_to_convert_a_checkpoint() {
    let ckpt = fixture("checkpoint");
    let o = run(&[OsStr::new("inspect"), ckpt.as_os_str()]);
    assert_one_line_failure(
        &o,
        &[
            "is a directory",
            "config.json",
            "Hugging Face checkpoint",
            "owlet-convert ",
        ],
    );
    assert!(stderr(&o).contains(&format!("owlet-convert {} -o", ckpt.display())));
    let empty = temp_dir("inspect-dir");
    let o = run(&[OsStr::new("inspect"), empty.as_os_str()]);
    assert_one_line_failure(&o, &["is a directory", "not a GGUF file"]);
    assert!(!stderr(&o).contains("config.json"), "{}", stderr(&o));
    // A file of the checkpoint: not a GGUF file, and how to convert its directory.
    let shard = ckpt.join("pytorch_model-00001-of-00002.bin");
    let o = run(&[OsStr::new("inspect"), shard.as_os_str()]);
    assert_one_line_failure(&o, &["not a GGUF file", "convert the directory"]);
}
