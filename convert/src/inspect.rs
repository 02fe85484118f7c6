//! `owlet-convert inspect`: a GGUF file's metadata and tensor table.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use owlet::gguf::{Gguf, Value};

fn show(v: &Value, full: bool) -> String {
    match v {
        Value::Str(s) if !full && s.len() > 120 => {
            // str::floor_char_boundary needs Rust 1.91; the MSRV is 1.85.
            let cut = (0..=100)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            format!("{:?}… ({} bytes)", &s[..cut], s.len())
        }
        Value::Str(s) => format!("{s:?}"),
        Value::Array(a) => {
            let n = a.items.len();
            let shown = if full { n } else { n.min(8) };
            let items: Vec<String> = a.items[..shown].iter().map(|x| show(x, full)).collect();
            let more = if shown < n {
                format!(", … ({n} items)")
            } else {
                String::new()
            };
            format!("[{}{}]", items.join(", "), more)
        }
        other => format!("{other:?}")
            .split('(')
            .nth(1)
            .map(|s| s.trim_end_matches(')').to_string())
            .unwrap_or_default(),
    }
}

/// Why a directory cannot be inspected, and what to do with it: a directory holding
/// `config.json` is taken for a Hugging Face checkpoint, to be converted first.
pub fn directory_message(dir: &Path) -> String {
    if dir.join("config.json").is_file() {
        format!(
            "{} is a directory, not a GGUF file; it holds config.json, so it looks like a Hugging Face checkpoint: convert it with `owlet-convert {} -o model.gguf`",
            dir.display(),
            dir.display()
        )
    } else {
        format!(
            "{} is a directory, not a GGUF file; give the path of a .gguf file",
            dir.display()
        )
    }
}

/// For a file of a Hugging Face checkpoint (`config.json`, a `.bin`, `.safetensors` or index
/// file) that is not a GGUF file: how to convert its directory.
fn checkpoint_file_hint(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let from_checkpoint =
        name.ends_with(".json") || name.ends_with(".bin") || name.ends_with(".safetensors");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if from_checkpoint && dir.join("config.json").is_file() {
        format!(
            " (it is part of a Hugging Face checkpoint: convert the directory with `owlet-convert {} -o model.gguf`)",
            dir.display()
        )
    } else {
        String::new()
    }
}

/// Prints metadata and tensors of `path` to `w`.
pub fn print(path: &Path, full: bool, w: &mut dyn Write) -> Result<()> {
    if path.is_dir() {
        bail!("{}", directory_message(path));
    }
    let g = Gguf::open(path).map_err(|e| anyhow!("{e}{}", checkpoint_file_hint(path)))?;
    writeln!(
        w,
        "{}: GGUF v{}, {} metadata keys, {} tensors",
        path.display(),
        g.version(),
        g.metadata().len(),
        g.tensors().len()
    )?;
    for (k, v) in g.metadata() {
        writeln!(w, "  {k} = {}", show(v, full))?;
    }
    writeln!(
        w,
        "{:<48} {:<6} {:<24} {:>12}",
        "tensor", "type", "shape (ggml order)", "bytes"
    )?;
    let mut total = 0u64;
    for t in g.tensors() {
        total += t.size;
        writeln!(
            w,
            "{:<48} {:<6} {:<24} {:>12}",
            t.name,
            t.typ.name(),
            format!("{:?}", t.dims),
            t.size
        )?;
    }
    writeln!(
        w,
        "total tensor bytes: {total} ({:.2} MB)",
        total as f64 / 1e6
    )?;
    Ok(())
}
