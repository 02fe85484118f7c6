//! The output file's life: written to a temporary file next to the target, renamed over the
//! target when complete, removed on any error, on SIGINT/SIGTERM, and, after a SIGKILL or a
//! crash, by the next run into the same directory.
//!
//! A writer holds an advisory lock (`flock`, through [`std::fs::File::lock`]) on its temporary
//! file until it is renamed or removed. The kernel drops the lock when the writer dies, however
//! it dies, so a temporary whose lock can be taken belongs to nobody and is swept; one whose
//! lock is held is a live conversion's, wherever the writer runs (another container, another
//! host on a shared file system), and is left alone. The process id in the name only keeps the
//! names of concurrent writers apart.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};

/// Checks `out` before any work: not an existing directory, in a directory that exists, with
/// a file name.
pub fn check_target(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!(
            "the output {} is a directory; give a file name, e.g. -o {}",
            out.display(),
            out.join("model.gguf").display()
        );
    }
    target_dir(out)?;
    temp_prefix(out)?;
    Ok(())
}

/// The directory `out` goes into (`.` for a bare file name), which must exist.
fn target_dir(out: &Path) -> Result<PathBuf> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "output directory {} does not exist; create it first",
            dir.display()
        );
    }
    Ok(dir)
}

/// `.{file name}.tmp-`: every temporary of `out` starts so.
fn temp_prefix(out: &Path) -> Result<String> {
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("output path {} has no file name", out.display()))?;
    Ok(format!(".{}.tmp-", name.to_string_lossy()))
}

/// A temporary output file, locked by this process while it exists. Dropping it removes the
/// file; [`TempOut::persist`] renames it over the target instead.
pub struct TempOut {
    path: PathBuf,
    /// Holds the lock (the lock lives as long as this descriptor).
    file: File,
    persisted: bool,
}

impl TempOut {
    /// Sweeps the unlocked temporaries of `out` left by dead writers, then creates and locks
    /// `.{name}.tmp-{pid}` in `out`'s directory and registers it for removal on SIGINT/SIGTERM.
    pub fn create(out: &Path) -> Result<TempOut> {
        let dir = target_dir(out)?;
        let prefix = temp_prefix(out)?;
        sweep_stale(&dir, &prefix);
        let path = dir.join(format!("{prefix}{}", std::process::id()));
        // Registered before the file exists, so that no instant has it on disk unregistered.
        register(&path);
        match create_locked(&path) {
            Ok(file) => Ok(TempOut {
                path,
                file,
                persisted: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                unregister(&path);
                Err(e)
            }
        }
    }

    /// The temporary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle to the file, for writing (it shares the lock).
    pub fn file(&self) -> Result<File> {
        self.file
            .try_clone()
            .with_context(|| format!("cannot reopen {}", self.path.display()))
    }

    /// Renames the finished file over `out`. A signal arriving meanwhile waits for the rename
    /// and then finds nothing to remove.
    pub fn persist(mut self, out: &Path) -> Result<()> {
        let mut pending = pending();
        if let Err(e) = std::fs::rename(&self.path, out) {
            drop(pending);
            bail!("cannot move the finished file to {}: {e}", out.display());
        }
        pending.retain(|p| p != &self.path);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
            unregister(&self.path);
        }
        // The lock goes with the descriptor.
    }
}

/// Creates `path` (truncating a stale file of the same name) and locks it. A sweeper in
/// another process may take the lock and delete the file between the creation and the lock;
/// the lock then covers a deleted file, which is detected (the path no longer leads to the
/// locked file) and the creation retried.
fn create_locked(path: &Path) -> Result<File> {
    for _ in 0..8 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if file.lock().is_err() {
            // A file system without locks: no sweeper can take the lock either, so the file
            // is as safe as it can be.
            return Ok(file);
        }
        let ours = file.metadata().ok();
        let there = std::fs::metadata(path).ok();
        if let (Some(a), Some(b)) = (ours, there) {
            if same_inode(&a, &b) {
                return Ok(file);
            }
        }
    }
    bail!(
        "cannot create {}: another process keeps removing it",
        path.display()
    )
}

#[cfg(unix)]
fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_inode(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// Removes the temporaries in `dir` named `{prefix}*` whose lock nobody holds (their writers
/// died). Best effort: a file that cannot be opened or removed stays.
fn sweep_stale(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        match file.try_lock() {
            // Removed while locked, so that a writer racing to re-create the same name sees
            // its file vanish and retries (see `create_locked`).
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(TryLockError::WouldBlock) => {} // a live writer
            Err(TryLockError::Error(_)) => {}   // no locks here: leave it
        }
    }
}

// ---- removal on SIGINT / SIGTERM -----------------------------------------------------------

/// Temporaries to remove if the process is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a plain list of paths: still usable.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(path: &Path) {
    pending().push(path.to_path_buf());
}

fn unregister(path: &Path) {
    pending().retain(|p| p != path);
}

/// Makes SIGINT and SIGTERM remove the registered temporaries, then end the process as the
/// signal would have (so the shell sees "killed by SIGINT"). Call once, from `main`.
///
/// `signal-hook`'s iterator runs the work on an ordinary thread: the signal handler itself only
/// wakes it, and the thread may take locks and allocate, which a signal handler must not. (The
/// `ctrlc` crate would do too, but handles SIGTERM only behind a feature and cannot re-raise.)
#[cfg(unix)]
pub fn remove_temporaries_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("cannot install the SIGINT/SIGTERM handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Held until the process ends: a rename in progress finishes first, and no new
                // temporary can be registered afterwards.
                let pending = pending();
                for p in pending.iter() {
                    let _ = std::fs::remove_file(p);
                }
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                // Not reached for SIGINT/SIGTERM, whose default action ends the process.
                std::process::exit(128 + sig);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Elsewhere the default handlers stay (an interrupted run leaves its temporary to the next).
#[cfg(not(unix))]
pub fn remove_temporaries_on_signals() -> Result<()> {
    Ok(())
}
