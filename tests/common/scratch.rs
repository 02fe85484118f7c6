//! Scratch folders for tests that write files, preferably under cargo's per-target scratch
//! folder (`CARGO_TARGET_TMPDIR`, removed with `target/`) rather than the system's temporary
//! folder.
//! - [`run_dir`]: one folder per test process (and name), kept after the run so that its files
//!   can be looked at; the next run deletes it.
//! - [`TempDir`]: a fresh folder per call, deleted when dropped.
//!
//! Either way the folders of earlier runs whose process has ended (killed before a drop ran)
//! are deleted first, so runs do not pile up (the golden conversions alone are 70 MB a run).
//! One file for the integration tests of both packages (include it with
//! `#[path = ".../tests/common/scratch.rs"] mod scratch;`) and the library's unit tests; each
//! uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh empty folder `ROOT/PREFIX-PID-N-TAG` (`N` counts the process's calls, so tags may
/// repeat), deleted with its contents when dropped. Derefs to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the folder under `root` (`env!("CARGO_TARGET_TMPDIR")` in integration tests).
    pub fn new(root: impl AsRef<Path>, prefix: &str, tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = root.as_ref();
        remove_ended(root, prefix);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{prefix}-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
