//! Scratch folders for tests that write files, under cargo's per-target scratch folder
//! (`CARGO_TARGET_TMPDIR`, removed with `target/`) rather than the system's temporary folder.
//! Each test process gets its own folder, so every run writes its files afresh; the folders of
//! earlier runs whose process has ended are deleted first, so runs do not pile up (the golden
//! conversions alone are 70 MB a run). Include it with
//! `#[path = ".../tests/common/scratch.rs"] mod scratch;`.

use std::path::{Path, PathBuf};

/// `CARGO_TARGET_TMPDIR/PREFIX-PID[-NAME]`, created empty (a `name` folder is emptied first; the
/// process folder without a name is shared by the process's tests and kept).
pub fn run_dir(tmp_root: &str, prefix: &str, name: Option<&str>) -> PathBuf {
    let root = Path::new(tmp_root);
    remove_ended(root, prefix);
    let own = std::process::id();
    let d = match name {
        Some(n) => root.join(format!("{prefix}-{own}-{n}")),
        None => root.join(format!("{prefix}-{own}")),
    };
    if name.is_some() {
        let _ = std::fs::remove_dir_all(&d);
    }
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// Deletes `PREFIX-PID...` folders of processes that no longer run (Linux: `/proc/PID`).
fn remove_ended(root: &Path, prefix: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let own = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != own && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
